"""Build and load the C++ CPU kernels on first use: decode attention over the paged cache
(csrc/paged_decode.cpp) and the fused elementwise ops of a layer (csrc/fused_ops.cpp:
RMSNorm with the residual add, SiLU-and-mul, RoPE), as torch.ops.semipd.*.

They are compiled with torch's cpp_extension (g++ and ninja: `apt install g++`,
`pip install ninja`) into torch's extension cache (~/.cache/torch_extensions, or
$TORCH_EXTENSIONS_DIR), once per machine; later processes only load it (~0.1 s).
It is built with -march=native, so the library name carries a hash of this CPU's model
and instruction-set flags (a cache shared between different CPUs never loads a library
built for another) and of the source (two checkouts with different kernels, as in the
A/B regression gate, each keep their own build instead of rebuilding in turn). If the
build fails (no compiler), `load()` returns the reason, and the attention falls back to
the pure-torch paths (paged_attention.py, fused.py).

    python -m engines.torch.cpu_kernels      # build now (make setup does this)
"""
from __future__ import annotations

import functools
import hashlib
import logging
import platform
from pathlib import Path

import torch

log = logging.getLogger(__name__)
SOURCES = [Path(__file__).resolve().parent / "csrc" / name for name in ("paged_decode.cpp", "fused_ops.cpp")]
# -fopenmp is what makes at::parallel_for parallel: without it ATen's header falls back to
# a serial loop (the kernel ran on one thread until this was found). The library then
# needs libgomp.so.1, which resolves to the copy torch has already loaded (one OpenMP
# runtime, one thread pool, torch.set_num_threads applies).
# -ffp-contract=off: the fused ops must round as torch does (fused_ops.cpp); the decode
# kernel's fast path writes its FMAs explicitly.
CFLAGS = ["-O3", "-march=native", "-fopenmp", "-ffp-contract=off"]
LDFLAGS = ["-fopenmp"]


def _cpu_fingerprint() -> str:
    """This CPU's model name and flags (Linux), else the machine type."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        wanted = [ln for ln in lines if ln.startswith(("model name", "flags"))][:2]
        text = "\n".join(wanted) or platform.machine()
    except OSError:
        text = platform.machine()
    return hashlib.sha256(text.encode()).hexdigest()[:10]


@functools.cache
def load() -> str | None:
    """Build (if needed) and load the kernel into torch.ops.semipd. None on success,
    else why it is not available. Cached: one attempt per process."""
    try:
        from torch.utils.cpp_extension import load as build
        source_hash = hashlib.sha256(b"".join(p.read_bytes() for p in SOURCES)
                                     + " ".join(CFLAGS + LDFLAGS).encode()).hexdigest()[:10]
        build(name=f"semipd_cpu_kernels_{_cpu_fingerprint()}_{source_hash}", sources=[str(p) for p in SOURCES],
              extra_cflags=CFLAGS, extra_ldflags=LDFLAGS, is_python_module=False, verbose=False)
    except Exception as err:  # no compiler or ninja, compile error, load error
        reason = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
        log.warning("C++ CPU kernels unavailable (%s); using the pure-torch paths", reason)
        return reason
    return None


def available() -> bool:
    return load() is None


def paged_decode(q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor,
                 block_table: torch.Tensor, seq_lens: torch.Tensor, scale: float,
                 partition_size: int, portable: bool = False) -> torch.Tensor:
    """Attention of one query token per seq, q [seqs, heads, dim], over its first
    seq_lens[i] keys in the pages [blocks, block_size, kv_heads, dim] named by
    block_table[i] (int32). Call `load()` first. `portable` forces the plain-loop
    implementation where the AVX512-BF16 one would run (for tests)."""
    return torch.ops.semipd.paged_decode(q, k_pages, v_pages, block_table, seq_lens, scale,
                                         partition_size, portable)


def has_avx512_bf16() -> bool:
    """Whether the loaded kernel was built with the AVX512-BF16 bfloat16 path."""
    return bool(torch.ops.semipd.has_avx512_bf16())


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    why = load()
    print("C++ CPU kernels:", "ready" if why is None else f"unavailable ({why})")


def prefill_softmax(scores: torch.Tensor, last_visible: torch.Tensor, scale: float,
                    dtype: torch.dtype) -> torch.Tensor:
    """softmax(scale * scores) over keys [0, last_visible] of each row, zeros after, as
    `dtype`; scores [seqs * kv_heads, group * queries, keys] float32, last_visible
    [seqs, queries] int32 (csrc/fused_ops.cpp)."""
    return torch.ops.semipd.prefill_softmax(scores, last_visible, scale, dtype)
