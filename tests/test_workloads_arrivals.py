"""Arrival processes: mean rate, seeding, burstiness, constant spacing, rate inf."""
import math

import numpy as np
import pytest

from workloads import WorkloadConfig, WorkloadError, build_workload
from workloads.arrivals import (arrival_times_s, constant_arrivals_s, gamma_arrivals_s,
                                poisson_arrivals_s, trace_arrivals_s)

N = 20_000


def _gaps(times):
    return np.diff(np.concatenate([[0.0], times]))


def test_poisson_mean_gap_is_one_over_rate():
    gaps = _gaps(poisson_arrivals_s(N, 5.0, np.random.default_rng(1), normalize=False))
    # Standard error of the mean gap is 0.2/sqrt(N) = 0.7 %; allow 3 %.
    assert gaps.mean() == pytest.approx(1 / 5.0, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)  # exponential: CV = 1


def test_normalized_run_ends_at_n_over_rate():
    times = poisson_arrivals_s(1000, 8.0, np.random.default_rng(2))
    assert times[-1] == pytest.approx(1000 / 8.0) and np.all(np.diff(times) >= 0)


def test_same_seed_same_arrivals():
    a = gamma_arrivals_s(500, 3.0, 0.5, np.random.default_rng(7))
    b = gamma_arrivals_s(500, 3.0, 0.5, np.random.default_rng(7))
    c = gamma_arrivals_s(500, 3.0, 0.5, np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_gamma_burstiness():
    rng = np.random.default_rng(3)
    poisson = _gaps(gamma_arrivals_s(N, 4.0, 1.0, rng, normalize=False))
    bursty = _gaps(gamma_arrivals_s(N, 4.0, 0.25, rng, normalize=False))
    smooth = _gaps(gamma_arrivals_s(N, 4.0, 4.0, rng, normalize=False))
    assert bursty.mean() == pytest.approx(0.25, rel=0.05)  # same rate for any shape
    assert bursty.var() > 2 * poisson.var() > 4 * smooth.var()  # var = 1/(shape*rate^2)


def test_constant_and_infinite_rate():
    assert constant_arrivals_s(4, 2.0).tolist() == [0.0, 0.5, 1.0, 1.5]
    for process in ("poisson", "gamma", "constant"):
        assert arrival_times_s(process, 5, math.inf, np.random.default_rng(0), 0.5).tolist() == [0.0] * 5


def test_trace_times_are_kept_and_validated():
    assert trace_arrivals_s(np.array([0.0, 0.25, 2.0]), 2.0).tolist() == [0.0, 0.5, 4.0]
    with pytest.raises(WorkloadError):
        trace_arrivals_s(np.array([0.0, -1.0]))


def test_bad_process_and_rate():
    with pytest.raises(WorkloadError) as e:
        arrival_times_s("bursty", 5, 1.0, np.random.default_rng(0))
    assert "'bursty'" in str(e.value) and "'poisson', 'gamma', 'constant', 'trace'" in str(e.value)
    with pytest.raises(WorkloadError, match="workload.rate"):
        arrival_times_s("poisson", 5, 0.0, np.random.default_rng(0))


def test_build_uses_total_rate_over_gpus():
    cfg = WorkloadConfig(source="synthetic", distribution="fixed", rate=2.5, num_requests=4000,
                         normalize_arrivals=False)
    w = build_workload(cfg, num_gpus=4)
    assert w.total_rate == 10.0
    gaps = _gaps(np.array([s.arrival_s for s in w.specs]))
    assert gaps.mean() == pytest.approx(0.1, rel=0.06)
    assert build_workload(WorkloadConfig(rate=math.inf, num_requests=20)).describe()["last_arrival_s"] == 0.0
