"""TorchExecutor details: sampling, made-up ids, KV budget (tiny float32 model)."""
import dataclasses

import pytest
import torch

from engines.plan import ScheduledSeq, StepPlan
from engines.torch.checkpoint import build_model
from engines.torch.executor import (Sampling, TorchExecutor, greedy, num_blocks_for_budget,
                                    synthetic_token_ids)
from engines.torch.make_model import random_weights
from engines.torch.sizes import get_size

MICRO = dataclasses.replace(get_size("tiny_llama"), vocab_size=1000, hidden_size=64,
                            intermediate_size=128, num_hidden_layers=2, head_dim=16)


@pytest.fixture(scope="module")
def model():
    return build_model(MICRO, random_weights(MICRO, seed=0, dtype=torch.float32))


def prefill(rid, ids, blocks, samples=True):
    return ScheduledSeq(rid, 0, len(ids), samples, True, tuple(blocks), tuple(ids))


def plan(*seqs):
    return StepPlan("w", tuple(seqs), sum(s.num_new_tokens for s in seqs if s.is_prefill),
                    sum(s.num_new_tokens for s in seqs if not s.is_prefill))


@pytest.mark.parametrize("vocab", [128 * 7, 1000, 50, 128256])
def test_greedy_equals_argmax_including_ties(vocab):
    gen = torch.Generator().manual_seed(vocab)
    logits = torch.randint(-3, 4, (9, vocab), generator=gen).float()  # many exact ties
    logits[0, -1] = 10.0  # a winner in the tail past the last full chunk
    assert torch.equal(greedy(logits), logits.argmax(dim=-1))
    assert torch.equal(greedy(logits.bfloat16()), logits.argmax(dim=-1))


def test_synthetic_ids_depend_only_on_request_and_position():
    rids, pos = torch.tensor([7, 7, 9]), torch.tensor([0, 1, 0])
    ids = synthetic_token_ids(rids, pos, 1000)
    assert ids.tolist() == synthetic_token_ids(rids, pos, 1000).tolist()
    assert ids.min() >= 0 and ids.max() < 1000 and len(set(ids.tolist())) == 3
    big = synthetic_token_ids(torch.full((4096,), 3), torch.arange(4096), 128256)
    assert len(set(big.tolist())) > 3500  # spread over the vocab, not a short cycle


def test_simulated_requests_get_deterministic_made_up_ids(model):
    def run():
        ex = TorchExecutor(model, num_blocks=8, block_size=16)
        seqs = (ScheduledSeq(7, 0, 20, True, True, (3, 5), None),
                ScheduledSeq(9, 0, 1, True, True, (1,), None))
        return ex.execute(StepPlan("w", seqs, 21, 0), 1.0).sampled_token_ids
    first = run()
    assert first == run() and len(first) == 2


def test_temperature_sampling_is_seeded_per_request(model):
    prompts = {r: list(range(10 * r + 1, 10 * r + 4 + r)) for r in range(4)}

    def first_tokens(order, seed):
        ex = TorchExecutor(model, num_blocks=8, block_size=16,
                           sampling=Sampling(temperature=1.0, seed=seed))
        out = ex.execute(plan(*(prefill(r, prompts[r], [i]) for i, r in enumerate(order))))
        return dict(zip(order, out.sampled_token_ids))
    a, b = first_tokens([0, 1, 2, 3], seed=5), first_tokens([2, 0], seed=5)
    assert a[0] == b[0] and a[2] == b[2]  # independent of batch composition
    draws = [first_tokens([0, 1, 2, 3], seed=s) for s in range(6, 9)]
    assert any(d != a for d in draws)


def test_a_request_temperature_overrides_the_executors(model):
    """Per-request temperature (a server's option): 0 is greedy inside a sampling batch, a
    positive one samples as a whole-executor temperature would, None takes the executor's."""
    prompts = {r: list(range(10 * r + 1, 10 * r + 4 + r)) for r in range(4)}

    def tokens(sampling, temps):
        ex = TorchExecutor(model, num_blocks=8, block_size=16, sampling=sampling)
        seqs = [prefill(r, prompts[r], [r])._replace(temperature=t) for r, t in enumerate(temps)]
        return ex.execute(plan(*seqs)).sampled_token_ids
    greedy_all = tokens(Sampling(0.0), [None] * 4)
    sampled_all = tokens(Sampling(1.0, seed=5), [None] * 4)
    assert greedy_all != sampled_all
    mixed = tokens(Sampling(1.0, seed=5), [0.0, None, 0.0, 1.0])
    assert (mixed[0], mixed[2]) == (greedy_all[0], greedy_all[2])
    assert (mixed[1], mixed[3]) == (sampled_all[1], sampled_all[3])
    assert tokens(Sampling(0.0, seed=5), [1.0, 1.0, 1.0, 1.0]) == sampled_all


def test_non_sampling_chunk_and_empty_plan_return_no_tokens(model):
    ex = TorchExecutor(model, num_blocks=8, block_size=16)
    result = ex.execute(plan(prefill(0, range(10), [0], samples=False)), 1.0)
    assert result.sampled_token_ids == () and result.duration_s > 0
    assert ex.execute(plan(), 1.0).sampled_token_ids == ()


def test_bad_token_ids_are_rejected(model):
    ex = TorchExecutor(model, num_blocks=8, block_size=16)
    with pytest.raises(ValueError, match="out of range"):
        ex.execute(plan(prefill(0, [5, 1000], [0])))
    with pytest.raises(ValueError, match="2 token_ids for 3 new tokens"):
        ex.execute(plan(ScheduledSeq(0, 0, 3, True, True, (0,), (1, 2))))


def test_num_blocks_for_budget():
    c = get_size("tiny_llama")  # 4 layers x 2 kv heads x 64 dims x (K, V)
    per_token_bf16 = 2 * 4 * 2 * 64 * 2
    assert c.kv_bytes_per_token(2) == per_token_bf16
    assert num_blocks_for_budget(c, 100 * 16 * per_token_bf16 + 5, 16, torch.bfloat16) == 100
    assert num_blocks_for_budget(c, 100 * 16 * per_token_bf16, 16, torch.float32) == 50


def test_unpacked_weights_give_the_same_tokens(model):
    seqs = [prefill(r, [3 * r + 1, 2, 3, 4 + r], [r]) for r in range(3)]
    outs = []
    for pack in (True, False):
        ex = TorchExecutor(model, num_blocks=4, block_size=16, pack_weights=pack)
        assert ex.packed == (pack and torch.backends.mkldnn.is_available())
        outs.append(ex.execute(plan(*seqs)).sampled_token_ids)
    assert outs[0] == outs[1]


@pytest.mark.parametrize("native", [False, True])
def test_bf16_linears_upcast_where_the_cpu_has_no_bf16_matmul(monkeypatch, native):
    """Without native bf16 matmul, a bf16 model's packed weights are float32 copies; the
    logits then match torch's bf16 F.linear path to bf16 rounding, tokens included."""
    import engines.torch.model as model_mod
    if native and not model_mod.native_bf16_matmul():
        pytest.skip("this CPU has no native bf16 matmul")
    monkeypatch.setattr(model_mod, "native_bf16_matmul", lambda: native)
    seqs = [prefill(r, [3 * r + 1, 2, 3, 4 + r], [r]) for r in range(3)]
    bf16 = [build_model(MICRO, random_weights(MICRO, seed=0, dtype=torch.float32), dtype=torch.bfloat16)
            for _ in range(2)]  # one each: an executor re-casts (and so unpacks) its model
    packed = TorchExecutor(bf16[0], num_blocks=4, block_size=16, pack_weights=True)
    plain = TorchExecutor(bf16[1], num_blocks=4, block_size=16, pack_weights=False)
    assert packed.packed and not plain.model.layers[0].packed
    assert {t.dtype for t in packed.model.layers[0].packed.values()} == {
        torch.bfloat16 if native else torch.float32}
    assert packed.execute(plan(*seqs)).sampled_token_ids == plain.execute(plan(*seqs)).sampled_token_ids
    x = torch.randn(5, MICRO.hidden_size, generator=torch.Generator().manual_seed(0)).bfloat16()
    layer = packed.model.layers[0]
    torch.testing.assert_close(model_mod.linear(layer, "qkv_proj", x).float(),
                               torch.nn.functional.linear(x, layer.qkv_proj).float(), atol=2e-2, rtol=2e-2)


def test_two_executors_over_one_shared_pool(model):
    """Prefill on one executor, decode on another over the same KV blocks (semi-PD)."""
    from engines.torch.paged_attention import KVCache
    c = model.config
    pool = KVCache(c.num_hidden_layers, 4, 16, c.num_key_value_heads, c.head_dim,
                   torch.float32).share_memory()
    prefill_ex, decode_ex, alone = (
        TorchExecutor(model, num_blocks=4, block_size=16, kv_cache=kv)
        for kv in (pool, pool, None))
    ids = [5, 6, 7, 8, 9]
    first = prefill_ex.execute(plan(prefill(0, ids, [2]))).sampled_token_ids[0]
    decode = ScheduledSeq(0, 5, 1, True, False, (2,), (first,))
    assert alone.execute(plan(prefill(0, ids + [first], [1]))).sampled_token_ids == \
        decode_ex.execute(plan(decode)).sampled_token_ids
    with pytest.raises(ValueError, match="kv_cache has 4 blocks of 16"):
        TorchExecutor(model, num_blocks=8, block_size=16, kv_cache=pool)
