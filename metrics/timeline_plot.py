"""Timelines of a run: KV pool use per pool and, for semi-PD, the partition (x, y)."""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from metrics.results import atomic_write_bytes


def plot_timelines(kv_usage: pd.DataFrame, partition: pd.DataFrame | None, out_png: str | Path,
                   title: str = "") -> Path:
    """`kv_usage`: time_s, pool, used_fraction. `partition`: time_s, x_pct, y_pct (or None)."""
    rows = 2 if partition is not None and len(partition) else 1
    fig = Figure(figsize=(10, 3.2 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    with sns.axes_style("whitegrid"):
        axes = fig.subplots(rows, 1, squeeze=False)[:, 0]
    ax = axes[0]
    if len(kv_usage):
        sns.lineplot(kv_usage, x="time_s", y="used_fraction", hue="pool", estimator=None,
                     drawstyle="steps-post", linewidth=0.9, ax=ax)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("KV pool used")
    if rows == 2:
        ax = axes[1]
        end_s = max(float(kv_usage["time_s"].max()) if len(kv_usage) else 0.0, float(partition["time_s"].max()))
        tail = partition.iloc[[-1]].assign(time_s=end_s)  # extend the last partition to the end
        p = pd.concat([partition, tail]).melt(id_vars="time_s", value_vars=["x_pct", "y_pct"],
                                              var_name="share", value_name="pct")
        p["share"] = p["share"].map({"x_pct": "prefill x", "y_pct": "decode y"})
        sns.lineplot(p, x="time_s", y="pct", hue="share", estimator=None, drawstyle="steps-post", ax=ax)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("SM share (%)")
        ax.set_ylim(0, 105)
    fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    out = Path(out_png)
    atomic_write_bytes(out, buf.getvalue())
    return out
