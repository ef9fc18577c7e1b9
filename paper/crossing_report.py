"""REPORT.md's "where our systems cross" parts: the runs inside each crossing range, the
per-panel capacity against the paper's and the host-overhead diagnostic's sentence."""
from __future__ import annotations

import statistics

import pandas as pd

from metrics.goodput import goodput_from_curve
from paper.crossing import OURS, TARGET
from paper.tables import md_rows

_EPS = 1e-9


def ours_runs(runs: pd.DataFrame, crossings: dict[str, dict]) -> pd.DataFrame:
    """Each swept experiment's runs inside its crossing range [lo, hi] - its paper-range
    runs and its <experiment>_ours runs together - tagged <experiment>_ours."""
    parts = []
    for name, c in crossings.items():
        sel = runs[runs["tag"].isin([name, name + OURS])
                   & runs["rate"].between(c["lo"] - _EPS, c["hi"] + _EPS)].copy()
        sel["tag"] = name + OURS
        parts.append(sel)
    return pd.concat(parts, ignore_index=True) if parts else runs.iloc[0:0]


def capacity_rows(runs: pd.DataFrame, crossings: dict[str, dict], panels: list[tuple[str, str]]) -> str:
    """Per panel: the paper's rates, our crossing range, each system's goodput over every
    rate run (paper's range + ours) and the median of them over the paper range's middle."""
    rows, systems = [], sorted({lab for t, _ in panels for lab in runs.loc[runs["tag"] == t, "label"]})
    for tag, title in panels:
        c = crossings.get(tag)
        sel = runs[runs["tag"].isin([tag, tag + OURS])]
        if c is None or sel.empty:
            continue
        mid = 0.5 * (c["paper_rates"][0] + c["paper_rates"][-1])
        goodputs = {}
        for label, g in sel.groupby("label"):
            gp = goodput_from_curve(g["rate"], g["attainment"].fillna(0.0), TARGET)
            goodputs[label] = (gp.rate, gp.bound)
        cells = [_goodput_cell(*goodputs[s]) if s in goodputs else "" for s in systems]
        ratio = _capacity_ratio(goodputs, mid)
        paper = f"{c['paper_rates'][0]:g}-{c['paper_rates'][-1]:g}"
        ours = f"{c['lo']:.4g}-{c['hi']:.4g}" if c["needed"] else "inside the paper's"
        probes = ", ".join(f"{p:g}" for p in c["probes"]) or "-"
        rows.append([title, paper, ours, probes, *cells, ratio])
    if not rows:
        return ""
    head = ["panel", "paper's rates", "our crossing range", "probes", *[f"{s} goodput" for s in systems],
            "capacity vs paper"]
    return md_rows(head, rows)


def _capacity_ratio(goodputs: dict[str, tuple[float, str]], paper_mid: float) -> str:
    """Median goodput / the paper range's middle; with a bound in the median's place, the
    ratio is a bound too, and with half or more systems missing at every rate, none."""
    ordered = sorted(goodputs.values())
    if sum(bound == "below" for _, bound in ordered) * 2 >= len(ordered):
        return "n/a: SLO missed at every rate run"
    rate = statistics.median(r for r, _ in ordered)
    middle = {b for r, b in ordered if r == rate} or {ordered[len(ordered) // 2][1]}
    prefix = ">= " if middle == {"at_least"} else "<= " if middle == {"below"} else ""
    return f"{prefix}{rate / paper_mid:.2f}"


def _goodput_cell(rate: float, bound: str) -> str:
    return {"crossing": f"{rate:.3g}", "at_least": f">= {rate:.3g}", "below": f"< {rate:.3g}"}[bound]


def overhead_sentence(finding: dict | None) -> str:
    if not finding:
        return ""
    head = (f"Host-overhead diagnostic ({finding['experiment']}, {finding['system']}, "
            f"{finding['rate']:g} req/s, the middle of the paper's range): ")
    if finding["bound"] == "above":
        return head + f"still meets 90 % with {finding['points'][-1][0] * 1e3:g} ms of host time per step.\n"
    if finding["bound"] == "below":
        return head + "misses 90 % even with no host time per step: our capacity here is below the paper's.\n"
    lo, hi = finding["bracket_s"]
    return (head + f"attainment falls to 90 % at about {finding['overhead_s'] * 1e3:.3g} ms of host time per "
            f"step (between {lo * 1e3:.3g} and {hi * 1e3:.3g} ms; the simulator charges 1 ms, "
            "sim/cost_model.py). Reported only; no run uses it.\n")
