"""benchmarks/step_residuals.py: a real run's steps against the report's profile, grouped by
the idle gap before each step; a report without runs exits 2."""
import pandas as pd
import pytest

from benchmarks import step_residuals
from sim.profiled import ProfiledCostModel, shape_plan
from sim.specs import get_hardware, get_model
from tests.test_sim_profiled import write_profile

COLUMNS = ["worker", "start_s", "duration_s", "num_prefill_tokens", "num_decode_tokens", "batch_size", "share",
           "prefill_context_tokens", "decode_context_tokens", "num_samples"]


def test_steps_after_idle_are_told_apart(tmp_path, capsys):
    report = tmp_path / "fid"
    (report / "runs" / "unified_r1_real0").mkdir(parents=True)
    (report / "runs" / "disagg_r1_real0").mkdir(parents=True)  # 1-core instances: not read
    profile = write_profile(report / "profile_cpu_small_llama.csv")
    cost = ProfiledCostModel(profile, get_model("small_llama"), get_hardware("cpu"))
    prefill = cost.step_time_s(shape_plan(prefill_tokens=100, prefill_samples=True), 1.0)
    decode = cost.step_time_s(shape_plan(decode_seqs=1, decode_context=100), 1.0)
    rows, t = [], 0.0
    for k in range(3):  # each request: a prefill after 1 s idle (1.5x), then 4 decodes (at the prediction)
        t += 1.0
        rows.append(("u", t, 1.5 * prefill, 100, 0, 1, 1, 0, 0, 1))
        t += 1.5 * prefill
        for _ in range(4):
            rows.append(("u", t, decode, 0, 1, 1, 1, 0, 100, 1))
            t += decode
    rows.append(("u", t, prefill, 100, 0, 1, 1, 0, 0, 1))  # a prefill right after a decode, as predicted
    # Rows out of start order (as a file of several workers would be): gaps still follow the clock.
    pd.DataFrame(rows[::-1], columns=COLUMNS).to_csv(report / "runs" / "unified_r1_real0" / "steps.csv", index=False)
    assert step_residuals.main([str(report), "--out", str(tmp_path / "r.csv")]) == 0
    out = capsys.readouterr().out
    assert "1 real runs, 16 steps" in out
    assert "prefill steps after an idle gap: sum real / sum predicted 1.500 (3 steps)" in out
    assert "prefill steps without an idle gap: sum real / sum predicted 1.000 (1 steps)" in out
    table = pd.read_csv(tmp_path / "r.csv")
    assert table.loc[table["kind"] == "decode", "ratio"].tolist() == pytest.approx([1.0] * 12, rel=1e-4)


@pytest.mark.parametrize("args,message", [
    ([], "no real runs of ['unified', 'unified_chunked']"),
    (["--designs", "disagg"], "--designs takes ['unified', 'unified_chunked'] (one worker on all cores)"),
    (["--rates", "fast"], "--rates must be comma-separated req/s, got 'fast'"),
])
def test_bad_input_exits_2(tmp_path, capsys, args, message):
    write_profile(tmp_path / "profile_cpu_small_llama.csv")
    assert step_residuals.main([str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err


def test_idle_steps_compares_each_pause_with_back_to_back(capsys):
    """benchmarks/idle_steps.py: the median per shape and pause over the back-to-back median;
    a pause list without 0 exits 2 (no reference)."""
    from benchmarks import idle_steps
    table = pd.DataFrame([("prefill 64", pause, r, wall, wall) for pause, walls in ((0.0, (0.010, 0.012, 0.011)),
                                                                                     (1.0, (0.013, 0.0121, 0.0143)))
                          for r, wall in enumerate(walls)], columns=["shape", "pause_s", "round", "wall_s", "worker_s"])
    out = idle_steps.summary(table)
    assert out.loc[out["pause_s"] == 1.0, "wall / back to back"].item() == pytest.approx(0.013 / 0.011)
    assert idle_steps.main(["--idle-s", "0.5,1"]) == 2
    assert "--idle-s must include 0" in capsys.readouterr().err


def test_semipd_prefill_slowdown_by_prompt_size(tmp_path, capsys):
    """benchmarks/semipd_prefill_slowdown.py: a semi-PD prefill step beside decode steps for
    >= 90 % of its time, over the passive grid, per prompt size and real / sim; a step beside
    no decode is left out; no semi-PD runs exits 2."""
    from benchmarks import semipd_prefill_slowdown
    report = tmp_path / "fid"
    report.mkdir()
    profile = write_profile(report / "profile_cpu_small_llama.csv")
    (report / "contention_cpu_small_llama.csv").write_text(
        "# format: x\nlayout,prefill_share_pct,decode_share_pct,prefill_tokens,decode_seqs,decode_context,"
        "prefill_solo_s,prefill_together_s,decode_solo_s,decode_together_s,decode_steps_together,repeats\n"
        "overlap,100,100,512,16,512,0.1,0.19,0.02,0.03,5,3\ndisjoint,50,50,512,16,512,0.2,0.21,0.02,0.02,5,3\n")
    grid = ProfiledCostModel(profile, get_model("small_llama"), get_hardware("cpu"), omp_wait="passive")

    def run(name, factors):  # {prompt tokens: slowdown}: each prefill beside one long decode step
        rows, t = [], 0.0
        for n, f in factors.items():
            d = f * grid.grid_step_time_s(shape_plan(prefill_tokens=n, prefill_samples=True), 1.0)
            rows.append(("prefill0", t, d, n, 0, 1, 1, 0, 0, 1))
            rows.append(("decode0", t - 0.001, d + 0.002, 0, 4, 4, 1, 0, 400, 4))
            t += d + 1.0
        rows.append(("prefill0", t, 0.05, 64, 0, 1, 1, 0, 0, 1))  # alone: not counted
        (report / "runs" / name).mkdir(parents=True)
        pd.DataFrame(rows, columns=COLUMNS).to_csv(report / "runs" / name / "steps.csv", index=False)

    run("semipd_static_r1_real0", {64: 1.6, 300: 2.0, 800: 2.4})
    run("semipd_static_r1_sim", {64: 2.0, 300: 2.0, 800: 2.0})
    assert semipd_prefill_slowdown.main([str(report), "--out", str(tmp_path / "s.csv")]) == 0
    table = pd.read_csv(tmp_path / "s.csv", index_col=0)
    assert table["real median"].tolist() == pytest.approx([1.6, 2.0, 2.4], rel=1e-6)
    assert table["real / sim"].tolist() == pytest.approx([0.8, 1.0, 1.2], rel=1e-6)
    assert table["real count"].tolist() == [1, 1, 1]
    assert "512    1.9" in capsys.readouterr().out  # the contention profile's overlap pair
    assert semipd_prefill_slowdown.main([str(tmp_path)]) == 2
