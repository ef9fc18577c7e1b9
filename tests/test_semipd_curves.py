"""The controllers' scaling curves: the original's values, 1 at exactly 100 %."""
import numpy as np
import pytest

from semipd import curves
from sim import share_model


@pytest.mark.parametrize("fn", [curves.scale_tpot, curves.scale_latency, curves.scale_waiting])
def test_exactly_one_at_100_and_above_one_below(fn):
    assert fn(100) == 1.0 and fn(100.0) == 1.0
    assert all(fn(s) > 1.0 for s in np.arange(80.0, 100.0, 0.5))


def test_raw_fits_at_100_are_what_the_special_case_replaces():
    assert share_model.scale_tpot(1.0) == pytest.approx(1.025, abs=1e-3)
    assert share_model.scale_latency(1.0) == pytest.approx(1.051, abs=1e-3)
    inv = 1.0
    assert 1.4046465674985547 * inv ** 2 - 3.15935463280878 * inv + 2.8734660485396604 == pytest.approx(1.119, abs=1e-3)


@pytest.mark.parametrize("share_pct", [40.0, 80.0, 94.0, 99.0])
def test_same_fits_as_the_simulators_measured_share_model(share_pct):
    assert curves.scale_tpot(share_pct) == pytest.approx(share_model.scale_tpot(share_pct / 100), rel=1e-12)
    assert curves.scale_latency(share_pct) == pytest.approx(share_model.scale_latency(share_pct / 100), rel=1e-12)


def test_scale_waiting_dips_below_100_as_the_original_does():
    grid = np.arange(80.0, 100.0, 0.5)
    values = [curves.scale_waiting(s) for s in grid]
    low = grid[int(np.argmin(values))]
    assert 88.0 <= low <= 90.0 and min(values) == pytest.approx(1.097, abs=1e-3)
