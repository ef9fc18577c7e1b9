"""DeepSeek specs (MLA + MoE, FP8) and their cost: published sizes, KV bytes, the
touched-experts formula, plausible step times, memory fit."""
import dataclasses
import random

import pytest

from engines.plan import ScheduledSeq, StepPlan
from sim.arch import expected_touched_experts
from sim.cost_model import RooflineCostModel
from sim.memory import ModelDoesNotFitError, kv_capacity_blocks, weight_bytes_per_gpu
from sim.specs import GIB, get_hardware, get_model


def decode(batch: int, ctx: int) -> StepPlan:
    return StepPlan("d", tuple(ScheduledSeq(i, ctx, 1, True, False, ()) for i in range(batch)),
                    0, batch)


def prefill(n: int) -> StepPlan:
    return StepPlan("p", (ScheduledSeq(0, 0, n, True, True, ()),), n, 0)


# Published: DeepSeek-V2 paper (15.7B / 2.4B for V2-Lite) and V3 report (671B / 37B).
# "Active" counts what a token's forward multiplies (top-k + shared experts, LM head; not
# the input-embedding lookup): 2.451B, i.e. the published 2.4B to its 2 significant
# digits; 36.6B for V3. Totals match to 0.05 %.
@pytest.mark.parametrize("name, total, active, rel_active", [
    ("deepseek_v2_lite", 15.7e9, 2.4e9, 0.025), ("deepseek_v3", 671e9, 37e9, 0.02)])
def test_param_counts_match_published(name, total, active, rel_active):
    m = get_model(name)
    assert m.num_params() == pytest.approx(total, rel=0.005)
    assert m.active_params() == pytest.approx(active, rel=rel_active)


def test_mla_kv_bytes_per_token_is_the_bf16_latent():
    for name, layers in (("deepseek_v2_lite", 27), ("deepseek_v3", 61)):
        m = get_model(name)
        assert m.attention == "mla" and m.mla.latent_dim == 576
        assert m.kv_bytes_per_token() == layers * 576 * 2


def test_spec_extensions_leave_llama_unchanged():
    m = get_model("llama3_8b")
    assert (m.attention, m.mla, m.moe, m.weight_bytes_per_param) == ("gqa", None, None, 2)
    assert m.active_params() == m.num_params() - m.vocab * m.hidden  # all but the lookup


def test_v3_weights_are_fp8_with_bf16_embeddings():
    m = get_model("deepseek_v3")
    assert (m.dtype_bytes, m.weight_bytes_per_param) == (2, 1)
    # 1 byte per param, plus a second byte for the bf16 input embedding, LM head and the
    # 58 MoE layers' routers (norms: 1M params, within the tolerance).
    bf16_params = 2 * m.vocab * m.hidden + 58 * 256 * m.hidden
    assert m.weight_bytes() == pytest.approx(m.num_params() + bf16_params, rel=1e-5)


def test_touched_experts_formula():
    assert expected_touched_experts(0, 6, 64) == 0.0
    assert expected_touched_experts(1, 6, 64) == pytest.approx(6)
    assert expected_touched_experts(10_000, 8, 256) == pytest.approx(256)
    seq = [expected_touched_experts(m, 8, 256) for m in (1, 2, 8, 64, 512)]
    assert seq == sorted(seq) and seq[-1] < 256
    # Monte Carlo of the uniform-routing assumption it states: 8 tokens x top-6 of 64.
    rng = random.Random(0)
    trials = [len({e for _ in range(8) for e in rng.sample(range(64), 6)}) for _ in range(4000)]
    assert sum(trials) / len(trials) == pytest.approx(expected_touched_experts(8, 6, 64), rel=0.01)


@pytest.fixture(scope="module")
def lite() -> RooflineCostModel:
    return RooflineCostModel(get_model("deepseek_v2_lite"), get_hardware("a100_80g"))


def test_v2_lite_decode_batch1_reads_about_the_active_weights(lite):
    # Lower bound: the 2.45B active params (4.9 GB) at peak HBM bandwidth, 2.4 ms, plus
    # the 1 ms host overhead. Upper bound: Llama-3-8B's step (12 ms), which reads 3.3x the
    # bytes; V2-Lite launches ~2x the kernels per layer (MLA + MoE), so floors of
    # ~3.5 ms over 27 layers: ~7.5 ms expected.
    m, hw = lite.model, lite.hardware
    t = lite.step_time_s(decode(1, 500), 1.0)
    floor_s = m.active_params() * 2 / hw.hbm_bandwidth_bytes_s + lite.step_overhead_s
    llama = RooflineCostModel(get_model("llama3_8b"), hw).step_time_s(decode(1, 500), 1.0)
    assert floor_s < t < llama
    assert 5e-3 < t < 10e-3


def test_v2_lite_decode_batch64_touches_nearly_every_expert(lite):
    # 64 tokens x top-6 of 64 touch 63.9 experts per layer: the step reads all 31.4 GB
    # of weights (15.4 ms at peak bandwidth, 19 ms at the calibrated 81 %), plus KV,
    # floors and host overhead -- so a batch-64 step costs > 2x a batch-1 step, a much
    # steeper rise than a dense model's.
    m, hw = lite.model, lite.hardware
    assert expected_touched_experts(64, 6, 64) > 63.8
    t1, t64 = (lite.step_time_s(decode(b, 500), 1.0) for b in (1, 64))
    assert m.weight_bytes() / hw.hbm_bandwidth_bytes_s < t64 < 30e-3
    dense = RooflineCostModel(get_model("llama3_8b"), hw)
    d1, d64 = (dense.step_time_s(decode(b, 500), 1.0) for b in (1, 64))
    assert t64 / t1 > 2.0 > d64 / d1


def test_mla_decode_reads_only_the_latent(lite):
    # Decode attention is bandwidth-bound (1088 x 2 x 16 flop per 1152 bytes = 30 flop/B,
    # under the A100 ridge); the extra context adds exactly its latent bytes.
    hw = lite.hardware
    extra = lite.step_time_s(decode(64, 4000), 1.0) - lite.step_time_s(decode(64, 0), 1.0)
    latent_bytes = 64 * 4000 * 27 * 576 * 2
    bytes_s = hw.hbm_bandwidth_bytes_s * hw.bandwidth_efficiency
    assert extra == pytest.approx(latent_bytes / bytes_s, rel=1e-6)


def test_v2_lite_prefill_plausible(lite):
    # 2 x 2.45B x 2048 = 10 TFLOP at the calibrated ~0.72 x 312 TFLOP/s: ~45 ms + attention.
    t = lite.step_time_s(prefill(2048), 1.0)
    assert 45e-3 < t < 100e-3
    dense = RooflineCostModel(get_model("llama3_8b"), lite.hardware)
    assert t < dense.step_time_s(prefill(2048), 1.0)


def test_tp_moe_shards_experts():
    m, hw = get_model("deepseek_v2_lite"), get_hardware("a800_80g")
    tp1, tp2 = (RooflineCostModel(m, hw, tp=t).step_time_s(decode(64, 500), 1.0) for t in (1, 2))
    # Each GPU reads half of every touched expert (~all 64): saves ~15.7 GB / 1.65 TB/s =
    # 9.5 ms, less 2 all-reduces per layer; kernel floors do not shrink.
    half_weights_s = m.weight_bytes() / 2 / (hw.hbm_bandwidth_bytes_s * hw.bandwidth_efficiency)
    assert 0.5 * half_weights_s < tp1 - tp2 < half_weights_s


def test_v3_tp8_h200_fits_with_fp8_weights():
    m, hw = get_model("deepseek_v3"), get_hardware("h200_141g")
    per_gpu = weight_bytes_per_gpu(m, tp=8)
    # 671 GB / 8 = 84 GB, + bf16 embeddings and the replicated q_a/kv_a/router: ~85 GB.
    assert 84e9 < per_gpu < 87e9 < hw.hbm_bytes
    blocks = kv_capacity_blocks(m, hw, tp=8)
    print(f"\nDeepSeek-V3 TP8 H200: {per_gpu / GIB:.1f} GiB weights/GPU, "
          f"{blocks} KV blocks = {16 * blocks} tokens (latent replicated on every rank)")
    assert 500_000 < 16 * blocks < 800_000
    with pytest.raises(ModelDoesNotFitError):
        kv_capacity_blocks(m, hw, tp=4)


def test_v3_uses_the_fp8_peak():
    m, h200 = get_model("deepseek_v3"), get_hardware("h200_141g")
    fp8 = RooflineCostModel(m, h200, tp=8).step_time_s(prefill(8192), 1.0)
    no_fp8 = RooflineCostModel(m, dataclasses.replace(h200, peak_tflops_fp8=0.0), tp=8)
    assert fp8 < 0.85 * no_fp8.step_time_s(prefill(8192), 1.0)


def test_v3_tp8_step_times_plausible():
    cm = RooflineCostModel(get_model("deepseek_v3"), get_hardware("h200_141g"), tp=8)
    t1, t64 = (cm.step_time_s(decode(b, 500), 1.0) for b in (1, 64))
    # Batch 1 reads ~5.5 GB per GPU (1.2 ms) but runs ~30 kernels and 2 all-reduces in each
    # of 61 layers: floor-bound, 10-25 ms; batch 64 touches 222 of 256 experts (~71 GB).
    assert 10e-3 < t1 < 25e-3 and 71e9 / 4.8e12 < t64 - t1 < 40e-3
