"""Goodput per system by sweep + bisection, and an SLO-scale sweep, for the report:
Llama-3-8B on A100-80GB, ShareGPT, the paper's tight SLO (0.3 s / 0.15 s).

    python -m paper.goodput_study [--scale full|ci] [--out results/paper] [--launcher joblib|ray|basic]

With a launcher (paper.suite passes its own) the rate grids, bisections and SLO scales run
as Hydra multiruns under it (harness/sweep.py); without one, in this process.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from harness.goodput import Evaluator
from harness.sweep import LAUNCHERS, Launcher
from metrics.results import atomic_write_text

SYSTEMS = ("unified", "unified_chunked", "disagg", "semipd", "semipd_static")
BASE = ["model=llama3_8b", "hardware=a100_80g", "workload=sharegpt", "slo=llama3_8b_sharegpt_tight"]
SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
SLO_SCALE_RATE = 14.0  # per GPU: inside the paper's 10-16.5 range for this panel
# (requests, grid points, bisections, rate range) per scale
PLANS = {"full": (1000, 5, 4, (6.0, 46.0)), "ci": (120, 3, 1, (6.0, 46.0))}


def study(scale: str, out: Path, launcher: Launcher | None = None, overrides: list[str] = ()) -> dict:
    num_requests, grid, bisect, (lo, hi) = PLANS[scale]
    result = {"setup": {"model": "llama3_8b", "hardware": "a100_80g", "workload": "sharegpt",
                        "slo": "llama3_8b_sharegpt_tight", "num_requests": num_requests,
                        "search": f"{grid}-point sweep over {lo:g}-{hi:g} req/s/GPU + {bisect} bisections",
                        "slo_scale_rate": SLO_SCALE_RATE},
              "goodput": {}, "slo_scale": {}}
    for system in SYSTEMS:
        evaluator = Evaluator([f"engine={system}", f"workload.num_requests={num_requests}", *BASE, *overrides],
                              out / "goodput_runs" / system, launcher)
        g = evaluator.goodput(lo, hi, num_grid=grid, num_bisect=bisect)
        label = evaluator.cfg.engine.label
        result["goodput"][label] = {"rate_per_gpu": g.rate, "bound": g.bound, "points": g.points}
        result["slo_scale"][label] = dict(zip(SCALES, evaluator.at_slo_scales(SLO_SCALE_RATE, list(SCALES))))
    atomic_write_text(out / "goodput.json", json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", choices=sorted(PLANS), default="full")
    ap.add_argument("--out", default="results/paper")
    ap.add_argument("--launcher", default=None, choices=LAUNCHERS, help="default: the runs in this process")
    ap.add_argument("--jobs", type=int, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    res = study(args.scale, Path(args.out), None if args.launcher is None else Launcher(args.launcher, args.jobs))
    for label, g in res["goodput"].items():
        print(f"{label:22s} goodput {g['rate_per_gpu']:7.2f} req/s/GPU ({g['bound']})")


if __name__ == "__main__":
    main()
