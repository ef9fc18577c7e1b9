"""Roofline share model vs semi-PD's measured A100 slowdown curves (semipd.md section 3).

Llama-3-8B on A100-80GB: slowdown = step time at the share / step time at 100 %, for a
typical decode step (64 and 128 seqs at ~500 context, what ShareGPT at 10-16 req/s
keeps running) against scale_tpot, and typical prefill steps (2048 and 4x1024 tokens)
against scale_latency, both normalised to 1 at 100 %.
"""
import pytest

from engines.plan import ScheduledSeq, StepPlan
from sim.cost_model import RooflineCostModel
from sim.share_model import (decode_slowdown, get_share_model, prefill_slowdown, scale_latency,
                             scale_tpot)
from sim.specs import get_hardware, get_model

SHARES = (0.80, 0.85, 0.90, 0.95, 1.00)


def _decode(batch: int, ctx: int) -> StepPlan:
    return StepPlan("d", tuple(ScheduledSeq(i, ctx, 1, True, False, ()) for i in range(batch)),
                    0, batch)


def _prefill(*lens: int) -> StepPlan:
    return StepPlan("p", tuple(ScheduledSeq(i, 0, n, True, True, ()) for i, n in enumerate(lens)),
                    sum(lens), 0)


STEPS = {"decode b64 ctx500": (_decode(64, 500), decode_slowdown),
         "decode b128 ctx500": (_decode(128, 500), decode_slowdown),
         "prefill 2048": (_prefill(2048), prefill_slowdown),
         "prefill 4x1024": (_prefill(1024, 1024, 1024, 1024), prefill_slowdown)}


def test_roofline_matches_measured_curves_within_10_percent():
    cm = RooflineCostModel(get_model("llama3_8b"), get_hardware("a100_80g"))
    worst = 0.0
    print("\nstep                 share  roofline  measured  error")
    for name, (plan, measured) in STEPS.items():
        base = cm.step_time_s(plan, 1.0)
        for s in SHARES:
            model = cm.step_time_s(plan, s) / base
            err = model / measured(s) - 1
            worst = max(worst, abs(err))
            print(f"{name:20s} {s:5.2f}  {model:8.3f}  {measured(s):8.3f}  {err * 100:+5.1f} %")
    assert worst < 0.10


def test_measured_curves_normalised():
    assert decode_slowdown(1.0) == pytest.approx(1.0)
    assert prefill_slowdown(1.0) == pytest.approx(1.0)
    assert scale_tpot(0.5) == pytest.approx(0.6099164272415375 * 2 + 0.41530605763705736)
    assert scale_latency(1.0) == pytest.approx(1.0509603460884)
    assert decode_slowdown(0.8) < prefill_slowdown(0.8) < 1.25  # decode is less SM-bound


def test_roofline_bandwidth_fraction_saturates():
    roof = get_share_model("roofline")
    assert roof.bandwidth_fraction(0.5, 0.5) == 1.0 == roof.bandwidth_fraction(0.9, 0.5)
    assert roof.bandwidth_fraction(0.25, 0.5) == 0.5


def test_unknown_share_model():
    with pytest.raises(ValueError, match="measured, roofline"):
        get_share_model("linear")
