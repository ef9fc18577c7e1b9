"""Does where a step's KV blocks lie in the pool change its time? A real run's block
tables against the profiler's (engines/torch/profiler.py plan_for: each sequence's blocks
contiguous and ascending).

    .venv/bin/python benchmarks/kv_layout.py [--model small_llama] [--dtype bfloat16]
        [--design unified] [--rate 2] [--num-requests 40] [--steps 60] [--profile P]
        [--out results/kv_layout]

1. A real run (executor=torch, harness.fidelity's workload) with every step's plan kept.
2. On a fresh worker, `--steps` of its decode-only plans (evenly spaced over the run), each
   timed (worker clock, median of 5, each after the profiler's two warm-up steps) in three
   layouts, interleaved so the machine's drift hits all three alike:
   - `real`: the block tables the run's allocator gave (engines/blocks.py);
   - `contiguous`: the same sequences, each on ascending contiguous blocks (the profiler's);
   - `random`: each block a random one of the pool's.
Writes layout.csv (one row per plan) and prints, by the step's total context, the medians
of real / contiguous, random / contiguous, the step's own time in the run / `real` (is a
step slower inside a run than replayed?) and, with `--profile`, `real` / the profiled cost
model's prediction.
"""
from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REPEATS = 5
# Printed ratios of the per-plan times (layout.csv columns <name>_s).
RATIOS = (("real", "contiguous"), ("random", "contiguous"), ("in_run", "real"), ("real", "predicted"),
          ("in_run", "round_robin"), ("round_robin", "real"))


def relaid(plan, blocks_of):
    """`plan` with each sequence's block table replaced by blocks_of(number of blocks)."""
    seqs = tuple(s._replace(block_ids=tuple(blocks_of(len(s.block_ids)))) for s in plan.seqs)
    return dataclasses.replace(plan, seqs=seqs)


def one_step_s(ex, plan) -> float:
    """The worker's own seconds for one step of `plan`, no warm-up."""
    ex.submit(plan, 1.0)
    return ex.collect().duration_s


def main(argv: list[str] | None = None) -> int:
    from benchmarks.replay_steps import fresh_worker, record_run
    from engines.torch.profiler import step_times
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="small_llama")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--design", default="unified", choices=["unified", "unified_chunked"])
    ap.add_argument("--rate", type=float, default=2.0)
    ap.add_argument("--num-requests", type=int, default=40)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--out", default="results/kv_layout")
    ap.add_argument("--profile", default=None, help="a profile of this machine: also real / predicted")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    plans = [(plan, own_s) for plan, _, own_s in record_run(args.model, args.dtype, args.design, args.rate,
                                                            args.num_requests, out / "run")
             if plan.num_prefill_tokens == 0]
    chosen = [plans[int(i * (len(plans) - 1) / max(1, args.steps - 1))] for i in range(min(args.steps, len(plans)))]
    cost = None
    if args.profile:
        from sim.profiled import ProfiledCostModel
        from sim.specs import get_hardware, get_model
        cost = ProfiledCostModel(args.profile, get_model(args.model), get_hardware("cpu"))

    rng = random.Random(0)
    rows = []
    with fresh_worker(args.model, args.dtype, "layout") as (ex, num_blocks):
        for plan, in_run_s in chosen:
            nxt = iter(range(num_blocks))
            layouts = {"real": plan,
                       "contiguous": relaid(plan, lambda n: [next(nxt) for _ in range(n)]),
                       "random": relaid(plan, lambda n: rng.sample(range(num_blocks), n))}
            times = {name: [] for name in layouts}
            for _ in range(REPEATS):
                for name, p in layouts.items():
                    times[name].extend(step_times(ex, p, 1, worker_clock=True))
            rows.append({"batch": plan.batch_size, "context": sum(s.num_context_tokens for s in plan.seqs),
                         "in_run_s": in_run_s, "predicted_s": cost.step_time_s(plan, 1.0) if cost else float("nan"),
                         **{f"{name}_s": statistics.median(t) for name, t in times.items()}})
        # The same plans round-robin: each once per pass, never twice in a row, as a run
        # steps (back to back above, every plan repeats 3 times in a row).
        passes = [[one_step_s(ex, plan) for plan, _ in chosen] for _ in range(REPEATS)]
        for i, row in enumerate(rows):
            row["round_robin_s"] = statistics.median(p[i] for p in passes)
    df = pd.DataFrame(rows)
    df.to_csv(out / "layout.csv", index=False)
    ratios = {f"{a.replace('_', ' ')}/{b.replace('_', ' ')}": df[f"{a}_s"] / df[f"{b}_s"] for a, b in RATIOS}
    df = df.assign(**ratios, context_bin=pd.qcut(df.context, 3, duplicates="drop"))
    print(f"{args.model} {args.dtype}, {args.design} at {args.rate:g} req/s: {len(df)} decode steps")
    print(df.groupby("context_bin", observed=True)[["batch", *ratios]].median().round(3).to_string())
    print("all:", df[list(ratios)].median().round(3).to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
