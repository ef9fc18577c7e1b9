"""Synthetic distributions against the statistics they cite, plus count and seeding."""

import numpy as np
import pytest

from workloads import WorkloadConfig, build_workload
from workloads.longbench_tasks import AVG_WORDS_AND_SAMPLES, MAX_GEN_TOKENS
from workloads.sharegpt import ShareGPTFilter
from workloads.synthetic import (SHAREGPT_LIKE_MEAN_OUTPUT_TOKENS, SHAREGPT_LIKE_MEAN_PROMPT_TOKENS,
                                 TOKENS_PER_WORD, longbench_like, sharegpt_like)


def _arrays(result):
    return (np.array([r.prompt_len for r in result.requests]),
            np.array([r.output_len for r in result.requests]))


def test_sharegpt_like_matches_cited_means_and_filter():
    prompt, output = _arrays(sharegpt_like(50_000, np.random.default_rng(0)))
    assert SHAREGPT_LIKE_MEAN_PROMPT_TOKENS == 251.0  # semi-PD paper's ShareGPT average input
    assert prompt.mean() == pytest.approx(251.0, rel=0.03)
    assert output.mean() == pytest.approx(SHAREGPT_LIKE_MEAN_OUTPUT_TOKENS, rel=0.03)
    assert ShareGPTFilter().keeps(prompt, output).all()
    assert np.median(prompt) < prompt.mean()  # heavy right tail


def test_longbench_like_matches_published_task_lengths():
    res = longbench_like(40_000, np.random.default_rng(1), max_prompt_tokens=None)
    prompt, output = _arrays(res)
    tasks = np.array([r.source for r in res.requests])
    for task in ("qasper", "hotpotqa", "gov_report", "lcc"):
        words = AVG_WORDS_AND_SAMPLES[task][0]
        assert prompt[tasks == task].mean() == pytest.approx(words * TOKENS_PER_WORD, rel=0.05)
        assert set(output[tasks == task].tolist()) == {MAX_GEN_TOKENS[task]}
    counts = {t: n for t, (_, n) in AVG_WORDS_AND_SAMPLES.items()}
    expected_out = sum(MAX_GEN_TOKENS[t] * n for t, n in counts.items()) / sum(counts.values())
    assert output.mean() == pytest.approx(expected_out, rel=0.03)


def test_longbench_like_truncation():
    prompt, _ = _arrays(longbench_like(5000, np.random.default_rng(2), max_prompt_tokens=2000))
    assert prompt.max() == 2000 and (prompt == 2000).mean() > 0.5  # most tasks exceed 2k tokens


def test_fixed_and_uniform():
    fixed = build_workload(WorkloadConfig(source="synthetic", distribution="fixed", prompt_len=77,
                                          output_len=9, num_requests=50))
    assert {(s.prompt_len, s.output_len) for s in fixed.specs} == {(77, 9)}
    uni = build_workload(WorkloadConfig(source="synthetic", distribution="uniform", num_requests=5000,
                                        prompt_len_min=10, prompt_len_max=20,
                                        output_len_min=3, output_len_max=3))
    prompts = {s.prompt_len for s in uni.specs}
    assert prompts == set(range(10, 21)) and {s.output_len for s in uni.specs} == {3}
    assert all(s.prompt_token_ids is None for s in uni.specs)


def test_same_seed_same_workload():
    cfg = WorkloadConfig(source="synthetic", num_requests=200, seed=5)
    assert build_workload(cfg).specs == build_workload(cfg).specs
    assert build_workload(cfg).specs != build_workload(WorkloadConfig(source="synthetic", num_requests=200,
                                                                      seed=6)).specs


def test_changing_the_arrival_process_keeps_the_lengths():
    a = build_workload(WorkloadConfig(source="synthetic", num_requests=300, arrival="poisson"))
    b = build_workload(WorkloadConfig(source="synthetic", num_requests=300, arrival="constant"))
    assert sorted((s.prompt_len, s.output_len) for s in a.specs) == sorted(
        (s.prompt_len, s.output_len) for s in b.specs)


@pytest.mark.parametrize("distribution", ["sharegpt_like", "longbench_like", "math500_like", "mix",
                                          "fixed", "uniform"])
def test_1000_synthetic_requests_are_all_built_with_positive_lengths(distribution):
    # Build speed is a benchmark (benchmarks/workload_speed.py), not a timed test.
    specs = build_workload(WorkloadConfig(source="synthetic", distribution=distribution,
                                          num_requests=1000)).specs
    assert len(specs) == 1000
    assert all(s.prompt_len >= 1 and s.output_len >= 1 for s in specs)
