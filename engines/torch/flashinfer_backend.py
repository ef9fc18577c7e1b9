"""CUDA paged attention with flashinfer. UNVERIFIED: no GPU was available when written.

Only the metadata builder (`flashinfer_metadata`) is tested, on CPU. The kernels follow
flashinfer's documented API: BatchPrefillWithPagedKVCacheWrapper handles every seq of a
step, 1-token decodes included (qo_len 1), with causal=True, which flashinfer aligns to
the bottom right (query i of a seq with kv_len L sees keys <= L - qo_len + i), matching
our "context + causal within the new tokens". Pages are NHD, i.e. the per-layer
K / V views of KVCache: [num_blocks, block_size, num_kv_heads, head_dim].
K/V writes use the same torch index_copy_ as the CPU path (write_kv).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from engines.torch.paged_attention import SeqSlice, positions_and_slots

WORKSPACE_BYTES = 128 << 20  # flashinfer's documented example size


def flashinfer_available() -> bool:
    try:
        import flashinfer  # noqa: F401
    except Exception:  # ImportError, or CUDA/JIT errors at import time
        return False
    return torch.cuda.is_available()


@dataclass
class FlashInferMetadata:
    qo_indptr: torch.Tensor       # [num_seqs + 1] int32, rows of each seq's new tokens
    kv_indptr: torch.Tensor       # [num_seqs + 1] int32, offsets into kv_indices
    kv_indices: torch.Tensor      # [sum of pages] int32, each seq's used block ids
    kv_last_page_len: torch.Tensor  # [num_seqs] int32 in [1, block_size]
    positions: torch.Tensor | None = None
    slot_mapping: torch.Tensor | None = None


def flashinfer_metadata(seqs: Sequence[SeqSlice], block_size: int) -> FlashInferMetadata:
    """CSR page tables for flashinfer from block tables (host tensors, int32).

    A seq holding L = num_context + num_new tokens uses its first ceil(L / block_size)
    blocks; the last of them holds L - (pages - 1) * block_size tokens.
    """
    qo, kv, indices, last = [0], [0], [], []
    for s in seqs:
        length = s.num_context + s.num_new
        pages = -(-length // block_size)
        if len(s.block_ids) < pages:
            raise ValueError(f"block table has {len(s.block_ids)} blocks; {length} tokens "
                             f"need {pages} of size {block_size}")
        indices.extend(s.block_ids[:pages])
        qo.append(qo[-1] + s.num_new)
        kv.append(kv[-1] + pages)
        last.append(length - (pages - 1) * block_size)
    as_int32 = lambda xs: torch.tensor(xs, dtype=torch.int32)  # noqa: E731
    return FlashInferMetadata(as_int32(qo), as_int32(kv), as_int32(indices), as_int32(last))


class FlashInferAttention:
    """AttentionBackend (see model.py) over flashinfer's paged prefill kernel."""

    name = "flashinfer"

    def __init__(self, device: torch.device, num_qo_heads: int, num_kv_heads: int,
                 head_dim: int, dtype: torch.dtype, scale: float):
        import flashinfer
        self.device, self.dtype, self.scale = device, dtype, scale
        self.heads = (num_qo_heads, num_kv_heads, head_dim)
        workspace = torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device=device)
        self.wrapper = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD")

    def order(self, seqs: Sequence[SeqSlice]) -> list[int]:
        return list(range(len(seqs)))  # flashinfer takes seqs in any order

    def build(self, seqs: Sequence[SeqSlice], block_size: int) -> FlashInferMetadata:
        """Plan the step once; every layer then reuses the plan in `attend`."""
        meta = flashinfer_metadata(seqs, block_size)
        positions, slots = positions_and_slots(seqs, block_size)
        meta.positions, meta.slot_mapping = positions.to(self.device), slots.to(self.device)
        self.wrapper.plan(
            meta.qo_indptr.to(self.device), meta.kv_indptr.to(self.device),
            meta.kv_indices.to(self.device), meta.kv_last_page_len.to(self.device),
            *self.heads, block_size, causal=True, sm_scale=self.scale,
            q_data_type=self.dtype, kv_data_type=self.dtype)
        return meta

    def attend(self, q, k, v, k_pages, v_pages, meta: FlashInferMetadata, scale: float):
        return self.wrapper.run(q.contiguous(), (k_pages, v_pages))
