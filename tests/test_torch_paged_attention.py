"""Paged attention (engines/torch/paged_attention.py) against a dense reference."""
import random

import pytest
import torch

from engines.torch.paged_attention import (KVCache, SeqSlice, build_metadata,
                                           order_for_attention, paged_attention, write_kv)

HQ, HKV, D = 4, 2, 16


def dense_attention(q, k, v, num_context):
    """Reference for one seq in float64: q [n, HQ, D]; k, v [num_context + n, HKV, D]."""
    group = HQ // HKV
    k = k.double().repeat_interleave(group, dim=1)
    v = v.double().repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.double(), k) * D ** -0.5
    n, total = q.shape[0], k.shape[0]
    visible = torch.arange(total)[None, :] <= (num_context + torch.arange(n))[:, None]
    scores = scores.masked_fill(~visible, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)


def random_step(rng: random.Random, block_size: int, num_blocks: int):
    """Random mixed seqs with block tables drawn from a shuffled pool."""
    pool = list(range(num_blocks))
    rng.shuffle(pool)
    seqs = []
    for _ in range(rng.randint(1, 6)):
        ctx = rng.choice([0, 0, rng.randint(1, 40)])
        new = rng.choice([1, rng.randint(1, 20)])
        if ctx == 0 and new == 1:
            new = 2
        needed = -(-(ctx + new) // block_size) + rng.randint(0, 1)  # tables may be longer
        seqs.append(SeqSlice(ctx, new, [pool.pop() for _ in range(needed)]))
    return seqs


def slot(s: SeqSlice, pos: int, block_size: int) -> int:
    return s.block_ids[pos // block_size] * block_size + pos % block_size


def check_against_dense(seqs, block_size, seed):
    gen = torch.Generator().manual_seed(seed)
    cache = KVCache(1, 160, block_size, HKV, D, torch.float32)
    k_pages, v_pages = cache.layer(0)
    seqs = [seqs[i] for i in order_for_attention([s.num_new for s in seqs])]
    dense = [(torch.randn(s.num_context + s.num_new, HKV, D, generator=gen),
              torch.randn(s.num_context + s.num_new, HKV, D, generator=gen),
              torch.randn(s.num_new, HQ, D, generator=gen)) for s in seqs]
    for s, (k, v, _) in zip(seqs, dense):  # earlier steps' KV, written slot by slot
        for pos in range(s.num_context):
            k_pages.view(-1, HKV, D)[slot(s, pos, block_size)] = k[pos]
            v_pages.view(-1, HKV, D)[slot(s, pos, block_size)] = v[pos]
    meta = build_metadata(seqs, block_size)
    new_k = torch.cat([k[s.num_context:] for s, (k, _, _) in zip(seqs, dense)])
    new_v = torch.cat([v[s.num_context:] for s, (_, v, _) in zip(seqs, dense)])
    write_kv(k_pages, v_pages, meta.slot_mapping, new_k, new_v)
    q = torch.cat([q for _, _, q in dense])
    out = paged_attention(q, new_k, new_v, k_pages, v_pages, meta, D ** -0.5)
    expected = torch.cat([dense_attention(q, k, v, s.num_context)
                          for s, (k, v, q) in zip(seqs, dense)])
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    return meta


@pytest.mark.parametrize("block_size", [1, 4, 16])
@pytest.mark.parametrize("seed", range(8))
def test_paged_attention_matches_dense_reference(seed, block_size):
    check_against_dense(random_step(random.Random(seed), block_size, 160), block_size, seed)


@pytest.mark.parametrize("lengths, causal_fast_path", [((9, 9, 9), True), ((9, 3, 12), False)])
def test_prompts_without_context_attend_to_their_own_new_kv(lengths, causal_fast_path):
    seqs = [SeqSlice(0, n, [3 * i, 3 * i + 1, 3 * i + 2]) for i, n in enumerate(lengths)]
    meta = check_against_dense(seqs + [SeqSlice(20, 1, [20, 21, 22])], 8, seed=0)
    prefill = meta.groups[1]
    assert prefill.block_table is None and (prefill.mask is None) == causal_fast_path


def test_metadata_positions_and_slots():
    seqs = [SeqSlice(5, 1, [7, 3]), SeqSlice(2, 3, [9, 1, 4])]
    meta = build_metadata(seqs, block_size=4)
    assert meta.positions.tolist() == [5, 2, 3, 4]
    assert meta.slot_mapping.tolist() == [3 * 4 + 1, 9 * 4 + 2, 9 * 4 + 3, 1 * 4 + 0]
    assert [(g.start, g.stop, g.max_new) for g in meta.groups] == [(0, 1, 1), (1, 4, 3)]
    wide = build_metadata([SeqSlice(3, 1, [7]), SeqSlice(4, 9, [9, 1, 4, 2])], block_size=4)
    assert [tuple(g.block_table.shape) for g in wide.groups] == [(1, 1), (1, 4)]


def test_metadata_rejects_short_block_table_and_bad_order():
    with pytest.raises(ValueError, match="need 2"):
        build_metadata([SeqSlice(4, 1, [0])], block_size=4)
    with pytest.raises(ValueError, match="at least one new token"):
        build_metadata([SeqSlice(4, 0, [0, 1])], block_size=4)
    with pytest.raises(ValueError, match="ordered"):
        build_metadata([SeqSlice(0, 3, [0]), SeqSlice(3, 1, [1])], block_size=4)


def test_order_puts_single_token_seqs_first_stably():
    assert order_for_attention([3, 1, 7, 1, 2]) == [1, 3, 0, 2, 4]
