"""The elementwise ops of a Llama layer, two ways: plain torch (the reference, any
device) and the fused C++ CPU kernels (csrc/fused_ops.cpp via cpu_kernels.py).

The model calls them through an `ops` object so that one forward serves both. The fused
ops round where the torch ones do (see fused_ops.cpp); tests/test_torch_fused.py checks
them against these references, and the HF-greedy tests run the model both ways.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from engines.torch.rope import apply_rope


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # Normalise in float32 and cast back before the weight, as transformers does, so the
    # bf16 path rounds at the same places as the reference implementation.
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


class TorchOps:
    name = "torch"

    @staticmethod
    def rms_norm(x, weight, eps):
        return rms_norm(x, weight, eps)

    @staticmethod
    def add_rms_norm(residual, x, weight, eps):
        """(residual + x, rms_norm(residual + x))."""
        h = residual + x
        return h, rms_norm(h, weight, eps)

    @staticmethod
    def silu_and_mul(x):
        """SiLU(gate) * up for x = [gate; up] along the last dim."""
        gate, up = x.chunk(2, dim=-1)
        return F.silu(gate) * up

    @staticmethod
    def rope(x, cos, sin):
        """x [tokens, heads, head_dim] rotated by cos/sin [tokens, 1, head_dim // 2]
        (a new tensor here; the fused op rotates in place)."""
        return apply_rope(x, cos, sin)


class FusedOps:
    name = "fused"

    @staticmethod
    def rms_norm(x, weight, eps):
        return torch.ops.semipd.rms_norm(x, weight, eps)

    @staticmethod
    def add_rms_norm(residual, x, weight, eps):
        return torch.ops.semipd.add_rms_norm(residual, x, weight, eps)

    @staticmethod
    def silu_and_mul(x):
        return torch.ops.semipd.silu_and_mul(x)

    @staticmethod
    def rope(x, cos, sin):
        return torch.ops.semipd.rope_(x, cos.view(cos.shape[0], -1), sin.view(sin.shape[0], -1))


def select_ops(device: torch.device, dtype: torch.dtype, fused: bool | None = None):
    """FusedOps on CPU for float32/bfloat16 when the C++ kernels build, else TorchOps.
    fused=True requires them (RuntimeError otherwise); False always gives TorchOps."""
    if fused is False:
        return TorchOps
    why = None
    if device.type != "cpu" or dtype not in (torch.float32, torch.bfloat16):
        why = f"they run on CPU in float32 or bfloat16, not {device.type} {dtype}"
    else:
        from engines.torch import cpu_kernels
        why = cpu_kernels.load()
    if why is None:
        return FusedOps
    if fused:
        raise RuntimeError(f"fused ops were required but are unavailable: {why}")
    return TorchOps
