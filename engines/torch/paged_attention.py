"""Paged KV cache and attention over it: torch ops plus a C++ decode kernel on CPU, torch
ops alone on CUDA without flashinfer.

Layout: one tensor per model, [num_layers, 2 (K, V), num_blocks, block_size,
num_kv_heads, head_dim] ("NHD" pages, as flashinfer and vLLM use), so a worker can hand
the whole pool to another process as ONE shared-memory tensor. Block i of a request's
block table holds its tokens [i * block_size, (i + 1) * block_size).

A step's work follows the real context lengths, not batch x longest context:
- Decodes (seqs with one new token) go to the C++ kernel (cpu_kernels.py), which reads
  K/V in place through the block table: the cost is the sum of the context lengths, and
  a long context is split across threads and merged by log-sum-exp.
- Everything else (prompts, chunks over existing KV, and decodes where the kernel could
  not be built) runs as one SDPA call per *bucket*. `TorchAttention.order` sorts the flat
  batch by length, and a bucket is a run of seqs whose new-token counts and whose total
  lengths each differ by at most BUCKET_RATIO, so padding inflates a bucket's work by at
  most BUCKET_RATIO ** 2. A bucket's keys are gathered with index_select of its own
  blocks only; fresh prompts use the step's new K/V directly.
Why not pure torch for decodes too: batching variable-length matrix-vector products in
torch means padding or many small calls; on 48 decodes (1 x 1,800 + 47 x 330 tokens)
the kernel was 3-4x faster than the best bucketed SDPA (benchmarks/attention_step.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from engines.torch import cpu_kernels as kernel

BUCKET_RATIO = 1.25
# Keys per work item of the decode kernel: smaller splits long contexts over more
# threads, larger has fewer log-sum-exp merges; 256 was fastest on the skewed batch.
DECODE_PARTITION_TOKENS = 256
# Largest float32 score matrix (elements, ~64 MB) a prompt bucket computes whole with the
# C++ masked softmax; larger buckets (long prompts) use SDPA's flash kernel, whose memory
# does not grow with prompt length squared.
PROMPT_SCORES_LIMIT = 16 * 2**20


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
class SdpaBucket:
    """Seqs attended in one SDPA call; their tokens are flat rows [start, stop)."""

    start: int
    stop: int
    num_seqs: int
    max_new: int
    # [num_seqs * blocks_per_seq] int64 block ids (each seq's row padded with block 0);
    # None when no seq has context: keys are then the step's own new K/V.
    gather: torch.Tensor | None
    mask: torch.Tensor | None       # [num_seqs, 1, max_new, num_keys] bool; None: causal/all
    pad_index: torch.Tensor | None  # flat row -> row of [num_seqs * max_new]; None: no padding
    # [num_seqs, max_new] int32 key index each query row sees up to: set when the C++
    # kernels are in use, and then the bucket runs as matmul + the C++ masked softmax
    # instead of SDPA if its scores fit PROMPT_SCORES_LIMIT (see _prompt_attention).
    last_visible: torch.Tensor | None = None


@dataclass
class DecodeGroup:
    """1-token seqs for the C++ kernel; their tokens are flat rows [start, stop)."""

    start: int
    stop: int
    block_table: torch.Tensor  # [num_seqs, max_blocks] int32
    seq_lens: torch.Tensor     # [num_seqs] int32: keys of each seq, its new token included


@dataclass
class AttnMetadata:
    """Everything attention needs for one step, built once and shared by all layers."""

    positions: torch.Tensor     # [num_tokens] absolute position of each new token
    slot_mapping: torch.Tensor  # [num_tokens] row in a layer's [num_blocks * block_size] K/V
    groups: list[SdpaBucket | DecodeGroup]


class TorchAttention:
    """AttentionBackend (model.py) over the paged cache.

    `decode_kernel`: True requires the C++ kernel (RuntimeError if it cannot be built),
    False never uses it, None uses it when it builds (CPU only) and `calibrate` does not
    find the pure-torch path faster for the model's shapes (attention_choice.py).
    """

    def __init__(self, device: str | torch.device = "cpu", decode_kernel: bool | None = None):
        self.device = torch.device(device)
        self.use_kernel = False
        self.auto = decode_kernel is None
        self.calibration_ms: dict[str, float] | None = None  # auto: measured ms per decode path
        if decode_kernel is not False and self.device.type == "cpu":
            why = kernel.load()
            if why is not None and decode_kernel:
                raise RuntimeError(f"the C++ decode-attention kernel is unavailable: {why}")
            self.use_kernel = why is None
        elif decode_kernel:
            raise RuntimeError(f"the C++ decode-attention kernel runs on CPU, not {self.device}")

    @property
    def name(self) -> str:
        return "paged+kernel" if self.use_kernel else "paged"

    def calibrate(self, num_heads: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype) -> None:
        """auto: keep the kernel only if it is measured faster here for these shapes."""
        if self.auto and self.use_kernel:
            from engines.torch.attention_choice import time_attention_paths_ms
            self.calibration_ms = time_attention_paths_ms(num_heads, num_kv_heads, head_dim, dtype)
            self.use_kernel = self.calibration_ms["kernel"] <= self.calibration_ms["torch"]

    def order(self, seqs: Sequence[SeqSlice]) -> list[int]:
        return order_for_attention(seqs)

    def build(self, seqs: Sequence[SeqSlice], block_size: int) -> AttnMetadata:
        return build_metadata(seqs, block_size, self.device, self.use_kernel)

    def attend(self, q, k, v, k_pages, v_pages, meta: AttnMetadata, scale: float):
        return paged_attention(q, k, v, k_pages, v_pages, meta, scale)


def order_for_attention(seqs: Sequence[SeqSlice]) -> list[int]:
    """Seq indices in flat-batch order: 1-token seqs by total length, then the rest by
    (new tokens, total length); ties keep plan order."""
    total = lambda i: seqs[i].num_context + seqs[i].num_new  # noqa: E731
    singles = sorted((i for i, s in enumerate(seqs) if s.num_new == 1), key=total)
    rest = sorted((i for i, s in enumerate(seqs) if s.num_new != 1),
                  key=lambda i: (seqs[i].num_new, total(i)))
    return singles + rest


def bucket_bounds(seqs: Sequence[SeqSlice], ratio: float = BUCKET_RATIO) -> list[tuple[int, int]]:
    """[lo, hi) runs of the ordered seqs that share one SDPA call: all 1-token or all
    longer, with max/min of new tokens and of total length each <= ratio."""
    bounds, lo = [], 0
    for i in range(1, len(seqs) + 1):
        if i < len(seqs) and _fits(seqs[lo:i + 1], ratio):
            continue
        bounds.append((lo, i))
        lo = i
    return bounds


def _fits(run: Sequence[SeqSlice], ratio: float) -> bool:
    new = [s.num_new for s in run]
    total = [s.num_context + s.num_new for s in run]
    single = [n == 1 for n in new]
    return (all(single) or not any(single)) and max(new) <= ratio * min(new) \
        and max(total) <= ratio * min(total)


def build_metadata(seqs: Sequence[SeqSlice], block_size: int, device: str | torch.device = "cpu",
                   use_kernel: bool = False) -> AttnMetadata:
    """Metadata for seqs ALREADY in flat-batch order (see `order_for_attention`)."""
    if any(s.num_new < 1 for s in seqs):
        raise ValueError("every scheduled seq needs at least one new token")
    if [seqs[i] for i in order_for_attention(seqs)] != list(seqs):
        raise ValueError("seqs must be in order_for_attention's order")
    table = block_table(seqs, block_size)
    ctx = torch.tensor([s.num_context for s in seqs], dtype=torch.long)
    new = torch.tensor([s.num_new for s in seqs], dtype=torch.long)
    positions, slots = positions_and_slots_of(table, ctx, new, block_size)
    starts = [0] + torch.cumsum(new, 0).tolist()
    num_singles = sum(1 for s in seqs if s.num_new == 1)
    groups: list[SdpaBucket | DecodeGroup] = []
    if use_kernel and num_singles:
        width = -(-int((ctx + new)[:num_singles].max()) // block_size)
        groups.append(DecodeGroup(0, num_singles, table[:num_singles, :width].to(torch.int32).contiguous(),
                                  (ctx + new)[:num_singles].to(torch.int32)))
    first = num_singles if use_kernel else 0
    for lo, hi in bucket_bounds(seqs[first:]):
        lo, hi = lo + first, hi + first
        groups.append(_bucket(table[lo:hi], ctx[lo:hi], new[lo:hi], starts[lo], starts[hi],
                              block_size, use_kernel))
    return AttnMetadata(positions.to(device), slots.to(device),
                        [_to_device(g, device) for g in groups])


def positions_and_slots(seqs: Sequence[SeqSlice], block_size: int):
    """([num_tokens] positions, [num_tokens] cache slots) of the flat batch, on the host."""
    ctx = torch.tensor([s.num_context for s in seqs], dtype=torch.long)
    new = torch.tensor([s.num_new for s in seqs], dtype=torch.long)
    return positions_and_slots_of(block_table(seqs, block_size), ctx, new, block_size)


def positions_and_slots_of(table, ctx, new, block_size):
    seq_of_token = torch.repeat_interleave(torch.arange(len(new)), new)
    offset = torch.arange(int(new.sum())) - (torch.cumsum(new, 0) - new)[seq_of_token]
    positions = ctx[seq_of_token] + offset
    slots = table[seq_of_token, positions // block_size] * block_size + positions % block_size
    return positions, slots


def block_table(seqs: Sequence[SeqSlice], block_size: int) -> torch.Tensor:
    """[num_seqs, most blocks any seq needs] int64, each row padded with block 0."""
    needed = [-(-(s.num_context + s.num_new) // block_size) for s in seqs]
    for s, n in zip(seqs, needed):
        if len(s.block_ids) < n:
            raise ValueError(f"block table has {len(s.block_ids)} blocks; {s.num_context}"
                             f"+{s.num_new} tokens need {n} of size {block_size}")
    width = max(needed, default=0)
    return torch.tensor([list(s.block_ids[:n]) + [0] * (width - n)
                         for s, n in zip(seqs, needed)], dtype=torch.long).view(len(seqs), width)


def _bucket(table: torch.Tensor, ctx: torch.Tensor, new: torch.Tensor, start: int, stop: int,
            block_size: int, use_kernel: bool = False) -> SdpaBucket:
    max_new, total = int(new.max()), ctx + new
    fresh = max_new > 1 and not bool(ctx.any())
    width = -(-int(total.max()) // block_size)  # only the blocks this bucket's seqs need
    num_keys = max_new if fresh else width * block_size
    pad_index = None
    if bool((new != max_new).any()):
        seq = torch.repeat_interleave(torch.arange(len(new)), new)
        offset = torch.arange(stop - start) - (torch.cumsum(new, 0) - new)[seq]
        pad_index = seq * max_new + offset
    needs_mask = pad_index is not None or bool((total != num_keys).any()) or (not fresh and max_new > 1)
    for_kernel = use_kernel and max_new > 1
    mask = last_visible = None
    if needs_mask or for_kernel:
        # The last key each query row sees. Padded query rows repeat the last real query's
        # visibility, so no row is fully masked (SDPA would give NaN); their outputs are dropped.
        last_visible = ctx[:, None] + torch.minimum(torch.arange(max_new)[None, :], new[:, None] - 1)
        if needs_mask:
            mask = (torch.arange(num_keys)[None, None, :] <= last_visible[:, :, None])[:, None]
    gather = None if fresh else table[:, :width].reshape(-1)
    kernel_rows = last_visible.to(torch.int32) if for_kernel else None
    return SdpaBucket(start, stop, len(new), max_new, gather, mask, pad_index, kernel_rows)


def _to_device(g: SdpaBucket | DecodeGroup, device) -> SdpaBucket | DecodeGroup:
    move = lambda t: None if t is None else t.to(device)  # noqa: E731
    if isinstance(g, DecodeGroup):
        return DecodeGroup(g.start, g.stop, g.block_table.to(device), g.seq_lens.to(device))
    return SdpaBucket(g.start, g.stop, g.num_seqs, g.max_new, move(g.gather), move(g.mask),
                      move(g.pad_index), move(g.last_visible))


def write_kv(k_pages: torch.Tensor, v_pages: torch.Tensor, slot_mapping: torch.Tensor,
             k: torch.Tensor, v: torch.Tensor) -> None:
    """Store new K/V [num_tokens, num_kv_heads, head_dim] at their slots."""
    k_pages.view(-1, *k_pages.shape[2:]).index_copy_(0, slot_mapping, k)
    v_pages.view(-1, *v_pages.shape[2:]).index_copy_(0, slot_mapping, v)


def paged_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_pages: torch.Tensor,
                    v_pages: torch.Tensor, meta: AttnMetadata, scale: float) -> torch.Tensor:
    """Attention of flat queries q [num_tokens, num_heads, head_dim] over the paged cache,
    which must already hold the step's new K/V (see `write_kv`). k, v [num_tokens,
    num_kv_heads, head_dim] are those new K/V, used directly by fresh prompts."""
    if len(meta.groups) == 1 and isinstance(meta.groups[0], DecodeGroup):
        return _decode(q, k_pages, v_pages, meta.groups[0], scale)  # all decodes: no copy
    out = torch.empty_like(q)
    for g in meta.groups:
        rows = slice(g.start, g.stop)
        if isinstance(g, DecodeGroup):
            out[rows] = _decode(q[rows], k_pages, v_pages, g, scale)
        else:
            out[rows] = _bucket_attention(q[rows], k[rows], v[rows], k_pages, v_pages, g, scale)
    return out


def _decode(q, k_pages, v_pages, g: DecodeGroup, scale: float) -> torch.Tensor:
    return kernel.paged_decode(q.contiguous(), k_pages, v_pages, g.block_table, g.seq_lens,
                                      scale, DECODE_PARTITION_TOKENS)


def _bucket_attention(q, k, v, k_pages, v_pages, g: SdpaBucket, scale: float) -> torch.Tensor:
    num_heads, head_dim = q.shape[1], q.shape[2]
    if g.gather is None:
        k, v = _padded(k, g), _padded(v, g)
    else:  # the bucket's blocks, [seqs * blocks, block_size, kv_heads, dim] -> [seqs, keys, ...]
        k = k_pages.index_select(0, g.gather).view(g.num_seqs, -1, *k_pages.shape[2:])
        v = v_pages.index_select(0, g.gather).view(g.num_seqs, -1, *v_pages.shape[2:])
    if g.last_visible is not None and g.num_seqs * g.max_new * num_heads * k.shape[1] <= PROMPT_SCORES_LIMIT:
        return _prompt_attention(q, k, v, g, scale)
    k, v = k.transpose(1, 2), v.transpose(1, 2)  # [seqs, kv_heads, keys, dim]
    if g.max_new == 1:
        # Decode: the query heads sharing a KV head become that head's "query rows"
        # (same mask for all), so SDPA needs no GQA expansion (4x faster on CPU in bf16).
        out = F.scaled_dot_product_attention(q.reshape(g.num_seqs, k.shape[1], -1, head_dim), k, v,
                                             attn_mask=g.mask, scale=scale)
        return out.reshape(g.num_seqs, num_heads, head_dim)
    out = F.scaled_dot_product_attention(_padded(q, g).transpose(1, 2), k, v, attn_mask=g.mask,
                                         is_causal=g.mask is None, scale=scale, enable_gqa=True)
    out = out.transpose(1, 2).reshape(g.num_seqs * g.max_new, num_heads, head_dim)
    return out if g.pad_index is None else out[g.pad_index]


def _prompt_attention(q, k, v, g: SdpaBucket, scale: float) -> torch.Tensor:
    """A bucket of multi-token seqs as two batched matmuls around the C++ masked softmax.

    k, v [seqs, keys, kv_heads, dim]. The query heads that share a KV head are stacked as
    rows of one matrix, so each (seq, KV head) is one matmul pair without repeating K/V.
    Scores are float32 (bf16 inputs multiply exactly; SDPA also sums in float32), the
    probabilities are rounded to the model dtype for the values matmul, as SDPA's CPU
    flash kernel does. On 2 AVX-512 cores (small_llama, 32 prompts x 128 tokens, bf16)
    this took ~6.5 ms per layer against SDPA's ~11 ms: the flash kernel's per-block
    overhead dominates at these sizes.
    """
    seqs, queries, (num_heads, head_dim), kv_heads = g.num_seqs, g.max_new, q.shape[1:], k.shape[2]
    group, keys = num_heads // kv_heads, k.shape[1]
    rows = _padded(q, g).view(seqs, queries, kv_heads, group, head_dim).permute(0, 2, 3, 1, 4)
    rows = rows.reshape(seqs * kv_heads, group * queries, head_dim)
    k_t = k.permute(0, 2, 3, 1).reshape(seqs * kv_heads, head_dim, keys)
    scores = torch.bmm(rows.float(), k_t.float())
    probs = kernel.prefill_softmax(scores, g.last_visible, scale, q.dtype)
    out = torch.bmm(probs, v.permute(0, 2, 1, 3).reshape(seqs * kv_heads, keys, head_dim))
    out = out.view(seqs, kv_heads, group, queries, head_dim).permute(0, 3, 1, 2, 4)
    out = out.reshape(seqs * queries, num_heads, head_dim)
    return out if g.pad_index is None else out[g.pad_index]


def _padded(x: torch.Tensor, g: SdpaBucket) -> torch.Tensor:
    """Flat rows [tokens, heads, dim] -> [seqs, max_new, heads, dim] (zeros as padding)."""
    if g.pad_index is not None:
        x_pad = x.new_zeros(g.num_seqs * g.max_new, *x.shape[1:])
        x_pad[g.pad_index] = x
        x = x_pad
    return x.view(g.num_seqs, g.max_new, *x.shape[1:])
