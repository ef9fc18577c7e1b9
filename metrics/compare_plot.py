"""Comparison figure across run directories (e.g. a multirun over engines and rates):
P90 TTFT, P90 TPOT and SLO attainment against per-GPU rate, one line per engine.
Made from the run directories only (their summary.json files).

    python -m metrics.compare_plot results/multirun/<stamp> [--out compare.png]
"""
from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from metrics.results import atomic_write_bytes


def collect_summaries(root: str | Path) -> pd.DataFrame:
    """One row per run directory below `root` that has a summary.json."""
    rows = []
    for path in sorted(Path(root).rglob("summary.json")):
        s = json.loads(path.read_text())
        rows.append({
            "run": str(path.parent), "engine": s.get("engine_label") or s.get("engine"),
            "model": s.get("model"), "workload": s.get("workload"),
            "rate_per_gpu": s.get("rate_per_gpu"),
            "p90_ttft_s": (s.get("ttft_s") or {}).get("p90"), "p90_tpot_s": (s.get("tpot_s") or {}).get("p90"),
            "p99_ttft_s": (s.get("ttft_s") or {}).get("p99"), "p99_tpot_s": (s.get("tpot_s") or {}).get("p99"),
            "slo_attainment": s.get("slo_attainment"),
        })
    return pd.DataFrame(rows)


def plot_comparison(root: str | Path, out_png: str | Path | None = None) -> Path | None:
    """Draw the figure into `out_png` (default `<root>/compare.png`); None if no runs."""
    df = collect_summaries(root)
    if df.empty:
        return None
    out = Path(out_png) if out_png else Path(root) / "compare.png"
    df = df.sort_values(["engine", "rate_per_gpu"])
    fig = Figure(figsize=(15, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    panels = [("p90_ttft_s", "P90 TTFT (s)"), ("p90_tpot_s", "P90 TPOT (s)"), ("slo_attainment", "SLO attainment")]
    with sns.axes_style("whitegrid"):
        for ax, (col, label) in zip(axes, panels):
            sns.lineplot(df, x="rate_per_gpu", y=col, hue="engine", style="engine", markers=True,
                         dashes=False, ax=ax, legend=ax is axes[-1])
            ax.set_xlabel("rate per GPU (req/s)")
            ax.set_ylabel(label)
        axes[2].set_ylim(-0.02, 1.02)
        axes[2].axhline(0.9, color="grey", linestyle=":", linewidth=1)
    models = ", ".join(sorted({str(m) for m in df["model"]}))
    workloads = ", ".join(sorted({str(w) for w in df["workload"]}))
    fig.suptitle(f"{models} / {workloads}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(out, buf.getvalue())
    df.to_csv(out.with_suffix(".csv"), index=False)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", help="a directory holding run directories (searched recursively)")
    ap.add_argument("--out", default=None, help="PNG path (default: ROOT/compare.png)")
    args = ap.parse_args(argv)
    out = plot_comparison(args.root, args.out)
    if out is None:
        raise SystemExit(f"error: no summary.json below {args.root}")
    print(out)


if __name__ == "__main__":
    main()
