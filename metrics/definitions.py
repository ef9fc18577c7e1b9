"""The ONE place where serving metrics are defined.

Every number in `summary.json`, `requests.csv` and the plots comes from here, so that a
choice between conventions is made once and written into the results.
Conventions follow the public benchmark clients (vLLM benchmarks/benchmark_serving.py,
SGLang python/sglang/bench_serving.py, github.com/LLMServe/DistServe):

Per request (seconds; a request's `arrival_s` is its scheduled send time):
- **TTFT** = time of the first output token - arrival (vLLM, SGLang, DistServe).
- **E2E**  = time of the last output token - arrival (vLLM's `e2el`).
- **TPOT**, setting `tpot_definition`:
  - ``"vllm"`` (vLLM, SGLang, DistServe's real system): ``(e2e - ttft) / (n_out - 1)``;
    undefined (NaN, excluded from statistics) when ``n_out <= 1``.
  - ``"per_output_token"`` (DistServe's simulator): ``(e2e - ttft) / n_out``; 0 when
    ``n_out == 1``.
  Here ``n_out`` is the number of timed output tokens (``len(token_times_s)``).
- **ITL** = gaps between consecutive output-token times of one request (vLLM, which
  counts per streamed chunk; our engines stream one token per step). The mean of a
  request's ITLs equals its "vllm" TPOT (semi-PD's scripts use that form).

Aggregates:
- Statistics over a metric (`percentile_stats`): mean, std (population, ``ddof=0``, as
  vLLM's ``np.std``) and percentiles with numpy's default linear interpolation (as
  vLLM's ``np.percentile``). Only FINISHED requests contribute, as vLLM only counts
  completed requests; ITL pools the gaps of all finished requests (vLLM flattens them).
- **SLO attainment** (DistServe, semi-PD): fraction of ALL requests (finished,
  rejected and unfinished) meeting both the TTFT and the TPOT target; a request that
  did not finish meets neither. Targets are inclusive (``<=``, as vLLM's goodput).
  A finished request whose TPOT is undefined (one output token under "vllm") meets
  the TPOT target trivially: it had no decode phase to be slow in.
- **Goodput, vLLM sense**: requests meeting every SLO / run duration (req/s).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from engines.request import Request, Status

TpotDefinition = Literal["vllm", "per_output_token"]
TPOT_DEFINITIONS: tuple[str, ...] = ("vllm", "per_output_token")
# Always reported, whatever else the user asks for: other tools read these keys.
CONTRACT_PERCENTILES: tuple[float, ...] = (50, 90, 99)


@dataclass(frozen=True)
class TokenTimes:
    """All requests' output-token times, flattened (CSR layout) so metrics are vectorised.

    Request i's times are ``times_s[offsets[i]:offsets[i + 1]]``.
    """

    times_s: np.ndarray
    offsets: np.ndarray

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass(frozen=True)
class RequestMetrics:
    """Per-request metrics as arrays aligned with the input request order.

    Latencies are NaN where undefined (no output token; TPOT with n_out <= 1 under
    "vllm"); E2E and TPOT are defined for finished requests only, TTFT as soon as a
    first token exists. `itl_s` holds the gaps of finished requests only, request by
    request.
    """

    arrival_s: np.ndarray
    prompt_len: np.ndarray
    num_output_tokens: np.ndarray  # timed tokens, len(token_times_s)
    finished: np.ndarray  # bool
    rejected: np.ndarray  # bool
    first_token_s: np.ndarray
    ttft_s: np.ndarray
    tpot_s: np.ndarray
    e2e_s: np.ndarray
    itl_s: np.ndarray
    tpot_definition: str

    def __len__(self) -> int:
        return len(self.arrival_s)


def flatten_token_times(requests: Sequence[Request]) -> TokenTimes:
    counts = np.fromiter((len(r.token_times_s) for r in requests), dtype=np.int64,
                         count=len(requests))
    offsets = np.zeros(len(requests) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    # One pass over Python floats; ~200k tokens per run takes a few ms.
    times = np.fromiter(itertools.chain.from_iterable(r.token_times_s for r in requests),
                        dtype=np.float64, count=int(offsets[-1]))
    return TokenTimes(times_s=times, offsets=offsets)


def first_token_s(tt: TokenTimes) -> np.ndarray:
    """Time of each request's first output token; NaN without one."""
    out = np.full(len(tt.offsets) - 1, np.nan)
    has = tt.counts > 0
    out[has] = tt.times_s[tt.offsets[:-1][has]]
    return out


def last_token_s(tt: TokenTimes) -> np.ndarray:
    """Time of each request's last output token; NaN without one."""
    out = np.full(len(tt.offsets) - 1, np.nan)
    has = tt.counts > 0
    out[has] = tt.times_s[tt.offsets[1:][has] - 1]
    return out


def tpot_s(ttft_s: np.ndarray, e2e_s: np.ndarray, num_output_tokens: np.ndarray,
           definition: str = "vllm") -> np.ndarray:
    """Time per output token after the first; see the module docstring for the two forms."""
    check_tpot_definition(definition)
    decode_s = e2e_s - ttft_s
    n = num_output_tokens.astype(np.float64)
    denom = n - 1.0 if definition == "vllm" else n
    out = np.full(len(decode_s), np.nan)
    ok = denom > 0
    out[ok] = decode_s[ok] / denom[ok]
    return out


def itl_s(tt: TokenTimes, include: np.ndarray | None = None) -> np.ndarray:
    """Inter-token latencies: gaps between consecutive tokens of the same request.

    `include` (bool per request) selects whose gaps to keep.
    """
    gaps = np.diff(tt.times_s)
    if len(gaps) == 0:
        return gaps
    # Gap j spans tokens j and j+1; drop it where token j+1 starts another request.
    starts = tt.offsets[1:-1]
    starts = starts[(starts > 0) & (starts < len(tt.times_s))]
    keep = np.ones(len(gaps), dtype=bool)
    keep[starts - 1] = False
    if include is not None:
        owner = np.repeat(np.arange(len(tt.counts)), tt.counts)[:-1]
        keep &= include[owner]
    return gaps[keep]


def compute_request_metrics(requests: Sequence[Request],
                            tpot_definition: str = "vllm") -> RequestMetrics:
    check_tpot_definition(tpot_definition)
    n = len(requests)
    arrival = np.fromiter((r.arrival_s for r in requests), dtype=np.float64, count=n)
    prompt = np.fromiter((r.prompt_len for r in requests), dtype=np.int64, count=n)
    finished = np.fromiter((r.status == Status.FINISHED for r in requests), dtype=bool, count=n)
    rejected = np.fromiter((r.status == Status.REJECTED for r in requests), dtype=bool, count=n)
    tt = flatten_token_times(requests)
    first = first_token_s(tt)
    ttft = first - arrival
    e2e = np.where(finished, last_token_s(tt) - arrival, np.nan)
    tpot = tpot_s(ttft, e2e, tt.counts, tpot_definition)
    return RequestMetrics(
        arrival_s=arrival, prompt_len=prompt, num_output_tokens=tt.counts,
        finished=finished, rejected=rejected, first_token_s=first, ttft_s=ttft,
        tpot_s=tpot, e2e_s=e2e, itl_s=itl_s(tt, include=finished),
        tpot_definition=tpot_definition)


def check_tpot_definition(definition: str) -> None:
    if definition not in TPOT_DEFINITIONS:
        raise ValueError(f"tpot_definition must be one of {TPOT_DEFINITIONS}, got {definition!r}")


def percentile_key(q: float) -> str:
    """`p50`, `p99`, `p99.9`: the summary key of a percentile."""
    return f"p{q:g}"


def percentile_stats(values: np.ndarray, percentiles: Sequence[float] = CONTRACT_PERCENTILES
                     ) -> dict[str, float | int | None]:
    """count, mean, std (ddof=0) and percentiles (linear interpolation) of the finite values.

    NaN (undefined metrics) is excluded; with no values left every statistic is None.
    """
    qs = sorted(set(CONTRACT_PERCENTILES) | set(percentiles))
    v = values[np.isfinite(values)]
    stats: dict[str, float | int | None] = {"count": int(len(v))}
    if len(v) == 0:
        stats.update({"mean": None, "std": None})
        stats.update({percentile_key(q): None for q in qs})
        return stats
    stats.update({"mean": float(np.mean(v)), "std": float(np.std(v))})
    stats.update({percentile_key(q): float(p) for q, p in zip(qs, np.percentile(v, qs))})
    return stats


@dataclass(frozen=True)
class SloMasks:
    """Per request: does it meet the TTFT target, the TPOT target, both."""

    ttft_ok: np.ndarray
    tpot_ok: np.ndarray

    @property
    def both_ok(self) -> np.ndarray:
        return self.ttft_ok & self.tpot_ok


def slo_masks(m: RequestMetrics, slo_ttft_s: float | None,
              slo_tpot_s: float | None) -> SloMasks:
    """Which requests meet each SLO (module docstring). A target of None is always met
    by finished requests: the run did not set it."""
    # NaN compares False, so `<=` alone would fail n_out<=1 requests on TPOT.
    ttft_ok = m.finished & (True if slo_ttft_s is None else m.ttft_s <= slo_ttft_s)
    tpot_within = np.isnan(m.tpot_s) | (True if slo_tpot_s is None else m.tpot_s <= slo_tpot_s)
    return SloMasks(ttft_ok=ttft_ok, tpot_ok=m.finished & tpot_within)


def attainment(ok: np.ndarray) -> float | None:
    """Fraction of ALL requests meeting a target; None for an empty run."""
    return float(np.mean(ok)) if len(ok) else None


def rate_per_s(count: float, duration_s: float | None) -> float | None:
    """A count over the run's duration (throughputs, vLLM-sense goodput)."""
    if duration_s is None or not np.isfinite(duration_s) or duration_s <= 0:
        return None
    return float(count) / duration_s
