"""The profiled cost model (sim/profiled.py) on synthetic profiles whose true step-time
function is known, its checks of the profile file, and its use from a run."""
import json
import logging
import random

import pytest

from engines.errors import ConfigError
from engines.plan import ScheduledSeq, StepPlan
from sim.profiled import FORMAT, ProfiledCostModel, median_abs_error
from sim.specs import get_hardware, get_model

MODEL, HW = get_model("small_llama"), get_hardware("cpu")
COLUMNS = ("kind,omp_wait,threads,prefill_seqs,prefill_tokens,prefill_context,decode_seqs,decode_context,num_samples,"
           "median_s,idle_before_s")
TOKENS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
BATCHES = (1, 2, 4, 8, 16, 32, 64)


def true_time(n, c, b, cd, threads, omp_wait="active"):
    """A step-time law of the form the model assumes (kinked, not linear, in tokens and
    batch), slower on one thread and on passive workers."""
    m = n + b
    tokens = 0.005 + 4e-5 * m + (2e-4 * (m - 64) if m > 64 else 0.0)
    samples = 1e-3 * b ** 0.8
    attention = 2e-7 * (n * c + n * (n + 1) / 2) + 1e-6 * (c + n if n else 0) + 4e-7 * b * (cd + 1)
    return (tokens + samples + attention) * (1.8 if threads == 1 else 1.0) * (1.3 if omp_wait == "passive" else 1.0)


def write_profile(path, threads=(2, 1), noise=0.0, model="small_llama", hardware="cpu", fmt=FORMAT, seed=0,
                  policies=("active", "passive")):
    rng = random.Random(seed)
    lines = [f"# format: {fmt}", f"# model: {model}", f"# hardware: {hardware}", COLUMNS]
    shapes = [("prefill", n, 0, 0, 0) for n in TOKENS]
    shapes += [("prefill", n, c, 0, 0) for c in (256, 768) for n in (16, 128, 512)]
    shapes += [("decode", 0, 0, b, cd) for cd in (100, 900) for b in BATCHES]
    shapes += [("mixed", 200, 0, 12, 400), ("mixed", 48, 300, 40, 150), ("mixed", 600, 0, 3, 700)]
    for policy in policies:
        for t in threads:
            for kind, n, c, b, cd in shapes:
                y = true_time(n, c, b, cd, t, policy) * (1 + rng.uniform(-noise, noise))
                lines.append(f"{kind},{policy},{t},{int(n > 0)},{n},{c},{b},{cd},{b},{y:.9g},0")
    path.write_text("\n".join(lines) + "\n")
    return path


def plan(n=0, c=0, decodes=(), sample_prefill=False):
    seqs = [ScheduledSeq(i, cd, 1, True, False, ()) for i, cd in enumerate(decodes)]
    if n:
        seqs.append(ScheduledSeq(len(seqs), c, n, sample_prefill, True, ()))
    return StepPlan("t", tuple(seqs), n, len(decodes))


def test_fit_recovers_the_law_and_predicts_unseen_shapes(tmp_path):
    model = ProfiledCostModel(write_profile(tmp_path / "p.csv", noise=0.01), MODEL, HW)
    report = model.fit_report()
    assert median_abs_error(report, used_in_fit=True) < 0.01
    assert report.loc[~report.used_in_fit, "rel_error"].abs().max() < 0.03  # mixed rows: not fitted
    # Shapes between the grid points, with uneven decode contexts, on both thread counts.
    for threads, share in ((2, 1.0), (1, 0.5)):
        for n, c, decodes in ((96, 0, ()), (0, 0, (50, 700, 1200)), (300, 400, (10,) * 20), (5, 0, (333,) * 6)):
            keys = sum(cd + 1 for cd in decodes)
            expected = true_time(n, c, len(decodes), keys / len(decodes) - 1 if decodes else 0, threads)
            got = model.step_time_s(plan(n, c, decodes), share)
            assert got == pytest.approx(expected, rel=0.04), (threads, n, c, decodes)


def test_semipd_workers_read_the_passive_rows(tmp_path):
    path = write_profile(tmp_path / "p.csv")
    active, passive = (ProfiledCostModel(path, MODEL, HW, omp_wait=w) for w in ("active", "passive"))
    step = plan(100, 0, (300,) * 8)
    assert passive.step_time_s(step, 1.0) == pytest.approx(1.3 * active.step_time_s(step, 1.0), rel=0.03)
    with pytest.raises(ConfigError, match="omp_wait=passive"):
        ProfiledCostModel(write_profile(tmp_path / "a.csv", policies=("active",)), MODEL, HW, omp_wait="passive")


def test_outside_the_grid_scales_by_the_roofline_and_says_so(tmp_path, caplog):
    model = ProfiledCostModel(write_profile(tmp_path / "p.csv"), MODEL, HW)
    fit = model.fits[2]
    with caplog.at_level(logging.WARNING, logger="sim.profiled"):
        t4096 = model.step_time_s(plan(4096), 1.0)
        model.step_time_s(plan(3000), 1.0)
    notes = [r.getMessage() for r in caplog.records]
    assert sum("tokens is past" in m and "largest (1024)" in m for m in notes) == 1  # once, not again for 3000
    assert sum("longest (1280): attention extrapolated" in m for m in notes) == 1
    tokens_part = fit.token_s[-1] * model._roof_tokens(4096) / model._roof_tokens(TOKENS[-1])
    attention = fit.prefill_pair_s * 4096 * 4097 / 2 + fit.prefill_key_s * 4096
    assert t4096 == pytest.approx(tokens_part + attention, rel=1e-9)
    assert model._roof_tokens(4096) > model._roof_tokens(TOKENS[-1])


def test_a_share_without_rows_scales_the_full_share_fit(tmp_path, caplog):
    model = ProfiledCostModel(write_profile(tmp_path / "p.csv", threads=(2,)), MODEL, HW)
    step = plan(0, 0, (500,) * 8)
    with caplog.at_level(logging.WARNING, logger="sim.profiled"):
        half = model.step_time_s(step, 0.5)
    assert "no rows at 1 threads" in caplog.text
    ratio = model.roofline.step_time_s(step, 0.5) / model.roofline.step_time_s(step, 1.0)
    assert half == pytest.approx(model.step_time_s(step, 1.0) * ratio)
    with pytest.raises(ValueError, match="share must be in"):
        model.step_time_s(step, 0.0)


def test_resource_demands_keep_the_roofline_split_at_the_profiled_time(tmp_path):
    model = ProfiledCostModel(write_profile(tmp_path / "p.csv"), MODEL, HW)
    step = plan(256, 0, (300,) * 4)
    compute, memory = model.resource_demands_s(step)
    rc, rm = model.roofline.resource_demands_s(step)
    assert max(compute, memory) == pytest.approx(model.step_time_s(step, 1.0))
    assert compute / memory == pytest.approx(rc / rm)


@pytest.mark.parametrize("edit,match", [
    (lambda p: p.unlink(), "a profile CSV"),
    (lambda p: p.write_text(p.read_text().replace(FORMAT, "vidur/1")), "format semipd-bench-profile/1"),
    (lambda p: p.write_text(p.read_text().replace(",median_s", ",time_s")), "missing \\['median_s'\\]"),
    (lambda p: p.write_text(p.read_text().replace("# model: small_llama", "# model: tiny_llama")),
     "a profile of model small_llama"),
    (lambda p: p.write_text(p.read_text().replace("# hardware: cpu", "# hardware: a100_80g")),
     "a profile of hardware cpu"),
])
def test_bad_profiles_name_the_file_and_what_is_wrong(tmp_path, edit, match):
    path = write_profile(tmp_path / "p.csv")
    edit(path)
    with pytest.raises(ConfigError, match=match) as err:
        ProfiledCostModel(path, MODEL, HW)
    assert err.value.option == "executor.profile" and "p.csv" in str(err.value)


def test_a_run_with_the_profiled_cost_model(tmp_path):
    from harness.goodput import compose
    from harness.run import run
    profile = write_profile(tmp_path / "p.csv")
    common = ["model=small_llama", "hardware=cpu", "workload=synthetic", "workload.num_requests=30",
              "workload.rate=2", "plots=false", "progress=false", "engine=unified_chunked"]
    with pytest.raises(ConfigError, match="executor.profile"):
        run(compose(common + ["executor.cost_model=profiled"]), tmp_path / "no_profile")
    with pytest.raises(ConfigError, match="executor.cost_model"):
        run(compose(common + ["executor.cost_model=vidur"]), tmp_path / "bad_model")
    out = run(compose(common + ["executor.cost_model=profiled", f"executor.profile={profile}"]), tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["cost_model"] == "profiled" and summary["profile"] == str(profile)
    assert summary["num_finished"] == 30 and out.summary["tpot_s"]["mean"] > 0
    with pytest.raises(ConfigError, match="engine.tp"):
        run(compose(common + ["executor.cost_model=profiled", f"executor.profile={profile}", "engine.tp=2"]),
            tmp_path / "tp")


def test_a_simulated_run_charges_steps_after_idle(tmp_path):
    """In a run, each worker's step that starts IDLE_GAP_S or more after its previous one
    ended (and its first) takes the after-idle factor; the others the busy one."""
    from harness.fidelity_profile import run_rows
    from harness.goodput import compose
    from harness.run import run
    from sim.profiled import IDLE_GAP_S, row_plan
    profile = append_run_rows(append_run_rows(write_profile(tmp_path / "p.csv")), counts=(14, 0, 0),
                              factors={"prefill": 2.0}, idle_before_s=1.0, seed=3)
    model = ProfiledCostModel(profile, MODEL, HW)
    run(compose(["model=small_llama", "hardware=cpu", "workload=synthetic", "workload.num_requests=20",
                 "workload.rate=0.5", "plots=false", "progress=false", "engine=unified",
                 "executor.cost_model=profiled", f"executor.profile={profile}"]), tmp_path / "run")
    steps = run_rows(tmp_path / "run", threads=2)  # its steps with their idle gaps (one prefill chunk at most)
    after_idle = (steps["idle_before_s"] >= IDLE_GAP_S) & (steps["prefill_tokens"] > 0)
    assert after_idle.sum() >= 5 and (~after_idle).sum() >= 5  # 0.5 req/s: the worker idles between some
    for _, r in steps.iterrows():
        step = row_plan(r)
        factor = 2.0 if r["idle_before_s"] >= IDLE_GAP_S and r["prefill_tokens"] else model.run_factor(step, 1.0)
        assert r["median_s"] == pytest.approx(factor * model.grid_step_time_s(step, 1.0), rel=0.02)


def test_contention_predictions_follow_the_engine_models(tmp_path):
    from semipd.engine import resources_slowdown
    from sim.contention_check import predict
    from sim.profiled import shape_plan
    assert resources_slowdown([(0.9, 0.2), (0.3, 0.7)]) == pytest.approx(1.2)
    assert resources_slowdown([(0.5, 0.2), (0.3, 0.7)]) == 1.0
    model = ProfiledCostModel(write_profile(tmp_path / "p.csv"), MODEL, HW)
    pre, dec = shape_plan(512), shape_plan(decode_seqs=16, decode_context=500)
    disjoint = predict(model, pre, dec, 50, 50)
    assert disjoint["proportional"] == (1.0, 1.0)
    overlap = predict(model, pre, dec, 100, 100)
    # Proportional: each at half a share, i.e. on one of the two cores (the 1-thread rows).
    assert overlap["proportional"][0] == pytest.approx(model.step_time_s(pre, 0.5) / model.step_time_s(pre, 1.0))
    assert overlap["proportional"][0] == pytest.approx(1.8, rel=0.05)  # write_profile's 1-thread law
    uses = [tuple(d / model.step_time_s(p, 1.0) for d in model.resource_demands_s(p)) for p in (pre, dec)]
    assert overlap["resources"] == (resources_slowdown(uses),) * 2
    assert 1.0 < overlap["resources"][0] <= 2.0


def test_profile_scale_multiplies_every_step(tmp_path):
    path = write_profile(tmp_path / "p.csv")
    base, slow = ProfiledCostModel(path, MODEL, HW), ProfiledCostModel(path, MODEL, HW, scale=1.25)
    for step, share in ((plan(300, 100, (200,) * 5), 1.0), (plan(0, 0, (900,) * 3), 0.5)):
        assert slow.step_time_s(step, share) == pytest.approx(1.25 * base.step_time_s(step, share))


RUN_FACTORS = {"prefill": 1.2, "mixed": 1.45, "decode": 1.1}


def append_run_rows(path, factors=RUN_FACTORS, counts=(12, 12, 30), policy="active", threads=2, seed=0,
                    idle_before_s=0.0):
    """Run rows (sim/profiled.py): steps of a 'real run', each the law x its kind's factor,
    all with the same idle gap before them. Prefill chunks do not sample here, as in the
    law (true_time)."""
    rng = random.Random(seed)
    lines = []
    for _ in range(counts[0]):
        n, c = rng.choice((37, 150, 611)), rng.choice((0, 200))
        lines.append((n, c, 0, 0, factors["prefill"]))
    for _ in range(counts[1]):
        lines.append((rng.choice((64, 256)), rng.choice((0, 300)), rng.choice((3, 9)), rng.choice((120, 700)),
                      factors["mixed"]))
    for _ in range(counts[2]):
        lines.append((0, 0, rng.choice((1, 5, 12, 40)), rng.choice((60, 333, 1000)), factors["decode"]))
    with path.open("a") as f:
        for n, c, b, cd, factor in lines:
            f.write(f"run,{policy},{threads},{int(n > 0)},{n},{c},{b},{cd},{b},"
                    f"{true_time(n, c, b, cd, threads, policy) * factor:.9g},{idle_before_s}\n")
    return path


def test_run_rows_set_a_factor_per_kind_of_step(tmp_path, caplog):
    grid_only = ProfiledCostModel(write_profile(tmp_path / "g.csv"), MODEL, HW)
    with caplog.at_level(logging.INFO, logger="sim.profiled"):
        model = ProfiledCostModel(append_run_rows(write_profile(tmp_path / "p.csv")), MODEL, HW)
    assert "run factors" in caplog.text and "mixed 1.4" in caplog.text
    assert grid_only.run_factors == {"prefill": 1.0, "mixed": 1.0, "decode": 1.0}
    assert model.fits == grid_only.fits  # the run rows are not in the fit
    # The fit recovers the law within ~1 %, so each factor is the planted one within 2 %.
    for kind, factor in RUN_FACTORS.items():
        assert model.run_factors[kind] == pytest.approx(factor, rel=0.02), kind
    for step, kind in ((plan(300, 0), "prefill"), (plan(100, 50, (400,) * 6), "mixed"), (plan(0, 0, (90, 800)), "decode")):
        assert model.grid_step_time_s(step, 1.0) == grid_only.step_time_s(step, 1.0)
        assert model.step_time_s(step, 1.0) == pytest.approx(model.run_factors[kind] * grid_only.step_time_s(step, 1.0))
    report = model.fit_report()
    assert (report["kind"] == "run").sum() == 54 and not report.loc[report["kind"] == "run", "used_in_fit"].any()


def test_a_passive_model_takes_the_active_run_factors(tmp_path):
    """The run rows are an active (unified) run: a semi-PD (passive) model measures them
    against the active fit, so both get the same factors."""
    path = append_run_rows(write_profile(tmp_path / "p.csv"))
    active, passive = (ProfiledCostModel(path, MODEL, HW, omp_wait=w) for w in ("active", "passive"))
    assert passive.run_factors == active.run_factors


def test_run_rows_of_one_thread_set_the_one_thread_steps_factors(tmp_path):
    """A disaggregated calibration run's rows (threads=1, its instances' cores) give the
    1-thread steps their own factors, the 2-thread rows the 2-thread steps'; a kind without
    enough rows of a thread count falls back to the factor of all run rows."""
    one_core = {"prefill": 1.3, "mixed": 1.0, "decode": 1.15}
    path = append_run_rows(append_run_rows(write_profile(tmp_path / "p.csv")), factors=one_core,
                           counts=(12, 2, 30), threads=1, seed=1)
    model = ProfiledCostModel(path, MODEL, HW)
    steps = {"prefill": plan(300, 0), "mixed": plan(100, 50, (400,) * 6), "decode": plan(0, 0, (90, 800))}
    for kind, step in steps.items():
        assert model.step_time_s(step, 1.0) == pytest.approx(RUN_FACTORS[kind] * model.grid_step_time_s(step, 1.0),
                                                             rel=0.02)
    for kind in ("prefill", "decode"):
        assert model.run_factor(steps[kind], 0.5) == pytest.approx(one_core[kind], rel=0.02)
    # 2 one-thread mixed rows: all 14 mixed rows' factor (12 of them 2-thread rows at 1.45).
    assert model.run_factor(steps["mixed"], 0.5) == pytest.approx(RUN_FACTORS["mixed"], rel=0.02)
    assert model.run_factors["prefill"] == pytest.approx(1.25, rel=0.02)  # all 24 prefill rows
    # A disaggregated device (devices=2: one core of two) reads the 1-thread fit and factors.
    device = ProfiledCostModel(path, MODEL, HW, devices=2)
    assert device.step_time_s(plan(300, 0), 1.0) == pytest.approx(model.step_time_s(plan(300, 0), 0.5))


def test_a_passive_model_reads_passive_run_rows_where_there_are_some(tmp_path):
    """Run rows of semi-PD's passive workers (a semi-PD calibration run) set the passive
    model's factors; the active model keeps the active rows'."""
    path = append_run_rows(append_run_rows(write_profile(tmp_path / "p.csv")), policy="passive",
                           factors={"prefill": 0.9, "mixed": 1.0, "decode": 0.95}, seed=4)
    active, passive = (ProfiledCostModel(path, MODEL, HW, omp_wait=w) for w in ("active", "passive"))
    for kind, factor in RUN_FACTORS.items():
        assert active.run_factors[kind] == pytest.approx(factor, rel=0.02), kind
    step = plan(300, 0)
    assert passive.step_time_s(step, 1.0) == pytest.approx(0.9 * passive.grid_step_time_s(step, 1.0), rel=0.02)


def test_steps_after_idle_take_the_after_idle_rows_factor(tmp_path):
    """Run rows of steps that followed an idle gap (>= IDLE_GAP_S, or a worker's first step)
    set the factor of a step after idle; the busy steps' factors leave them out."""
    from sim.profiled import IDLE_GAP_S
    path = append_run_rows(append_run_rows(write_profile(tmp_path / "p.csv")), counts=(14, 0, 0),
                           factors={"prefill": 1.6}, idle_before_s=0.8, seed=2)
    with path.open("a") as f:  # a worker's first steps: no step before them
        f.write("".join(f"run,active,2,1,{n},0,0,0,0,{true_time(n, 0, 0, 0, 2) * 1.6:.9g},inf\n" for n in (90, 500)))
    model = ProfiledCostModel(path, MODEL, HW)
    step = plan(300, 0)
    # The 12 busy rows (16 after idle: were they pooled, the median would be theirs).
    assert model.run_factor(step, 1.0) == pytest.approx(RUN_FACTORS["prefill"], rel=0.02)
    assert model.run_factor(step, 1.0, idle_before_s=IDLE_GAP_S / 2) == model.run_factor(step, 1.0)
    for idle in (IDLE_GAP_S, 3.0, float("inf")):
        assert model.step_time_s(step, 1.0, idle) == pytest.approx(1.6 * model.grid_step_time_s(step, 1.0), rel=0.02)
    # No after-idle decode rows: a decode after idle takes the busy decode factor.
    assert model.run_factor(plan(0, 0, (90, 800)), 1.0, idle_before_s=5.0) == model.run_factor(plan(0, 0, (90, 800)), 1.0)
    # An older profile without the column: every row back to back (busy).
    old = tmp_path / "old.csv"
    old.write_text("".join(line if line.startswith("#") else line.rsplit(",", 1)[0] + "\n"
                           for line in path.read_text().splitlines(keepends=True)))
    assert ProfiledCostModel(old, MODEL, HW).run_factor(step, 1.0, idle_before_s=5.0) == pytest.approx(
        ProfiledCostModel(old, MODEL, HW).run_factor(step, 1.0))


def test_a_kind_with_few_run_rows_keeps_factor_one(tmp_path):
    model = ProfiledCostModel(append_run_rows(write_profile(tmp_path / "p.csv"), counts=(4, 12, 30)), MODEL, HW)
    assert model.run_factors["prefill"] == 1.0
    assert model.run_factors["mixed"] == pytest.approx(RUN_FACTORS["mixed"], rel=0.02)
