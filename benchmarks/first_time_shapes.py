"""What a step costs the first time its row count comes up, on the CPU executor.

    .venv/bin/python benchmarks/first_time_shapes.py [--model tiny_llama] [--dtype float32]
        [--steps 40] [--threads 2] [--out results/first_time_shapes.json]

oneDNN builds a primitive for every new row count of a packed-weight GEMM and caches it;
a real run's prefill and mixed steps have token counts that are new nearly every time,
while the profiler (engines/torch/profiler.py) times every shape after warm-up steps. In
one process, on one TorchExecutor (random weights, packed linears):
1. per GEMM (a layer's qkv, o, gate_up and down, and the LM head): median time at 10 row
   counts never seen before, against one count repeated; prefill-sized (300+) and
   decode-sized (41+) counts (the LM head only sees sampling rows: decode-sized only);
2. per step: `--steps` steps of a fresh prompt chunk of a new length (40-1,000 tokens,
   seeded, all distinct) beside 8 decodes (the profiler's mixed shape), each timed the
   first time and right after once more.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engines.plan import StepPlan  # noqa: E402
from engines.torch.checkpoint import build_model  # noqa: E402
from engines.torch.executor import TorchExecutor  # noqa: E402
from engines.torch.make_model import random_weights  # noqa: E402
from engines.torch.profiler import BLOCK_SIZE, Shape, plan_for  # noqa: E402
from engines.torch.sizes import get_size  # noqa: E402

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
DECODES, DECODE_CONTEXT = 8, 256


def gemms(model) -> dict[str, dict[str, float]]:
    """Median ms of each packed linear at new row counts and at a repeated one."""
    out = {}
    layer = model.layers[0]
    with torch.inference_mode():
        for module, name in [(layer, n) for n in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")] + [
                (model, "lm_head")]:
            packed, k = module.packed[name], getattr(module, name).shape[1]

            def t(rows: int) -> float:
                x = torch.randn(rows, k).to(packed.dtype)
                start = time.perf_counter()
                torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
                return time.perf_counter() - start

            row = {}
            for label, base, stride in (("prefill", 300, 3), ("decode", 41, 1)):
                if name == "lm_head" and label == "prefill":
                    continue
                t(base), t(base)
                new = [t(base + 1 + stride * i) for i in range(10)]
                repeated = [t(base) for _ in range(10)]
                row[f"{label} new ms"] = 1e3 * statistics.median(new)
                row[f"{label} repeated ms"] = 1e3 * statistics.median(repeated)
            out[name] = row
    return out


def step_plan(prompt: int) -> StepPlan:
    """A fresh prompt chunk of `prompt` tokens beside DECODES decodes (the profiler's mixed shape)."""
    return plan_for(Shape("mixed", prompt, 0, DECODES, DECODE_CONTEXT))[0]


def steps(ex: TorchExecutor, count: int, seed: int) -> dict[str, float]:
    first, again = [], []
    for i, n in enumerate(random.Random(seed).sample(range(40, 1001), count)):
        plan = step_plan(n)
        for into in (first, again):
            start = time.perf_counter()
            ex.execute(plan)
            into.append(time.perf_counter() - start)
    return {"first ms": 1e3 * statistics.median(first), "again ms": 1e3 * statistics.median(again),
            "first / again (median of ratios)": statistics.median(a / b for a, b in zip(first, again))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny_llama")
    ap.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="results/first_time_shapes.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = get_size(args.model)
    model = build_model(config, random_weights(config, 0, torch.float32), dtype=DTYPES[args.dtype])
    ex = TorchExecutor(model, num_blocks=plan_for(Shape("mixed", 1000, 0, DECODES, DECODE_CONTEXT))[1],
                       block_size=BLOCK_SIZE, threads=args.threads)
    if not ex.packed:
        print("first_time_shapes: no oneDNN packing on this machine: nothing to measure", file=sys.stderr)
        return 2
    ex.execute(step_plan(64))  # allocator and thread pool warm before anything is timed
    res = {"model": args.model, "dtype": args.dtype, "threads": args.threads,
           "gemm": gemms(ex.model), "step": steps(ex, args.steps, seed=0)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
