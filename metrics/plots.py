"""One 2x2 figure per run: ECDFs of TTFT, TPOT, E2E (with SLO lines) and ITL.

`requests.csv` has no per-token times, so a run loaded from disk shows batch size over
time (from `steps.csv`) in the fourth panel instead of ITL; pass a `RunFrames` built by
`run_frames(...)` from in-memory requests to get the ITL panel.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from engines.plan import StepRecord
from engines.request import Request
from metrics.definitions import compute_request_metrics
from metrics.results import atomic_write_bytes, load_run_dir, requests_frame, steps_frame

# An ECDF drawn from this many evenly spaced order statistics is visually identical to
# the full one and keeps plotting ~200k ITLs well under a second.
MAX_ECDF_POINTS = 4000
MAX_STEP_POINTS = 20000


@dataclass(frozen=True)
class RunFrames:
    """What a plot needs: the summary, `requests.csv`/`steps.csv` frames, optional ITLs."""

    summary: Mapping[str, Any]
    requests: pd.DataFrame
    steps: pd.DataFrame
    itl_s: np.ndarray | None = None


def run_frames(summary: Mapping[str, Any], requests: Sequence[Request],
               steps: Sequence[StepRecord]) -> RunFrames:
    """RunFrames from in-memory results, including ITLs (not stored in the run dir)."""
    tpot_definition = summary.get("tpot_definition", "vllm")
    return RunFrames(summary=summary, requests=requests_frame(requests, tpot_definition),
                     steps=steps_frame(steps),
                     itl_s=compute_request_metrics(requests, tpot_definition).itl_s)


def plot_run(run: str | os.PathLike | RunFrames, out_png: str | os.PathLike) -> Path:
    """Draw the run's 2x2 latency figure into `out_png` (written atomically)."""
    frames = run if isinstance(run, RunFrames) else RunFrames(*load_run_dir(run))
    s, req = frames.summary, frames.requests
    done = req[req["status"] == "finished"] if len(req) else req
    slo = s.get("slo") or {}
    # Figure without pyplot: Agg canvas, no global figure registry to leak into or close.
    fig = Figure(figsize=(11, 7.5), layout="constrained")
    FigureCanvasAgg(fig)
    with sns.axes_style("whitegrid"):
        axes = fig.subplots(2, 2)
    _ecdf(axes[0, 0], done.get("ttft_s"), "TTFT (ms)", slo.get("ttft_s"))
    _ecdf(axes[0, 1], done.get("tpot_s"),
          f"TPOT (ms, {s.get('tpot_definition', 'vllm')})", slo.get("tpot_s"))
    _ecdf(axes[1, 0], done.get("e2e_s"), "E2E latency (ms)", None)
    if frames.itl_s is not None and len(frames.itl_s):
        _ecdf(axes[1, 1], frames.itl_s, "ITL (ms)", None, ylabel="fraction of token gaps")
    else:
        _batch_size(axes[1, 1], frames.steps)
    fig.suptitle(_title(s))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    out = Path(out_png)
    atomic_write_bytes(out, buf.getvalue())
    return out


def _ecdf(ax: Axes, values_s: Any, label: str, slo_s: float | None,
          ylabel: str = "fraction of finished requests") -> None:
    ax.set_xlabel(label)
    ax.set_ylabel(ylabel)
    v = np.asarray([] if values_s is None else values_s, dtype=np.float64)
    v = np.sort(v[np.isfinite(v)]) * 1e3
    if len(v) == 0:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        return
    if len(v) > MAX_ECDF_POINTS:
        v = v[np.linspace(0, len(v) - 1, MAX_ECDF_POINTS).round().astype(np.int64)]
    sns.ecdfplot(x=v, ax=ax)
    if slo_s is not None:
        ax.axvline(slo_s * 1e3, color="tab:red", linestyle="--", label=f"SLO {slo_s * 1e3:g} ms")
        ax.legend(loc="lower right")


def _batch_size(ax: Axes, steps: pd.DataFrame) -> None:
    ax.set_xlabel("time (s)")
    ax.set_ylabel("batch size")
    if steps is None or len(steps) == 0:
        ax.text(0.5, 0.5, "no ITL or steps", ha="center", va="center", transform=ax.transAxes)
        return
    if len(steps) > MAX_STEP_POINTS:
        steps = steps.iloc[:: -(-len(steps) // MAX_STEP_POINTS)]
    # estimator=None: plot the raw series, no per-x aggregation (which is slow).
    sns.lineplot(data=steps, x="start_s", y="batch_size", hue="worker", estimator=None,
                 drawstyle="steps-post", linewidth=0.8, ax=ax)


def _title(s: Mapping[str, Any]) -> str:
    parts = [str(s[k]) for k in ("engine", "model", "hardware") if s.get(k)]
    if s.get("rate_per_gpu") is not None:
        parts.append(f"{s['rate_per_gpu']} req/s/GPU")
    if s.get("slo_attainment") is not None:
        parts.append(f"SLO attainment {s['slo_attainment'] * 100:.1f} %")
    return " | ".join(parts) or "run"
