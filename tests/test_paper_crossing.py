"""The paper report's crossing range (paper/crossing.py), host-overhead diagnostic
(paper/overhead.py, executor.step_overhead_s) and their report parts."""
import dataclasses
import logging
import re

import pandas as pd
import pytest

from engines.errors import ConfigError
from harness.config import ExecutorConfig
from paper import crossing, overhead
from paper import crossing_report as CR
from paper.suite import EXPERIMENTS
from harness.sweep import Launcher


def step_curve(capacity: float):
    return lambda rate: 1.0 if rate <= capacity else 0.2


def test_crossing_range_brackets_every_system():
    points = {"a": {10: 1.0, 20: 1.0, 40: 0.1}, "b": {10: 1.0, 20: 0.5, 40: 0.0}}
    assert crossing.crossing_range(points) == (10, 40)  # b stops at 10+, a misses first at 40
    assert crossing.crossing_range({"a": {10: 1.0, 20: 1.0}}) is None  # nobody misses
    assert crossing.crossing_range({"a": {10: 0.1, 20: 0.0}}) is None  # nobody meets


def fake_suite(monkeypatch, capacities: dict[str, float], rates_run: dict[str, dict[float, float]]):
    """find_crossing against systems whose attainment steps down at `capacities`; records
    each multirun's rates."""
    calls = []

    def multirun(args, what):
        rates = [float(r) for r in next(a for a in args if a.startswith("workload.rate=")).split("=")[1].split(",")]
        assert any(a.endswith("tag=figX_ours") for a in args)
        calls.append(rates)
        for label, cap in capacities.items():
            for r in rates:
                rates_run[label][round(r, 9)] = step_curve(cap)(r)

    monkeypatch.setattr(crossing, "multirun", multirun)
    monkeypatch.setattr(crossing, "curves", lambda out, tags: {k: dict(v) for k, v in rates_run.items()})
    monkeypatch.setattr(crossing, "paper_rates", lambda path: [10.0, 12.0, 14.0, 16.0])
    return calls


def test_probes_up_then_sweeps_the_bracket_twice(monkeypatch, tmp_path):
    caps = {"slow": 30.0, "fast": 50.0}
    seen = {k: {r: 1.0 for r in (10.0, 12.0, 14.0, 16.0)} for k in caps}
    calls = fake_suite(monkeypatch, caps, seen)
    c = crossing.find_crossing("figX", EXPERIMENTS, tmp_path, Launcher("basic"), [])
    assert c.needed and c.probes == [32.0, 64.0]  # both still met at 16, slow missed at 32, fast at 64
    assert calls[:2] == [[32.0], [64.0]]
    # a grid over [16 (slow's last pass), 64 (fast's first miss)]: 16, 32 and 64 already ran;
    # fast meets it at 48, which leaves the bracket as it was: no second grid
    assert calls[2:] == [[48.0]]
    assert (c.lo, c.hi, c.grid) == (16.0, 64.0, [16.0, 32.0, 48.0, 64.0])


def test_probes_down_when_our_capacity_is_lower(monkeypatch, tmp_path):
    caps = {"a": 3.0, "b": 6.0}
    seen = {k: {r: step_curve(cap)(r) for r in (10.0, 12.0, 14.0, 16.0)} for k, cap in caps.items()}
    calls = fake_suite(monkeypatch, caps, seen)
    c = crossing.find_crossing("figX", EXPERIMENTS, tmp_path, Launcher("basic"), [])
    assert c.probes == [5.0, 2.5]  # b meets it at 5, both at 2.5
    # grid over [2.5, 10]: b misses at 7.5, so a second grid over the narrower [2.5, 7.5]
    assert calls[2:] == [[7.5], [4.167, 5.833]]
    assert (c.lo, c.hi) == (2.5, 7.5)


def test_stops_probing_down_when_halving_helps_no_system_and_runs_no_grid(monkeypatch, tmp_path):
    # a misses at every rate (not from load: 0.3 everywhere); b meets nothing either
    seen = {"a": {r: 0.3 for r in (10.0, 12.0, 14.0, 16.0)}, "b": {r: 0.0 for r in (10.0, 12.0, 14.0, 16.0)}}
    calls = fake_suite(monkeypatch, {"a": 0.0, "b": 0.0}, seen)
    monkeypatch.setattr(crossing, "curves", lambda out, tags: {"a": {r: 0.3 for r in seen["a"]},
                                                                "b": {r: 0.0 for r in seen["b"]}})
    c = crossing.find_crossing("figX", EXPERIMENTS, tmp_path, Launcher("basic"), [])
    assert calls == [[5.0]] and c.probes == [5.0]  # 5 helped nobody: no 2.5, no grid
    assert (c.lo, c.hi, c.grid) == (5.0, 16.0, [])


def test_keeps_probing_down_while_halving_helps_some_system(monkeypatch, tmp_path):
    seen = {"a": {r: 0.5 for r in (10.0, 12.0, 14.0, 16.0)}}
    calls = fake_suite(monkeypatch, {"a": 0.0}, seen)
    better = {5.0: 0.6, 2.5: 0.95}
    monkeypatch.setattr(crossing, "curves", lambda out, tags: {"a": {**seen["a"], **{
        r: better[r] for r in better if [r] in calls}}})
    c = crossing.find_crossing("figX", EXPERIMENTS, tmp_path, Launcher("basic"), [])
    assert c.probes == [5.0, 2.5] and c.lo == 2.5  # 5 helped (0.5 -> 0.6), 2.5 meets it


def test_no_runs_when_every_system_crosses_inside_the_papers_range(monkeypatch, tmp_path):
    caps = {"a": 11.0, "b": 13.0}
    seen = {k: {r: step_curve(cap)(r) for r in (10.0, 12.0, 14.0, 16.0)} for k, cap in caps.items()}
    calls = fake_suite(monkeypatch, caps, seen)
    c = crossing.find_crossing("figX", EXPERIMENTS, tmp_path, Launcher("basic"), [])
    assert not c.needed and calls == []


def test_step_overhead_option_is_checked_and_slows_the_simulation():
    with pytest.raises(ConfigError, match=r"^executor\.step_overhead_s must be "):
        ExecutorConfig(step_overhead_s=-0.001).validate()
    with pytest.raises(ConfigError, match=r"^executor\.step_overhead_s must be null unless executor=sim"):
        ExecutorConfig(step_overhead_s=0.002, cost_model="profiled", profile="p.csv").validate()
    ExecutorConfig(step_overhead_s=0.0).validate()


def test_overhead_diagnostic_finds_a_monotone_crossing(tmp_path):
    logging.getLogger("workloads").setLevel(logging.ERROR)
    f = overhead.diagnose("fig15", EXPERIMENTS, tmp_path, ["workload.num_requests=120"], bisections=1)
    assert f.bound == "crossing" and f.system == "semi-PD" and f.rate == 13.25
    lo, hi = f.bracket_s
    atts = dict(f.points)
    assert atts[lo] >= 0.9 > atts[hi] and lo < f.overhead_s < hi
    hs = sorted(atts)
    assert all(atts[a] >= atts[b] for a, b in zip(hs, hs[1:]))  # more host time never helps
    assert atts[0.001] == 1.0  # our default meets the SLO at the paper's middle rate
    # its runs carry their own tag: they are not points of the figure's panel
    from paper.collect import load_runs
    assert set(load_runs(tmp_path)["tag"]) == {"fig15_llama3_8b_sharegpt_tight_overhead"}
    text = CR.overhead_sentence(dataclasses.asdict(f))
    assert f"about {f.overhead_s * 1e3:.3g} ms" in text


def test_capacity_table_is_computed_from_the_runs():
    rows = []
    for tag, rates in (("figX", (10, 12)), ("figX_ours", (20, 40))):
        for rate in rates:
            for label, cap in (("A", 30.0), ("B", 15.0)):
                rows.append({"tag": tag, "label": label, "rate": float(rate), "attainment": step_curve(cap)(rate)})
    runs = pd.DataFrame(rows)
    crossings = {"figX": {"paper_rates": [10.0, 12.0], "lo": 12.0, "hi": 40.0, "probes": [24.0], "needed": True}}
    inside = CR.ours_runs(runs, crossings)
    assert set(inside["tag"]) == {"figX_ours"} and inside["rate"].min() == 12.0
    table = CR.capacity_rows(runs, crossings, [("figX", "Panel X")])
    row = next(line for line in table.splitlines() if line.startswith("| Panel X"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # A meets at 20, misses at 40: 20 + (1 - 0.9) / (1 - 0.2) * 20 = 22.5; B: 12 + 0.125 * 8 = 13
    assert cells[:6] == ["Panel X", "10-12", "12-40", "24", "22.5", "13"]
    assert float(cells[6]) == pytest.approx(((22.5 + 13) / 2) / 11, abs=0.005)
    assert re.search(r"capacity vs paper", table)


def test_capacity_ratio_is_a_bound_or_absent_when_goodputs_are():
    assert CR._capacity_ratio({"a": (5.0, "below"), "b": (5.0, "below"), "c": (20.0, "crossing")}, 10.0) \
        == "n/a: SLO missed at every rate run"
    assert CR._capacity_ratio({"a": (40.0, "at_least"), "b": (40.0, "at_least"), "c": (20.0, "crossing")},
                              10.0) == ">= 4.00"
    assert CR._capacity_ratio({"a": (15.0, "crossing"), "b": (30.0, "crossing"), "c": (20.0, "crossing")},
                              10.0) == "2.00"
