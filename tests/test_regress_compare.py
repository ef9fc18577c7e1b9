"""The regression gate: rules and verdicts, a planted slowdown fails with a table naming the
metric, unchanged code passes, --accept rewrites the baselines, the committed baselines
cover the matrix."""
import dataclasses
import json
from pathlib import Path

import pytest

from benchmarks import regress_matrix as rm
from metrics.compare import (FORMAT, Rule, RunEntry, RunKey, compare, judge, load_entries, main,
                             report)
from sim.cost_model import RooflineCostModel

ROOT = Path(__file__).resolve().parent.parent
# Two small entries of the real matrix: one per workload, a unified and a semi-PD engine.
SMALL = (dataclasses.replace(rm.SIM_MATRIX[0], num_requests=120),
         dataclasses.replace(rm.SIM_MATRIX[-1], num_requests=120))


@pytest.mark.parametrize("base,new,verdict", [
    (1.0, 1.0, "ok"), (2.5, 2.5 * (1 + 1e-12), "ok"), (2.5, 2.5 * (1 + 1e-7), "changed"),
    (0.2, 0.19, "changed"), (7, 7, "ok"), (7, 8, "changed"), (None, None, "ok"), (None, 0.1, "changed"),
    (0.0, 0.0, "ok"), (0.0, 1e-15, "changed")])
def test_exact_rule_reports_any_change_beyond_float_noise(base, new, verdict):
    assert judge(Rule(), base, new) == verdict


@pytest.mark.parametrize("direction,ratio,verdict", [
    ("higher_is_better", 0.85, "slower"), ("higher_is_better", 0.95, "ok"), ("higher_is_better", 1.2, "faster"),
    ("lower_is_better", 1.15, "slower"), ("lower_is_better", 1.05, "ok"), ("lower_is_better", 0.8, "faster"),
    ("either", 1.2, "changed"), ("either", 0.8, "changed"), ("either", 1.05, "ok")])
def test_ratio_rule_has_a_threshold_and_a_direction(direction, ratio, verdict):
    assert judge(Rule(kind="ratio", max_change=0.1, direction=direction), 2.0, 2.0 * ratio) == verdict


def test_info_rule_never_fails_and_bad_rules_are_refused():
    assert judge(Rule(kind="info"), 1.0, 5.0) == "info"
    with pytest.raises(ValueError, match="direction"):
        Rule(kind="ratio", direction="up")


def entry(engine="unified", executor="sim", **metrics) -> RunEntry:
    return RunEntry(RunKey(engine, "sharegpt", 10.0, "llama3_8b", "a100_80g", executor), metrics, "x")


def test_missing_runs_and_metrics_fail_new_ones_are_reported():
    base = [entry("unified", a=1.0, b=2.0), entry("disagg", a=1.0)]
    new = [entry("unified", a=1.0, c=3.0), entry("semipd", a=1.0)]
    verdicts = {(r.run.split()[0], r.metric): r.verdict for r in compare(new, base)}
    assert verdicts == {("sim:unified", "a"): "ok", ("sim:unified", "b"): "missing",
                        ("sim:unified", "c"): "new", ("sim:disagg", "(whole run)"): "missing",
                        ("sim:semipd", "(whole run)"): "new"}


def write_baseline(path: Path, entries, rules) -> None:
    path.write_text(json.dumps({"format": FORMAT, "rules": rules, "runs": [
        {"key": dataclasses.asdict(e.key), "metrics": e.metrics} for e in entries]}))


def write_summary(run_dir: Path, key: RunKey, **metrics) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps({**dataclasses.asdict(key), **metrics}))


@pytest.mark.parametrize("throughput_ratio,code,verdict", [(0.85, 1, "slower"), (0.95, 0, "ok"), (1.3, 0, "faster")])
def test_real_engine_runs_are_gated_by_per_metric_ratio_rules(tmp_path, capsys, throughput_ratio, code, verdict):
    base = entry("unified", executor="torch", throughput_ratio=1.0, step_time_ratio=1.0, ttft_s=0.5)
    write_baseline(tmp_path / "torch.json", [base], [
        {"metrics": "throughput_ratio", "kind": "ratio", "direction": "higher_is_better", "max_change": 0.1},
        {"metrics": "step_time_ratio", "kind": "ratio", "direction": "lower_is_better", "max_change": 0.1},
        {"metrics": "*", "kind": "info"}])
    # Absolute wall-clock latencies (machine-dependent) are info only: 3x slower TTFT passes.
    write_summary(tmp_path / "new" / "run", base.key, throughput_ratio=throughput_ratio,
                  step_time_ratio=1.0, ttft_s=1.5)
    assert main([str(tmp_path / "new"), str(tmp_path / "torch.json")]) == code
    out = capsys.readouterr().out
    assert verdict == "ok" or ("throughput_ratio" in out and verdict in out)


def test_nothing_to_compare_is_an_error_not_a_pass(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), str(ROOT / "results" / "baselines")]) == 2
    assert "no runs" in capsys.readouterr().err


@pytest.fixture(scope="module")
def small_baseline(tmp_path_factory) -> Path:
    """Baselines of the SMALL matrix, made as `make baseline` makes them."""
    root = tmp_path_factory.mktemp("regress")
    rm.run_matrix(SMALL, root / "runs", say=lambda _: None)
    assert main([str(root / "runs"), str(root / "baselines"), "--accept"]) == 0
    return root / "baselines"


def test_unchanged_code_passes(small_baseline, tmp_path, capsys):
    rm.run_matrix(SMALL, tmp_path / "new", say=lambda _: None)
    capsys.readouterr()
    assert main([str(tmp_path / "new"), str(small_baseline)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("PASS") and not any(line.endswith(("changed", "missing")) for line in lines)


def plant_slowdown(monkeypatch, factor=1.3) -> None:
    step_time_s = RooflineCostModel.step_time_s
    monkeypatch.setattr(RooflineCostModel, "step_time_s", lambda self, plan, share: factor * step_time_s(self, plan, share))


def test_planted_slowdown_fails_with_a_table_naming_the_metric(small_baseline, tmp_path, monkeypatch, capsys):
    plant_slowdown(monkeypatch)
    rm.run_matrix(SMALL, tmp_path / "new", say=lambda _: None)
    capsys.readouterr()
    assert main([str(tmp_path / "new"), str(small_baseline)]) == 1
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("run") and "ratio" in line)
    assert header.split() == ["run", "metric", "base", "new", "ratio", "verdict"]
    rows = [line for line in out.splitlines() if line.startswith("sim:") and "tpot_s.p90" in line]
    assert len(rows) == 2 and all(line.rstrip().endswith("changed") for line in rows)
    assert "sim:unified sharegpt r10" in out and "sim:semipd longbench r1" in out
    assert "FAIL" in out and "make baseline" in out


def test_accept_rewrites_the_baselines_and_keeps_their_rules(small_baseline, tmp_path, monkeypatch, capsys):
    base = tmp_path / "baselines"
    base.mkdir()
    doc = json.loads((small_baseline / "sim.json").read_text())
    doc["rules"] = [{"metrics": "kv_pools.*", "kind": "info"}, *doc["rules"]]
    (base / "sim.json").write_text(json.dumps(doc))
    plant_slowdown(monkeypatch)
    rm.run_matrix(SMALL, tmp_path / "new", say=lambda _: None)
    assert main([str(tmp_path / "new"), str(base)]) == 1
    assert main([str(tmp_path / "new"), str(base), "--accept"]) == 0
    rewritten = json.loads((base / "sim.json").read_text())
    assert rewritten["rules"] == doc["rules"] and rewritten["git_commit"] and rewritten["created"]
    fresh = {e.key: e.metrics for e in load_entries(tmp_path / "new")}
    assert {RunKey(**r["key"]): r["metrics"] for r in rewritten["runs"]} == fresh
    assert [r["metrics"]["tpot_s.p90"] for r in rewritten["runs"]] != [r["metrics"]["tpot_s.p90"] for r in doc["runs"]]
    capsys.readouterr()
    assert main([str(tmp_path / "new"), str(base)]) == 0


def test_report_caps_rows_per_run_headline_metrics_first():
    base = entry(**{f"m{i}": 1.0 for i in range(20)}, request_throughput=1.0)
    new = entry(**{f"m{i}": 2.0 for i in range(20)}, request_throughput=0.5)
    text = report(compare([new], [base]), max_per_run=5)
    lines = text.splitlines()
    first_row = next(i for i, line in enumerate(lines) if "request_throughput" in line)
    assert "m0" not in "".join(lines[:first_row]) and "... 16 more (--all)" in text


def test_committed_baselines_cover_exactly_the_matrix():
    """A matrix edited without `make baseline` fails here, before CI's regression step."""
    entries = load_entries(ROOT / "results" / "baselines" / "sim.json")
    expected = {RunKey(e.engine, e.workload, e.rate_per_gpu, "llama3_8b", "a100_80g", "sim") for e in rm.SIM_MATRIX}
    assert {e.key for e in entries} == expected
    assert all(e.metrics["num_requests"] == 500 for e in entries)
