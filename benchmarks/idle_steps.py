"""What a step costs after the worker sat idle: the same step timed back to back and after
a pause, on one worker process started as a real run starts it (all cores, OpenMP threads
spinning: unified and disaggregated workers).

    .venv/bin/python benchmarks/idle_steps.py [--model small_llama] [--dtype bfloat16]
        [--idle-s 0,0.05,0.2,0.5,1] [--repeats 8] [--out results/idle_steps.csv]

A real run's prefill after an idle gap took 1.16x its prediction (benchmarks/step_residuals.py
on a fidelity report), the profiler times every shape back to back. Per shape (prefill
chunks and a decode batch; the profiler's plans), after warm-up steps, `--repeats` rounds
of every pause in a shuffled order: sleep the pause, then time one step (wall time from
submit to result, as the driver sees it, and the worker's own). Prints per shape and pause
the median wall time and its ratio to the back-to-back one (pause 0).
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engines.torch.profiler import BLOCK_SIZE, WARM_UP_STEPS, Shape, _prepare, plan_for  # noqa: E402

SHAPES = (Shape("prefill", 64, 0, 0, 0), Shape("prefill", 256, 0, 0, 0), Shape("prefill", 768, 0, 0, 0),
          Shape("decode", 0, 0, 8, 512))


def measure(model: str, dtype: str, pauses: list[float], repeats: int, seed: int = 0) -> pd.DataFrame:
    from engines.torch import runtime
    setup = _prepare(model, None, dtype)
    rng = random.Random(seed)
    rows = []
    with runtime.ProcessRuntime(setup, block_size=BLOCK_SIZE, temperature=0.0, seed=0,
                                cores=sorted(os.sched_getaffinity(0))) as rt:
        ex = rt.start("idle_steps", role="unified", share_pct=100.0, instance=0, num_instances=1)
        ex.wait_ready()
        for shape in SHAPES:
            plan = plan_for(shape)[0]
            for _ in range(WARM_UP_STEPS):
                ex.submit(plan, 1.0)
                ex.collect()
            for r in range(repeats):
                for pause in rng.sample(pauses, len(pauses)):
                    ex.submit(plan, 1.0)  # the step before the pause: the worker is warm and busy
                    ex.collect()
                    time.sleep(pause)
                    start = time.perf_counter()
                    ex.submit(plan, 1.0)
                    result = ex.collect()
                    rows.append({"shape": f"{shape.kind} {shape.prefill_tokens or shape.decode_seqs}"
                                          + (f"@{shape.decode_context}" if shape.decode_seqs else ""),
                                 "pause_s": pause, "round": r, "wall_s": time.perf_counter() - start,
                                 "worker_s": result.duration_s})
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    med = table.groupby(["shape", "pause_s"], sort=False)[["wall_s", "worker_s"]].median().reset_index()
    order = {shape: i for i, shape in enumerate(table["shape"].unique())}  # shapes as measured, pauses rising
    med = med.sort_values(["shape", "pause_s"], key=lambda c: c.map(order) if c.name == "shape" else c)
    base = med[med["pause_s"] == 0].set_index("shape")["wall_s"]
    med["wall / back to back"] = med["wall_s"] / med["shape"].map(base)
    return med


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="small_llama")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    ap.add_argument("--idle-s", default="0,0.05,0.2,0.5,1")
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--out", default="results/idle_steps.csv")
    args = ap.parse_args(argv)
    try:
        pauses = [float(p) for p in args.idle_s.split(",")]
    except ValueError:
        print(f"idle_steps: --idle-s must be comma-separated seconds, got {args.idle_s!r}", file=sys.stderr)
        return 2
    if 0.0 not in pauses or any(p < 0 for p in pauses) or args.repeats < 1:
        print("idle_steps: --idle-s must include 0 (the back-to-back reference) and no negative pause; "
              "--repeats must be >= 1", file=sys.stderr)
        return 2
    table = measure(args.model, args.dtype, pauses, args.repeats)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False, float_format="%.6g")
    print(summary(table).round(4).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
