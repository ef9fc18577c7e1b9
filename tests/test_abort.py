"""Engine.abort (a server's client went away) in every design: the request finishes with
finish_reason "abort" wherever it is (queued, between steps, in a step, in a KV transfer,
swapped out), its blocks are freed, it is reported done once, and the others are served."""
import random

import pytest

from engines.config import EngineConfig
from engines.disagg import KVLink, build_disagg
from engines.request import Status
from engines.unified import build_unified
from sim.loop import VirtualLoop
from tests.fakes import LinearExecutor
from tests.test_engines_composed import semipd, workload


def unified(loop, blocks=400, chunked=False):
    cfg = EngineConfig(name="unified", design="unified", chunked_prefill=chunked)
    return build_unified(cfg, loop=loop, make_executor=LinearExecutor, num_kv_blocks=blocks, max_model_len=4096)


def disagg(loop, blocks=400, preemption="recompute"):
    """KV transfers of ~0.1-0.6 s (slow link), so aborts land while requests are in flight."""
    cfg = EngineConfig(name="disagg", design="disagg", preemption=preemption)
    return build_disagg(cfg, loop=loop, make_executor=LinearExecutor, num_kv_blocks=blocks, max_model_len=4096,
                        link=KVLink("slow", 1e8, 1e-3), kv_bytes_per_token_per_gpu=1e5,
                        host_link=KVLink("host", 1e8, 1e-3))


@pytest.mark.parametrize("build, states", [
    (unified, {Status.WAITING, Status.RUNNING}),
    (lambda loop, blocks: unified(loop, blocks, chunked=True), {Status.WAITING, Status.RUNNING}),
    (disagg, {Status.WAITING, Status.RUNNING, Status.TRANSFERRING}),
    (lambda loop, blocks: disagg(loop, blocks // 3, preemption="swap"), {Status.WAITING, Status.TRANSFERRING}),
    (semipd, {Status.WAITING, Status.RUNNING}),
])
@pytest.mark.parametrize("seed", [0, 1])
def test_aborted_requests_free_everything_and_the_rest_finish(build, states, seed):
    loop = VirtualLoop()
    engine = build(loop, blocks=300)
    reqs = workload(n=200, rate=20.0, seed=seed)
    done: list[int] = []
    engine.on_request_done = lambda r: done.append(r.id)
    rng = random.Random(seed)
    aborted = rng.sample(reqs, 70)
    seen: dict[int, Status] = {}

    def abort(req):
        seen[req.id] = req.status
        engine.abort(req)
    for r in reqs:
        loop.at(r.arrival_s, lambda r=r: engine.submit(r))
    for r in aborted:  # most while served, some after they finished (a no-op then)
        loop.at(r.arrival_s + rng.uniform(0.0, 1.0), lambda r=r: abort(r))

    def integrity():
        for pool in engine.pools:
            pool.check_integrity(engine.live_block_tables(pool))
    loop.run(on_event=integrity)
    assert all(r.status is Status.FINISHED for r in reqs)
    assert sorted(done) == sorted(r.id for r in reqs)  # each reported once
    for pool in engine.pools:
        assert pool.num_free_blocks == pool.num_blocks, pool.name
    hit = {r.id for r in aborted if r.finish_reason == "abort"}
    assert len(hit) >= 20 and states <= {seen[i] for i in hit}
    for r in reqs:
        if r.finish_reason == "abort":
            assert r.num_output_tokens < r.output_len and r.id in seen
        else:
            assert r.num_output_tokens == r.output_len


def test_aborting_a_finished_request_does_nothing():
    loop = VirtualLoop()
    engine = unified(loop)
    req = workload(n=1)[0]
    loop.at(req.arrival_s, lambda: engine.submit(req))
    loop.run()
    done = []
    engine.on_request_done = done.append
    engine.abort(req)
    assert req.finish_reason == "length" and not done


@pytest.mark.parametrize("where", ["swapped", "pending"])
def test_disagg_aborts_a_request_swapped_out_or_waiting_for_decode_blocks(where):
    """Between instances: KV in host memory (swap preemption), or prefilled and waiting for
    decode blocks (its prefill KV held): both are freed, the request finishes "abort"."""
    loop = VirtualLoop()
    engine = disagg(loop, 100, preemption="swap")
    reqs = workload(n=200, rate=20.0, seed=0)
    for r in reqs:
        loop.at(r.arrival_s, lambda r=r: engine.submit(r))
    victims = []

    def abort_one():
        queues = engine.swapped if where == "swapped" else engine.pending
        for q in queues.values():
            if len(q) > 1 and not victims:  # not the head: it is not next in line
                victims.append(q[-1])
                engine.abort(q[-1])
    loop.run(on_event=abort_one)
    assert victims and victims[0].finish_reason == "abort" and victims[0].status is Status.FINISHED
    assert all(r.status is Status.FINISHED for r in reqs)
    for pool in engine.pools:
        assert pool.num_free_blocks == pool.num_blocks, pool.name


def test_an_abort_inside_a_step_leaves_the_other_requests_their_tokens():
    """The k-th sampled token belongs to the k-th sampling seq even when an earlier one in
    the same step was aborted meanwhile."""
    from engines.blocks import BlockPool
    from engines.plan import StepResult
    from engines.request import Request
    from engines.scheduler import Scheduler, SchedulerConfig
    s = Scheduler(SchedulerConfig(), BlockPool(100, 4))
    a, b = (Request(i, 0.0, 5, 3, token_ids=[1] * 5) for i in range(2))
    for r in (a, b):
        s.add_request(r)
    plan = s.schedule(0.0)
    assert s.abort(a, 0.5)  # in flight: finished when the step ends
    out = s.update(plan, StepResult(0.1, (11, 22)), 1.0)
    assert out.finished == [a] and a.finish_reason == "abort" and a.num_output_tokens == 0
    assert b.token_ids[-1] == 22 and b.num_output_tokens == 1 and s.running == [b]
    assert s.pool.num_free_blocks == s.pool.num_blocks - len(b.block_ids)


def test_sglang_policy_forgets_an_aborted_chunked_request():
    cfg = EngineConfig(name="sglang", design="unified", policy="sglang", chunked_prefill=True)
    loop = VirtualLoop()
    engine = build_unified(cfg, loop=loop, make_executor=LinearExecutor, num_kv_blocks=2000, max_model_len=32768)
    reqs = workload(n=20, rate=50.0)
    big = reqs[0]
    big.prompt_len = 20000  # chunked over several steps
    for r in reqs:
        loop.at(r.arrival_s, lambda r=r: engine.submit(r))
    policy = engine.workers[0].scheduler.sglang

    def abort_while_chunked():
        if policy.chunked is big and big.status is Status.RUNNING:
            engine.abort(big)
    loop.run(on_event=abort_while_chunked)
    assert big.finish_reason == "abort" and policy.chunked is None
    assert all(r.status is Status.FINISHED for r in reqs)
    assert engine.pools[0].num_free_blocks == engine.pools[0].num_blocks
