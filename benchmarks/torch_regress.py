"""Regression run of the real engine: tiny_llama on the CPU, offline 32 prompts x 128 tokens
in, 64 out, through the project's scheduler and TorchExecutor, bf16, 2 threads.

Wall times depend on the machine, so the gated metrics are RATIOS to a reference measured
in the same process: a plain dense forward through the model's own linear layers (every
layer's QKV, O, gate/up and down projections and the LM head, for 32 tokens, same weights
and kernels), i.e. what a decode step of batch 32 must at least compute, without paging,
attention, norms, scheduling or sampling. A slower engine raises `decode_step_ratio`/`prefill_step_ratio`
and lowers `throughput_ratio`; a slower machine moves both sides.

    python benchmarks/torch_regress.py [--out DIR] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engines.blocks import BlockPool  # noqa: E402
from engines.request import Request  # noqa: E402
from engines.scheduler import Scheduler, SchedulerConfig  # noqa: E402
from engines.torch import runtime  # noqa: E402
from engines.torch.executor import TorchExecutor  # noqa: E402
from engines.torch.model import linear  # noqa: E402
from engines.worker import Worker  # noqa: E402
from harness.versions import versions  # noqa: E402
from metrics.results import atomic_write_text  # noqa: E402

NUM_PROMPTS, PROMPT_TOKENS, OUTPUT_TOKENS, BLOCK = 32, 128, 64, 16
KEY = {"engine": "unified", "workload": f"offline_{NUM_PROMPTS}x{PROMPT_TOKENS}x{OUTPUT_TOKENS}",
       "rate_per_gpu": 0.0, "model": "tiny_llama", "hardware": "cpu", "executor": "torch"}


# For checking the gate itself: TORCH_REGRESS_PLANT_SLOWDOWN=0.3 makes every step 30 %
# longer (a sleep after the forward), as a real regression would.
PLANT_ENV = "TORCH_REGRESS_PLANT_SLOWDOWN"


class _Slowed:
    def __init__(self, inner: TorchExecutor, extra: float) -> None:
        self.inner, self.extra, self.model, self.kv_cache = inner, extra, inner.model, inner.kv_cache

    def execute(self, plan, share=1.0):
        result = self.inner.execute(plan, share)
        time.sleep(result.duration_s * self.extra)
        return type(result)(result.duration_s * (1 + self.extra), result.sampled_token_ids)


def make_executor(threads: int = 2):
    setup = runtime.prepare("tiny_llama", None, device="cpu", dtype="bfloat16", block_size=BLOCK,
                            kv_cache_bytes=256 << 20, gpu_memory_utilization=0.9)
    executor = runtime.make_executor(setup, block_size=BLOCK, temperature=0.0, seed=0, num_threads=threads)
    extra = float(os.environ.get(PLANT_ENV, "0") or 0)
    return _Slowed(executor, extra) if extra > 0 else executor


def reference_dense_s(executor: TorchExecutor, reps: int = 30) -> float:
    """Median time of one dense pass over the model's own linear layers (the same weights
    and kernels the engine uses, including the LM head) for NUM_PROMPTS tokens."""
    model = executor.model
    gen = torch.Generator().manual_seed(0)
    calls = []
    for module, names in model.linear_weights():
        for name in names:
            in_features = getattr(module, name).shape[1]
            calls.append((module, name, torch.randn((NUM_PROMPTS, in_features), generator=gen).to(model.dtype)))

    def once() -> None:
        for module, name, x in calls:
            linear(module, name, x)

    with torch.inference_mode():
        for _ in range(3):
            once()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            once()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def offline_run(executor: TorchExecutor, seed: int = 0) -> dict[str, float]:
    """All prompts at t=0, stepped back to back through the real scheduler."""
    num_blocks = executor.kv_cache.num_blocks
    sched = Scheduler(SchedulerConfig(max_num_batched_tokens=NUM_PROMPTS * PROMPT_TOKENS, max_num_seqs=256),
                      BlockPool(num_blocks, BLOCK), name="mixed0")
    worker = Worker("mixed0", sched, executor)
    rng = np.random.default_rng(seed)
    vocab = executor.model.config.vocab_size
    for i in range(NUM_PROMPTS):
        sched.add_request(Request(id=i, arrival_s=0.0, prompt_len=PROMPT_TOKENS, output_len=OUTPUT_TOKENS,
                                  token_ids=rng.integers(0, vocab, PROMPT_TOKENS).tolist()))
    t0 = time.perf_counter()
    while sched.has_work():
        start = time.perf_counter() - t0
        plan, result = worker.start_step(start)
        worker.finish_step(plan, result, start, time.perf_counter() - t0)
    wall_s = time.perf_counter() - t0
    decode = [r.duration_s for r in worker.records if r.num_prefill_tokens == 0]
    prefill = [r.duration_s for r in worker.records if r.num_prefill_tokens > 0]
    return {"wall_s": wall_s, "output_tok_s": NUM_PROMPTS * OUTPUT_TOKENS / wall_s,
            "decode_step_s": statistics.median(decode), "prefill_step_s": statistics.median(prefill)}


def measure(repeats: int = 3) -> dict[str, float]:
    """Medians over `repeats` offline runs, each bracketed by reference measurements: the
    ratios are taken per run against the mean of the reference just before and just after
    it, so a change in machine load between runs cancels out as far as possible."""
    executor = make_executor()
    offline_run(executor)  # warm-up: allocator, oneDNN primitives
    ref_before = reference_dense_s(executor)
    runs = []
    for i in range(repeats):
        run = offline_run(executor, seed=i)
        ref_after = reference_dense_s(executor)
        ref = 0.5 * (ref_before + ref_after)
        run |= {"reference_dense_s": ref, "decode_step_ratio": run["decode_step_s"] / ref,
                "prefill_step_ratio": run["prefill_step_s"] / ref, "throughput_ratio": run["output_tok_s"] * ref}
        runs.append(run)
        ref_before = ref_after
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return {"reference_dense_s": med["reference_dense_s"], "output_throughput_tok_s": med["output_tok_s"],
            "decode_step_s": med["decode_step_s"], "prefill_step_s": med["prefill_step_s"],
            "offline_wall_s": med["wall_s"], "decode_step_ratio": med["decode_step_ratio"],
            "prefill_step_ratio": med["prefill_step_ratio"], "throughput_ratio": med["throughput_ratio"]}


def write_run(out_dir: Path, repeats: int = 3) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {**KEY, **measure(repeats), "versions": versions()}
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return out_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "regress" / "torch_only")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    path = write_run(args.out / "torch_tiny_llama_offline", args.repeats)
    print(json.dumps(json.loads((path / "summary.json").read_text()), indent=2))


if __name__ == "__main__":
    main()
