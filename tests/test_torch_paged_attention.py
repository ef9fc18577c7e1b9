"""Paged attention (engines/torch/paged_attention.py: C++ decode kernel and pure-torch
buckets; attention_padded.py: the old path) against a dense float64 reference."""
import random

import pytest
import torch

from engines.torch.paged_attention import (BUCKET_RATIO, DECODE_PARTITION_TOKENS, DecodeGroup,
                                           KVCache, SdpaBucket, SeqSlice, TorchAttention,
                                           bucket_bounds, build_metadata, order_for_attention,
                                           write_kv)
from tests.attention_backends import BACKENDS, attention_backend

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


def with_tables(shapes, block_size, rng: random.Random, spare_blocks=0):
    """SeqSlices for (num_context, num_new) shapes, block ids drawn from a shuffled pool
    (tables may hold more blocks than needed)."""
    needed = [-(-(c + n) // block_size) for c, n in shapes]
    pool = list(range(sum(needed) + spare_blocks * len(shapes) + 1))
    rng.shuffle(pool)
    seqs = []
    for (c, n), k in zip(shapes, needed):
        seqs.append(SeqSlice(c, n, [pool.pop() for _ in range(k + rng.randint(0, spare_blocks))]))
    return seqs, len(pool) + sum(len(s.block_ids) for s in seqs)


def random_shapes(rng: random.Random):
    shapes = []
    for _ in range(rng.randint(1, 8)):
        ctx = rng.choice([0, 0, rng.randint(1, 40), rng.randint(1, 300)])
        new = rng.choice([1, 1, rng.randint(1, 20)])
        shapes.append((ctx, new))
    return shapes


def check_against_dense(backend, seqs, block_size, seed, dtype=torch.float32, tol=1e-5):
    gen = torch.Generator().manual_seed(seed)
    num_blocks = 1 + max(b for s in seqs for b in s.block_ids)
    cache = KVCache(1, num_blocks, block_size, HKV, D, dtype)
    cache.data.normal_(generator=gen)  # garbage outside each seq's tokens must not leak in
    k_pages, v_pages = cache.layer(0)
    order = backend.order(seqs)
    seqs = [seqs[i] for i in order]
    dense = [(torch.randn(s.num_context + s.num_new, HKV, D, generator=gen).to(dtype),
              torch.randn(s.num_context + s.num_new, HKV, D, generator=gen).to(dtype),
              torch.randn(s.num_new, HQ, D, generator=gen).to(dtype)) for s in seqs]
    for s, (k, v, _) in zip(seqs, dense):  # earlier steps' KV, written slot by slot
        for pos in range(s.num_context):
            slot = s.block_ids[pos // block_size] * block_size + pos % block_size
            k_pages.view(-1, HKV, D)[slot] = k[pos]
            v_pages.view(-1, HKV, D)[slot] = v[pos]
    meta = backend.build(seqs, block_size)
    new_k = torch.cat([k[s.num_context:] for s, (k, _, _) in zip(seqs, dense)])
    new_v = torch.cat([v[s.num_context:] for s, (_, v, _) in zip(seqs, dense)])
    write_kv(k_pages, v_pages, meta.slot_mapping, new_k, new_v)
    q = torch.cat([q for _, _, q in dense])
    out = backend.attend(q, new_k, new_v, k_pages, v_pages, meta, D ** -0.5)
    expected = torch.cat([dense_attention(q, k, v, s.num_context)
                          for s, (k, v, q) in zip(seqs, dense)])
    torch.testing.assert_close(out.double(), expected, atol=tol, rtol=tol)
    return meta


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("block_size", [1, 4, 16])
@pytest.mark.parametrize("seed", range(6))
def test_random_mixed_steps_match_dense(backend, seed, block_size):
    rng = random.Random(seed)
    seqs, _ = with_tables(random_shapes(rng), block_size, rng, spare_blocks=1)
    check_against_dense(attention_backend(backend), seqs, block_size, seed)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_long_context_among_many_short(backend):
    # 1 x 1,800 + 47 x 330 decodes (the skew case) at block size 16; the long one spans
    # several kernel partitions, so their log-sum-exp merge is checked too.
    assert 1800 > 3 * DECODE_PARTITION_TOKENS
    rng = random.Random(1)
    seqs, _ = with_tables([(1799, 1)] + [(329, 1)] * 47, 16, rng)
    check_against_dense(attention_backend(backend), seqs, 16, seed=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_token_contexts_and_block_boundaries(backend):
    bs = 8
    shapes = [(0, 1), (1, 1), (bs - 1, 1), (bs, 1), (bs + 1, 1), (2 * bs - 1, 1),  # decodes
              (0, bs), (0, bs + 1), (bs - 1, 2), (bs, bs), (1, 2 * bs - 1)]        # multi-token
    rng = random.Random(2)
    seqs, _ = with_tables(shapes, bs, rng)
    check_against_dense(attention_backend(backend), seqs, bs, seed=2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunked_prefill_over_existing_kv_mixed_with_decodes(backend):
    rng = random.Random(3)
    shapes = [(600, 64), (37, 20), (250, 1), (3, 1), (900, 1), (0, 45), (0, 45), (0, 12)]
    seqs, _ = with_tables(shapes, 16, rng)
    check_against_dense(attention_backend(backend), seqs, 16, seed=3)


@pytest.mark.parametrize("backend", ["kernel", "torch"])
def test_bfloat16_cache_is_close_to_float64(backend):
    rng = random.Random(4)
    seqs, _ = with_tables([(700, 1), (40, 1), (5, 1), (30, 9)], 16, rng)
    check_against_dense(attention_backend(backend), seqs, 16, seed=4, dtype=torch.bfloat16, tol=3e-2)


def test_kernel_takes_every_decode_and_buckets_take_the_rest():
    attn = attention_backend("kernel")
    seqs, _ = with_tables([(1799, 1), (329, 1), (329, 1), (0, 40), (200, 30)], 16, random.Random(5))
    meta = attn.build([seqs[i] for i in attn.order(seqs)], 16)
    kinds = [type(g) for g in meta.groups]
    assert kinds == [DecodeGroup, SdpaBucket, SdpaBucket]
    decode = meta.groups[0]
    assert sorted(decode.seq_lens.tolist()) == [330, 330, 1800]
    assert decode.block_table.dtype == torch.int32 and decode.block_table.shape == (3, 113)


def test_buckets_bound_the_padding():
    # Skewed decodes: the long seq gets its own bucket, so the padded work is the sum of
    # the real lengths, not batch x longest.
    seqs, _ = with_tables([(329, 1)] * 47 + [(1799, 1)], 16, random.Random(6))
    ordered = [seqs[i] for i in order_for_attention(seqs)]
    assert bucket_bounds(ordered) == [(0, 47), (47, 48)]
    # Random shapes: every bucket's padded area is within BUCKET_RATIO**2 of its real area.
    rng = random.Random(7)
    for _ in range(200):
        seqs = [SeqSlice(rng.choice([0, rng.randint(0, 2000)]), rng.choice([1, rng.randint(1, 500)]), [])
                for _ in range(rng.randint(1, 40))]
        ordered = [seqs[i] for i in order_for_attention(seqs)]
        for lo, hi in bucket_bounds(ordered):
            run = ordered[lo:hi]
            new = [s.num_new for s in run]
            total = [s.num_context + s.num_new for s in run]
            assert (min(new) == 1) == (max(new) == 1)
            padded = len(run) * max(new) * max(total)
            assert padded <= BUCKET_RATIO ** 2 * sum(n * t for n, t in zip(new, total)) + 1e-9


def test_metadata_positions_and_slots():
    seqs = [SeqSlice(5, 1, [7, 3]), SeqSlice(2, 3, [9, 1, 4])]
    meta = build_metadata(seqs, block_size=4)
    assert meta.positions.tolist() == [5, 2, 3, 4]
    assert meta.slot_mapping.tolist() == [3 * 4 + 1, 9 * 4 + 2, 9 * 4 + 3, 1 * 4 + 0]
    assert [(g.start, g.stop, g.max_new) for g in meta.groups] == [(0, 1, 1), (1, 4, 3)]
    wide = build_metadata([SeqSlice(3, 1, [7]), SeqSlice(4, 9, [9, 1, 4, 2])], block_size=4)
    assert [g.gather.tolist() for g in wide.groups] == [[7], [9, 1, 4, 2]]


def test_metadata_rejects_short_block_table_and_bad_order():
    with pytest.raises(ValueError, match="need 2"):
        build_metadata([SeqSlice(4, 1, [0])], block_size=4)
    with pytest.raises(ValueError, match="at least one new token"):
        build_metadata([SeqSlice(4, 0, [0, 1])], block_size=4)
    with pytest.raises(ValueError, match="order"):
        build_metadata([SeqSlice(0, 3, [0]), SeqSlice(3, 1, [1])], block_size=4)


def test_order_puts_decodes_first_by_length_then_the_rest_by_size():
    seqs = [SeqSlice(0, 3, []), SeqSlice(9, 1, []), SeqSlice(0, 7, []), SeqSlice(2, 1, []),
            SeqSlice(5, 2, []), SeqSlice(2, 1, [])]
    assert order_for_attention(seqs) == [3, 5, 1, 4, 0, 2]


def test_requiring_the_kernel_off_cpu_is_an_error():
    with pytest.raises(RuntimeError, match="runs on CPU"):
        TorchAttention("meta", decode_kernel=True)


@pytest.mark.parametrize("kernel_ms,torch_ms,keeps_kernel", [(1.0, 2.0, True), (2.0, 1.0, False)])
def test_auto_keeps_the_kernel_only_where_it_is_measured_faster(monkeypatch, kernel_ms, torch_ms, keeps_kernel):
    from engines.torch import attention_choice, decode_kernel
    if decode_kernel.load() is not None:
        pytest.skip("no compiler: auto is the torch path")
    calls = []

    def fake_timings(*args, **kw):
        calls.append(args)
        return {"kernel": kernel_ms, "torch": torch_ms}
    monkeypatch.setattr(attention_choice, "time_decode_paths_ms", fake_timings)
    auto = TorchAttention("cpu")
    auto.calibrate(8, 2, 64, torch.bfloat16)
    assert auto.use_kernel is keeps_kernel and auto.calibration_ms == {"kernel": kernel_ms, "torch": torch_ms}
    assert calls == [(8, 2, 64, torch.bfloat16)]
    forced = TorchAttention("cpu", decode_kernel=True)  # executor.attention=kernel: never second-guessed
    forced.calibrate(8, 2, 64, torch.bfloat16)
    assert forced.use_kernel and len(calls) == 1


def test_calibration_times_both_paths_on_real_calls():
    from engines.torch.attention_choice import time_decode_paths_ms
    ms = time_decode_paths_ms(4, 2, 64, torch.float32, batch=4, context=40, repeats=1)
    assert set(ms) <= {"kernel", "torch"} and "torch" in ms and all(v > 0 for v in ms.values())
