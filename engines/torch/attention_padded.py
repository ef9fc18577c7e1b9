"""The previous CPU attention path, kept as a baseline: one SDPA per group of seqs padded
to the group's longest context (`executor.attention=padded`).

benchmarks/attention_step.py times it beside the current path (paged_attention.py), and
tests use it as a second, independent reference. Its cost is batch x longest context:
one 1,800-token seq among 47 of 330 tokens makes a decode step several times slower.

A step's tokens are one flat batch ordered as [all 1-token seqs..., all longer seqs...].
Each of the two groups runs as ONE SDPA call per layer: queries padded to
[num_seqs, max_new_tokens], keys gathered by block table into
[num_seqs, max_blocks * block_size], and a boolean mask (key j visible to new token i
iff j <= num_context + i). When no seq of the group has context (fresh prompts), the
keys are the step's own new K/V, nothing is gathered, and with equal prompt lengths
SDPA's built-in causal mask replaces the explicit one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from engines.torch.paged_attention import SeqSlice, block_table, positions_and_slots_of


@dataclass
class PaddedGroup:
    """Seqs attended in one padded SDPA call; their tokens are flat rows [start, stop)."""

    start: int
    stop: int
    num_seqs: int
    max_new: int
    # [num_seqs, max_blocks] int64, padded with block 0; None when no seq has context,
    # so keys are the step's own new K/V and nothing is gathered from the cache.
    block_table: torch.Tensor | None
    mask: torch.Tensor | None   # [num_seqs, 1, max_new, num_keys] bool; None: plain causal
    pad_index: torch.Tensor | None  # flat row -> row of [num_seqs * max_new]; None: no padding


@dataclass
class PaddedMetadata:
    positions: torch.Tensor     # [num_tokens] absolute position of each new token
    slot_mapping: torch.Tensor  # [num_tokens] row in a layer's [num_blocks * block_size] K/V
    groups: list[PaddedGroup]


class PaddedAttention:
    """AttentionBackend (model.py): the padded path."""

    name = "padded"

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = device

    def order(self, seqs: Sequence[SeqSlice]) -> list[int]:
        """1-token seqs first, then the rest, each in plan order."""
        singles = [i for i, s in enumerate(seqs) if s.num_new == 1]
        return singles + [i for i, s in enumerate(seqs) if s.num_new != 1]

    def build(self, seqs: Sequence[SeqSlice], block_size: int) -> PaddedMetadata:
        return build_padded_metadata(seqs, block_size, self.device)

    def attend(self, q, k, v, k_pages, v_pages, meta: PaddedMetadata, scale: float):
        out = torch.empty_like(q)
        for g in meta.groups:
            rows = slice(g.start, g.stop)
            out[rows] = _group_attention(q[rows], k[rows], v[rows], k_pages, v_pages, g, scale)
        return out


def build_padded_metadata(seqs: Sequence[SeqSlice], block_size: int,
                          device: str | torch.device = "cpu") -> PaddedMetadata:
    """Metadata for seqs ALREADY ordered with all 1-token seqs first."""
    if any(s.num_new < 1 for s in seqs):
        raise ValueError("every scheduled seq needs at least one new token")
    num_singles = sum(1 for s in seqs if s.num_new == 1)
    if any(s.num_new == 1 for s in seqs[num_singles:]):
        raise ValueError("seqs must be ordered with all 1-token seqs first")
    table = block_table(seqs, block_size)
    ctx = torch.tensor([s.num_context for s in seqs], dtype=torch.long)
    new = torch.tensor([s.num_new for s in seqs], dtype=torch.long)
    positions, slots = positions_and_slots_of(table, ctx, new, block_size)
    groups, token_start = [], 0
    for lo, hi in ((0, num_singles), (num_singles, len(seqs))):
        if hi > lo:
            stop = token_start + int(new[lo:hi].sum())
            groups.append(_group(table[lo:hi], ctx[lo:hi], new[lo:hi], token_start, stop,
                                 block_size))
            token_start = stop
    move = lambda t: None if t is None else t.to(device)  # noqa: E731
    return PaddedMetadata(positions.to(device), slots.to(device), [
        PaddedGroup(g.start, g.stop, g.num_seqs, g.max_new, move(g.block_table), move(g.mask),
                    move(g.pad_index)) for g in groups])


def _group(table: torch.Tensor, ctx: torch.Tensor, new: torch.Tensor, start: int, stop: int,
           block_size: int) -> PaddedGroup:
    max_new = int(new.max())
    fresh = max_new > 1 and not bool(ctx.any())
    table = table[:, :-(-int((ctx + new).max()) // block_size)]
    num_keys = max_new if fresh else table.shape[1] * block_size
    pad_index = None
    if bool((new != max_new).any()):
        seq = torch.repeat_interleave(torch.arange(len(new)), new)
        offset = torch.arange(stop - start) - (torch.cumsum(new, 0) - new)[seq]
        pad_index = seq * max_new + offset
    mask = None
    if not fresh or pad_index is not None:
        # Padded query rows repeat the last real query's visibility, so no row is fully
        # masked (that would make SDPA produce NaN); their outputs are dropped.
        rows = torch.arange(max_new)
        last_visible = ctx[:, None] + torch.minimum(rows[None, :], new[:, None] - 1)
        mask = (torch.arange(num_keys)[None, None, :] <= last_visible[:, :, None])[:, None]
    return PaddedGroup(start, stop, len(new), max_new, None if fresh else table, mask, pad_index)


def _group_attention(q, k, v, k_pages, v_pages, g: PaddedGroup, scale: float) -> torch.Tensor:
    num_heads, head_dim = q.shape[1], q.shape[2]
    if g.block_table is None:
        k, v = _padded(k, g), _padded(v, g)
    else:  # [seqs, blocks, block_size, kv_heads, dim] -> [seqs, keys, kv_heads, dim]
        k, v = k_pages[g.block_table].flatten(1, 2), v_pages[g.block_table].flatten(1, 2)
    k, v = k.transpose(1, 2), v.transpose(1, 2)  # [seqs, kv_heads, keys, dim]
    if g.max_new == 1:
        out = F.scaled_dot_product_attention(q.view(g.num_seqs, k.shape[1], -1, head_dim), k, v,
                                             attn_mask=g.mask, scale=scale)
        return out.reshape(g.num_seqs, num_heads, head_dim)
    out = F.scaled_dot_product_attention(_padded(q, g).transpose(1, 2), k, v, attn_mask=g.mask,
                                         is_causal=g.mask is None, scale=scale, enable_gqa=True)
    out = out.transpose(1, 2).reshape(g.num_seqs * g.max_new, num_heads, head_dim)
    return out if g.pad_index is None else out[g.pad_index]


def _padded(x: torch.Tensor, g: PaddedGroup) -> torch.Tensor:
    """Flat rows [tokens, heads, dim] -> [seqs, max_new, heads, dim] (zeros as padding)."""
    if g.pad_index is not None:
        x_pad = x.new_zeros(g.num_seqs * g.max_new, *x.shape[1:])
        x_pad[g.pad_index] = x
        x = x_pad
    return x.view(g.num_seqs, g.max_new, *x.shape[1:])
