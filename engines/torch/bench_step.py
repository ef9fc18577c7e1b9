"""Step-time sanity benchmark of TorchExecutor on a random-weight model.

    python -m engines.torch.bench_step [name=tiny_llama] [dtype=bfloat16] [threads=2]
        [batch=32] [prompt=128] [output=64] [block_size=16] [compile=0]

Reports the median decode step (batch x 1 token at context `prompt`), the median
prefill step (batch x prompt tokens), and the best of 3 offline runs (one prefill step,
then output-1 decode steps) as output tok/s, comparable to `vllm bench throughput` with
fixed lengths. compile=1 wraps the forward in torch.compile (compile=2: with inductor
freezing); it was slower than eager here.
"""
from __future__ import annotations

import statistics
import sys
import time

import torch

from engines.plan import ScheduledSeq, StepPlan
from engines.torch.checkpoint import build_model
from engines.torch.executor import TorchExecutor
from engines.torch.make_model import random_weights
from engines.torch.sizes import get_size

_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def _plan(batch: int, context: int, new: int, block_size: int, blocks_per_seq: int):
    seqs = tuple(ScheduledSeq(r, context, new, True, context == 0,
                              tuple(range(r * blocks_per_seq, (r + 1) * blocks_per_seq)),
                              tuple((r * 7919 + context + i) % 128000 for i in range(new)))
                 for r in range(batch))
    tokens = batch * new
    return StepPlan("bench", seqs, tokens if context == 0 else 0, 0 if context == 0 else tokens)


def _time(ex: TorchExecutor, plan: StepPlan, repeats: int) -> float:
    """Median step duration after a warm-up (allocator, oneDNN primitive caches)."""
    ex.execute(plan, 1.0)
    return statistics.median(ex.execute(plan, 1.0).duration_s for _ in range(repeats))


def _offline(ex, batch, prompt, output, block_size, per_seq) -> float:
    """One prefill step of the whole batch, then output - 1 decode steps (plans are
    built beforehand: this times the executor, not a scheduler)."""
    plans = [_plan(batch, 0, prompt, block_size, per_seq)]
    plans += [_plan(batch, prompt + step - 1, 1, block_size, per_seq) for step in range(1, output)]
    start = time.perf_counter()
    for plan in plans:
        ex.execute(plan, 1.0)
    return time.perf_counter() - start


def run(name="tiny_llama", dtype="bfloat16", threads=2, batch=32, prompt=128, output=64,
        block_size=16, compile=0, pack=1) -> dict:
    config = get_size(name)
    model = build_model(config, random_weights(config, 0, torch.float32), dtype=_DTYPES[dtype])
    per_seq = -(-(prompt + output) // block_size)
    # oneDNN-packed weights cannot be traced by inductor, so compiling turns packing off.
    ex = TorchExecutor(model, num_blocks=batch * per_seq, block_size=block_size,
                       threads=threads, pack_weights=bool(pack) and not compile)
    if compile:
        if compile == 2:  # inductor "freezing": weights become constants, packed by oneDNN
            import torch._inductor.config as inductor_config
            inductor_config.freezing = True
        ex.model.forward = torch.compile(ex.model.forward, dynamic=True)
    decode_s = _time(ex, _plan(batch, prompt, 1, block_size, per_seq), 20)
    prefill_s = _time(ex, _plan(batch, 0, prompt, block_size, per_seq), 5)
    offline_s = min(_offline(ex, batch, prompt, output, block_size, per_seq) for _ in range(3))
    return {"decode_step_ms": 1e3 * decode_s, "decode_tok_s": batch / decode_s,
            "prefill_step_ms": 1e3 * prefill_s, "prefill_tok_s": batch * prompt / prefill_s,
            "offline_s": offline_s, "offline_output_tok_s": batch * output / offline_s}


def main(argv: list[str] | None = None) -> None:
    kwargs = dict(a.split("=", 1) for a in (sys.argv[1:] if argv is None else argv))
    ints = {k: int(v) for k, v in kwargs.items() if k not in ("name", "dtype")}
    result = run(**{**kwargs, **ints})
    print(" ".join(f"{k}={v:.1f}" for k, v in result.items()))


if __name__ == "__main__":
    main()
