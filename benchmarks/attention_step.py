"""Decode-step time against context skew, for each CPU attention path side by side.

    .venv/bin/python benchmarks/attention_step.py [--model tiny_llama] [--dtype bfloat16]
        [--rounds 15] [--threads 2] [--out results/attention_step.json]

One TorchExecutor (random weights, oneDNN-packed linears) runs a decode step of 48
sequences (one new token each) under three context-length mixes:
- uniform: all 48 at 330 tokens;
- skew: one at 1,800 and 47 at 330;
- sharegpt: 48 lengths drawn from the ShareGPT-like distribution (prompt + a uniform
  share of the output already generated, seed 0, capped at the model's context).
and three attention paths, swapped on the same executor:
- padded: the old path (attention_padded.py), one SDPA padded to the longest context;
- torch: the new pure-torch path, SDPA over length buckets;
- kernel: the new path with the C++ decode kernel (the default where it builds).
Each round times one step of every (mix, path) pair, paths in a rotating order, after 2
warm-up steps each; the table shows the median over rounds. "x uniform" is a mix's step
time over the same path's uniform step; "x weighted" divides further by the mix's total
context over the uniform total (17,310 / 15,840 for skew), i.e. the step time against the
uniform batch's cost scaled to the same number of context tokens.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engines.plan import ScheduledSeq, StepPlan  # noqa: E402
from engines.torch.attention_padded import PaddedAttention  # noqa: E402
from engines.torch.checkpoint import build_model  # noqa: E402
from engines.torch.executor import TorchExecutor  # noqa: E402
from engines.torch.make_model import random_weights  # noqa: E402
from engines.torch import cpu_kernels  # noqa: E402
from engines.torch.paged_attention import TorchAttention  # noqa: E402
from engines.torch.sizes import get_size  # noqa: E402
from workloads import WorkloadConfig, build_workload  # noqa: E402

BATCH, SHORT, LONG = 48, 330, 1800
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def context_mixes(max_tokens: int) -> dict[str, list[int]]:
    """Tokens per sequence (context + the new one) for each mix."""
    specs = build_workload(WorkloadConfig(source="synthetic", distribution="sharegpt_like",
                                          num_requests=BATCH, seed=0)).specs
    rng = np.random.default_rng(0)
    drawn = [min(max_tokens, s.prompt_len + int(rng.integers(0, s.output_len + 1))) for s in specs]
    return {"uniform": [SHORT] * BATCH, "skew": [LONG] + [SHORT] * (BATCH - 1), "sharegpt": drawn}


def decode_plan(lengths: list[int], block_size: int) -> StepPlan:
    seqs, next_block = [], 0
    for rid, length in enumerate(lengths):
        blocks = -(-length // block_size)
        seqs.append(ScheduledSeq(rid, length - 1, 1, True, False,
                                 tuple(range(next_block, next_block + blocks)), (rid % 1000,)))
        next_block += blocks
    return StepPlan("bench", tuple(seqs), 0, len(seqs))


def measure(args) -> dict:
    torch.manual_seed(0)
    config = get_size(args.model)
    model = build_model(config, random_weights(config, 0, torch.float32), dtype=DTYPES[args.dtype])
    mixes = context_mixes(config.max_position_embeddings)
    block_size = 16
    num_blocks = max(sum(-(-n // block_size) for n in lens) for lens in mixes.values())
    ex = TorchExecutor(model, num_blocks=num_blocks, block_size=block_size, threads=args.threads)
    ex.kv_cache.data.normal_()
    paths = {"padded": PaddedAttention(), "torch": TorchAttention(decode_kernel=False)}
    why = cpu_kernels.load()
    if why is None:
        paths["kernel"] = TorchAttention(decode_kernel=True)
    else:
        print(f"kernel path skipped: {why}", file=sys.stderr)
    plans = {mix: decode_plan(lens, block_size) for mix, lens in mixes.items()}
    times: dict[tuple[str, str], list[float]] = {(m, p): [] for m in plans for p in paths}

    def step(mix: str, path: str) -> float:
        ex.attention = paths[path]
        start = time.perf_counter()
        ex.execute(plans[mix])
        return time.perf_counter() - start

    for mix in plans:
        for path in paths:
            step(mix, path), step(mix, path)  # warm-up: allocator, oneDNN primitives
    names = list(paths)
    for r in range(args.rounds):
        for mix in plans:
            for path in names[r % len(names):] + names[:r % len(names)]:
                times[(mix, path)].append(step(mix, path))
    return {"model": args.model, "dtype": args.dtype, "threads": torch.get_num_threads(),
            "rounds": args.rounds, "batch": BATCH, "kernel_unavailable": why,
            "context_tokens": {m: sum(v) for m, v in mixes.items()},
            "max_tokens": {m: max(v) for m, v in mixes.items()},
            "median_step_ms": {f"{m}/{p}": 1e3 * statistics.median(t) for (m, p), t in times.items()}}


def render(res: dict) -> str:
    ms, ctx = res["median_step_ms"], res["context_tokens"]
    paths = sorted({k.split("/")[1] for k in ms}, key=["padded", "torch", "kernel"].index)
    lines = [f"Decode step, {res['model']}, {res['dtype']}, {res['threads']} threads, batch {res['batch']} "
             f"(median of {res['rounds']} rounds, ms)", "",
             "| mix | context tokens (sum / max) | " + " | ".join(paths) + " | "
             + " | ".join(f"{p} x uniform | {p} x weighted" for p in paths) + " |",
             "|---|---|" + "---|" * (3 * len(paths))]
    for mix in ctx:
        cells = [f"{ms[f'{mix}/{p}']:.1f}" for p in paths]
        for p in paths:
            rel = ms[f"{mix}/{p}"] / ms[f"uniform/{p}"]
            cells += [f"{rel:.2f}", f"{rel / (ctx[mix] / ctx['uniform']):.2f}"]
        lines.append(f"| {mix} | {ctx[mix]} / {res['max_tokens'][mix]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny_llama")
    ap.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="also write the result as JSON here")
    args = ap.parse_args()
    res = measure(args)
    print(render(res))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
