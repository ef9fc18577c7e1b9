"""The soak (benchmarks/soak.py): 300 randomized runs with every invariant checked after every
event hold them all; and the checker catches planted violations, so it cannot pass vacuously."""
import pytest

from benchmarks import soak
from benchmarks.soak_draw import DESIGNS, build, draw_config
from engines.blocks import BlockPool
from engines.config import EngineConfig
from engines.invariants import InvariantViolation, check_pool_ownership
from engines.request import Request, Status
from engines.scheduler import Scheduler
from engines.unified import build_unified
from engines.worker import Worker
from sim.loop import VirtualLoop
from tests.fakes import LinearExecutor

NUM_RUNS = 300


def test_soak_runs_hold_every_invariant():
    outcomes = soak.soak(NUM_RUNS, seed=0, jobs=1, quiet=True)
    bad = [f"seed {o.seed}: {o.violation}" for o in outcomes if o.violation]
    assert not bad, "\n\n".join(bad[:3])
    # Not vacuous: every design ran, and the hard paths were taken.
    assert {o.design for o in outcomes} == set(DESIGNS)
    for counter in ("num_rejected", "num_preemptions", "num_share_switches", "num_kv_transfers"):
        assert sum(getattr(o, counter) for o in outcomes) > 0, counter
    assert sum(o.num_events for o in outcomes) > 10 * NUM_RUNS


def test_same_seed_same_run():
    assert draw_config(17) == draw_config(17)
    assert soak.run_one(17) == soak.run_one(17)
    assert draw_config(17) != draw_config(18)


# ----- planted violations ----------------------------------------------------------------
def _unified(blocks=64, **kw):
    loop = VirtualLoop()
    cfg = EngineConfig(name="u", design="unified", block_size_tokens=4, **kw)
    engine = build_unified(cfg, loop=loop, make_executor=LinearExecutor, num_kv_blocks=blocks, max_model_len=512)
    return engine, loop


def _run_checked(engine, loop, n=6, prompt=20, output=5):
    reqs = [Request(id=i, arrival_s=0.01 * i, prompt_len=prompt, output_len=output) for i in range(n)]
    soak.run_checked(engine, loop, reqs)
    return reqs


def test_clean_run_passes():
    engine, loop = _unified()
    reqs = _run_checked(engine, loop)
    assert all(r.status is Status.FINISHED for r in reqs)


def test_leaked_block_is_caught(monkeypatch):
    # A finish that forgets to free the request's blocks.
    def leaky_finish(self, req, now_s):
        req.block_ids = []
        req.status = Status.FINISHED
        req.finish_s = now_s
    monkeypatch.setattr(Scheduler, "_finish", leaky_finish)
    engine, loop = _unified()
    with pytest.raises(InvariantViolation, match="owned .* free != .*leaked"):
        _run_checked(engine, loop)


def test_double_owner_is_caught(monkeypatch):
    # An allocator that hands out a block some request already holds.
    engine, loop = _unified()
    pool = engine.pools[0]
    real = BlockPool.allocate

    def sloppy_allocate(num_blocks):
        taken = real(pool, num_blocks)
        used = [b for b in range(pool.num_blocks) if pool._ref_counts[b] and b not in taken]
        return taken[:-1] + used[:1] if used and taken else taken
    pool.allocate = sloppy_allocate
    with pytest.raises(InvariantViolation, match="owned by request .* and by request"):
        _run_checked(engine, loop)


def test_pool_ownership_checks_directly():
    pool = BlockPool(8, 4)
    a, b = pool.allocate(2), pool.allocate(1)
    check_pool_ownership(pool, [("a", a), ("b", b)])
    with pytest.raises(InvariantViolation, match="owned by a and by b"):
        check_pool_ownership(pool, [("a", a), ("b", a[:1])])
    with pytest.raises(InvariantViolation, match="leaked"):
        check_pool_ownership(pool, [("a", a)])
    pool.incref(b)  # a second reference nobody holds
    with pytest.raises(InvariantViolation, match="ref counts disagree"):
        check_pool_ownership(pool, [("a", a), ("b", b)])


def test_overlapping_steps_are_caught(monkeypatch):
    # A worker that forgets it is busy starts a second step while the first runs.
    def forgetful_start(self, now_s):
        plan = self.scheduler.schedule(now_s)
        return None if plan is None else (plan, self.executor.execute(plan, self.share))
    monkeypatch.setattr(Worker, "start_step", forgetful_start)
    engine, loop = _unified(chunked_prefill=True, chunk_size_tokens=8)
    with pytest.raises(InvariantViolation, match="overlaps|not in the worker's running list|plan computes"):
        _run_checked(engine, loop)


def test_lost_request_is_caught(monkeypatch):
    # A scheduler that drops every third request on the floor.
    real = Scheduler.add_request

    def lossy_add(self, req):
        if req.id % 3 != 2:
            real(self, req)
    monkeypatch.setattr(Scheduler, "add_request", lossy_add)
    engine, loop = _unified()
    with pytest.raises(InvariantViolation, match="request 2 .*in no queue"):
        _run_checked(engine, loop)


def test_extra_token_is_caught(monkeypatch):
    # An update that emits one token more than the request asked for.
    real = Request.append_output_token

    def greedy(self, token_id, now_s):
        done = real(self, token_id, now_s)
        if done and self.id == 1:
            self.num_output_tokens += 1
            self.token_times_s.append(now_s)
        return done
    monkeypatch.setattr(Request, "append_output_token", greedy)
    engine, loop = _unified()
    with pytest.raises(InvariantViolation, match="request 1: 6 output tokens, output_len 5"):
        _run_checked(engine, loop)


def test_unjustified_rejection_and_report(monkeypatch, capsys):
    # Rejecting servable requests is caught, and the report names the seed to replay.
    monkeypatch.setattr(Scheduler, "rejection_reason", lambda self, req: "no reason at all")
    seed = next(s for s in range(100) if draw_config(s).max_model_len is None and draw_config(s).pool_factor >= 1.0)
    outcome = soak.run_one(seed)
    assert "rejected although every worker could serve it" in outcome.violation
    assert f"seed={seed}" in outcome.violation
    assert soak.main(["--seed", str(seed), "--runs", "1"]) == 1
    out = capsys.readouterr().out
    assert f"VIOLATION seed={seed}" in out and f"--seed {seed} --runs 1" in out


def test_soak_builds_every_design():
    seen = set()
    for s in range(200):
        cfg = draw_config(s)
        engine, _, reqs = build(cfg)
        assert reqs and engine.pools
        seen.add(cfg.design)
    assert seen == set(DESIGNS)
