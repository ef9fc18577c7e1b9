"""Roofline share model vs semi-PD's measured A100 slowdown curves.

The measured curves are DynamicPartitioner.replan's `_scale_tpot` and `_scale_latency`
(github.com/infinigence/Semi-PD, branch distserve_base, distserve/single_stage_engine.py).
Llama-3-8B on A100-80GB: slowdown = step time at the share / step time at 100 %, for a
typical decode step (64 and 128 seqs at ~500 context, what ShareGPT at 10-16 req/s
keeps running) against scale_tpot, and typical prefill steps (2048 and 4x1024 tokens)
against scale_latency, both normalised to 1 at 100 %. The bounds asserted here are the
numbers README.md and sim/share_model.py state.
"""
import pytest

from engines.plan import ScheduledSeq, StepPlan
from sim.cost_model import RooflineCostModel
from sim.share_model import (RooflineShare, decode_slowdown, get_share_model, prefill_slowdown,
                             scale_latency, scale_tpot)
from sim.specs import get_hardware, get_model

SHARES_80_100 = (0.80, 0.85, 0.90, 0.95, 1.00)
# README.md ("semi-PD engine") and sim/share_model.py: "within 4.5 %" at 80-100 %, the
# measured maximum (4.44 %, prefill 4x1024 at 80 %) rounded up at the 0.1 % digit.
README_BOUND_80_100 = 0.045


def _decode(batch: int, ctx: int) -> StepPlan:
    return StepPlan("d", tuple(ScheduledSeq(i, ctx, 1, True, False, ()) for i in range(batch)),
                    0, batch)


def _prefill(*lens: int) -> StepPlan:
    return StepPlan("p", tuple(ScheduledSeq(i, 0, n, True, True, ()) for i, n in enumerate(lens)),
                    sum(lens), 0)


DECODE = {"decode b64 ctx500": _decode(64, 500), "decode b128 ctx500": _decode(128, 500)}
PREFILL = {"prefill 2048": _prefill(2048), "prefill 4x1024": _prefill(1024, 1024, 1024, 1024)}


def _errors(cm: RooflineCostModel, shares) -> dict[tuple[str, float], float]:
    """Relative error of the roofline slowdown against the measured curve, per (step, share)."""
    out = {}
    for steps, measured in ((DECODE, decode_slowdown), (PREFILL, prefill_slowdown)):
        for name, plan in steps.items():
            base = cm.step_time_s(plan, 1.0)
            for s in shares:
                out[(name, s)] = cm.step_time_s(plan, s) / base / measured(s) - 1
    return out


def _a100(saturation_share: float | None = None) -> RooflineCostModel:
    return RooflineCostModel(get_model("llama3_8b"), get_hardware("a100_80g"),
                             share_model=RooflineShare(saturation_share))


def test_roofline_within_the_readme_bound_at_80_to_100_percent():
    errs = _errors(_a100(), SHARES_80_100)
    worst_key = max(errs, key=lambda k: abs(errs[k]))
    worst = abs(errs[worst_key])
    print(f"\nworst |error| at 80-100 %: {worst * 100:.3f} % ({worst_key})")
    assert worst <= README_BOUND_80_100
    # the bound is the measured maximum rounded up, not a loose allowance: a change that
    # moves the error below 4.4 % must update README.md and sim/share_model.py
    assert worst > README_BOUND_80_100 - 0.001
    assert worst_key == ("prefill 4x1024", 0.80)


@pytest.mark.parametrize("saturation_share", [0.3, 0.4, 0.5, 0.6, 0.7])
def test_every_saturation_share_tried_up_to_0_7_keeps_the_bound(saturation_share):
    errs = _errors(_a100(saturation_share), SHARES_80_100)
    assert max(abs(e) for e in errs.values()) <= README_BOUND_80_100


def test_low_share_errors_stated_in_the_share_model_doc():
    errs = _errors(_a100(), (0.30, 0.50, 0.55, 0.60, 0.70, 0.80, 0.90))
    decode_50_up = max(abs(e) for (n, s), e in errs.items() if n in DECODE and s >= 0.5)
    assert decode_50_up <= 0.015                      # "within 1.5 % down to a 50 % share"
    assert max(abs(errs[(n, 0.30)]) for n in DECODE) == pytest.approx(0.082, abs=0.0005)  # "8.2 % at 30 %"
    assert max(errs[(n, 0.50)] for n in PREFILL) == pytest.approx(0.123, abs=0.0005)      # "+12.3 % at 50 %"
    assert max(errs[(n, 0.30)] for n in PREFILL) == pytest.approx(0.207, abs=0.0005)      # "+20.7 % at 30 %"


def test_measured_curves_against_hand_values():
    # Published constants worked by hand (decimal arithmetic): raw curves at 80 % and 50 %,
    # and the same divided by their raw value at 100 % (1.0252224848812 and 1.0509603460884).
    assert scale_tpot(0.8) == pytest.approx(1.1777015916890, rel=1e-12)
    assert scale_latency(0.8) == pytest.approx(1.2340691003393, rel=1e-12)
    assert scale_tpot(0.5) == pytest.approx(1.6351389121201, rel=1e-12)
    assert scale_latency(0.5) == pytest.approx(1.7833953630918, rel=1e-12)
    assert decode_slowdown(0.8) == pytest.approx(1.1487278215796, rel=1e-12)
    assert prefill_slowdown(0.8) == pytest.approx(1.1742299363933, rel=1e-12)
    assert decode_slowdown(0.5) == pytest.approx(1.5949112863183, rel=1e-12)
    assert prefill_slowdown(0.5) == pytest.approx(1.6969197455731, rel=1e-12)
    assert decode_slowdown(1.0) == 1.0 and prefill_slowdown(1.0) == 1.0


def test_roofline_bandwidth_fraction_saturates():
    roof = get_share_model("roofline")
    assert roof.bandwidth_fraction(0.5, 0.5) == 1.0 == roof.bandwidth_fraction(0.9, 0.5)
    assert roof.bandwidth_fraction(0.25, 0.5) == 0.5


def test_unknown_share_model():
    with pytest.raises(ValueError, match="measured, roofline"):
        get_share_model("linear")
