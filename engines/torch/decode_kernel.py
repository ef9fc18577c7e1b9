"""Build and load the C++ decode-attention kernel (csrc/paged_decode.cpp) on first use.

The kernel is compiled with torch's cpp_extension (g++ and ninja: `apt install g++`,
`pip install ninja`) into torch's extension cache (~/.cache/torch_extensions, or
$TORCH_EXTENSIONS_DIR), once per machine; later processes only load it (~0.1 s).
It is built with -march=native, so the library name carries a hash of this CPU's model
and instruction-set flags (a cache shared between different CPUs never loads a library
built for another) and of the source (two checkouts with different kernels, as in the
A/B regression gate, each keep their own build instead of rebuilding in turn). If the
build fails (no compiler), `load()` returns the reason, and the attention falls back to
the pure-torch path (paged_attention.py).

    python -m engines.torch.decode_kernel      # build now (make setup does this)
"""
from __future__ import annotations

import functools
import hashlib
import logging
import platform
from pathlib import Path

import torch

log = logging.getLogger(__name__)
SOURCE = Path(__file__).resolve().parent / "csrc" / "paged_decode.cpp"
CFLAGS = ["-O3", "-march=native", "-fopenmp-simd"]


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
        source_hash = hashlib.sha256(SOURCE.read_bytes() + " ".join(CFLAGS).encode()).hexdigest()[:10]
        build(name=f"semipd_paged_decode_{_cpu_fingerprint()}_{source_hash}", sources=[str(SOURCE)],
              extra_cflags=CFLAGS, is_python_module=False, verbose=False)
    except Exception as err:  # no compiler or ninja, compile error, load error
        reason = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
        log.warning("decode-attention kernel unavailable (%s); using the pure-torch path", reason)
        return reason
    return None


def available() -> bool:
    return load() is None


def paged_decode(q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor,
                 block_table: torch.Tensor, seq_lens: torch.Tensor, scale: float,
                 partition_size: int) -> torch.Tensor:
    """Attention of one query token per seq, q [seqs, heads, dim], over its first
    seq_lens[i] keys in the pages [blocks, block_size, kv_heads, dim] named by
    block_table[i] (int32). Call `load()` first."""
    return torch.ops.semipd.paged_decode(q, k_pages, v_pages, block_table, seq_lens, scale,
                                         partition_size)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    why = load()
    print("decode kernel:", "ready" if why is None else f"unavailable ({why})")
