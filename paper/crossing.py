"""Every rate-sweep figure also at the rates where OUR systems cross their SLOs.

At the paper's rate ranges our simulated systems may never leave 100 % attainment (our
simulated capacity is higher than the paper's measured one), and a figure drawn only
there is a set of flat lines. After an experiment's paper-range runs, `find_crossing`:

1. reads each system's SLO attainment at the paper's rates; if every system already
   falls below 90 % inside the paper's range, nothing more runs;
2. otherwise probes: every system at 2x, 4x, ... the paper's top rate while some system
   still meets 90 % at the highest rate run (at most MAX_UP doublings), and at 1/2, 1/4,
   ... the bottom rate while some system misses it at the lowest (at most MAX_DOWN);
3. takes the range [lo, hi]: lo = the highest rate at and below which every system meets
   90 %, hi = the highest of the systems' first misses; runs the paper's number of rates
   evenly over [lo, hi]; then once more over the narrower [lo, hi] those runs give.

Two cases have nothing to find, and stop early: halving the rate raised no system's
attainment (its misses do not come from load - e.g. Llama-3.1-405B, whose unloaded TPOT is
above its SLO's: more halvings would only simulate ever longer runs), and no system both
meets and then misses the SLO over the rates run (no bracket: no grid; the report shows
the probes).

The runs go to <out>/<experiment>_ours/ (tag <experiment>_ours) under the suite's launcher,
and <out>/crossing.json records the range and the probes for the report.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from harness.sweep import NO_COMPARE, Launcher, multirun
from metrics.goodput import goodput_from_curve
from metrics.results import atomic_write_text
from paper.collect import load_runs

TARGET = 0.9       # the paper's goodput threshold (arXiv 2504.19867, evaluation metrics)
MAX_UP = 5         # up to 32x the paper's top rate
MAX_DOWN = 3       # down to 1/8 of its bottom rate
OURS = "_ours"     # tag suffix of the runs at our crossing range
CROSSING_FIGURES = ("fig12", "fig14", "fig15", "fig16")  # the attainment / latency-vs-rate figures


@dataclass
class Crossing:
    experiment: str
    paper_rates: list[float]
    lo: float
    hi: float
    probes: list[float]
    grid: list[float]
    needed: bool  # False: every system crossed inside the paper's range


def paper_rates(experiment_yaml: Path) -> list[float]:
    params = OmegaConf.load(experiment_yaml).hydra.sweeper.params
    return sorted(float(r) for r in str(params["workload.rate"]).split(","))


def curves(root: Path, tags: list[str]) -> dict[str, dict[float, float]]:
    """{system label: {rate: attainment}} over the runs of these tags (root/<tag>/)."""
    out: dict[str, dict[float, float]] = {}
    for tag in tags:
        runs = load_runs(root / tag)
        for row in runs.itertuples():
            out.setdefault(row.label, {})[round(float(row.rate), 9)] = float(row.attainment or 0.0)
    return out


def crossing_range(points: dict[str, dict[float, float]], target: float = TARGET) -> tuple[float, float] | None:
    """(lo, hi): every system meets `target` at and below lo; hi is the highest of the
    systems' first misses. None when no system both meets and misses it at the rates run."""
    lows, highs = [], []
    for curve in points.values():
        rates = sorted(curve)
        ok = [r for r in rates if curve[r] >= target]
        bad = [r for r in rates if curve[r] < target]
        if bad:
            first_bad = bad[0]
            highs.append(first_bad)
            passing = [r for r in ok if r < first_bad]
            if passing:
                lows.append(passing[-1])
    if not lows or not highs:
        return None
    lo, hi = min(lows), max(highs)
    return (lo, hi) if lo < hi else None


def _crossed_inside(points: dict[str, dict[float, float]]) -> bool:
    return bool(points) and all(
        goodput_from_curve(list(c), list(c.values()), TARGET).bound == "crossing" for c in points.values())


def _fmt(rate: float) -> str:
    return f"{rate:.4g}"


def find_crossing(experiment: str, experiments_dir: Path, out: Path, launcher: Launcher,
                  extra: list[str]) -> Crossing:
    """Probe and sweep `experiment` (its paper-range runs already under out/<experiment>/)."""
    rates = paper_rates(experiments_dir / f"{experiment}.yaml")
    tags = [experiment, experiment + OURS]
    points = curves(out, tags)
    if _crossed_inside(points):
        return Crossing(experiment, rates, rates[0], rates[-1], [], [], needed=False)
    base = [f"experiment={experiment}", f"results_dir={out}", f"tag={experiment}{OURS}", NO_COMPARE,
            *launcher.hydra_overrides(), *extra]

    def run(new: list[float]) -> None:
        multirun(base + [f"workload.rate={','.join(_fmt(r) for r in new)}"], f"{experiment} at {new} req/s")

    probes: list[float] = []
    for direction, limit in ((2.0, MAX_UP), (0.5, MAX_DOWN)):
        before: dict[str, float] = {}
        for _ in range(limit):
            points = curves(out, tags)
            edge = max if direction > 1 else min
            at_edge = {label: c[edge(c)] for label, c in points.items() if c}
            if direction > 1 and not any(a >= TARGET for a in at_edge.values()):
                break
            if direction < 1 and all(a >= TARGET for a in at_edge.values()):
                break
            if direction < 1 and before and all(a <= before.get(label, 1.0) for label, a in at_edge.items()):
                break  # the last halving helped no system
            before = at_edge
            rate = float(_fmt(edge(edge(c) for c in points.values()) * direction))
            run([rate])
            probes.append(rate)
    lo = hi = 0.0
    grid: list[float] = []
    for _ in range(2):  # a grid over the probes' bracket, then one over the bracket it leaves
        points = curves(out, tags)
        bracket = crossing_range(points)
        if bracket is None:  # no system both meets and misses the SLO: nothing to locate; show what ran
            every = sorted({r for c in points.values() for r in c})
            lo, hi = every[0], every[-1]
            break
        if bracket == (lo, hi):
            break
        lo, hi = bracket
        done = {r for c in points.values() for r in c}
        grid = [float(_fmt(r)) for r in np.linspace(lo, hi, len(rates))]
        new = [r for r in grid if round(r, 9) not in done]
        if new:
            run(new)
    return Crossing(experiment, rates, lo, hi, probes, grid, needed=True)


def write(crossings: list[Crossing], out: Path) -> None:
    data = {c.experiment: asdict(c) for c in crossings}
    atomic_write_text(out / "crossing.json", json.dumps(data, indent=2))


def read(out: Path) -> dict[str, dict]:
    path = out / "crossing.json"
    return json.loads(path.read_text()) if path.exists() else {}
