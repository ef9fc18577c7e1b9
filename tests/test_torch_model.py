"""The torch executor against Hugging Face transformers on the same random checkpoint.

A small in-test step loop plays scheduler: it builds StepPlans (prefill, chunked
prefill, mixed batches, preemption by dropping blocks) over a shuffled free list, and the
greedy tokens must equal LlamaForCausalLM.generate's (float32).
"""
import random

import pytest
import torch

from engines.plan import ScheduledSeq, StepPlan
from engines.torch.checkpoint import load_model
from engines.torch.executor import TorchExecutor
from engines.torch.make_model import make_checkpoint
from tests.attention_backends import BACKENDS, attention_backend

PROMPT_LENS = (3, 17, 33, 50)
NUM_NEW = 12


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_llama", "tiny_llama",
                           seed=0, dtype="bfloat16")


@pytest.fixture(scope="session")
def prompts():
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(0, 128000, (n,), generator=gen).tolist() for n in PROMPT_LENS]


@pytest.fixture(scope="session")
def hf_model(tiny_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.LlamaForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def hf_greedy(hf_model, prompts):
    hf, outs = hf_model, []
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([p])
            out = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                              max_new_tokens=NUM_NEW, pad_token_id=0)
            outs.append(out[0, len(p):].tolist())
    return outs


@pytest.fixture(scope="session")
def model(tiny_dir):
    return load_model(tiny_dir, dtype=torch.float32)


class StepLoop:
    """A minimal scheduler: per step, each admitted request gets min(chunk, pending) tokens."""

    def __init__(self, executor, num_blocks, block_size, seed=0):
        self.ex, self.block_size = executor, block_size
        self.free = list(range(num_blocks))
        random.Random(seed).shuffle(self.free)  # block tables are arbitrary permutations
        self.reqs, self.plans = {}, []

    def add(self, rid, prompt):
        self.reqs[rid] = {"tokens": list(prompt), "prompt_len": len(prompt), "computed": 0,
                          "blocks": []}

    def preempt(self, rid):
        r = self.reqs[rid]
        self.free.extend(r["blocks"])
        r["blocks"], r["computed"] = [], 0

    def outputs(self, rid):
        r = self.reqs[rid]
        return r["tokens"][r["prompt_len"]:]

    def step(self, chunk=None, max_new=NUM_NEW):
        seqs, live = [], [rid for rid in self.reqs if len(self.outputs(rid)) < max_new]
        for rid in live:
            r = self.reqs[rid]
            pending = len(r["tokens"]) - r["computed"]
            n = min(pending, chunk or pending)
            while len(r["blocks"]) * self.block_size < r["computed"] + n:
                r["blocks"].append(self.free.pop())
            samples = r["computed"] + n == len(r["tokens"])
            seqs.append(ScheduledSeq(rid, r["computed"], n, samples,
                                     pending > 1 or len(self.outputs(rid)) == 0,
                                     tuple(r["blocks"]),
                                     tuple(r["tokens"][r["computed"]:r["computed"] + n])))
        num_prefill = sum(s.num_new_tokens for s in seqs if s.is_prefill)
        plan = StepPlan("w", tuple(seqs), num_prefill,
                        sum(s.num_new_tokens for s in seqs) - num_prefill)
        result = self.ex.execute(plan, 1.0)
        self.plans.append(plan)
        sampled = iter(result.sampled_token_ids)
        for s in seqs:
            self.reqs[s.request_id]["computed"] += s.num_new_tokens
            if s.samples:
                self.reqs[s.request_id]["tokens"].append(next(sampled))
        assert next(sampled, None) is None
        return bool(live)


def make_loop(model, block_size=16, num_blocks=64, **kw):
    ex = TorchExecutor(model, num_blocks=num_blocks, block_size=block_size, threads=2, **kw)
    return StepLoop(ex, num_blocks, block_size)


def assert_matches_hf(loop, hf_greedy):
    for rid, expected in enumerate(hf_greedy):
        assert loop.outputs(rid)[:len(expected)] == expected, f"request {rid}"


@pytest.mark.parametrize("fused", [True, False])
def test_prefill_then_decode(model, prompts, hf_greedy, fused):
    if fused:
        attention_backend("kernel")  # the fused ops come with the kernels: skip without a compiler
    loop = make_loop(model, fused_ops=fused)
    for rid, p in enumerate(prompts):
        loop.add(rid, p)
    while loop.step():
        pass
    assert loop.plans[0].num_decode_tokens == 0 and loop.plans[1].num_prefill_tokens == 0
    assert_matches_hf(loop, hf_greedy)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("block_size", [4, 16])
def test_chunked_prefill_on_existing_kv(model, prompts, hf_greedy, block_size, backend):
    loop = make_loop(model, block_size=block_size, num_blocks=256, attention=attention_backend(backend))
    for rid, p in enumerate(prompts):
        loop.add(rid, p)
    while loop.step(chunk=7):
        pass
    chunks = [s for plan in loop.plans for s in plan.seqs if s.is_prefill]
    assert any(s.num_context_tokens > 0 and s.num_new_tokens == 7 for s in chunks)
    assert_matches_hf(loop, hf_greedy)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fused", [True, False])
def test_mixed_prefill_and_decode_steps(model, prompts, hf_greedy, backend, fused):
    loop = make_loop(model, attention=attention_backend(backend), fused_ops=fused)
    for rid, p in enumerate(prompts):  # staggered arrivals: new prompts join decodes
        loop.add(rid, p)
        loop.step(chunk=20)
    while loop.step(chunk=20):
        pass
    assert any(plan.num_prefill_tokens and plan.num_decode_tokens for plan in loop.plans)
    assert_matches_hf(loop, hf_greedy)


def test_preempted_request_is_recomputed_to_same_continuation(model, prompts, hf_greedy):
    loop = make_loop(model, num_blocks=24)
    for rid, p in enumerate(prompts):
        loop.add(rid, p)
    for _ in range(5):
        loop.step()
    loop.preempt(1)
    loop.preempt(3)
    loop.step()  # requests 1 and 3 recompute prompt + 4 outputs in one prefill slice
    recomputed = [s for s in loop.plans[-1].seqs if s.request_id in (1, 3)]
    assert all(s.num_context_tokens == 0 and s.num_new_tokens > PROMPT_LENS[s.request_id]
               for s in recomputed)
    while loop.step():
        pass
    assert_matches_hf(loop, hf_greedy)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ops", ["fused", "torch"])
def test_logits_match_hf_forward_in_mixed_steps(hf_model, model, prompts, backend, ops):
    """Every row's logits, over two steps: prefills of different lengths, then a step
    mixing three decodes with a 13-token chunk on top of 20 cached tokens."""
    from engines.torch.fused import FusedOps, TorchOps
    attn = attention_backend(backend)
    if ops == "fused":
        attention_backend("kernel")  # skips without a compiler
    ops = FusedOps if ops == "fused" else TorchOps
    from engines.torch.paged_attention import KVCache, SeqSlice
    c = model.config
    cache = KVCache(c.num_hidden_layers, 32, 8, c.num_key_value_heads, c.head_dim, torch.float32)
    tables = [list(range(31 - 8 * i, 23 - 8 * i, -1)) for i in range(4)]
    with torch.inference_mode():
        ref = [hf_model(torch.tensor([p])).logits[0] for p in prompts]
        for cut in [(0, 0, 0, 0), (2, 16, 20, 49)]:
            spans = [(cut[i], (2, 16, 20, 49)[i] if cut[i] == 0 else len(p))
                     for i, p in enumerate(prompts)]
            slices = [SeqSlice(lo, hi - lo, tables[i]) for i, (lo, hi) in enumerate(spans)]
            order = attn.order(slices)
            meta = attn.build([slices[i] for i in order], 8)
            ids = torch.tensor([t for i in order for t in prompts[i][slice(*spans[i])]])
            ours = model(ids, meta, cache, attn, torch.arange(len(ids)), ops)
            expected = torch.cat([ref[i][slice(*spans[i])] for i in order])
            torch.testing.assert_close(ours, expected, atol=2e-4, rtol=1e-4)


def test_bfloat16_runs_close_to_float32(tiny_dir, prompts):
    loops = [make_loop(load_model(tiny_dir, dtype=dt)) for dt in (torch.float32, torch.bfloat16)]
    for loop in loops:
        for rid, p in enumerate(prompts):
            loop.add(rid, p)
        loop.step()
    first = [[loop.outputs(r)[0] for r in range(len(prompts))] for loop in loops]
    assert sum(a == b for a, b in zip(*first)) >= len(prompts) - 1  # near-ties may flip


def test_rejects_positions_past_the_model(model):
    ex = TorchExecutor(model, num_blocks=200, block_size=16)
    seq = ScheduledSeq(0, 2047, 2, True, True, tuple(range(129)), (1, 2))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        ex.execute(StepPlan("w", (seq,), 2, 0), 1.0)


def test_bfloat16_fused_ops_give_the_torch_ops_tokens(tiny_dir, prompts):
    # The fused ops round as the torch ops do, so in bf16 (where rounding matters most)
    # both paths generate the same greedy tokens.
    model = load_model(tiny_dir, dtype=torch.bfloat16)
    # One attention path for both (attention=auto picks by timing, which load can flip).
    loops = [make_loop(model, fused_ops=fused, attention=attention_backend("kernel")) for fused in (True, False)]
    for loop in loops:
        for rid, p in enumerate(prompts):
            loop.add(rid, p)
        while loop.step(chunk=20):
            pass
    assert loops[0].ex.ops.name == "fused" and loops[1].ex.ops.name == "torch"
    assert [loops[0].outputs(r) for r in range(len(prompts))] == [loops[1].outputs(r) for r in range(len(prompts))]
