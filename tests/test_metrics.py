"""Metric definitions and summaries against hand-computed fixtures."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from engines.request import Request, Status
from metrics.definitions import (compute_request_metrics, flatten_token_times, itl_s,
                                 percentile_stats)
from metrics.summary import summarize

approx = lambda v: pytest.approx(v, rel=1e-12, abs=1e-15)  # noqa: E731


def finished(id: int, arrival_s: float, prompt_len: int, times: list[float]) -> Request:
    return Request(id=id, arrival_s=arrival_s, prompt_len=prompt_len, output_len=len(times),
                   status=Status.FINISHED, num_output_tokens=len(times),
                   token_times_s=list(times), finish_s=times[-1])


def fixture_requests() -> list[Request]:
    """R0: TTFT .5, E2E 1.5, TPOT vllm 1/3, per-token .25, ITL .25 .25 .5
    R1: TTFT .25, E2E .75, TPOT vllm .25, per-token 1/6, ITL .25 .25
    R2: one token: TTFT 2, E2E 2, TPOT vllm undefined, per-token 0
    R3: rejected at its arrival."""
    r3 = Request(id=3, arrival_s=2.5, prompt_len=8, output_len=5)
    r3.reject("prompt_too_long", now_s=2.5)
    return [finished(0, 0.0, 10, [0.5, 0.75, 1.0, 1.5]),
            finished(1, 1.0, 20, [1.25, 1.5, 1.75]),
            finished(2, 2.0, 5, [4.0]),
            r3]


def test_per_request_metrics_vllm():
    m = compute_request_metrics(fixture_requests(), "vllm")
    assert list(m.ttft_s[:3]) == [0.5, 0.25, 2.0]
    assert math.isnan(m.ttft_s[3])
    assert list(m.e2e_s[:3]) == [1.5, 0.75, 2.0]
    assert m.tpot_s[0] == approx(1 / 3) and m.tpot_s[1] == 0.25
    assert math.isnan(m.tpot_s[2]) and math.isnan(m.tpot_s[3])
    assert list(m.itl_s) == [0.25, 0.25, 0.5, 0.25, 0.25]
    assert list(m.num_output_tokens) == [4, 3, 1, 0]
    assert list(m.finished) == [True, True, True, False]
    assert list(m.rejected) == [False, False, False, True]


def test_per_request_metrics_per_output_token():
    m = compute_request_metrics(fixture_requests(), "per_output_token")
    assert m.tpot_s[0] == 0.25 and m.tpot_s[1] == approx(1 / 6) and m.tpot_s[2] == 0.0
    assert math.isnan(m.tpot_s[3])


def test_itl_skips_request_boundaries_and_empty_requests():
    reqs = [finished(0, 0.0, 1, [1.0, 2.0]), Request(id=1, arrival_s=0.0, prompt_len=1, output_len=1),
            finished(2, 0.0, 1, [10.0, 10.5, 12.0]), Request(id=3, arrival_s=0.0, prompt_len=1, output_len=1)]
    tt = flatten_token_times(reqs)
    assert list(itl_s(tt)) == [1.0, 0.5, 1.5]
    assert list(itl_s(tt, include=np.array([False, True, True, True]))) == [0.5, 1.5]


def test_unfinished_request_has_ttft_but_no_e2e_and_no_itl():
    r = Request(id=0, arrival_s=0.0, prompt_len=4, output_len=10, status=Status.RUNNING,
                num_output_tokens=2, token_times_s=[0.5, 0.75])
    m = compute_request_metrics([r])
    assert m.ttft_s[0] == 0.5 and math.isnan(m.e2e_s[0]) and len(m.itl_s) == 0


def test_percentile_stats_linear_interpolation():
    s = percentile_stats(np.array([0.5, 0.25, 2.0, np.nan]), (50, 90, 99, 99.9))
    assert s["count"] == 3
    assert s["mean"] == approx(2.75 / 3)
    assert s["std"] == approx(float(np.std([0.5, 0.25, 2.0])))
    assert s["p50"] == 0.5 and s["p90"] == approx(1.7) and s["p99"] == approx(1.97)
    assert s["p99.9"] == approx(1.997)


def test_percentile_stats_always_has_contract_keys():
    s = percentile_stats(np.array([1.0]), (95,))
    assert {"p50", "p90", "p95", "p99"} <= set(s)
    assert percentile_stats(np.array([]))["p90"] is None


def test_summary_hand_computed():
    s = summarize(fixture_requests(), slo_ttft_s=0.6, slo_tpot_s=0.3,
                  extra={"engine": "semipd", "model": "llama"})
    assert list(s)[:2] == ["engine", "model"]
    assert (s["num_requests"], s["num_finished"], s["num_rejected"]) == (4, 3, 1)
    assert s["duration_s"] == 4.0  # arrival 0 -> last finish 4.0
    assert s["request_throughput"] == 0.75
    assert s["output_throughput_tok_s"] == 2.0  # 8 tokens
    assert s["total_token_throughput_tok_s"] == 10.75  # (35 + 8) / 4
    assert s["ttft_s"]["p90"] == approx(1.7)
    assert s["tpot_s"]["count"] == 2 and s["tpot_s"]["mean"] == approx(7 / 24)
    assert s["tpot_s"]["p90"] == approx(0.325)
    itl = s["itl_s"]
    assert (itl["mean"], itl["p50"]) == (approx(0.3), 0.25)
    assert itl["p90"] == approx(0.4) and itl["p99"] == approx(0.49)
    assert s["e2e_s"]["mean"] == approx(4.25 / 3) and s["e2e_s"]["p90"] == approx(1.9)
    # TTFT ok: R0 R1; TPOT ok: R1, R2 (one token: trivially); R3 rejected: misses.
    assert s["ttft_attainment"] == 0.5 and s["tpot_attainment"] == 0.5
    assert s["slo_attainment"] == 0.25
    assert s["goodput_req_s"] == 0.25
    assert s["slo"] == {"ttft_s": 0.6, "tpot_s": 0.3}
    assert s["tpot_definition"] == "vllm"
    assert s["rejected_reasons"] == {"prompt_too_long": 1}


def test_summary_per_output_token_changes_tpot_attainment():
    s = summarize(fixture_requests(), slo_ttft_s=0.6, slo_tpot_s=0.3,
                  tpot_definition="per_output_token")
    assert s["tpot_s"]["count"] == 3
    assert s["tpot_attainment"] == 0.75 and s["slo_attainment"] == 0.5
    assert s["tpot_definition"] == "per_output_token"


def test_rejected_requests_are_misses_in_denominator():
    reqs = fixture_requests()
    base = summarize(reqs[:3], slo_ttft_s=10.0, slo_tpot_s=10.0)
    with_rejected = summarize(reqs, slo_ttft_s=10.0, slo_tpot_s=10.0)
    assert base["slo_attainment"] == 1.0
    assert with_rejected["slo_attainment"] == 0.75


def test_slo_boundaries_are_inclusive_and_given_duration_is_used():
    s = summarize(fixture_requests()[:2], slo_ttft_s=0.5, slo_tpot_s=1 / 3, duration_s=2.0)
    assert s["slo_attainment"] == 1.0 and s["duration_s"] == 2.0
    assert s["goodput_req_s"] == 1.0


def test_single_token_request_meets_tpot_trivially():
    s = summarize([finished(0, 0.0, 3, [0.1])], slo_ttft_s=0.2, slo_tpot_s=0.001)
    assert s["tpot_s"]["count"] == 0 and s["tpot_s"]["mean"] is None
    assert s["tpot_attainment"] == 1.0 and s["slo_attainment"] == 1.0


@pytest.mark.parametrize("reqs", [[], fixture_requests()[3:]], ids=["empty", "only-rejected"])
def test_degenerate_runs_are_json_safe(reqs):
    s = summarize(reqs, slo_ttft_s=1.0, slo_tpot_s=0.1, extra={"versions": {"numpy": np.__version__}})
    text = json.dumps(s, allow_nan=False)
    assert s["num_finished"] == 0 and s["ttft_s"]["p99"] is None and s["itl_s"]["mean"] is None
    assert s["request_throughput"] is None  # zero or unknown duration
    assert json.loads(text) == s
    if reqs:
        assert s["slo_attainment"] == 0.0 and s["num_rejected"] == 1
    else:
        assert s["slo_attainment"] is None and s["duration_s"] is None


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        summarize(fixture_requests(), slo_ttft_s=1, slo_tpot_s=1, tpot_definition="mean_itl")
    with pytest.raises(ValueError):
        summarize(fixture_requests(), slo_ttft_s=1, slo_tpot_s=1, extra={"num_requests": 3})


def test_large_run_matches_per_request_diff():
    rng = np.random.default_rng(0)
    reqs = []
    for i in range(1000):
        times = np.cumsum(rng.uniform(0.01, 0.05, size=200)) + i * 0.1
        reqs.append(finished(i, i * 0.1 - 0.05, 100, times.tolist()))
    s = summarize(reqs, slo_ttft_s=0.2, slo_tpot_s=0.04)
    expected = np.concatenate([np.diff(r.token_times_s) for r in reqs])
    assert s["itl_s"]["count"] == 1000 * 199
    assert s["itl_s"]["p99"] == approx(float(np.percentile(expected, 99)))
