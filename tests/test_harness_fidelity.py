"""harness/fidelity.py: the error arithmetic, the report, bad arguments, and one small run
of the whole loop (profile, real run, simulated run, report, figure)."""
import json
import math

import pandas as pd
import pytest

from harness import fidelity, fidelity_profile


def test_errors_are_against_the_median_real_run_with_its_spread():
    sim = {"ttft_s.mean": 1.1, "throughput": 90.0}
    reals = [{"ttft_s.mean": 1.0, "throughput": 100.0}, {"ttft_s.mean": 0.9, "throughput": 120.0},
             {"ttft_s.mean": 1.2, "throughput": 100.0}]
    row = fidelity.compare(sim, reals)
    assert row["err.ttft_s.mean"] == pytest.approx(0.1) and row["err.throughput"] == pytest.approx(-0.1)
    assert row["noise.ttft_s.mean"] == pytest.approx(0.2) and row["noise.throughput"] == pytest.approx(0.2)


def test_report_checks_the_goals_at_the_light_and_medium_rates_only():
    cols = {f"err.{m}.{s}": 0.01 for m in fidelity.METRICS for s in fidelity.STATS}
    cols |= {"err.throughput": 0.02, "noise.throughput": 0.0} | {f"noise.{m}.{s}": 0.0 for m in fidelity.METRICS for s in fidelity.STATS}
    rows = [{"design": "unified", "rate": r, **cols} for r in (1.0, 2.0, 4.0)]
    rows[2]["err.tpot_s.mean"] = 0.5  # near saturation: reported, not held to the goal
    rows[1]["err.ttft_s.p90"] = -0.08
    text = fidelity.report_markdown(pd.DataFrame(rows), [1.0, 2.0, 4.0], "p.csv",
                                    {"model": "m", "machine": "x", "num_requests": 5, "real_repeats": 1})
    assert "| unified | 4 | +1.0 | +1.0 | +1.0 | +1.0 | +50.0 |" in text
    assert "worst |error| of the means and throughput 2.0 % (goal 5 %), of the P90s 8.0 % (goal 10 %)" in text


@pytest.mark.parametrize("args,message", [
    (["--designs", "vllm"], "unknown ['vllm']"),
    (["--rates", "fast"], "comma-separated numbers"),
    (["--rates", "0"], "every rate must be > 0"),
    (["--real-repeats", "0"], "--real-repeats, --profile-repeats and --num-requests must be >= 1"),
    (["--profile-repeats", "0"], "--real-repeats, --profile-repeats and --num-requests must be >= 1"),
    (["--drift-runs", "1", "--drift-anchors", "1"], "--drift-runs and --drift-anchors both scale the profile"),
])
def test_bad_arguments_exit_2(capsys, args, message):
    assert fidelity.main(args) == 2
    assert message in capsys.readouterr().err


def test_disagg_and_semipd_are_calibrated_only_when_compared():
    """semipd_static runs for calibration when a semi-PD design is compared under measured
    contention (its rows need the round's contention profile)."""
    assert fidelity.calibration_designs(["unified_chunked", "semipd_slo_code"]) == (
        "unified", "unified_chunked", "semipd_static")
    assert fidelity.calibration_designs(["semipd_static"], semipd_measured=False) == ("unified", "unified_chunked")
    assert fidelity.calibration_designs(["disagg"]) == ("unified", "unified_chunked", "disagg")


def test_semipd_run_rows_divide_the_measured_contention_out(tmp_path):
    """run_rows with contention (f_prefill, f_decode): a step that overlapped the other
    worker's steps for o seconds did solo work d - o (1 - 1/f); rows are passive."""
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame([  # worker,start_s,duration_s,prefill,decode tokens,batch,share,prefill ctx,decode ctx,samples
        ("prefill0", 0.0, 0.4, 500, 0, 1, 1, 0, 0, 1),     # decodes overlap it for 0.1 + 0.1 s
        ("decode0", 0.1, 0.1, 0, 4, 4, 1, 0, 400, 4),      # wholly inside the prefill
        ("decode0", 0.3, 0.2, 0, 4, 4, 1, 0, 404, 4),      # half inside
        ("decode0", 0.6, 0.05, 0, 4, 4, 1, 0, 408, 4)],    # alone
        columns=["worker", "start_s", "duration_s", "num_prefill_tokens", "num_decode_tokens", "batch_size",
                 "share", "prefill_context_tokens", "decode_context_tokens", "num_samples"]
    ).to_csv(run / "steps.csv", index=False)
    rows = fidelity_profile.run_rows(run, threads=2, omp_wait="passive", contention=(2.0, 1.5))
    assert rows["median_s"].tolist() == pytest.approx([0.4 - 0.2 * 0.5, 0.1 - 0.1 / 3, 0.2 - 0.1 / 3, 0.05])
    assert set(rows["omp_wait"]) == {"passive"}
    assert fidelity_profile.run_rows(run, threads=2)["median_s"].tolist() == pytest.approx([0.4, 0.1, 0.2, 0.05])


def test_a_small_loop_writes_the_report(tmp_path, monkeypatch):
    from engines.torch import profiler
    for name, value in (("PREFILL_TOKENS", (1, 2, 4, 8, 16, 64, 256, 1024)), ("PREFILL_CONTEXTS", (0, 256)),
                        ("PREFILL_CONTEXT_TOKENS", (16, 256)), ("DECODE_BATCHES", (1, 2, 4, 8)),
                        ("DECODE_CONTEXTS", (64, 512)), ("MIXED", ()), ("WARM_UP_STEPS", 1)):
        monkeypatch.setattr(profiler, name, value)
    monkeypatch.setattr(fidelity, "KV_CACHE_BYTES", 64 << 20)
    monkeypatch.setattr(fidelity, "CALIBRATION_DESIGNS", ("unified_chunked",))
    monkeypatch.setattr(fidelity, "CALIBRATION_REQUESTS", 3)
    ckpt = tmp_path / "ckpt"
    out = tmp_path / "fid"
    assert fidelity.main(["--model", "tiny_llama", "--checkpoint", str(ckpt), "--designs", "unified_chunked",
                          "--rates", "4", "--num-requests", "6", "--slo", "default", "--profile-repeats", "1",
                          "--real-repeats", "2", "--drift-runs", "1", "--out", str(out)]) == 0
    # Two real passes, a profile round before each and one after, merged into the profile.
    prof = out / "profile_cpu_tiny_llama.csv"
    assert sorted(p.name for p in (out / "profile_rounds").iterdir()) == [
        "round0.csv", "round1.csv", "round2.csv", "run0_unified_chunked", "run1_unified_chunked",
        "run2_unified_chunked"]
    assert "# rounds: 3" in prof.read_text()
    # Each round's calibration run (another seed) is in the profile as run rows.
    from sim.profiled import read_profile
    calibration = json.loads((out / "profile_rounds" / "run1_unified_chunked" / "summary.json").read_text())
    assert calibration["num_requests"] == 3 and "seed=1010" in (out / "profile_rounds" / "run1_unified_chunked" /
                                                                 "config.yaml").read_text().replace(": ", "=")
    assert (read_profile(prof)[1]["kind"] == "run").sum() > 3
    report = (out / "REPORT.md").read_text()
    assert "| unified_chunked | 4 |" in report and (out / "ecdf.png").stat().st_size > 0
    table = pd.read_csv(out / "fidelity.csv")
    assert table[[c for c in table.columns if c.startswith("err.")]].notna().all().all()
    # Wired right: one real run (torch) and one simulated run on the profile, same requests.
    real = json.loads((out / "runs" / "unified_chunked_r4_real0" / "summary.json").read_text())
    assert (out / "runs" / "unified_chunked_r4_real1" / "summary.json").is_file()
    sim = json.loads((out / "runs" / "unified_chunked_r4_sim" / "summary.json").read_text())
    assert (real["executor"], sim["executor"], sim["cost_model"], sim["profile"]) == ("torch", "sim", "profiled", str(prof))
    assert real["num_requests"] == sim["num_requests"] == 6
    # --drift-runs 1: a short real run of its own seed before each real run; the simulated run
    # is scaled by the median of their speeds against the final profile, and also run unscaled.
    drifts = [out / "runs" / f"unified_chunked_r4_real{k}_drift" for k in (0, 1)]
    assert ["seed=2000" in (p / "config.yaml").read_text().replace(": ", "=") for p in drifts] == [True, False]
    assert "seed=2001" in (drifts[1] / "config.yaml").read_text().replace(": ", "=")
    from sim.profiled import ProfiledCostModel
    from sim.specs import get_hardware, get_model
    cost = ProfiledCostModel(prof, get_model("tiny_llama"), get_hardware("cpu"))
    expected = sorted(fidelity.run_scale(cost, p) for p in drifts)
    assert table["profile_scale"].iloc[0] == pytest.approx(sum(expected) / 2)
    assert expected[0] != expected[1]  # not a constant
    import yaml
    scale_of = lambda d: yaml.safe_load((out / "runs" / d / "config.yaml").read_text())["executor"]["profile_scale"]  # noqa: E731
    assert scale_of("unified_chunked_r4_sim_unscaled") == 1.0
    assert scale_of("unified_chunked_r4_sim") == pytest.approx(sum(expected) / 2)
    assert table[[c for c in table.columns if c.startswith("unscaled.err.")]].notna().all().all()
    assert "Without the drift runs' scale" in report


def test_passes_alternate_their_order():
    order = fidelity.run_order(["a", "b"], [1.0, 2.0], 3)
    assert order[0] == [("a", 1.0), ("a", 2.0), ("b", 1.0), ("b", 2.0)]
    assert order[1] == order[0][::-1] and order[2] == order[0]


def test_rounds_merge_by_the_median(tmp_path):
    from sim.profiled import read_profile
    head = "# format: semipd-bench-profile/1\n# model: m\n# rounds: 1 (shuffled, seed 0)\n"
    cols = "kind,omp_wait,threads,prefill_seqs,prefill_tokens,prefill_context,decode_seqs,decode_context,num_samples,median_s,min_s,max_s,repeats\n"
    paths = []
    for k, t in enumerate((0.010, 0.030, 0.012)):
        p = tmp_path / f"r{k}.csv"
        p.write_text(head + cols + f"decode,active,2,0,0,0,4,128,4,{t},{t},{t},3\n"
                     f"prefill,active,2,1,16,0,0,0,0,{2 * t},{2 * t},{2 * t},3\n")
        paths.append(p)
    meta, rows = read_profile(fidelity_profile.merge_rounds(paths, tmp_path / "m.csv"))
    assert meta["model"] == "m" and meta["rounds"].startswith("3 ")
    assert rows["median_s"].tolist() == pytest.approx([0.012, 0.024])
    assert rows["min_s"].tolist() == pytest.approx([0.010, 0.020]) and rows["repeats"].tolist() == [9, 9]


def test_a_runs_steps_become_run_rows(tmp_path):
    """add_run_rows: one row per step as its driver recorded it, decode context per sequence,
    the idle gap before it, steps with two prefill chunks left out; the profiled model reads
    them as run rows."""
    from sim.profiled import read_profile
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame([  # worker,start_s,duration_s,prefill,decode tokens,batch,share,prefill ctx,decode ctx,samples
        ("mixed0", 0.0, 0.030, 67, 0, 1, 1, 0, 0, 1),      # a whole prompt: samples
        ("mixed0", 0.1, 0.050, 300, 0, 2, 1, 0, 0, 2),     # two prompts in one step: left out
        ("mixed0", 0.152, 0.040, 64, 3, 4, 1, 128, 1500, 3),  # a middle chunk and 3 decodes, 2 ms after
        ("mixed0", 0.5, 0.012, 0, 2, 2, 1, 0, 901, 2)],            # after 0.308 s idle
        columns=["worker", "start_s", "duration_s", "num_prefill_tokens", "num_decode_tokens", "batch_size",
                 "share", "prefill_context_tokens", "decode_context_tokens", "num_samples"]
    ).to_csv(run / "steps.csv", index=False)
    prof = tmp_path / "p.csv"
    prof.write_text("# format: semipd-bench-profile/1\n# model: m\nkind,omp_wait,threads,prefill_seqs,prefill_tokens,"
                    "prefill_context,decode_seqs,decode_context,num_samples,median_s,min_s,max_s,repeats,idle_before_s\n"
                    "decode,active,2,0,0,0,4,128,4,0.01,0.01,0.01,3,0\n")
    assert fidelity_profile.add_run_rows(prof, run, threads=2) == 3
    rows = read_profile(prof)[1]
    run_rows = rows[rows["kind"] == "run"]
    assert run_rows[["prefill_seqs", "prefill_tokens", "prefill_context", "decode_seqs", "decode_context",
                     "num_samples"]].values.tolist() == [[1, 67, 0, 0, 0, 1], [1, 64, 128, 3, 500, 3],
                                                         [0, 0, 0, 2, 450, 2]]
    assert run_rows["median_s"].tolist() == pytest.approx([0.030, 0.040, 0.012])
    assert set(run_rows["omp_wait"]) == {"active"} and set(run_rows["threads"]) == {2}
    assert run_rows["idle_before_s"].tolist() == pytest.approx([math.inf, 0.002, 0.308])


def test_idle_gaps_are_per_worker_in_start_order():
    """idle_before_s: the gap since the same worker's last step ended, whatever the row order."""
    steps = pd.DataFrame({"worker": ["d", "p", "d", "p", "d"], "start_s": [0.5, 0.0, 0.1, 1.0, 0.0],
                          "duration_s": [0.1, 0.4, 0.05, 0.2, 0.1]})
    assert fidelity_profile.idle_before_s(steps).tolist() == pytest.approx([0.35, math.inf, 0.0, 0.6, math.inf])


def test_a_drift_runs_scale_is_its_busy_time_over_the_prediction(tmp_path, monkeypatch):
    """run_scale: the sum of the run's step times over the sum of the profiled model's
    predictions for the same steps (run factors included), not a median of per-step ratios."""
    from sim.profiled import ProfiledCostModel, shape_plan
    from sim.specs import get_hardware, get_model
    from tests.test_sim_profiled import write_profile
    monkeypatch.setattr(fidelity.os, "sched_getaffinity", lambda _pid: {0, 1})  # a run on 2 cores
    cost = ProfiledCostModel(write_profile(tmp_path / "p.csv"), get_model("small_llama"), get_hardware("cpu"))
    decode = cost.step_time_s(shape_plan(decode_seqs=4, decode_context=300), 1.0)
    prefill = cost.step_time_s(shape_plan(prefill_tokens=200, prefill_samples=True), 1.0)
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame([  # worker,start_s,duration_s,prefill,decode tokens,batch,share,prefill ctx,decode ctx,samples
        ("u", 0.0, 3 * prefill, 200, 0, 1, 1, 0, 0, 1),    # a whole prompt at 3x its prediction
        ("u", 0.1, decode, 0, 4, 4, 1, 0, 1200, 4),          # decodes at their prediction
        ("u", 0.2, decode, 0, 4, 4, 1, 0, 1200, 4)],
        columns=["worker", "start_s", "duration_s", "num_prefill_tokens", "num_decode_tokens", "batch_size",
                 "share", "prefill_context_tokens", "decode_context_tokens", "num_samples"]
    ).to_csv(run / "steps.csv", index=False)
    assert fidelity.run_scale(cost, run) == pytest.approx((3 * prefill + 2 * decode) / (prefill + 2 * decode))
