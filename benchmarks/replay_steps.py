"""Where a real run's step times part from the profile: record a real run's plans, replay
them on a fresh worker, and predict them with the profiled cost model.

    .venv/bin/python benchmarks/replay_steps.py --profile <profile csv> [--design unified_chunked]
        [--model tiny_llama] [--dtype float32] [--rate 8] [--num-requests 40]
        [--out results/replay_steps]

1. A real run (executor=torch, worker processes, harness.fidelity's workload) with every
   step's plan, its recorded duration and the worker's own time kept.
2. A fresh worker (as the profiler starts one) runs the first 20 plans to warm up, then
   every plan once in the run's order ("replay": token counts new to this worker where
   they were new to the real one), then every plan 3 times back to back ("replay3", the
   median: warm, as the profiler times a shape).
3. The profiled cost model (`--profile`, of this machine) predicts every plan.
Writes replay.csv (one row per step) and prints per group of steps (token count new to
the run or seen before) the medians of real / predicted and replay / replay3.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WARM_UP_PLANS = 20


def record_run(model: str, dtype: str, design: str, rate: float, num_requests: int, out: Path) -> list[tuple]:
    """A real run (harness.fidelity's workload) with every step kept: (a copy of its plan, the
    duration its driver recorded, the worker's own duration)."""
    from engines import worker as worker_mod
    from harness import fidelity
    recorded = []
    finish = worker_mod.Worker.finish_step

    def keep(self, plan, result, start_s, end_s):
        recorded.append((copy.deepcopy(plan), end_s - start_s, result.duration_s))  # block lists change later
        return finish(self, plan, result, start_s, end_s)

    worker_mod.Worker.finish_step = keep
    try:
        fidelity.one_run(fidelity.overrides(model, design, rate, num_requests, "default",
                                            ["executor=torch", f"executor.dtype={dtype}"]), out)
    finally:
        worker_mod.Worker.finish_step = finish
    return recorded


@contextlib.contextmanager
def fresh_worker(model: str, dtype: str, name: str):
    """(a worker process started as the profiler starts one, on all cores, over
    harness.fidelity's KV pool; the number of blocks in that pool), stopped on exit."""
    from engines.torch import runtime
    from engines.torch.profiler import BLOCK_SIZE
    from harness import fidelity
    setup = runtime.prepare(model, None, device="cpu", dtype=dtype, block_size=BLOCK_SIZE,
                            kv_cache_bytes=fidelity.KV_CACHE_BYTES, gpu_memory_utilization=0.9)
    with runtime.ProcessRuntime(setup, block_size=BLOCK_SIZE, temperature=0.0, seed=0,
                                cores=sorted(os.sched_getaffinity(0))) as rt:
        ex = rt.start(name, role="unified", share_pct=100.0, instance=0, num_instances=1)
        ex.wait_ready()
        yield ex, setup.num_blocks


def main(argv: list[str] | None = None) -> int:
    from sim.profiled import ProfiledCostModel
    from sim.specs import get_hardware, get_model
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", required=True)
    ap.add_argument("--design", default="unified_chunked", choices=["unified", "unified_chunked"])
    ap.add_argument("--model", default="tiny_llama")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--rate", type=float, default=8.0)
    ap.add_argument("--num-requests", type=int, default=40)
    ap.add_argument("--out", default="results/replay_steps")
    args = ap.parse_args(argv)
    out = Path(args.out)
    cost = ProfiledCostModel(args.profile, get_model(args.model), get_hardware("cpu"))

    recorded = record_run(args.model, args.dtype, args.design, args.rate, args.num_requests, out / "run")

    def timed(ex, plan) -> float:
        start = time.perf_counter()
        ex.submit(plan, 1.0)
        ex.collect()
        return time.perf_counter() - start

    with fresh_worker(args.model, args.dtype, "replay") as (ex, _):
        for plan, _, _ in recorded[:WARM_UP_PLANS]:
            timed(ex, plan)
        replay = [timed(ex, plan) for plan, _, _ in recorded]
        replay3 = [statistics.median(timed(ex, plan) for _ in range(3)) for plan, _, _ in recorded]
    rows = pd.DataFrame([{"tokens": p.num_tokens, "prefill_tokens": p.num_prefill_tokens, "batch": p.batch_size,
                          "real_s": real, "real_worker_s": own, "replay_s": r1, "replay3_s": r3,
                          "predicted_s": cost.step_time_s(p, 1.0)}
                         for (p, real, own), r1, r3 in zip(recorded, replay, replay3)])
    rows["new_token_count"] = ~rows["tokens"].duplicated()
    rows.to_csv(out / "replay.csv", index=False)
    for new, g in rows.groupby("new_token_count"):
        print(f"{'new' if new else 'seen'} token count: {len(g)} steps ({int((g['prefill_tokens'] > 0).sum())} "
              f"with a prefill); median real / predicted {(g.real_s / g.predicted_s).median():.3f}, "
              f"replay / replay3 {(g.replay_s / g.replay3_s).median():.3f}; sums real {g.real_s.sum():.2f} s, "
              f"predicted {g.predicted_s.sum():.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
