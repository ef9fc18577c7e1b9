"""Dispatch a WorkloadConfig to its request source (with the synthetic fallback)."""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np

from workloads.arrivals import trace_arrivals_s
from workloads.errors import WorkloadError
from workloads.fileio import require_path
from workloads.jsonl import sample_jsonl
from workloads.longbench import sample_longbench
from workloads.math500 import sample_math500
from workloads.records import SourceResult
from workloads.sharegpt import ShareGPTFilter, sample_sharegpt
from workloads.synthetic import (LongMix, fixed_lengths, longbench_like, math500_like,
                                 sharegpt_like, sharegpt_long_mix, uniform_lengths)
from workloads.trace import sample_trace

if TYPE_CHECKING:  # config.py imports this module; the annotation only needs the name
    from workloads.config import WorkloadConfig

log = logging.getLogger(__name__)
# Fallback warnings already given in this process: a sweep or goodput search runs many
# workloads in one process (paper/goodput_study.py: 75 runs) and would repeat the same line
# for each; every run still records the fallback in its summary (workload.source_used).
_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning(message)

# Dataset sources that, without workload.path, fall back to synthetic `<source>_like`.
FALLBACK_SOURCES = ("sharegpt", "longbench", "math500")


def _sharegpt_filter(cfg: WorkloadConfig) -> ShareGPTFilter:
    return ShareGPTFilter(cfg.sharegpt_min_tokens, cfg.sharegpt_max_prompt_tokens,
                          cfg.sharegpt_max_total_tokens)


def _synthetic(cfg: WorkloadConfig, distribution: str, rng: np.random.Generator) -> SourceResult:
    n = cfg.num_requests
    if distribution == "fixed":
        return fixed_lengths(n, cfg.prompt_len, cfg.output_len)
    if distribution == "uniform":
        return uniform_lengths(n, rng, (cfg.prompt_len_min, cfg.prompt_len_max),
                               (cfg.output_len_min, cfg.output_len_max))
    if distribution == "sharegpt_like":
        return sharegpt_like(n, rng, _sharegpt_filter(cfg))
    if distribution == "math500_like":
        return math500_like(n, rng)
    if distribution == "mix":
        mix = LongMix(cfg.mix_long_fraction, cfg.mix_long_prompt_tokens,
                      cfg.mix_long_prompt_sigma, cfg.mix_max_total_tokens)
        return sharegpt_long_mix(n, rng, mix, _sharegpt_filter(cfg))
    return longbench_like(n, rng, cfg.longbench_max_prompt_tokens)


def load_requests(cfg: WorkloadConfig, rng: np.random.Generator) -> SourceResult:
    """Request lengths from the configured source (arrival times not yet applied)."""
    if cfg.source == "synthetic":
        return _synthetic(cfg, cfg.distribution, rng)
    if cfg.source in FALLBACK_SOURCES and not cfg.path:
        # A dataset source without a file: keep the run going with its published shape.
        dist = f"{cfg.source}_like"
        _warn_once(f"workload.source={cfg.source} but workload.path is empty: using the synthetic {dist} "
                   "distribution instead of the real dataset (said once per process).")
        result = _synthetic(cfg, dist, rng)
        note = f"{result.description} (no dataset file given: workload.path is empty)"
        return SourceResult(result.requests, note, result.stats)
    path = require_path(cfg.path, f"{cfg.source} dataset")
    common = dict(tokenizer=cfg.tokenizer, keep_token_ids=cfg.keep_token_ids,
                  oversample=cfg.oversample)
    if cfg.source == "sharegpt":
        return sample_sharegpt(path, cfg.num_requests, rng, _sharegpt_filter(cfg), **common)
    if cfg.source == "longbench":
        return sample_longbench(path, cfg.longbench_tasks, cfg.num_requests, rng,
                                cfg.longbench_max_prompt_tokens, **common)
    if cfg.source == "math500":
        return sample_math500(path, cfg.num_requests, rng, **common)
    if cfg.source == "trace":
        return sample_trace(path, cfg.num_requests, rng, cfg.oversample)
    return sample_jsonl(path, cfg.num_requests, rng, keep_order=cfg.arrival == "trace", **common)


def trace_times(cfg: WorkloadConfig, result: SourceResult) -> tuple[np.ndarray, float]:
    """Arrival times from the records, and the observed total rate ((N-1) gaps / span)."""
    times = [r.arrival_s for r in result.requests]
    if any(t is None for t in times):
        raise WorkloadError(
            f"workload.arrival='trace' but {result.description} has records without arrival "
            "times (a trace CSV needs an 'arrived_at' column; JSONL records need 'arrival_s')."
        )
    arrivals = trace_arrivals_s(np.array(times, dtype=float), cfg.trace_time_scale)
    span_s = float(arrivals.max() - arrivals.min())
    observed = (len(arrivals) - 1) / span_s if span_s > 0 else math.inf
    return arrivals, observed
