"""Paged KV cache and attention over it, with torch ops (CPU, or CUDA without flashinfer).

Layout: one tensor per model, [num_layers, 2 (K, V), num_blocks, block_size,
num_kv_heads, head_dim] ("NHD" pages, as flashinfer and vLLM use), so a worker can hand
the whole pool to another process as ONE shared-memory tensor. Block i of a request's
block table holds its tokens [i * block_size, (i + 1) * block_size).

A step's tokens are one flat batch ordered as [all 1-token seqs..., all longer seqs...].
Each of the two groups runs as ONE SDPA call per layer (no per-token or per-seq Python):
queries padded to [num_seqs, max_new_tokens], keys gathered by block table into
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


@dataclass(frozen=True)
class SeqSlice:
    """One sequence's part of a step: tokens [num_context, num_context + num_new)."""

    num_context: int
    num_new: int
    block_ids: Sequence[int]


class KVCache:
    """The paged K/V pool of one model (all layers)."""

    def __init__(self, num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int,
                 head_dim: int, dtype: torch.dtype, device: str | torch.device = "cpu"):
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.data = torch.zeros(num_layers, 2, num_blocks, block_size, num_kv_heads, head_dim,
                                dtype=dtype, device=device)

    def share_memory(self) -> "KVCache":
        """Move the pool to shared memory, so worker processes can use the same blocks."""
        self.data.share_memory_()
        return self

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, V) pages of layer i, each [num_blocks, block_size, num_kv_heads, head_dim]."""
        return self.data[i, 0], self.data[i, 1]


@dataclass
class AttnGroup:
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
class AttnMetadata:
    """Everything attention needs for one step, built once and shared by all layers."""

    positions: torch.Tensor     # [num_tokens] absolute position of each new token
    slot_mapping: torch.Tensor  # [num_tokens] row in a layer's [num_blocks * block_size] K/V
    groups: list[AttnGroup]


def order_for_attention(num_new: Sequence[int]) -> list[int]:
    """Seq indices in flat-batch order (1-token seqs first, then the rest), given each
    seq's number of new tokens."""
    singles = [i for i, n in enumerate(num_new) if n == 1]
    return singles + [i for i, n in enumerate(num_new) if n != 1]


def build_metadata(seqs: Sequence[SeqSlice], block_size: int,
                   device: str | torch.device = "cpu") -> AttnMetadata:
    """Metadata for seqs ALREADY in flat-batch order (see `order_for_attention`)."""
    if any(s.num_new < 1 for s in seqs):
        raise ValueError("every scheduled seq needs at least one new token")
    num_singles = sum(1 for s in seqs if s.num_new == 1)
    if any(s.num_new == 1 for s in seqs[num_singles:]):
        raise ValueError("seqs must be ordered with all 1-token seqs first")
    table = _block_table(seqs, block_size)
    ctx = torch.tensor([s.num_context for s in seqs], dtype=torch.long)
    new = torch.tensor([s.num_new for s in seqs], dtype=torch.long)
    positions, slots = _positions_and_slots(table, ctx, new, block_size)
    groups, token_start = [], 0
    for lo, hi in ((0, num_singles), (num_singles, len(seqs))):
        if hi > lo:
            stop = token_start + int(new[lo:hi].sum())
            groups.append(_group(table[lo:hi], ctx[lo:hi], new[lo:hi], token_start, stop,
                                 block_size))
            token_start = stop
    return AttnMetadata(positions.to(device), slots.to(device),
                        [_to_device(g, device) for g in groups])


def positions_and_slots(seqs: Sequence[SeqSlice], block_size: int):
    """([num_tokens] positions, [num_tokens] cache slots) of the flat batch, on the host."""
    ctx = torch.tensor([s.num_context for s in seqs], dtype=torch.long)
    new = torch.tensor([s.num_new for s in seqs], dtype=torch.long)
    return _positions_and_slots(_block_table(seqs, block_size), ctx, new, block_size)


def _positions_and_slots(table, ctx, new, block_size):
    seq_of_token = torch.repeat_interleave(torch.arange(len(new)), new)
    offset = torch.arange(int(new.sum())) - (torch.cumsum(new, 0) - new)[seq_of_token]
    positions = ctx[seq_of_token] + offset
    slots = table[seq_of_token, positions // block_size] * block_size + positions % block_size
    return positions, slots


def _block_table(seqs: Sequence[SeqSlice], block_size: int) -> torch.Tensor:
    needed = [-(-(s.num_context + s.num_new) // block_size) for s in seqs]
    for s, n in zip(seqs, needed):
        if len(s.block_ids) < n:
            raise ValueError(f"block table has {len(s.block_ids)} blocks; {s.num_context}"
                             f"+{s.num_new} tokens need {n} of size {block_size}")
    width = max(needed)
    return torch.tensor([list(s.block_ids[:n]) + [0] * (width - n)
                         for s, n in zip(seqs, needed)], dtype=torch.long)


def _group(table: torch.Tensor, ctx: torch.Tensor, new: torch.Tensor, start: int, stop: int,
           block_size: int) -> AttnGroup:
    max_new = int(new.max())
    fresh = max_new > 1 and not bool(ctx.any())
    # Only as many block columns as this group's longest seq needs: decodes batched with
    # a long prompt must not gather (and mask) that prompt's extra blocks.
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
    return AttnGroup(start, stop, len(new), max_new, None if fresh else table, mask, pad_index)


def _to_device(g: AttnGroup, device) -> AttnGroup:
    move = lambda t: None if t is None else t.to(device)  # noqa: E731
    return AttnGroup(g.start, g.stop, g.num_seqs, g.max_new, move(g.block_table), move(g.mask),
                     move(g.pad_index))


def write_kv(k_pages: torch.Tensor, v_pages: torch.Tensor, slot_mapping: torch.Tensor,
             k: torch.Tensor, v: torch.Tensor) -> None:
    """Store new K/V [num_tokens, num_kv_heads, head_dim] at their slots."""
    k_pages.view(-1, *k_pages.shape[2:]).index_copy_(0, slot_mapping, k)
    v_pages.view(-1, *v_pages.shape[2:]).index_copy_(0, slot_mapping, v)


def paged_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_pages: torch.Tensor,
                    v_pages: torch.Tensor, meta: AttnMetadata, scale: float) -> torch.Tensor:
    """Attention of flat queries q [num_tokens, num_heads, head_dim] over the paged cache,
    which must already hold the step's new K/V (see `write_kv`). k, v [num_tokens,
    num_kv_heads, head_dim] are those new K/V, used directly by seqs without context."""
    out = torch.empty_like(q)
    for g in meta.groups:
        rows = slice(g.start, g.stop)
        out[rows] = _group_attention(q[rows], k[rows], v[rows], k_pages, v_pages, g, scale)
    return out


def _group_attention(q, k, v, k_pages, v_pages, g: AttnGroup, scale: float) -> torch.Tensor:
    num_heads, head_dim = q.shape[1], q.shape[2]
    if g.block_table is None:
        k, v = _padded(k, g), _padded(v, g)
    else:  # [seqs, blocks, block_size, kv_heads, dim] -> [seqs, keys, kv_heads, dim]
        k, v = k_pages[g.block_table].flatten(1, 2), v_pages[g.block_table].flatten(1, 2)
    k, v = k.transpose(1, 2), v.transpose(1, 2)  # [seqs, kv_heads, keys, dim]
    if g.max_new == 1:
        # Decode: the query heads sharing a KV head become that head's "query rows"
        # (same mask for all), so SDPA needs no GQA expansion (4x faster on CPU in bf16).
        out = F.scaled_dot_product_attention(q.view(g.num_seqs, k.shape[1], -1, head_dim), k, v,
                                             attn_mask=g.mask, scale=scale)
        return out.reshape(g.num_seqs, num_heads, head_dim)
    out = F.scaled_dot_product_attention(_padded(q, g).transpose(1, 2), k, v, attn_mask=g.mask,
                                         is_causal=g.mask is None, scale=scale, enable_gqa=True)
    out = out.transpose(1, 2).reshape(g.num_seqs * g.max_new, num_heads, head_dim)
    return out if g.pad_index is None else out[g.pad_index]


def _padded(x: torch.Tensor, g: AttnGroup) -> torch.Tensor:
    """Flat rows [tokens, heads, dim] -> [seqs, max_new, heads, dim] (zeros as padding)."""
    if g.pad_index is not None:
        x_pad = x.new_zeros(g.num_seqs * g.max_new, *x.shape[1:])
        x_pad[g.pad_index] = x
        x = x_pad
    return x.view(g.num_seqs, g.max_new, *x.shape[1:])
