"""bf16 linear layers on this CPU: torch's bf16 GEMM against the float32 path the engine
takes where oneDNN has no bf16 kernels (engines/torch/model.py, pack_cpu_weights).

    .venv/bin/python benchmarks/bf16_linear.py [--batch 48] [--repeats 10] [--threads 2]

For tiny_llama's shapes (the 128k-vocab LM head and one layer's four projections),
times y = x @ W.T with x [batch, in] in bf16:
- bf16 F.linear: torch's bf16 GEMM (emulated without native bf16);
- bf16 packed: oneDNN-packed bf16 weights (only where oneDNN supports bf16 here);
- f32 packed + casts: oneDNN-packed float32 copy of the weights, x upcast, y rounded to
  bf16 (the engine's path without native bf16).
Median of --repeats after one warm-up, in one process; also the share of outputs that
equal the bf16 F.linear result exactly.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engines.torch.model import native_bf16_matmul  # noqa: E402
from engines.torch.sizes import get_size  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny_llama")
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    c = get_size(args.model)
    shapes = {"lm_head": (c.vocab_size, c.hidden_size), "qkv_proj": (c.q_size + 2 * c.kv_size, c.hidden_size),
              "o_proj": (c.hidden_size, c.q_size), "gate_up_proj": (2 * c.intermediate_size, c.hidden_size),
              "down_proj": (c.hidden_size, c.intermediate_size)}
    linear = lambda x, p: torch.ops.mkldnn._linear_pointwise(x, p, None, "none", [], "")  # noqa: E731
    native = native_bf16_matmul()
    print(f"{args.model}, batch {args.batch}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, oneDNN bf16: {native} (ms, median of {args.repeats})\n")
    print("| weight | out x in | bf16 F.linear | bf16 packed | f32 packed + casts | speed-up | equal outputs |")
    print("|---|---|---|---|---|---|---|")
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for name, (out_f, in_f) in shapes.items():
            w = (torch.randn(out_f, in_f, generator=gen) * 0.02).bfloat16()
            x = torch.randn(args.batch, in_f, generator=gen).bfloat16()
            plain = median_ms(lambda: F.linear(x, w), args.repeats)
            packed_bf16 = "-"
            if native:
                pb = torch.ops.mkldnn._reorder_linear_weight(w, args.batch)
                packed_bf16 = f"{median_ms(lambda: linear(x, pb), args.repeats):.2f}"
            pf = torch.ops.mkldnn._reorder_linear_weight(w.float(), args.batch)
            upcast = median_ms(lambda: linear(x.float(), pf).to(torch.bfloat16), args.repeats)
            same = (F.linear(x, w) == linear(x.float(), pf).to(torch.bfloat16)).float().mean().item()
            print(f"| {name} | {out_f} x {in_f} | {plain:.2f} | {packed_bf16} | {upcast:.2f} "
                  f"| {plain / upcast:.1f}x | {100 * same:.2f} % |")


if __name__ == "__main__":
    main()
