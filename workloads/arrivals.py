"""Arrival processes: when each request is sent, in seconds from the start of the run.

`rate` is the TOTAL request rate in requests/s (callers multiply the paper's per-GPU rate
by the number of GPUs). Rate inf sends everything at t=0. All randomness comes from the
caller's seeded Generator, so the same seed gives the same arrivals.
"""
from __future__ import annotations

import math

import numpy as np

from workloads.errors import WorkloadError, choice_error

ARRIVAL_PROCESSES = ("poisson", "gamma", "constant", "trace")


def gamma_arrivals_s(
    num_requests: int, rate: float, shape: float, rng: np.random.Generator, normalize: bool = True
) -> np.ndarray:
    """Gaps ~ Gamma(shape, scale=1/(rate*shape)): mean gap 1/rate for any shape.

    As vLLM's `--burstiness`: shape 1 is Poisson, shape < 1 is burstier (gap variance
    1/(shape*rate^2)), shape > 1 is more regular. With `normalize` the drawn times are
    rescaled so the last arrival is exactly at N/rate, as vLLM does to remove the 1-2 %
    seed-to-seed spread of the run's length (SGLang draws gaps without rescaling).
    """
    if num_requests == 0 or math.isinf(rate):
        return np.zeros(num_requests)
    times = np.cumsum(rng.gamma(shape, 1.0 / (rate * shape), size=num_requests))
    if normalize and times[-1] > 0:
        times *= (num_requests / rate) / times[-1]
    return times


def poisson_arrivals_s(
    num_requests: int, rate: float, rng: np.random.Generator, normalize: bool = True
) -> np.ndarray:
    """Exponential gaps with mean 1/rate (gamma with shape 1)."""
    return gamma_arrivals_s(num_requests, rate, 1.0, rng, normalize)


def constant_arrivals_s(num_requests: int, rate: float) -> np.ndarray:
    """Evenly spaced: request i at i/rate (the first at t=0)."""
    if math.isinf(rate):
        return np.zeros(num_requests)
    return np.arange(num_requests, dtype=float) / rate


def trace_arrivals_s(timestamps_s: np.ndarray, time_scale: float = 1.0) -> np.ndarray:
    """The trace's own times, optionally stretched (>1) or compressed (<1)."""
    times = np.asarray(timestamps_s, dtype=float) * time_scale
    if not np.all(np.isfinite(times)) or np.any(times < 0):
        raise WorkloadError("Trace arrival times must be finite and >= 0 seconds.")
    return times


def arrival_times_s(
    process: str,
    num_requests: int,
    rate: float,
    rng: np.random.Generator,
    burstiness: float = 1.0,
    normalize: bool = True,
) -> np.ndarray:
    """Arrival times of a generated process (everything except `trace`)."""
    if not rate > 0:
        raise WorkloadError(f"workload.rate must be > 0 requests/s (or inf), got {rate}.")
    if process == "poisson":
        return poisson_arrivals_s(num_requests, rate, rng, normalize)
    if process == "gamma":
        if not (burstiness > 0 and math.isfinite(burstiness)):
            raise WorkloadError(
                f"workload.burstiness must be a finite number > 0 (gamma shape; 1 = Poisson, "
                f"< 1 burstier), got {burstiness}."
            )
        return gamma_arrivals_s(num_requests, rate, burstiness, rng, normalize)
    if process == "constant":
        return constant_arrivals_s(num_requests, rate)
    if process == "trace":
        raise WorkloadError("arrival 'trace' takes its times from the data; use trace_arrivals_s.")
    raise choice_error("workload.arrival", process, ARRIVAL_PROCESSES)
