"""Pick the faster CPU attention path on this machine, by timing both.

Which path wins depends on the CPU and dtype: before the kernels were multi-threaded and
vectorised for AVX512-BF16, the C++ decode kernel won on 2 AVX2 cores in float32 and
lost to SDPA over gathered pages on 2 AVX-512 cores in bf16. So `executor.attention=auto`
does not guess from CPU flags: when the executor starts, it times one attention call of
each path on a random paged batch with the model's head shapes (decodes plus a few
fresh prompts, since the kernel path also runs prompts as matmuls around its C++ masked
softmax; ~0.1 s in all) and keeps the faster one.
"""
from __future__ import annotations

import statistics
import time

import torch

CALIBRATION_BATCH = 32
CALIBRATION_CONTEXT_TOKENS = 320
CALIBRATION_PROMPTS = 4
CALIBRATION_PROMPT_TOKENS = 128
CALIBRATION_REPEATS = 5


def time_attention_paths_ms(num_heads: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
                            block_size: int = 16, batch: int = CALIBRATION_BATCH,
                            context: int = CALIBRATION_CONTEXT_TOKENS, prompts: int = CALIBRATION_PROMPTS,
                            prompt_tokens: int = CALIBRATION_PROMPT_TOKENS,
                            repeats: int = CALIBRATION_REPEATS) -> dict[str, float]:
    """Median ms of one attention call per path: kernel (if it builds), torch; the batch is
    `batch` decodes over `context` keys and `prompts` fresh prompts of `prompt_tokens`."""
    from engines.torch import cpu_kernels
    from engines.torch.paged_attention import SeqSlice, build_metadata, paged_attention
    paths = (("kernel", True), ("torch", False)) if cpu_kernels.load() is None else (("torch", False),)
    gen = torch.Generator().manual_seed(0)
    decode_blocks, prompt_blocks = -(-(context + 1) // block_size), -(-prompt_tokens // block_size)
    pages = [torch.randn(batch * decode_blocks + prompts * prompt_blocks, block_size, num_kv_heads, head_dim,
                         generator=gen).to(dtype) for _ in range(2)]
    seqs = [SeqSlice(context, 1, list(range(i * decode_blocks, (i + 1) * decode_blocks))) for i in range(batch)]
    first = batch * decode_blocks
    seqs += [SeqSlice(0, prompt_tokens, list(range(first + i * prompt_blocks, first + (i + 1) * prompt_blocks)))
             for i in range(prompts)]
    tokens = batch + prompts * prompt_tokens
    q = torch.randn(tokens, num_heads, head_dim, generator=gen).to(dtype)
    k = torch.randn(tokens, num_kv_heads, head_dim, generator=gen).to(dtype)
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
