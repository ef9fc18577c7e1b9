"""Rotary position embedding (RoPE), plain or with Llama-3 / linear frequency scaling.

Frequencies follow transformers' `_compute_llama3_parameters` exactly (float32), so
logits match LlamaForCausalLM to float32 rounding.
"""
from __future__ import annotations

import math

import torch

from engines.torch.config import LlamaConfig


def inv_frequencies(config: LlamaConfig) -> torch.Tensor:
    """[head_dim // 2] float32 inverse frequencies after rope scaling."""
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64)
                                            .to(torch.float32) / dim))
    scaling = config.rope_scaling or {}
    if scaling.get("rope_type") == "linear":
        return inv_freq / scaling["factor"]
    if scaling.get("rope_type") == "llama3":
        return _llama3_scale(inv_freq, scaling)
    return inv_freq


def _llama3_scale(inv_freq: torch.Tensor, s: dict) -> torch.Tensor:
    # Long wavelengths are slowed by `factor`, short ones kept, the band between the two
    # wavelength thresholds interpolated smoothly (Llama-3.1 context extension).
    factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
    old_len = s["original_max_position_embeddings"]
    low_freq_wavelen, high_freq_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def cos_sin(inv_freq: torch.Tensor, positions: torch.Tensor,
            dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token (cos, sin) [tokens, 1, head_dim // 2] for `apply_rope`.

    Angles are computed in float32 and only then cast, as transformers does; computing
    them per step (not from a table) keeps them exact after the model is cast to bf16
    and costs nothing next to the matmuls.
    """
    angles = positions.to(torch.float32)[:, None, None] * inv_freq.to(positions.device)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [tokens, heads, head_dim] by per-token cos/sin [tokens, 1, head_dim // 2].

    Half-split ("rotate_half") convention, as in Hugging Face Llama checkpoints.
    """
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
