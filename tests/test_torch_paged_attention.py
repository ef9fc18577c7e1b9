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
    # Prompts and chunks go to matmuls around the C++ masked softmax: each query row's
    # last visible key (context + its index among the new tokens).
    assert [g.last_visible.tolist() for g in meta.groups[1:]] == [[list(range(200, 230))],
                                                                 [list(range(40))]]
    plain = TorchAttention(decode_kernel=False).build([seqs[i] for i in attn.order(seqs)], 16)
    assert all(getattr(g, "last_visible", None) is None for g in plain.groups)
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
    from engines.torch import attention_choice, cpu_kernels
    if cpu_kernels.load() is not None:
        pytest.skip("no compiler: auto is the torch path")
    calls = []

    def fake_timings(*args, **kw):
        calls.append(args)
        return {"kernel": kernel_ms, "torch": torch_ms}
    monkeypatch.setattr(attention_choice, "time_attention_paths_ms", fake_timings)
    auto = TorchAttention("cpu")
    auto.calibrate(8, 2, 64, torch.bfloat16)
    assert auto.use_kernel is keeps_kernel and auto.calibration_ms == {"kernel": kernel_ms, "torch": torch_ms}
    assert calls == [(8, 2, 64, torch.bfloat16)]
    forced = TorchAttention("cpu", decode_kernel=True)  # executor.attention=kernel: never second-guessed
    forced.calibrate(8, 2, 64, torch.bfloat16)
    assert forced.use_kernel and len(calls) == 1


def test_calibration_times_both_paths_on_real_calls():
    from engines.torch.attention_choice import time_attention_paths_ms
    ms = time_attention_paths_ms(4, 2, 64, torch.float32, batch=4, context=40, prompts=2, prompt_tokens=20,
                                 repeats=1)
    assert set(ms) <= {"kernel", "torch"} and "torch" in ms and all(v > 0 for v in ms.values())


@pytest.mark.parametrize("head_dim,num_heads,num_kv_heads", [(64, 8, 2), (128, 4, 4), (40, 6, 3), (16, 4, 1)])
def test_kernel_bfloat16_paths_match_dense(head_dim, num_heads, num_kv_heads):
    # The AVX512-BF16 item (where this CPU has it) and the portable one, on head sizes
    # that are and are not multiples of the 32-wide vectors, group sizes 1-4, contexts
    # from 1 key to several partitions, against float64.
    from engines.torch import cpu_kernels
    attention_backend("kernel")  # skips without a compiler
    gen = torch.Generator().manual_seed(head_dim)
    lens = [1, 2, 15, 16, 17, 300, 2 * DECODE_PARTITION_TOKENS + 5]
    bs = 16
    blocks = [-(-n // bs) for n in lens]
    perm = torch.randperm(sum(blocks) + 3, generator=gen).tolist()
    table = torch.zeros(len(lens), max(blocks), dtype=torch.int32)
    for i, b in enumerate(blocks):
        table[i, :b] = torch.tensor([perm.pop() for _ in range(b)])
    pages = torch.randn(2, len(perm) + sum(blocks), bs, num_kv_heads, head_dim, generator=gen).bfloat16()
    q = torch.randn(len(lens), num_heads, head_dim, generator=gen).bfloat16()
    scale = head_dim ** -0.5
    expected = []
    for i, n in enumerate(lens):
        slots = [int(table[i, t // bs]) * bs + t % bs for t in range(n)]
        k, v = (p.view(-1, num_kv_heads, head_dim)[slots].double().repeat_interleave(num_heads // num_kv_heads, 1)
                for p in pages)
        probs = (torch.einsum("hd,khd->hk", q[i].double(), k) * scale).softmax(-1)
        expected.append(torch.einsum("hk,khd->hd", probs, v))
    expected = torch.stack(expected)
    seq_lens = torch.tensor(lens, dtype=torch.int32)
    outs = [cpu_kernels.paged_decode(q, pages[0].contiguous(), pages[1].contiguous(), table, seq_lens, scale,
                                       DECODE_PARTITION_TOKENS, portable).double() for portable in (False, True)]
    for out in outs:  # bf16 output: 2**-8 relative rounding, plus bf16 inputs to the dots
        torch.testing.assert_close(out, expected, atol=2e-2, rtol=2e-2)
    # The two implementations differ only in float32 summation order before the final
    # rounding to bf16: at most one bf16 step apart.
    step = 2.0 ** (torch.floor(torch.log2(outs[1].abs().clamp_min(1e-30))) - 7)
    assert bool(((outs[0] - outs[1]).abs() <= step + 1e-12).all())


def test_prompt_buckets_over_the_score_limit_fall_back_to_sdpa(monkeypatch):
    # Long prompts would need a seqs x heads x queries x keys float32 score matrix: past
    # PROMPT_SCORES_LIMIT they run through SDPA's flash kernel instead, same results.
    import engines.torch.paged_attention as pa
    attn = attention_backend("kernel")
    calls = []
    real = pa._prompt_attention
    monkeypatch.setattr(pa, "_prompt_attention", lambda *a: calls.append(1) or real(*a))
    rng = random.Random(8)
    seqs, _ = with_tables([(0, 45), (0, 40), (300, 20), (5, 1)], 16, rng)
    check_against_dense(attn, seqs, 16, seed=8)
    assert len(calls) == 2 * 1  # the fresh-prompt bucket and the chunk bucket, one layer
    calls.clear()
    monkeypatch.setattr(pa, "PROMPT_SCORES_LIMIT", 2 * HQ * 45 * 45)
    check_against_dense(attn, seqs, 16, seed=8)
    assert len(calls) == 1  # the 2 seqs x 45 queries x 45 keys bucket fits; 20 x 320 keys does not


def test_prefill_softmax_rejects_bad_inputs():
    from engines.torch import cpu_kernels
    attention_backend("kernel")
    scores = torch.zeros(4, 6, 5)
    ok = torch.tensor([[0, 1, 2], [4, 4, 4]], dtype=torch.int32)
    probs = cpu_kernels.prefill_softmax(scores, ok, 1.0, torch.float32)
    # batch 0 = seq 0, row 2 = query 2 (last visible key 2); batch 3 = seq 1, all 5 keys.
    torch.testing.assert_close(probs[0, 2], torch.tensor([1 / 3, 1 / 3, 1 / 3, 0, 0]))
    torch.testing.assert_close(probs[3, 5], torch.full((5,), 0.2))
    with pytest.raises(RuntimeError, match=r"last_visible must lie in \[0, keys\)"):
        cpu_kernels.prefill_softmax(scores, ok + 1, 1.0, torch.float32)
    with pytest.raises(RuntimeError, match="scores \\[seqs \\* kv_heads"):
        cpu_kernels.prefill_softmax(scores, torch.zeros(3, 3, dtype=torch.int32), 1.0, torch.float32)
    with pytest.raises(RuntimeError, match="float32 or bfloat16 output"):
        cpu_kernels.prefill_softmax(scores, ok, 1.0, torch.float16)
