"""Scheduler unit tests: token budget, chunking, prefill-first, preemption order, roles."""
from engines.blocks import BlockPool
from engines.plan import StepResult
from engines.request import Request, Status
from engines.scheduler import Scheduler, SchedulerConfig


def make(prompt_len, output_len, rid=0):
    return Request(id=rid, arrival_s=0.0, prompt_len=prompt_len, output_len=output_len)


def sched(num_blocks=100, block=4, **kw):
    kw.setdefault("watermark", 0.0)
    return Scheduler(SchedulerConfig(**kw), BlockPool(num_blocks, block))


def step(s, now=1.0):
    plan = s.schedule(now)
    assert plan is not None
    return plan, s.update(plan, StepResult(0.01), now)


def test_prefill_first_admits_whole_prompts_within_budget():
    s = sched(max_num_batched_tokens=100)
    for i, p in enumerate([40, 50, 30]):
        s.add_request(make(p, 5, i))
    plan, _ = step(s)
    assert [q.num_new_tokens for q in plan.seqs] == [40, 50]  # 30 would exceed the budget
    assert plan.num_prefill_tokens == 90 and plan.num_decode_tokens == 0
    plan, _ = step(s)  # the waiting prompt goes before the decodes (prefill-first)
    assert [q.request_id for q in plan.seqs] == [2]
    plan, _ = step(s)
    assert plan.num_decode_tokens == 3 and plan.num_prefill_tokens == 0


def test_chunked_prefill_splits_prompts_and_mixes_decodes():
    s = sched(max_num_batched_tokens=32, chunked_prefill=True)
    s.add_request(make(10, 5, 0))
    step(s)
    s.add_request(make(70, 5, 1))
    plan, _ = step(s)
    # decode of request 0 first, then a 31-token chunk of request 1
    assert [(q.request_id, q.num_new_tokens, q.is_prefill) for q in plan.seqs] == [(0, 1, False), (1, 31, True)]
    assert not plan.seqs[1].samples
    plan, _ = step(s)
    assert [(q.request_id, q.num_context_tokens, q.num_new_tokens) for q in plan.seqs] == [(0, 11, 1), (1, 31, 31)]
    plan, out = step(s)
    assert plan.seqs[1].num_new_tokens == 8 and plan.seqs[1].samples
    req1 = s.running[1]
    assert req1.num_output_tokens == 1


def test_budget_and_max_num_seqs_limit_a_decode_step():
    s = sched(max_num_batched_tokens=1000, max_num_seqs=3)
    for i in range(5):
        s.add_request(make(4, 10, i))
    plan, _ = step(s)
    assert plan.batch_size == 3


def test_preemption_takes_the_newest_request_and_recomputes_it():
    s = sched(num_blocks=6, block=4, max_num_batched_tokens=100)
    a, b = make(8, 16, 0), make(8, 16, 1)  # 24 tokens = 6 blocks each at most
    s.add_request(a)
    s.add_request(b)
    step(s)  # both prefilled: 2 blocks each, 2 free
    for _ in range(8):
        step(s)  # decodes grow both; the pool runs out at 12 tokens each
    assert b.num_preemptions >= 1 and a.num_preemptions == 0
    assert s.waiting[0] is b or b.status is Status.RUNNING
    # b keeps its generated tokens and recomputes prompt + generated on re-admission
    while s.has_work():
        step(s)
    assert a.status is b.status is Status.FINISHED
    assert a.num_output_tokens == b.num_output_tokens == 16
    assert s.pool.num_free_blocks == 6


def test_recompute_samples_the_next_token_after_the_generated_ones():
    s = sched(num_blocks=100, max_num_batched_tokens=100)
    r = make(5, 10)
    s.add_request(r)
    step(s)
    step(s)
    assert r.num_output_tokens == 2
    s._preempt(r)
    plan, _ = step(s)
    assert plan.seqs[0].num_context_tokens == 0 and plan.seqs[0].num_new_tokens == 7
    assert plan.seqs[0].samples and r.num_output_tokens == 3


def test_prefill_role_hands_off_after_first_token_and_keeps_blocks():
    s = Scheduler(SchedulerConfig(max_num_batched_tokens=100), BlockPool(10, 4), role="prefill")
    r = make(6, 4)
    s.add_request(r)
    plan, out = step(s)
    assert out.handed_off == [r] and r.status is Status.TRANSFERRING
    assert len(r.block_ids) == 2 and not s.running
    d = Scheduler(SchedulerConfig(), s.pool, role="decode")
    d.add_running(r)
    plan, _ = step(d)
    assert plan.seqs[0].block_ids == r.block_ids and plan.num_decode_tokens == 1


def test_decode_role_never_admits_waiting_requests():
    d = Scheduler(SchedulerConfig(), BlockPool(10, 4), role="decode")
    d.add_request(make(4, 4))
    assert d.schedule(0.0) is None


def test_rejection_reasons():
    s = sched(num_blocks=4, block=4, max_num_batched_tokens=12)
    assert "KV blocks" in s.rejection_reason(make(10, 10))
    assert "max_num_batched_tokens" in s.rejection_reason(make(10, 3))
    assert s.rejection_reason(make(6, 3)) is None
