"""Figures and REPORT.md from the paper suite's run directories.

    python -m paper.report [results/paper]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from metrics.goodput import goodput_from_curve
from metrics.results import atomic_write_text
from paper import crossing, overhead
from paper import crossing_report as CR
from paper import figures as F
from paper import history
from paper.crossing import OURS
from paper.claims import differences, fig3_note, fig4_note
from paper.collect import load_runs
from paper.tables import md_table as _md

SEMIPD_LABEL = "semi-PD"
_P90, _P99 = ["p90_ttft_s", "p90_tpot_s"], ["p99_ttft_s", "p99_tpot_s"]
# figure -> (panels, metrics, title, panels per row): the rate sweeps, drawn at the paper's
# rates and again over the range where our systems cross their SLOs (paper/crossing.py)
RATE_FIGS = {
    "fig12": (F.FIG12_PANELS, _P90, "Fig. 12: P90 latency vs rate", None),
    "fig13": (F.FIG13_PANELS, _P99, "Fig. 13: P99 latency vs rate", None),
    "fig14": (F.FIG14_PANELS, _P90 + _P99, "Fig. 14: DeepSeek vs SGLang", None),
    "fig15": (F.FIG15_PANELS, ["attainment"], "Fig. 15: SLO attainment vs rate (tight SLO above, loose below)", 4),
    "fig16": (F.FIG16_PANELS, _P90 + ["attainment"], "Fig. 16: 8-GPU cluster, 2P6D vs 1P3D4S", None),
}


def build(root: Path) -> dict[str, pd.DataFrame]:
    """Draw every figure whose runs exist; returns {figure: plotted series}."""
    runs = load_runs(root)
    if runs.empty:
        raise SystemExit(f"error: no runs (summary.json) below {root}; run `make paper` first")
    out = {"fig3": F.fig3(runs, root / "fig3.png"), "fig4": F.fig4(runs, root / "fig4.png"),
           "fig9": F.fig9(runs, root / "fig9.png")}
    ours = CR.ours_runs(runs, crossing.read(root))
    for name, (panels, metrics, title, columns) in RATE_FIGS.items():
        out[name] = F.rate_grid(runs, panels, metrics, root / f"{name}.png", title, columns)
        out[name + OURS] = F.rate_grid(ours, [(t + OURS, n) for t, n in panels], metrics,
                                       root / f"{name}{OURS}.png", f"{title}: where our systems cross", columns)
    for name, data in out.items():
        if not data.empty:
            atomic_write_text(root / f"{name}.csv", data.to_csv(index=False, float_format="%.6g"))
    atomic_write_text(root / "REPORT.md", render(runs, out))
    return out


def goodput_table(runs: pd.DataFrame, tag: str) -> pd.DataFrame:
    """Goodput (highest per-GPU rate with attainment >= 90 %) per system of one panel."""
    rows = []
    for label, g in runs[runs["tag"] == tag].groupby("label"):
        gp = goodput_from_curve(g["rate"], g["attainment"].fillna(0.0))
        rows.append({"system": label, "goodput": gp.rate, "bound": gp.bound})
    table = pd.DataFrame(rows)
    if not table.empty and SEMIPD_LABEL in set(table["system"]):
        ours = float(table.loc[table["system"] == SEMIPD_LABEL, "goodput"].iloc[0])
        table["semi-PD / system"] = ours / table["goodput"]
    return table


def _setup(runs: pd.DataFrame, tags: list[str]) -> str:
    sel = runs[runs["tag"].isin(tags)]
    if sel.empty:
        return "_not run_\n"
    lines = []
    for tag, g in sel.groupby("tag", sort=False):
        rates = ", ".join(f"{r:g}" for r in sorted(g["rate"].unique()))
        slo = f"{g['slo_ttft_s'].iloc[0]:g} s / {g['slo_tpot_s'].iloc[0]:g} s"
        lines.append(f"| {tag} | {g['model'].iloc[0]} | {g['hardware'].iloc[0]} | {', '.join(sorted(g['label'].unique()))} "
                     f"| {slo} | {rates} (per {g['rate_unit'].iloc[0]}) | {int(g['num_requests'].max())} "
                     f"| {g['workload_source'].iloc[0]} |")
    head = ("| experiment | model | hardware | systems | SLO TTFT / TPOT | rates | requests | dataset |\n"
            "|---|---|---|---|---|---|---|---|\n")
    return head + "\n".join(lines) + "\n"


def _pivot(data: pd.DataFrame, metric: str) -> pd.DataFrame:
    return data.pivot_table(index=["panel", "rate"], columns="label", values=metric).reset_index()


_FIGS = [
    # fig3 and fig4 notes compare numbers: computed from the series in render()
    ("fig3", "Fig. 3: KV storage use under disaggregation", ["fig3_kv_usage"], ""),
    ("fig4", "Fig. 4: TPOT when the decode side runs out of KV", ["fig4_decode_kv_pressure"], ""),
    ("fig9", "Fig. 9: DistServe prefill:decode ratios", ["fig9_pd_ratio"], ""),
    ("fig12", "Fig. 12: P90 TTFT and TPOT vs rate", [t for t, _ in F.FIG12_PANELS], ""),
    ("fig13", "Fig. 13: P99 TTFT and TPOT vs rate", [t for t, _ in F.FIG13_PANELS],
     "Drawn from the Fig. 12 runs (same experiments)."),
    ("fig14", "Fig. 14: DeepSeek (MLA + MoE) vs an SGLang-like engine", [t for t, _ in F.FIG14_PANELS], ""),
    ("fig15", "Fig. 15: SLO attainment vs rate", [t for t, _ in F.FIG15_PANELS],
     "semi-PD (100,100) is the static ablation of the dynamic controller."),
    ("fig16", "Fig. 16: 8-GPU cluster", ["fig16_cluster"], ""),
]
_METRICS = {"fig12": ["p90_ttft_s", "p90_tpot_s"], "fig13": ["p99_ttft_s", "p99_tpot_s"],
            "fig14": ["p90_ttft_s", "p90_tpot_s"], "fig15": ["attainment"], "fig16": ["p90_ttft_s", "attainment"]}


_NOTES = {"fig3": fig3_note, "fig4": fig4_note}


def render(runs: pd.DataFrame, series: dict[str, pd.DataFrame],
           history_dir: Path = history.HISTORY_DIR) -> str:
    root = root_of(runs)
    parts = [
        "# semi-PD evaluation reproduced with the simulator\n",
        "Generated by `make paper` (`python -m paper.suite`, then `python -m paper.report`). Every "
        "number comes from the discrete-event simulator with the roofline cost model calibrated on "
        "measured A100/H100 operator timings (`benchmarks/calibrate_linear.py`); no constant was "
        "tuned to match the paper's curves. Rates are per GPU for single-GPU instances and per "
        "instance (TP/PP group) for multi-GPU instances (`rate_unit`; see the README). Latencies "
        "in seconds; goodput = highest rate with SLO attainment >= 90 %, interpolated (`at_least`: "
        "every swept rate passed; `below`: none did).\n",
        f"Runs: {len(runs)}; requests per run: {int(runs['num_requests'].min())}-{int(runs['num_requests'].max())}.\n",
        _provenance(root),
    ]
    crossings, findings = crossing.read(root), {f["figure"]: f for f in overhead.read(root)}
    for name, title, tags, note in _FIGS:
        parts.append(f"\n## {title}\n")
        parts.append(f"![{name}]({name}.png)\n\n")
        parts.append(_setup(runs, tags))
        data = series.get(name, pd.DataFrame())
        note = _NOTES[name](data) if name in _NOTES else note
        if note:
            parts.append(f"\n{note}\n")
        if data.empty:
            continue
        for metric in _METRICS.get(name, []):
            parts.append(f"\n{F.METRIC_LABELS[metric]}:\n\n{_md(_pivot(data, metric))}")
        if name in ("fig3", "fig4", "fig9"):
            parts.append("\n" + _md(data))
        if name in ("fig12", "fig14", "fig15", "fig16"):
            for tag in tags:
                table = goodput_table(runs, tag)
                if not table.empty:
                    parts.append(f"\nGoodput, {tag} (req/s per {runs.loc[runs['tag'] == tag, 'rate_unit'].iloc[0]}):\n\n"
                                 f"{_md(table)}")
        if name in RATE_FIGS:
            parts.append(_crossing_part(name, runs, series, crossings, findings.get(name)))
    parts.append(goodput_section(root))
    parts.append(differences(series.get("fig12", pd.DataFrame())))
    parts.append(history.render_section(history_dir))
    return "".join(parts)


_CAPACITY_NOTE = (
    "Our systems' goodput over every rate run for the panel (the paper's and ours). "
    "`capacity vs paper` = the median of those goodputs / the middle of the paper's rate range: "
    "the paper chose each range to show its systems crossing their SLOs, so about 1 means our "
    "simulated capacity matches the paper's measured one and 2 means ours is twice it.\n\n")


def _crossing_part(name: str, runs: pd.DataFrame, series: dict[str, pd.DataFrame], crossings: dict,
                   finding: dict | None) -> str:
    if series.get(name + OURS, pd.DataFrame()).empty:
        return ""
    text = (f"\n### {name}: where our systems cross their SLOs\n\n"
            f"The same panels at the rates where our simulated systems cross 90 % SLO attainment, found "
            f"by probing and sweeping (paper/crossing.py).\n\n![{name}{OURS}]({name}{OURS}.png)\n\n")
    if name == "fig13":  # the Fig. 12 runs: their table is there
        return text
    return text + _CAPACITY_NOTE + CR.capacity_rows(runs, crossings, RATE_FIGS[name][0]) + "\n" + \
        CR.overhead_sentence(finding)


def _provenance(root: Path) -> str:
    path = root / "suite.json"
    if not path.exists():
        return ""
    p = json.loads(path.read_text())
    return (f"Produced at commit `{p['commit']}` by `{p['command']}` ({p['scale']} scale, {p['launcher']} "
            f"launcher, {p['seconds']:.0f} s).\n")


def root_of(runs: pd.DataFrame) -> Path:
    """The suite's output directory: parent of the experiment directories."""
    return Path(runs["run"].iloc[0]).parent.parent


def goodput_section(root: Path) -> str:
    """Goodput by sweep + bisection and the SLO-scale sweep (paper/goodput_study.py)."""
    path = root / "goodput.json"
    if not path.exists():
        return "\n## Goodput and SLO scale\n\n_not run (python -m paper.goodput_study)_\n"
    res = json.loads(path.read_text())
    st = res["setup"]
    rows = [{"system": k, "goodput (req/s/GPU)": v["rate_per_gpu"], "bound": v["bound"]}
            for k, v in res["goodput"].items()]
    table = pd.DataFrame(rows)
    if SEMIPD_LABEL in set(table["system"]):
        ours = float(table.loc[table["system"] == SEMIPD_LABEL, "goodput (req/s/GPU)"].iloc[0])
        table["semi-PD / system"] = ours / table["goodput (req/s/GPU)"]
    scale = pd.DataFrame([{"system": k, **{f"x{s}": a for s, a in v.items()}} for k, v in res["slo_scale"].items()])
    return (f"\n## Goodput and SLO scale\n\n{st['model']} on {st['hardware']}, {st['workload']}, SLO "
            f"{st['slo']}, {st['num_requests']} requests per run; {st['search']} "
            f"(`python -m harness.goodput rate ...` runs the same search for any setup).\n\n{_md(table)}"
            f"\nSLO attainment at {st['slo_scale_rate']:g} req/s/GPU with both targets multiplied by the "
            f"scale (`python -m harness.goodput slo-scale ...`):\n\n{_md(scale)}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("root", nargs="?", default="results/paper")
    args = ap.parse_args(argv)
    out = build(Path(args.root))
    print(f"wrote {args.root}/REPORT.md and {sum(not d.empty for d in out.values())} figures")


if __name__ == "__main__":
    main()
