"""MATH-500 loader on real records, the math500_like fallback, and errors.

tests/data/math500_tiny.jsonl holds 5 records of HuggingFaceH4/MATH-500 test.jsonl,
verbatim. Llama-3 token counts (problem, solution), hand-checked:
  test/precalculus/807.json            (47, 180)
  test/algebra/2584.json               (47, 97)
  test/number_theory/572.json          (12, 148)  "How| many| positive| whole|-number|
                                                   div|isors| does| |196| have|?"
  test/prealgebra/1622.json            (40, 160)
  test/intermediate_algebra/1197.json  (59, 476)
"""
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from workloads import WorkloadConfig, WorkloadError, build_workload
from workloads.config import config_from_mapping
from workloads.math500 import read_math500, sample_math500
from workloads.synthetic import (MATH500_LEVELS, MATH500_LIKE_MEAN_OUTPUT_TOKENS,
                                 MATH500_PROBLEM_CHARS_PER_TOKEN,
                                 MATH500_SOLUTION_CHARS_PER_TOKEN, math500_level_mean_prompt_tokens,
                                 math500_like)
from workloads.tokenizer import count_tokens, load_tokenizer

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
TINY = DATA / "math500_tiny.jsonl"
LENGTHS = Counter({(47, 180): 1, (47, 97): 1, (12, 148): 1, (40, 160): 1, (59, 476): 1})


def _cfg(**kw) -> WorkloadConfig:
    kw.setdefault("path", str(TINY))
    return WorkloadConfig(source="math500", **kw)


def test_fixture_is_the_real_format():
    rows = [json.loads(line) for line in TINY.read_text().splitlines()]
    assert len(rows) == 5
    assert all(list(r) == ["problem", "solution", "answer", "subject", "level", "unique_id"] for r in rows)
    items = read_math500(TINY)
    assert items[2].problem == "How many positive whole-number divisors does 196 have?"
    assert items[2].solution.endswith("there are $\\boxed{9}$ divisors of 196.")


def test_prompt_is_the_problem_and_output_the_solution_tokens():
    w = build_workload(_cfg(num_requests=5))
    assert Counter((s.prompt_len, s.output_len) for s in w.specs) == LENGTHS
    assert {s.source for s in w.specs} == {"math500"}
    assert w.source_used == f"math500 file {TINY}"
    stats = w.describe()["source_stats"]
    assert stats["records"] == 5 and stats["subjects"] == {
        "Algebra": 1, "Intermediate Algebra": 1, "Number Theory": 1, "Prealgebra": 1, "Precalculus": 1}


def test_keep_token_ids_gives_the_problem_ids():
    res = sample_math500(TINY, 5, np.random.default_rng(0), keep_token_ids=True)
    problems = {it.problem for it in read_math500(TINY)}
    for r in res.requests:
        assert len(r.prompt_token_ids) == r.prompt_len
        assert load_tokenizer().decode(list(r.prompt_token_ids)) in problems
    assert all(s.prompt_token_ids is None for s in build_workload(_cfg(num_requests=5)).specs)


def test_sampling_is_seeded_shuffle_then_first_n():
    runs = [[(s.prompt_len, s.output_len) for s in build_workload(_cfg(num_requests=2, seed=k)).specs]
            for k in range(6)]
    assert all(len(r) == 2 and set(r) <= set(LENGTHS) for r in runs)
    again = build_workload(_cfg(num_requests=2, seed=4)).specs
    assert [(s.prompt_len, s.output_len) for s in again] == runs[4]
    assert len({frozenset(r) for r in runs}) > 1


def test_fewer_records_than_requested_warns_or_oversamples(caplog):
    with caplog.at_level(logging.WARNING, logger="workloads"):
        assert len(build_workload(_cfg(num_requests=500)).specs) == 5
    assert "5 problems, fewer than the 500 requested" in caplog.text
    w = build_workload(_cfg(num_requests=12, oversample=True))
    assert len(w.specs) == 12 and {(s.prompt_len, s.output_len) for s in w.specs} == set(LENGTHS)


def test_missing_path_falls_back_to_math500_like(caplog):
    with caplog.at_level(logging.WARNING, logger="workloads"):
        w = build_workload(_cfg(path=None, num_requests=500))
    assert w.source_used == "synthetic math500_like (no dataset file given: workload.path is empty)"
    assert "workload.source=math500" in caplog.text and "math500_like" in caplog.text
    assert w.describe()["requests_per_source"] == {"math500_like": 500}


def test_math500_like_matches_the_derived_statistics():
    res = math500_like(60_000, np.random.default_rng(0))
    prompt = np.array([r.prompt_len for r in res.requests])
    output = np.array([r.output_len for r in res.requests])
    # (266.89 - 71 template chars) / 2.81 chars per token; 531 solution chars / 2.55.
    assert res.stats["target_mean_prompt_tokens"] == pytest.approx(69.7, abs=0.05)
    assert MATH500_LIKE_MEAN_OUTPUT_TOKENS == pytest.approx(208.2, abs=0.05)
    assert prompt.mean() == pytest.approx(69.7, rel=0.03)
    assert output.mean() == pytest.approx(208.2, rel=0.03)
    assert prompt.min() >= 4 and output.min() >= 4 and np.median(output) < output.mean()
    means = math500_level_mean_prompt_tokens()
    assert sum(n for n, _ in MATH500_LEVELS.values()) == 500
    assert means[1] == pytest.approx(43.5, abs=0.1) and means[5] == pytest.approx(94.8, abs=0.1)


def test_chars_per_token_constants_fit_the_real_records():
    items = read_math500(TINY)
    for texts, ratio in (([it.problem for it in items], MATH500_PROBLEM_CHARS_PER_TOKEN),
                         ([it.solution for it in items], MATH500_SOLUTION_CHARS_PER_TOKEN)):
        measured = sum(map(len, texts)) / count_tokens(texts).sum()
        assert measured == pytest.approx(ratio, rel=0.1)  # constants came from 12 records


def test_conf_workload_math500_yaml():
    values = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "workload" / "math500.yaml"))
    cfg = config_from_mapping(values)
    assert (cfg.name, cfg.source, cfg.path, cfg.num_requests, cfg.rate, cfg.arrival) == (
        "math500", "math500", None, 500, 5.0, "poisson")
    w = build_workload(cfg, num_gpus=8)
    assert len(w.specs) == 500 and w.total_rate == 40.0 and "math500_like" in w.source_used


def _write(tmp_path, lines) -> str:
    path = tmp_path / "m.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


@pytest.mark.parametrize("lines, needles", [
    (['{"problem": "What is 1+1?", "solution": 2}'], ["line 1", "'solution' to be a string", "got 2"]),
    (['{"problem": "What is 1+1?", "solution": ""}'], ["line 1", "non-empty 'solution'"]),
    (['{"problem": "", "solution": "It is 2."}'], ["line 1", "non-empty 'problem'"]),
    (['{"question": "What is 1+1?", "answer": "2"}'], ["line 1", "'problem' and 'solution' are missing",
                                                       "['answer', 'question']"]),
    (['{"problem": "What is 1+1?",'], ["line 1", "invalid JSON"]),
    ([], ["holds no MATH-500 records", "workload.path"]),
])
def test_malformed_records_name_file_line_and_key(tmp_path, lines, needles):
    with pytest.raises(WorkloadError) as e:
        build_workload(_cfg(path=_write(tmp_path, lines)))
    for needle in ["m.jsonl", *needles]:
        assert needle in str(e.value), (needle, str(e.value))


@pytest.mark.parametrize("path, needles", [
    (DATA / "math500_bad.jsonl", ["math500_bad.jsonl", "line 2", "'solution' is missing",
                                  "HuggingFaceH4/MATH-500", "'unique_id'"]),
    (DATA / "no_such_math500.jsonl", ["no_such_math500.jsonl", "workload.path", "does not exist"]),
    (DATA, ["is a directory", "source=math500", "test.jsonl"]),
])
def test_file_errors(path, needles):
    with pytest.raises(WorkloadError) as e:
        build_workload(_cfg(path=str(path)))
    for needle in needles:
        assert needle in str(e.value), (needle, str(e.value))
