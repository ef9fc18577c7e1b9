"""The window the partition controllers decide on, collected as the semi-PD code collects it.

Mirrors `DynamicPartitioner` of GitHub infinigence/Semi-PD (DistServe-based code, branch
`distserve_base`, distserve/single_stage_engine.py):
- a TTFT sample per request when its prefill step ends: (TTFT, that step's latency, waiting =
  TTFT - latency); a TPOT sample per request that finishes on a decode worker: its process time
  (the summed durations of every step it was in, prefill included) / its output tokens;
- no sample of either kind is kept while a prefill-side switch is in flight (a decode-only
  switch does not stop collection);
- a window closes once it holds `window_requests` TPOT samples and no switch is in flight;
  both lists are then cleared;
- TPOT statistic: the `percentile` of the TPOT samples (numpy's linear interpolation);
  TTFT statistic: ONE request, the sample at index int(n * percentile / 100 + 1) of the
  samples sorted by TTFT (stable), which gives TTFT, prefill latency and waiting together.
Ours, where the original has no answer: with 1..10 TTFT samples that index is past the end
(the original raises IndexError) and we take the last sample; with none, the original uses -1
sentinels and we report `num_ttft_samples = 0` with zero latencies (TTFT counts as met either way).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class TtftSample:
    ttft_s: float
    prefill_s: float   # latency of the prefill step that produced the first token
    waiting_s: float   # ttft_s - prefill_s
    arrival_s: float


@dataclass(frozen=True)
class WindowStats:
    """Window statistics in seconds (see the module doc for how each is taken)."""

    num_requests: int        # TPOT samples
    num_ttft_samples: int
    ttft_s: float
    waiting_s: float
    prefill_s: float
    tpot_s: float
    arrival_rate: float      # requests/s over the TTFT samples' arrivals (slo_paper's lambda)
    mean_prefill_s: float


def ttft_index(num_samples: int, percentile: float) -> int:
    """The original's int(len * 0.9 / 1 + 1), clamped to the last sample (ours)."""
    return min(num_samples - 1, int(num_samples * (percentile / 100.0) + 1))


def window_stats(ttft: list[TtftSample], tpot_s: list[float], percentile: float) -> WindowStats:
    if not tpot_s:
        raise ValueError("window_stats needs at least one TPOT sample")
    if ttft:
        pick = sorted(ttft, key=lambda s: s.ttft_s)[ttft_index(len(ttft), percentile)]
        arrivals = [s.arrival_s for s in ttft]
        span_s = max(arrivals) - min(arrivals)
        rate = (len(ttft) - 1) / span_s if span_s > 0 else 0.0
        mean_prefill_s = float(np.mean([s.prefill_s for s in ttft]))
    else:
        pick, rate, mean_prefill_s = TtftSample(0.0, 0.0, 0.0, 0.0), 0.0, 0.0
    return WindowStats(num_requests=len(tpot_s), num_ttft_samples=len(ttft), ttft_s=pick.ttft_s,
                       waiting_s=pick.waiting_s, prefill_s=pick.prefill_s,
                       tpot_s=float(np.percentile(tpot_s, percentile)), arrival_rate=rate,
                       mean_prefill_s=mean_prefill_s)


@dataclass
class WindowCollector:
    """The original's window bookkeeping; the engine says whether a switch is in flight."""

    window_requests: int
    percentile: float
    ttft: list[TtftSample] = field(default_factory=list)
    tpot_s: list[float] = field(default_factory=list)

    def add_ttft(self, sample: TtftSample, prefill_switching: bool) -> None:
        if not prefill_switching:
            self.ttft.append(sample)

    def add_tpot(self, tpot_s: float, prefill_switching: bool) -> None:
        if not prefill_switching:
            self.tpot_s.append(tpot_s)

    def take(self, switching: bool) -> WindowStats | None:
        """Close the window if it is full and no switch is in flight (then clear it)."""
        if switching or len(self.tpot_s) < self.window_requests:
            return None
        stats = window_stats(self.ttft, self.tpot_s, self.percentile)
        self.ttft, self.tpot_s = [], []
        return stats
