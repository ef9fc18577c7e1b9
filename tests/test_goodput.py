"""Goodput search on synthetic attainment curves and on a real small simulated run."""
import math

import pytest

from metrics.goodput import goodput_from_curve, search_goodput


def test_crossing_is_interpolated_linearly():
    g = goodput_from_curve([1, 2, 3, 4], [1.0, 0.95, 0.85, 0.2])
    assert g.bound == "crossing"
    assert g.rate == pytest.approx(2.5)  # 0.95 -> 0.85 crosses 0.9 half-way


def test_first_miss_ends_the_curve_and_bounds_are_reported():
    assert goodput_from_curve([1, 2, 3], [0.95, 0.5, 0.99]).rate == pytest.approx(1 + 0.05 / 0.45)
    assert goodput_from_curve([1, 2], [0.5, 0.4]).bound == "below"
    g = goodput_from_curve([1, 2], [1.0, 0.95])
    assert g.bound == "at_least" and g.rate == 2


def test_search_finds_a_smooth_curves_crossing():
    # logistic attainment with its 90 % point at rate 7.3
    def curve(r):
        return 1.0 / (1.0 + math.exp((r - 7.3) * 3.0 - math.log(9)))
    g = search_goodput(curve, 1.0, 12.0, num_grid=5, num_bisect=6)
    assert g.bound == "crossing" and g.rate == pytest.approx(7.3, abs=0.02)
    assert len(g.points) == 5 + 6


def test_search_reports_bounds():
    assert search_goodput(lambda r: 1.0, 1, 4).bound == "at_least"
    assert search_goodput(lambda r: 0.0, 1, 4).bound == "below"
    with pytest.raises(ValueError, match="lo < hi"):
        search_goodput(lambda r: 1.0, 4, 1)


def test_search_on_a_real_small_simulated_run(tmp_path):
    from harness.goodput import attainment_at
    from tests.test_bench import cfg_for
    cfg = cfg_for("engine=semipd", "workload.num_requests=300", "plots=false", "progress=false",
                  "slo=llama3_8b_sharegpt_tight")
    g = search_goodput(lambda r: attainment_at(cfg, r, tmp_path), 4.0, 40.0, num_grid=3, num_bisect=2)
    assert g.bound == "crossing" and 4.0 < g.rate < 40.0
    below = [a for r, a in g.points if r <= g.rate]
    above = [a for r, a in g.points if r > g.rate]
    assert min(below) >= 0.9 > max(above)  # the curve really crosses where the search says
    assert len(g.points) == 5
