"""One function per paper figure: select the figure's runs, draw it in the paper's layout
(PNG) and return the plotted series (written next to it as CSV, which the tests and the
report read)."""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from metrics.results import atomic_write_bytes
from paper.collect import kv_rows

# (tag, column title) of the rate-sweep panels, in the paper's order.
FIG12_PANELS = [("fig12_llama3_8b_sharegpt", "Llama3-8B ShareGPT"), ("fig12_llama3_8b_longbench", "Llama3-8B LongBench"),
                ("fig12_llama3_70b_sharegpt", "Llama3-70B ShareGPT"), ("fig12_llama3_70b_longbench", "Llama3-70B LongBench"),
                ("fig12_llama31_405b_sharegpt", "Llama3.1-405B ShareGPT"),
                ("fig12_llama31_405b_longbench", "Llama3.1-405B LongBench")]
FIG13_PANELS = FIG12_PANELS[0:1] + FIG12_PANELS[2:3]
FIG14_PANELS = [("fig14_deepseek_v2_lite_sharegpt", "DeepSeek-V2-Lite ShareGPT"),
                ("fig14_deepseek_v3_math500", "DeepSeek-V3 MATH-500")]
FIG15_PANELS = [(f"fig15_llama3_{m}_{d}_{s}", f"Llama3-{m.upper()} {dn} ({s})")
                for s in ("tight", "loose") for m in ("8b", "70b")
                for d, dn in (("sharegpt", "ShareGPT"), ("longbench", "LongBench"))]
FIG16_PANELS = [("fig16_cluster", "DeepSeek-V2-Lite, 8 x A800")]

METRIC_LABELS = {"p90_ttft_s": "P90 TTFT (s)", "p90_tpot_s": "P90 TPOT (s)", "p99_ttft_s": "P99 TTFT (s)",
                 "p99_tpot_s": "P99 TPOT (s)", "attainment": "SLO attainment", "mean_e2e_s": "mean E2E (s)"}


def _save(fig: Figure, out_png: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(out_png, buf.getvalue())


def _series(runs: pd.DataFrame, panels: list[tuple[str, str]], metrics: list[str]) -> pd.DataFrame:
    sel = runs[runs["tag"].isin([t for t, _ in panels])].copy()
    titles = dict(panels)
    sel["panel"] = sel["tag"].map(titles)
    cols = ["panel", "tag", "label", "rate", *metrics]
    return sel[cols].sort_values(["tag", "label", "rate"]).reset_index(drop=True)


def rate_grid(runs: pd.DataFrame, panels: list[tuple[str, str]], metrics: list[str], out_png: Path,
              title: str, columns: int | None = None) -> pd.DataFrame:
    """Rows = metrics, columns = panels, x = rate per GPU, one line per system. With one
    metric and `columns`, the panels wrap into rows of that many, in order (Fig. 15: the
    tight SLO's four panels above the loose one's, as in the paper)."""
    data = _series(runs, panels, metrics)
    present = [(t, n) for t, n in panels if (data["tag"] == t).any()]
    if not present:
        return data
    wrap = columns is not None and len(metrics) == 1
    ncols = min(columns, len(present)) if wrap else len(present)
    nrows = -(-len(present) // ncols) if wrap else len(metrics)
    fig = Figure(figsize=(3.6 * ncols, 2.8 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    with sns.axes_style("whitegrid"):
        axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, (tag, name) in enumerate(present):
        panel = data[data["tag"] == tag]
        for i, metric in enumerate(metrics):
            row, col = divmod(k, ncols) if wrap else (i, k)
            ax = axes[row, col]
            sns.lineplot(panel, x="rate", y=metric, hue="label", style="label", markers=True, dashes=False,
                         ax=ax, legend=(row == 0 and col == ncols - 1))
            ax.set_xlabel("rate per GPU (req/s)" if row == nrows - 1 else "")
            ax.set_ylabel(METRIC_LABELS.get(metric, metric) if col == 0 else "")
            if wrap or i == 0:
                ax.set_title(name, fontsize=10)
            if metric == "attainment":
                ax.set_ylim(-0.02, 1.02)
                ax.axhline(0.9, color="grey", linestyle=":", linewidth=1)
            elif "ttft" in metric or "tpot" in metric:
                ax.set_yscale("log")
    for ax in axes.flat[len(present) if wrap else axes.size:]:
        ax.set_visible(False)  # a short last row
    fig.suptitle(title)
    _save(fig, out_png)
    return data


def fig3(runs: pd.DataFrame, out_png: Path) -> pd.DataFrame:
    """Peak and time-averaged KV-pool use of the prefill vs the decode instance (1P1D)."""
    kv = kv_rows(runs[runs["tag"] == "fig3_kv_usage"])
    if kv.empty:
        return kv
    long = kv.melt(id_vars=["label", "rate", "pool", "role"], value_vars=["peak_used", "mean_used"],
                   var_name="stat", value_name="used_fraction")
    long["pool role"] = long["label"] + " " + long["role"]
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    with sns.axes_style("whitegrid"):
        axes = fig.subplots(1, 2)
    for ax, stat in zip(axes, ("peak_used", "mean_used")):
        sns.barplot(long[long["stat"] == stat], x="rate", y="used_fraction", hue="pool role", ax=ax)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("rate per GPU (req/s)")
        ax.set_ylabel(("peak" if stat == "peak_used" else "time-averaged") + " KV pool use")
    fig.suptitle("Fig. 3: KV storage use, prefill vs decode instance (Llama3-8B, LongBench)")
    _save(fig, out_png)
    return kv.sort_values(["label", "rate", "pool"]).reset_index(drop=True)


def fig4(runs: pd.DataFrame, out_png: Path) -> pd.DataFrame:
    sel = runs[runs["tag"] == "fig4_decode_kv_pressure"].copy()
    if sel.empty:
        return sel
    kv = kv_rows(sel)
    dec = kv[kv["role"].isin(["decode", "shared"])].groupby(["label", "rate"], as_index=False)["peak_used"].max()
    data = sel[["label", "rate", "p90_tpot_s", "p99_tpot_s", "num_preemptions"]].merge(dec, on=["label", "rate"])
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    with sns.axes_style("whitegrid"):
        axes = fig.subplots(1, 3)
    for ax, col, lab in zip(axes, ("p90_tpot_s", "peak_used", "num_preemptions"),
                            ("P90 TPOT (s)", "decode-side KV pool peak use", "preemptions")):
        sns.lineplot(data, x="rate", y=col, hue="label", style="label", markers=True, dashes=False, ax=ax,
                     legend=ax is axes[0])
        ax.set_xlabel("rate per GPU (req/s)")
        ax.set_ylabel(lab)
    fig.suptitle("Fig. 4: TPOT when the decode side runs out of KV (3P1D vs semi-PD, Llama3-8B)")
    _save(fig, out_png)
    return data.sort_values(["label", "rate"]).reset_index(drop=True)


def fig9(runs: pd.DataFrame, out_png: Path) -> pd.DataFrame:
    sel = runs[runs["tag"] == "fig9_pd_ratio"].copy()
    if sel.empty:
        return sel
    data = sel[["shape", "num_gpus", "rate", "p90_ttft_s", "p90_tpot_s", "attainment"]].sort_values("shape")
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    with sns.axes_style("whitegrid"):
        axes = fig.subplots(1, 3)
    for ax, col in zip(axes, ("p90_ttft_s", "p90_tpot_s", "attainment")):
        # positions + tick labels: a categorical axis would try to parse "1P1D" as a date
        ax.bar(range(len(data)), data[col], color="tab:blue")
        ax.set_xticks(range(len(data)), data["shape"])
        ax.set_ylabel(METRIC_LABELS[col])
        ax.set_xlabel("prefill:decode instances")
        if col != "attainment":
            ax.set_yscale("log")
    fig.suptitle("Fig. 9: DistServe P:D ratios (Llama3-8B, ShareGPT, 13 req/s per GPU)")
    _save(fig, out_png)
    return data.reset_index(drop=True)
