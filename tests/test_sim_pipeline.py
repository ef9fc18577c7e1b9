"""Pipeline parallelism: stage split, memory per stage, sequential vs overlapped steps,
and the harness reading engine.pp."""
import math

import pytest

from engines.plan import ScheduledSeq, StepPlan
from sim.arch import pipeline_stages
from sim.cost_model import INTER_NODE_BYTES_S, INTER_NODE_LATENCY_S, RooflineCostModel
from sim.memory import ModelDoesNotFitError, kv_capacity_blocks, weight_bytes_per_gpu
from sim.specs import GIB, get_hardware, get_model


def decode(batch: int, ctx: int) -> StepPlan:
    return StepPlan("d", tuple(ScheduledSeq(i, ctx, 1, True, False, ()) for i in range(batch)),
                    0, batch)


def prefill(n: int) -> StepPlan:
    return StepPlan("p", (ScheduledSeq(0, 0, n, True, True, ()),), n, 0)


def test_stage_split_is_vllm_060():
    assert pipeline_stages(126, 4) == ((0, 31), (31, 62), (62, 93), (93, 126))
    assert pipeline_stages(32, 1) == ((0, 32),)
    for bad in (0, 127):
        with pytest.raises(ValueError):
            pipeline_stages(126, bad)


def test_405b_tp8_pp4_fits_a100_40g():
    m, hw = get_model("llama31_405b"), get_hardware("a100_40g")
    per_gpu = weight_bytes_per_gpu(m, tp=8, pp=4)
    # 811 GB / 32 = 25.4 GB on average; the last stage holds 33 layers + LM head: 26.8 GB.
    assert 25e9 < per_gpu < 27e9
    blocks = kv_capacity_blocks(m, hw, tp=8, pp=4)
    print(f"\n405B TP8xPP4 A100-40GB: {per_gpu / GIB:.1f} GiB weights/GPU, {blocks} KV blocks "
          f"= {16 * blocks} tokens")
    assert 400_000 < 16 * blocks < 700_000
    with pytest.raises(ModelDoesNotFitError):
        kv_capacity_blocks(m, hw, tp=8, pp=2)


def _send_s(m, tokens: int) -> float:
    return INTER_NODE_LATENCY_S + 2 * m.hidden * 2 * tokens / INTER_NODE_BYTES_S


@pytest.mark.parametrize("plan", [decode(1, 500), decode(64, 1000), prefill(2048)],
                         ids=["decode1", "decode64", "prefill2048"])
def test_sequential_pp_is_the_whole_model_plus_sends(plan):
    # One micro-batch per step: the stages run one after another, so a PP4 step is the
    # single-group time of the same TP8 shards plus 3 sends of hidden + residual over
    # 25 GB/s -- slower than an (unbuildable on 40 GB) TP8 step by exactly the sends.
    m, hw = get_model("llama31_405b"), get_hardware("a100_40g")
    one = RooflineCostModel(m, hw, tp=8).step_time_s(plan, 1.0)
    seq = RooflineCostModel(m, hw, tp=8, pp=4).step_time_s(plan, 1.0)
    assert seq == pytest.approx(one + 3 * _send_s(m, plan.num_tokens), rel=1e-9)


@pytest.mark.parametrize("plan", [decode(64, 1000), prefill(2048)], ids=["decode", "prefill"])
def test_overlapped_pp_costs_the_slowest_stage(plan):
    m, hw = get_model("llama31_405b"), get_hardware("a100_40g")
    seq = RooflineCostModel(m, hw, tp=8, pp=4)
    ovl = RooflineCostModel(m, hw, tp=8, pp=4, pp_overlap=True)
    t_seq, t_ovl = seq.step_time_s(plan, 1.0), ovl.step_time_s(plan, 1.0)
    gpu_seq = t_seq - seq.step_overhead_s - 3 * _send_s(m, plan.num_tokens)
    # The slowest stage (33 of 126 layers + LM head) is at least the mean stage and well
    # under the sum; the 2048-token prefill's send is 5.4 ms per boundary.
    assert seq.step_overhead_s + gpu_seq / 4 < t_ovl < 0.4 * t_seq


def test_pp_step_with_measured_share_model():
    m, hw = get_model("llama31_405b"), get_hardware("a100_40g")
    for overlap in (False, True):
        cm = RooflineCostModel(m, hw, tp=8, pp=4, pp_overlap=overlap, share_model="measured")
        times = [cm.step_time_s(decode(32, 800), s) for s in (1.0, 0.8, 0.5)]
        assert all(math.isfinite(t) for t in times) and times == sorted(times)


def test_kv_capacity_grows_with_pp():
    m, hw = get_model("llama3_70b"), get_hardware("a100_80g")
    pp1, pp2 = (kv_capacity_blocks(m, hw, tp=2, pp=p) for p in (1, 2))
    assert pp2 > 2 * pp1  # half the layers' KV per token and half the weights per GPU


def test_harness_reads_engine_pp_when_present():
    from harness.build import make_executor_factory
    from harness.config import RunConfig

    cfg = RunConfig()
    assert make_executor_factory(cfg)().cost_model.pp == 1  # no engine.pp field: pp = 1
    object.__setattr__(cfg.engine, "pp", 4)
    cfg.model.name, cfg.hardware.name, cfg.engine.tp = "llama31_405b", "a100_40g", 8
    assert make_executor_factory(cfg)().cost_model.pp == 4
