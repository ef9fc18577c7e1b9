"""summarize(): one run's requests -> the `summary.json` dict (its keys: README.md, "Outputs")."""
from __future__ import annotations

import enum
import math
from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np

from engines.request import Request, Status
from metrics.definitions import (CONTRACT_PERCENTILES, RequestMetrics, attainment,
                                 compute_request_metrics, percentile_stats, rate_per_s,
                                 slo_masks)


def summarize(requests: Sequence[Request], *, slo_ttft_s: float | None,
              slo_tpot_s: float | None, duration_s: float | None = None,
              tpot_definition: str = "vllm",
              percentiles: Sequence[float] = CONTRACT_PERCENTILES,
              extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Aggregate metrics of one run, JSON-ready (no NaN: undefined values are None).

    `duration_s` defaults to first arrival -> last finish over all requests (rejected
    ones included: the run lasted while it was rejecting). `extra` (engine, model,
    versions, ...) comes first in the result; it may not shadow a metric key.
    Definitions: `metrics.definitions`.
    """
    m = compute_request_metrics(requests, tpot_definition)
    if duration_s is None:
        duration_s = _default_duration_s(requests)
    metrics = {
        **_counts_and_throughput(m, duration_s),
        **_latency_stats(m, percentiles),
        **slo_summary(m, slo_ttft_s, slo_tpot_s, duration_s),
        "tpot_definition": tpot_definition,
        "rejected_reasons": _rejected_reasons(requests),
    }
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(metrics))
    if clash:
        raise ValueError(f"extra keys would overwrite metrics: {clash}")
    return json_safe({**extra, **metrics})


def _default_duration_s(requests: Sequence[Request]) -> float | None:
    finishes = [r.finish_s for r in requests if r.finish_s is not None]
    if not requests or not finishes:
        return None
    return max(finishes) - min(r.arrival_s for r in requests)


def _counts_and_throughput(m: RequestMetrics, duration_s: float | None) -> dict[str, Any]:
    # Throughputs count finished requests only, as vLLM's `completed`.
    num_finished = int(m.finished.sum())
    input_tokens = int(m.prompt_len[m.finished].sum())
    output_tokens = int(m.num_output_tokens[m.finished].sum())
    return {
        "num_requests": len(m),
        "num_finished": num_finished,
        "num_rejected": int(m.rejected.sum()),
        "num_unfinished": int(len(m) - num_finished - m.rejected.sum()),
        "duration_s": duration_s,
        "total_input_tokens": input_tokens,
        "total_output_tokens": output_tokens,
        "request_throughput": rate_per_s(num_finished, duration_s),
        "output_throughput_tok_s": rate_per_s(output_tokens, duration_s),
        "total_token_throughput_tok_s": rate_per_s(input_tokens + output_tokens, duration_s),
    }


def _latency_stats(m: RequestMetrics, percentiles: Sequence[float]) -> dict[str, Any]:
    f = m.finished
    return {
        "ttft_s": percentile_stats(m.ttft_s[f], percentiles),
        "tpot_s": percentile_stats(m.tpot_s[f], percentiles),
        "itl_s": percentile_stats(m.itl_s, percentiles),
        "e2e_s": percentile_stats(m.e2e_s[f], percentiles),
    }


def slo_summary(m: RequestMetrics, slo_ttft_s: float | None, slo_tpot_s: float | None,
                duration_s: float | None) -> dict[str, Any]:
    """The summary's SLO keys; reads m's ttft_s, tpot_s and finished only."""
    ok = slo_masks(m, slo_ttft_s, slo_tpot_s)
    return {
        "slo": {"ttft_s": slo_ttft_s, "tpot_s": slo_tpot_s},
        "slo_attainment": attainment(ok.both_ok),
        "ttft_attainment": attainment(ok.ttft_ok),
        "tpot_attainment": attainment(ok.tpot_ok),
        "goodput_req_s": rate_per_s(int(ok.both_ok.sum()), duration_s),
    }


def _rejected_reasons(requests: Sequence[Request]) -> dict[str, int]:
    reasons = Counter(r.reject_reason or "unspecified"
                      for r in requests if r.status == Status.REJECTED)
    return dict(sorted(reasons.items()))


def json_safe(obj: Any) -> Any:
    """Recursively turn numpy scalars into Python ones and NaN/inf into None."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return json_safe(obj.value)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    return obj
