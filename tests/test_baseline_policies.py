"""Baselines that behave like the systems they are named after: SGLang v0.4's default
scheduler (engines/policy_sglang.py) and DistServe's swap-to-host decode preemption."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from engines import policy_sglang as sg
from engines.blocks import BlockPool
from engines.config import EngineConfig
from engines.disagg import KVLink, build_disagg
from engines.plan import StepResult
from engines.request import Request, Status
from engines.scheduler import Scheduler, SchedulerConfig
from sim.loop import VirtualLoop
from sim.specs import get_hardware
from tests.fakes import LinearExecutor
from tests.test_engines_composed import run, workload

CONF = Path(__file__).resolve().parents[1] / "conf"


def make(prompt_len, output_len, rid=0):
    return Request(id=rid, arrival_s=0.0, prompt_len=prompt_len, output_len=output_len)


def sglang(num_blocks=1000, block=4, chunk=1000, **kw):
    kw.setdefault("max_running_requests", 64)
    cfg = SchedulerConfig(max_num_batched_tokens=chunk, policy="sglang", watermark=0.0, **kw)
    return Scheduler(cfg, BlockPool(num_blocks, block))


def step(s, now=1.0):
    plan = s.schedule(now)
    assert plan is not None
    s.update(plan, StepResult(0.01), now)
    return [(q.request_id, q.num_new_tokens) for q in plan.seqs]


# ----- SGLang: batch formation ----------------------------------------------------
def test_sglang_prefill_that_fits_goes_before_the_decode_step_and_never_mixes():
    s = sglang()
    s.add_request(make(10, 50, 0))
    assert step(s) == [(0, 10)]
    assert step(s) == [(0, 1)]              # nothing waiting: a decode step
    s.add_request(make(20, 50, 1))
    assert step(s) == [(1, 20)]             # prefill-only: request 0 does not decode in it
    assert step(s) == [(0, 1), (1, 1)]


def test_sglang_mixed_chunk_option_adds_decodes_and_shrinks_the_budgets():
    s = sglang(chunk=30, mixed_chunk=True)
    s.add_request(make(10, 50, 0))
    step(s)
    s.add_request(make(100, 50, 1))
    # the chunk budget loses one token per running request (PrefillAdder's mixed offset)
    assert step(s) == [(1, 29), (0, 1)]


def test_sglang_long_prompt_is_chunked_and_the_chunk_continues_before_decodes():
    s = sglang(chunk=32)
    s.add_request(make(10, 50, 0))
    step(s)
    s.add_request(make(70, 50, 1))
    assert step(s) == [(1, 32)]
    assert step(s) == [(1, 32)]             # the chunked request continues first
    assert step(s) == [(1, 6)]
    assert s.running[1].num_output_tokens == 1
    assert step(s) == [(0, 1), (1, 1)]


def test_sglang_max_prefill_tokens_caps_a_prefill_batch():
    s = sglang(chunk=1000, max_prefill_tokens=100)
    for i, p in enumerate([40, 50, 30]):
        s.add_request(make(p, 5, i))
    assert step(s) == [(0, 40), (1, 50)]    # 30 > the 10 input tokens left
    assert step(s) == [(2, 30)]


def test_sglang_kv_reservation_latches_batch_full_until_a_request_finishes():
    s = sglang(num_blocks=100, block=4)     # 400 tokens
    s.add_request(make(40, 100, 0))          # reserves 40 + 100 tokens
    s.add_request(make(40, 100, 1))
    assert step(s) == [(0, 40), (1, 40)]
    # free = 400 - 80 = 320 tokens; running requests reserve 0.7 x 99 each -> 181.4 left,
    # so a 40 + 150 = 190-token request does not fit although its 40-token prompt would
    s.add_request(make(40, 150, 2))
    assert step(s) == [(0, 1), (1, 1)]
    assert s.sglang.batch_is_full
    s.add_request(make(4, 1, 3))            # would fit, but the latch stops every prefill
    assert step(s) == [(0, 1), (1, 1)]


def test_sglang_latch_clears_at_the_decode_step_after_a_finish():
    s = sglang(num_blocks=100, block=4)
    s.add_request(make(40, 3, 0))
    s.add_request(make(40, 200, 1))
    step(s)
    s.add_request(make(40, 300, 2))         # 340 > 320 - reservations: batch full
    step(s)
    assert s.sglang.batch_is_full
    step(s)                                  # request 0 gets its 3rd token and finishes
    assert s.running[0].id == 1
    assert step(s) == [(1, 1)]               # the decode step that sees the smaller batch
    assert not s.sglang.batch_is_full


def test_sglang_max_running_requests_stops_admission():
    s = sglang(max_running_requests=2)
    for i in range(3):
        s.add_request(make(4, 10, i))
    assert step(s) == [(0, 4), (1, 4)]
    assert s.sglang.batch_is_full


# ----- SGLang: retraction and the new-token ratio ------------------------------------
def _running(s, prompt_len, output_len, rid, num_outputs=1):
    """A request that has produced `num_outputs` tokens and whose KV holds all but the last."""
    r = make(prompt_len, output_len, rid)
    r.num_output_tokens = num_outputs
    r.num_computed_tokens = prompt_len + num_outputs - 1
    r.block_ids = s.pool.allocate(s.pool.blocks_for_tokens(r.num_computed_tokens))
    r.status = Status.RUNNING
    s.running.append(r)
    return r


def test_sglang_decode_out_of_kv_retracts_fewest_outputs_to_the_back_of_the_queue():
    s = sglang(num_blocks=24, block=4)      # 96 tokens
    a, b, c = _running(s, 28, 40, 0), _running(s, 28, 40, 1), _running(s, 36, 40, 2)
    s.sglang.batch_is_full = True           # no prefill: the queued request waits
    s.add_request(make(4, 1, 3))
    assert s.pool.num_free_blocks == 1      # each decode needs a new block: 3 > 1
    assert step(s) == [(0, 1), (1, 1)]
    # equal outputs: the longest prompt goes; then 10 free blocks = 40 tokens cover
    # 20 steps of the 2 left, so one retraction is enough
    assert c.status is Status.WAITING and c.num_computed_tokens == 0 and c.num_preemptions == 1
    assert not c.block_ids and [r.id for r in s.waiting] == [3, 2]   # the back of the queue
    assert s.sglang.new_token_ratio == pytest.approx((1 + 1 + 20 * 2) / 80)
    assert not s.sglang.batch_is_full


def test_sglang_retraction_keeps_the_requests_with_more_outputs():
    s = sglang(num_blocks=24, block=4)
    a = _running(s, 20, 40, 0, num_outputs=9)    # 28 tokens
    b = _running(s, 26, 40, 1, num_outputs=3)    # 28 tokens
    c = _running(s, 34, 40, 2, num_outputs=3)    # 36 tokens
    step(s)
    assert a.status is Status.RUNNING and c.status is Status.WAITING and b.status is Status.RUNNING


def test_sglang_new_token_ratio_decays_per_decode_step_and_resets_when_idle():
    s = sglang()
    s.add_request(make(4, 3, 0))
    step(s)
    assert s.sglang.new_token_ratio == sg.INIT_NEW_TOKEN_RATIO
    step(s)
    assert s.sglang.new_token_ratio == pytest.approx(sg.INIT_NEW_TOKEN_RATIO - sg.NEW_TOKEN_RATIO_DECAY)
    step(s)                                  # finishes; the server is then idle
    s.add_request(make(4, 3, 1))
    step(s)
    assert s.sglang.new_token_ratio == sg.INIT_NEW_TOKEN_RATIO
    assert sg.MIN_NEW_TOKEN_RATIO == pytest.approx(0.098)


def test_sglang_conserves_tokens_and_blocks_under_pressure():
    # long outputs: after ~600 decode steps the reservation ratio has decayed to 0.098,
    # so admission over-commits the pool and decode must retract
    s = sglang(num_blocks=400, block=4, chunk=64, max_running_requests=32)
    reqs = [make(8 + 5 * i, 300 + 20 * i, i) for i in range(30)]
    for r in reqs:
        s.add_request(r)
    for _ in range(50000):
        if not s.has_work():
            break
        plan = s.schedule(1.0)
        assert plan is not None
        s.pool.check_integrity([r.block_ids for r in s.running])
        s.update(plan, StepResult(0.01), 1.0)
    assert all(r.num_output_tokens == r.output_len and r.status is Status.FINISHED for r in reqs)
    assert s.pool.num_free_blocks == s.pool.num_blocks
    assert s.sglang.num_retracted > 0       # the pool was small enough to force retraction


# ----- SGLang: defaults read from server_args / tp_worker ----------------------------
def test_sglang_default_chunk_size_by_gpu_memory_matches_the_config_for_the_papers_gpus():
    assert sg.default_chunk_tokens(24 * 1000 * 2**20) == 2048
    cfg = OmegaConf.load(CONF / "engine" / "sglang.yaml")
    for exp in ("fig14_deepseek_v2_lite_sharegpt", "fig14_deepseek_v3_math500"):
        defaults = OmegaConf.to_container(OmegaConf.load(CONF / "experiment" / f"{exp}.yaml").defaults)
        hw = next(d["override /hardware"] for d in defaults if isinstance(d, dict) and "override /hardware" in d)
        assert sg.default_chunk_tokens(get_hardware(hw).hbm_bytes) == cfg.chunk_size_tokens == 8192
    assert cfg.policy == "sglang" and cfg.sglang.enable_mixed_chunk is False
    assert cfg.sglang.max_prefill_tokens == 16384


def test_sglang_default_max_running_requests():
    assert sg.default_max_running_requests(1_000_000, 163840) == 3125 - 1  # pool / ctx * 512 = 3125
    assert sg.default_max_running_requests(100_000, 163840) == 2047        # at least 2048 slots
    assert sg.default_max_running_requests(10_000_000, 4096) == 4095       # at most 4096
    assert sg.default_max_running_requests(1000, 4096) == 500              # half the KV tokens
    eng = EngineConfig(design="unified", policy="sglang", chunked_prefill=True)
    s = Scheduler(eng.scheduler_config(4096), BlockPool(250, 4))
    assert s.sglang.max_running == 500


def test_policy_and_preemption_errors_name_the_option():
    with pytest.raises(ValueError, match="engine.policy"):
        EngineConfig(design="disagg", policy="sglang").validate()
    with pytest.raises(ValueError, match="engine.preemption"):
        EngineConfig(design="unified", preemption="swap").validate()
    with pytest.raises(ValueError, match="engine.preemption"):
        EngineConfig(design="disagg", preemption="swapp").validate()
    with pytest.raises(ValueError, match="policy must be one of"):
        SchedulerConfig(policy="lpm")


# ----- DistServe: swap vs recompute --------------------------------------------------
def disagg(loop, preemption, blocks=60):
    cfg = EngineConfig(name="disagg", design="disagg", preemption=preemption)
    return build_disagg(cfg, loop=loop, make_executor=LinearExecutor, num_kv_blocks=blocks,
                        max_model_len=4096, link=KVLink("test", 1e9, 1e-3), kv_bytes_per_token_per_gpu=1e5,
                        host_link=KVLink("pcie", 25e9, 1e-5))


def _prefill_tokens(engine):
    return sum(rec.num_prefill_tokens for w in engine.workers for rec in w.records)


@pytest.mark.parametrize("preemption", ["swap", "recompute"])
def test_swap_and_recompute_conserve_tokens_and_leak_no_blocks(preemption):
    loop = VirtualLoop()
    engine = disagg(loop, preemption, blocks=60)
    reqs = workload(n=80, rate=40.0, seed=1)
    reqs = [r for r in reqs if r.prompt_len + r.output_len < 60 * 16 - 16]
    run(engine, loop, reqs)  # block integrity checked after every event
    assert all(r.status is Status.FINISHED and r.num_output_tokens == r.output_len for r in reqs)
    assert all(p.num_free_blocks == p.num_blocks for p in engine.pools)
    assert engine.decoders[0].num_preemptions > 0
    if preemption == "swap":
        # progress kept: the prefill side computes each prompt exactly once
        assert _prefill_tokens(engine) == sum(r.prompt_len for r in reqs)
        assert engine.num_swap_outs > 0 and engine.num_swap_ins > 0 and not engine.has_swapped()
    else:
        assert _prefill_tokens(engine) > sum(r.prompt_len for r in reqs)
        assert engine.num_swap_outs == 0


def test_swap_out_cost_lengthens_the_decode_step_that_needed_the_room():
    loop = VirtualLoop()
    engine = disagg(loop, "swap", blocks=60)
    dec = next(w for w in engine.workers if w.scheduler.role == "decode")
    victims = []
    sink = dec.scheduler.swap_sink
    dec.scheduler.swap_sink = lambda r: (victims.append(r.num_computed_tokens), sink(r))
    reqs = workload(n=80, rate=40.0, seed=1)
    reqs = [r for r in reqs if r.prompt_len + r.output_len < 60 * 16 - 16]
    run(engine, loop, reqs)
    ex = LinearExecutor()
    extra = [rec.duration_s - (ex.fixed_s + ex.decode_tok_s * rec.num_decode_tokens) for rec in dec.records]
    slow = [e for e in extra if e > 1e-9]
    assert len(slow) == engine.num_swap_outs > 0
    # a swap-out moves the victims' KV at 25 GB/s + 10 us, within the step that needed room
    assert sum(slow) == pytest.approx(sum(victims) * 1e5 / 25e9 + len(slow) * 1e-5, rel=1e-9)
    assert engine.swap_out_s_total == pytest.approx(sum(slow), rel=1e-9)


def test_distserve_configs_use_swap():
    for name in ("disagg", "disagg_2p6d", "cluster_1p3d4s"):
        assert OmegaConf.load(CONF / "engine" / f"{name}.yaml").preemption == "swap"
