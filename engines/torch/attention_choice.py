"""Pick the faster decode-attention path on this machine, by timing both.

Which path wins depends on the CPU and dtype, and not by a little: on 2 AVX2 cores
(float32, tiny_llama, batch 48) the C++ kernel's decode step took 54 ms against the
bucketed-SDPA path's 63-73 ms, while on 2 AVX-512 cores with native bf16 the SDPA path
took 46 ms against the kernel's 66 ms (small_llama, bf16; benchmarks/attention_step.py).
So `executor.attention=auto` does not guess from CPU flags: when the executor starts, it
times one decode-attention call of each path on a random paged batch with the model's
head shapes (~50 ms in all) and keeps the faster one.
"""
from __future__ import annotations

import statistics
import time

import torch

CALIBRATION_BATCH = 32
CALIBRATION_CONTEXT_TOKENS = 320
CALIBRATION_REPEATS = 5


def time_decode_paths_ms(num_heads: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
                         block_size: int = 16, batch: int = CALIBRATION_BATCH,
                         context: int = CALIBRATION_CONTEXT_TOKENS,
                         repeats: int = CALIBRATION_REPEATS) -> dict[str, float]:
    """Median ms of one decode-attention call (batch x context keys) per path: kernel (if
    it builds), torch."""
    from engines.torch import decode_kernel
    from engines.torch.paged_attention import SeqSlice, build_metadata, paged_attention
    paths = (("kernel", True), ("torch", False)) if decode_kernel.load() is None else (("torch", False),)
    gen = torch.Generator().manual_seed(0)
    blocks_per_seq = -(-(context + 1) // block_size)
    pages = [torch.randn(batch * blocks_per_seq, block_size, num_kv_heads, head_dim, generator=gen).to(dtype)
             for _ in range(2)]
    q = torch.randn(batch, num_heads, head_dim, generator=gen).to(dtype)
    k = torch.randn(batch, num_kv_heads, head_dim, generator=gen).to(dtype)
    seqs = [SeqSlice(context, 1, list(range(i * blocks_per_seq, (i + 1) * blocks_per_seq))) for i in range(batch)]
    out = {}
    with torch.inference_mode():
        for name, use_kernel in paths:
            meta = build_metadata(seqs, block_size, "cpu", use_kernel)
            times = []
            for _ in range(repeats + 1):  # the first call warms up
                start = time.perf_counter()
                paged_attention(q, k, k, pages[0], pages[1], meta, head_dim ** -0.5)
                times.append(time.perf_counter() - start)
            out[name] = 1e3 * statistics.median(times[1:])
    return out
