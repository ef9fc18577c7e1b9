"""Regression run of the real engine: tiny_llama on the CPU, offline 16 prompts x 128 tokens
in, 32 out, through the project's scheduler and TorchExecutor, float32, 2 threads.

It reports raw times (decode and prefill step medians, output throughput): the gate compares
them with the baseline commit's, measured beside them on the same machine. (Ratios to a dense
forward measured in the same process, which earlier versions gated on, were noisier in the A/A
study: README, "Regression gate".)

    python benchmarks/torch_regress.py [--out DIR] [--repeats 3]

The gate (benchmarks/torch_ab.py) runs this script from the baseline commit's tree and from the
candidate's, in alternating fresh processes, and compares them: keep its command line (`--out
DIR --repeats N`), its output (DIR/torch_tiny_llama_offline/summary.json) and the gated keys
(`decode_step_s`, `prefill_step_s`, `output_throughput_tok_s`, results/baselines/torch.json) stable.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engines.blocks import BlockPool  # noqa: E402
from engines.request import Request  # noqa: E402
from engines.scheduler import Scheduler, SchedulerConfig  # noqa: E402
from engines.torch import runtime  # noqa: E402
from engines.torch.executor import TorchExecutor  # noqa: E402
from engines.worker import Worker  # noqa: E402
from harness.versions import versions  # noqa: E402

# Small enough that one measuring process takes a few seconds on 2 cores (the A/B gate runs ~10
# of them), in float32: bf16 matmuls are native on CPUs with AVX512-BF16/AMX but emulated ~25x
# slower on AVX2-only CPUs (measured: a decode step of 32 took 14 ms on one 2-core machine and
# 212 ms on another), and the gate must run on any machine of the CI kind.
NUM_PROMPTS, PROMPT_TOKENS, OUTPUT_TOKENS, BLOCK, DTYPE = 16, 128, 32, 16, "float32"
KEY = {"engine": "unified", "workload": f"offline_{NUM_PROMPTS}x{PROMPT_TOKENS}x{OUTPUT_TOKENS}_{DTYPE}",
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
    setup = runtime.prepare("tiny_llama", None, device="cpu", dtype=DTYPE, block_size=BLOCK,
                            kv_cache_bytes=256 << 20, gpu_memory_utilization=0.9)
    executor = runtime.make_executor(setup, block_size=BLOCK, temperature=0.0, seed=0, num_threads=threads)
    extra = float(os.environ.get(PLANT_ENV, "0") or 0)
    return _Slowed(executor, extra) if extra > 0 else executor


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
    """Medians over `repeats` offline runs after one warm-up run (allocator, oneDNN primitives)."""
    executor = make_executor()
    offline_run(executor)
    runs = [offline_run(executor, seed=i) for i in range(repeats)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return {"output_throughput_tok_s": med["output_tok_s"], "decode_step_s": med["decode_step_s"],
            "prefill_step_s": med["prefill_step_s"], "offline_wall_s": med["wall_s"]}


def write_run(out_dir: Path, repeats: int = 3) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {**KEY, **measure(repeats), "versions": versions()}
    tmp = out_dir / ".summary.json.tmp"  # atomic; metrics.results would import pandas (~0.5 s per process)
    tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out_dir / "summary.json")
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
