"""Window statistics the partition controllers decide on (finished requests only)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.request import Request


@dataclass(frozen=True)
class WindowStats:
    """pSLO-percentile latencies over a window of finished requests, in seconds.

    TTFT splits into waiting (arrival -> first scheduled for prefill) and prefill latency
    (the rest), as the semi-PD code does; per-request TPOT = decode time / decode tokens.
    """

    num_requests: int
    ttft_s: float
    waiting_s: float
    prefill_s: float
    tpot_s: float
    arrival_rate: float  # requests/s observed over the window
    mean_prefill_s: float


def window_stats(requests: list[Request], percentile: float) -> WindowStats:
    arrival = np.array([r.arrival_s for r in requests])
    first = np.array([r.token_times_s[0] for r in requests])
    sched = np.array([r.first_scheduled_s if r.first_scheduled_s is not None else r.token_times_s[0]
                      for r in requests])
    multi = [r for r in requests if len(r.token_times_s) > 1]
    tpot = np.array([(r.token_times_s[-1] - r.token_times_s[0]) / (len(r.token_times_s) - 1)
                     for r in multi]) if multi else np.zeros(1)
    span_s = float(arrival.max() - arrival.min())
    rate = (len(requests) - 1) / span_s if span_s > 0 else 0.0
    return WindowStats(
        num_requests=len(requests),
        ttft_s=float(np.percentile(first - arrival, percentile)),
        waiting_s=float(np.percentile(sched - arrival, percentile)),
        prefill_s=float(np.percentile(first - sched, percentile)),
        tpot_s=float(np.percentile(tpot, percentile)),
        arrival_rate=rate,
        mean_prefill_s=float(np.mean(first - sched)),
    )
