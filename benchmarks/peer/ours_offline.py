"""Offline throughput of OUR engine: TorchExecutor driven by the project's real scheduler.

    .venv/bin/python benchmarks/peer/ours_offline.py --model checkpoints/tiny_llama \
        --prompts PROMPTS.json --output-len 64 --repeats 3 [--chunked 1] [--budget 4096]

All prompts arrive at t=0; Scheduler + BlockPool + Worker run steps back to back until
every request has its output_len tokens (greedy, EOS ignored: the scheduler never stops
early). Prints one JSON object (times, tok/s, the tokens of each request) on stdout.
Called by offline.py; usable alone.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root

import torch  # noqa: E402

from engines.blocks import BlockPool  # noqa: E402
from engines.request import Request  # noqa: E402
from engines.scheduler import Scheduler, SchedulerConfig  # noqa: E402
from engines.torch.checkpoint import load_model  # noqa: E402
from engines.torch.executor import TorchExecutor  # noqa: E402
from engines.worker import Worker  # noqa: E402

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def generate(executor, prompts, output_len, cfg, num_blocks, block_size):
    """One offline run through the real scheduler: (wall seconds, requests, step count)."""
    pool = BlockPool(num_blocks, block_size)
    sched = Scheduler(cfg, pool)
    reqs = [Request(id=i, arrival_s=0.0, prompt_len=len(p), output_len=output_len,
                    token_ids=list(p)) for i, p in enumerate(prompts)]
    for r in reqs:
        sched.add_request(r)
    worker = Worker("w0", sched, executor)
    start = time.perf_counter()
    steps = 0
    while sched.has_work():
        now = time.perf_counter() - start
        started = worker.start_step(now)
        if started is None:
            raise RuntimeError("scheduler has work but planned no step (KV pool too small?)")
        worker.finish_step(*started, now, time.perf_counter() - start)
        steps += 1
    wall = time.perf_counter() - start
    assert all(r.num_output_tokens == output_len for r in reqs)
    return wall, reqs, worker.records


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True, help="JSON list of token-id lists")
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--chunked", type=int, default=1, help="1: chunked prefill (vLLM v1's default)")
    ap.add_argument("--budget", type=int, default=4096, help="max_num_batched_tokens")
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--prefill-probe", type=int, default=1,
                    help="also time output_len=1 runs (prefill only) to split prefill/decode")
    args = ap.parse_args()

    prompts = json.loads(Path(args.prompts).read_text())
    dtype = DTYPES[args.dtype]
    model = load_model(args.model, dtype=dtype)
    per_seq = -(-(max(map(len, prompts)) + args.output_len) // args.block_size)
    num_blocks = len(prompts) * per_seq + 16
    executor = TorchExecutor(model, num_blocks=num_blocks, block_size=args.block_size,
                             dtype=dtype, threads=args.threads)
    cfg = SchedulerConfig(max_num_batched_tokens=args.budget, max_num_seqs=args.max_num_seqs,
                          chunked_prefill=bool(args.chunked))

    def timed(output_len):
        generate(executor, prompts, output_len, cfg, num_blocks, args.block_size)  # warm-up
        return [generate(executor, prompts, output_len, cfg, num_blocks, args.block_size)
                for _ in range(args.repeats)]

    runs = timed(args.output_len)
    walls = [w for w, _, _ in runs]
    _, reqs, records = runs[-1]
    out_tokens = len(prompts) * args.output_len
    result = {
        "engine": "ours", "threads": torch.get_num_threads(), "dtype": args.dtype,
        "packed_weights": bool(executor.packed),
        "scheduler": {"chunked_prefill": cfg.chunked_prefill, "max_num_batched_tokens": cfg.max_num_batched_tokens,
                      "max_num_seqs": cfg.max_num_seqs, "block_size": args.block_size},
        "wall_s": walls, "median_wall_s": statistics.median(walls),
        "output_tok_s": out_tokens / statistics.median(walls),
        "num_steps": len(records),
        "step_ms": [round(1e3 * r.duration_s, 3) for r in records],
        "tokens": [r.token_ids[r.prompt_len:] for r in reqs],
    }
    if args.prefill_probe:
        pre = [w for w, _, _ in timed(1)]
        result["prefill_wall_s"] = statistics.median(pre)
        result["decode_step_ms"] = 1e3 * (result["median_wall_s"] - result["prefill_wall_s"]) / (args.output_len - 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
