"""Partition controllers on synthetic windows: every branch of both SLO presets."""
import pytest

from engines.config import SemiPDConfig
from semipd.controller import SLO, SloCodeController, SloPaperController, StaticController, predict_tpot
from semipd.window import WindowStats

SLO_ = SLO(ttft_s=0.5, tpot_s=0.1)


def stats(ttft=0.2, tpot=0.05, waiting=None, prefill=None, rate=10.0, mean_prefill=0.02):
    waiting = ttft / 2 if waiting is None else waiting
    prefill = ttft - waiting if prefill is None else prefill
    return WindowStats(400, ttft, waiting, prefill, tpot, rate, mean_prefill)


def code():
    return SloCodeController(SemiPDConfig(), SLO_)


def test_static_never_moves():
    assert StaticController().decide(stats(ttft=9, tpot=9), 70, 90) == (70, 90)


def test_code_both_fine_keeps():
    assert code().decide(stats(), 90, 96) == (90, 96)


def test_code_both_failing_resets_to_full():
    assert code().decide(stats(ttft=0.9, tpot=0.2), 84, 90) == (100, 100)


def test_code_tpot_margin_counts():
    # 0.095 <= 0.1, but 1.1 * 0.095 > 0.1: a TPOT miss for the code preset
    assert code().decide(stats(tpot=0.095), 100, 90) != (100, 90)


def test_code_tpot_miss_raises_y_until_predicted_ok():
    x, y = code().decide(stats(tpot=0.095), 100, 90)
    assert x == 100 and 90 < y <= 96
    pred = predict_tpot(stats(tpot=0.095), 90, y)
    assert 1.1 * pred <= 0.1 or y == 96


def test_code_tpot_miss_at_full_y_lowers_x_to_the_floor():
    # TTFT has lots of slack, so x drops 3 steps of 2 %
    assert code().decide(stats(ttft=0.05, tpot=0.2), 100, 100) == (94, 100)
    assert code().decide(stats(ttft=0.05, tpot=0.2), 82, 100) == (80, 100)


def test_code_tpot_miss_at_full_y_keeps_x_when_ttft_would_break():
    assert code().decide(stats(ttft=0.499, tpot=0.2), 100, 100) == (100, 100)


def test_code_ttft_miss_raises_x_or_lowers_y():
    x, y = code().decide(stats(ttft=0.6, tpot=0.01), 90, 100)
    assert 90 < x <= 96 and y == 100
    assert code().decide(stats(ttft=0.6, tpot=0.01), 100, 100) == (100, 94)
    assert code().decide(stats(ttft=0.6, tpot=0.0905), 100, 100) == (100, 100)  # TPOT has no slack


def test_paper_ttft_miss_raises_x_and_spills_into_y():
    c = SloPaperController(SemiPDConfig(), SLO_)
    assert c.decide(stats(ttft=0.6), 90, 90) == (96, 90)  # predicted still missing: all 3 steps
    c = SloPaperController(SemiPDConfig(), SLO_)
    assert c.decide(stats(ttft=0.6), 98, 90) == (100, 86)  # raise past 100 -> lower y instead


def test_paper_tpot_miss_raises_y():
    c = SloPaperController(SemiPDConfig(), SLO_)
    x, y = c.decide(stats(tpot=0.12), 90, 80)
    assert x == 90 and 80 < y <= 86


def test_paper_both_violated_or_both_fine_keeps():
    c = SloPaperController(SemiPDConfig(), SLO_)
    assert c.decide(stats(ttft=0.6, tpot=0.2), 90, 80) == (90, 80)
    assert c.decide(stats(), 90, 80) == (90, 80)


def test_paper_fit_uses_eq4_once_enough_points():
    c = SloPaperController(SemiPDConfig(min_fit_points=3), SLO_)
    for y, tpot in [(60, 0.6284 / 0.6 * 0.1 + 0.038), (80, 0.6284 / 0.8 * 0.1 + 0.038), (100, 0.6284 * 0.1 + 0.038)]:
        c.tpot_points.append((y, tpot))
    # a2/y + b2 with y in percent: a2 = 6.284, b2 = 0.038
    assert c.predict_tpot(stats(), 100, 50) == pytest.approx(6.284 / 50 + 0.038, rel=1e-6)
