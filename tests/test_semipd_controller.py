"""Partition controllers on synthetic windows: every branch of both SLO presets."""
import pytest

from engines.config import SemiPDConfig
from semipd.controller import (SLO, Decision, SloCodeController, SloPaperController, StaticController,
                               predict_tpot)
from semipd.window import WindowStats

SLO_ = SLO(ttft_s=0.5, tpot_s=0.1)


def stats(ttft=0.2, tpot=0.05, waiting=None, prefill=None, rate=10.0, mean_prefill=0.02, num_ttft=400):
    waiting = ttft / 2 if waiting is None else waiting
    prefill = ttft - waiting if prefill is None else prefill
    return WindowStats(400, num_ttft, ttft, waiting, prefill, tpot, rate, mean_prefill)


def code():
    return SloCodeController(SemiPDConfig(), SLO_)


def paper(**kw):
    return SloPaperController(SemiPDConfig(**kw), SLO_)


def test_static_never_moves():
    assert StaticController().decide(stats(ttft=9, tpot=9), 70, 90) == Decision(70, 90)


def test_code_both_fine_keeps():
    assert code().decide(stats(), 90, 96) == Decision(90, 96)


def test_code_both_failing_resets_to_full_only_when_neither_is_at_100():
    assert code().decide(stats(ttft=0.9, tpot=0.2), 84, 90) == Decision(100, 100, True, True)
    # the original changes nothing once one side is at 100
    assert code().decide(stats(ttft=0.9, tpot=0.2), 100, 90) == Decision(100, 90)
    assert code().decide(stats(ttft=0.9, tpot=0.2), 84, 100) == Decision(84, 100)


def test_code_no_ttft_samples_counts_as_met():
    assert code().decide(stats(ttft=0.0, tpot=0.2, num_ttft=0), 100, 100) == Decision(94, 100, True, False)


def test_code_tpot_margin_counts_in_the_test():
    # 0.095 <= 0.1, but 0.095 * 1.1 > 0.1: a TPOT miss for the code preset
    assert code().decide(stats(tpot=0.095), 100, 90) != Decision(100, 90)


def test_code_margin_is_not_applied_to_the_prediction():
    # one step (90 -> 92) predicts 0.0963 <= 0.1: the original stops there; with the margin
    # (0.106 > 0.1) it would go on to 96
    s = stats(tpot=0.1)
    assert predict_tpot(s, 90, 92) <= 0.1 < 1.1 * predict_tpot(s, 90, 92)
    assert code().decide(s, 100, 90) == Decision(100, 92, False, True)


def test_code_curves_are_exactly_one_at_100():
    # raw fits make leaving 100 look cheap (1.025 at 100 vs 1.0...); the original's curve is 1
    s = stats(tpot=0.2, ttft=0.05)
    assert predict_tpot(s, 100, 100) == 0.2
    # lowering x from 100: the first step's predicted TTFT uses base 1, not the raw 1.119
    from semipd.curves import scale_latency, scale_waiting
    assert scale_waiting(100) == 1.0 and scale_latency(100) == 1.0


def test_code_tpot_miss_at_full_y_lowers_x_to_the_floor():
    # TTFT has lots of slack, so x drops 3 steps of 2 %
    assert code().decide(stats(ttft=0.05, tpot=0.2), 100, 100) == Decision(94, 100, True, False)
    assert code().decide(stats(ttft=0.05, tpot=0.2), 82, 100) == Decision(80, 100, True, False)


def test_code_tpot_miss_at_full_y_keeps_x_but_restarts_when_ttft_would_break():
    # the first step down is predicted to miss: the original steps back and still replaces the worker
    assert code().decide(stats(ttft=0.499, tpot=0.2), 100, 100) == Decision(100, 100, True, False)


def test_code_lowering_at_the_floor_steps_back_above_it():
    # at x = 80 the step lands on 80 again; if that is predicted to miss, the original adds 2
    assert code().decide(stats(ttft=0.5, waiting=0.3, prefill=0.21, tpot=0.2), 80, 100) == \
        Decision(82, 100, True, False)


def test_code_ttft_miss_raises_x_or_lowers_y():
    d = code().decide(stats(ttft=0.6, tpot=0.01), 90, 100)
    assert 90 < d.x_pct <= 96 and d.y_pct == 100 and d.restart_prefill and not d.restart_decode
    assert code().decide(stats(ttft=0.6, tpot=0.01), 100, 100) == Decision(100, 94, False, True)
    # TPOT 0.0905 passes 1.1 * 0.0905 <= 0.1, and without the margin in the prediction
    # all 3 steps down are predicted to hold (0.0905 * scale_tpot(94) = 0.0963)
    assert code().decide(stats(ttft=0.6, tpot=0.0905), 100, 100) == Decision(100, 94, False, True)


def test_paper_ttft_miss_raises_x_while_predicted_to_miss():
    assert paper().decide(stats(ttft=0.6), 90, 90) == Decision(96, 90, True, False)


def test_paper_raise_stops_at_first_step_predicted_to_meet():
    d = paper().decide(stats(tpot=0.101), 90, 90)  # 92: 0.0996
    assert d == Decision(90, 92, False, True)


def test_paper_at_100_lowers_the_other_share_while_its_slo_holds():
    # x reaches 100 after one step, then y goes down twice (TPOT 0.05 has lots of slack)
    assert paper().decide(stats(ttft=0.6), 98, 90) == Decision(100, 86, True, True)


def test_paper_does_not_lower_the_other_share_past_its_slo():
    # TPOT 0.099 at y = 90: y = 88 is predicted to miss 0.1, so y stays
    assert paper().decide(stats(ttft=0.6, tpot=0.099), 100, 90) == Decision(100, 90)


def test_paper_lowering_the_other_share_stops_at_the_floor():
    assert paper().decide(stats(ttft=0.6, tpot=0.01), 100, 82) == Decision(100, 80, False, True)
    assert paper().decide(stats(ttft=0.6, tpot=0.01), 100, 80) == Decision(100, 80)
    assert paper(floor_pct=50.0).decide(stats(ttft=0.6, tpot=0.01), 100, 60) == Decision(100, 54, False, True)


def test_paper_tpot_miss_raises_y():
    d = paper().decide(stats(tpot=0.12), 90, 80)
    assert d.x_pct == 90 and 80 < d.y_pct <= 86 and d.restart_decode


def test_paper_both_violated_or_both_fine_keeps():
    c = paper()
    assert c.decide(stats(ttft=0.6, tpot=0.2), 90, 80) == Decision(90, 80)
    assert c.decide(stats(), 90, 80) == Decision(90, 80)


def test_paper_fit_uses_eq4_once_enough_points():
    c = paper(min_fit_points=3)
    for y, tpot in [(60, 0.6284 / 0.6 * 0.1 + 0.038), (80, 0.6284 / 0.8 * 0.1 + 0.038), (100, 0.6284 * 0.1 + 0.038)]:
        c.tpot_points.append((y, tpot))
    # a2/y + b2 with y in percent: a2 = 6.284, b2 = 0.038
    assert c.predict_tpot(stats(), 100, 50) == pytest.approx(6.284 / 50 + 0.038, rel=1e-6)
