"""ShareGPT loader on a tiny file in the real format; lengths hand-checked.

tests/data/sharegpt_tiny.json has 11 records. Usable (human turn, then model turn):
  sg-ok-1 (13, 14), sg-ok-multi (8, 19; only the first two turns), sg-ok-2 (11, 37),
  sg-ok-chatgpt-role (5, 6)                                    -> kept by vLLM's filter
  sg-short-prompt (1, 9), sg-short-answer (9, 2)               -> < 4 tokens
  sg-long-prompt (1107, 14)                                    -> prompt > 1024
  sg-long-total (609, 1501)                                    -> total > 2048
Unusable: sg-single-turn and sg-empty (< 2 turns), sg-starts-with-gpt (roles).
"""
from pathlib import Path

import numpy as np
import pytest

from workloads import WorkloadConfig, WorkloadError, build_workload
from workloads.sharegpt import ShareGPTFilter, read_sharegpt_pairs, sample_sharegpt
from workloads.tokenizer import load_tokenizer

DATA = Path(__file__).parent / "data"
KEPT = {(13, 14), (8, 19), (11, 37), (5, 6)}


def _cfg(**kw) -> WorkloadConfig:
    return WorkloadConfig(source="sharegpt", path=str(DATA / "sharegpt_tiny.json"), **kw)


def test_reads_first_two_turns_and_counts_unusable():
    pairs, stats = read_sharegpt_pairs(DATA / "sharegpt_tiny.json")
    assert len(pairs) == 8
    assert pairs[1] == ("Write a haiku about the sea.",
                        "Waves fold into foam,\nsalt wind carries gull voices,\nthe tide keeps its time.")
    assert stats == {"conversations": 11, "dropped_fewer_than_two_turns": 2,
                     "dropped_not_human_then_model": 1}


def test_default_filters_keep_the_four_expected_pairs():
    w = build_workload(_cfg(num_requests=100))
    assert {(s.prompt_len, s.output_len) for s in w.specs} == KEPT
    assert len(w.specs) == 4 and all(s.source == "sharegpt" for s in w.specs)
    assert w.source_used == f"sharegpt file {DATA / 'sharegpt_tiny.json'}"
    assert w.describe()["source_stats"]["kept"] == 4
    assert w.describe()["source_stats"]["pairs_examined"] == 8


def test_filters_are_configurable():
    stricter = build_workload(_cfg(num_requests=100, sharegpt_min_tokens=6))
    assert {(s.prompt_len, s.output_len) for s in stricter.specs} == KEPT - {(5, 6)}
    looser = build_workload(_cfg(num_requests=100, sharegpt_max_prompt_tokens=2000,
                                 sharegpt_max_total_tokens=4096))
    assert {(s.prompt_len, s.output_len) for s in looser.specs} == KEPT | {(1107, 14), (609, 1501)}


def test_filter_bounds_are_inclusive_like_vllm():
    flt = ShareGPTFilter()
    p = np.array([3, 4, 1024, 1025, 1024, 1000])
    o = np.array([10, 4, 1024, 10, 1025, 3])
    assert flt.keeps(p, o).tolist() == [False, True, True, False, False, False]


def test_sampling_is_seeded_shuffle_then_first_n():
    runs = [[(s.prompt_len, s.output_len) for s in build_workload(_cfg(num_requests=2, seed=k)).specs]
            for k in range(6)]
    assert all(len(r) == 2 and set(r) <= KEPT for r in runs)
    again = build_workload(_cfg(num_requests=2, seed=3)).specs
    assert [(s.prompt_len, s.output_len) for s in again] == runs[3]
    assert len({frozenset(r) for r in runs}) > 1  # different seeds pick different pairs


def test_oversample_fills_up_to_num_requests():
    w = build_workload(_cfg(num_requests=10, oversample=True))
    assert len(w.specs) == 10 and {(s.prompt_len, s.output_len) for s in w.specs} == KEPT


def test_keep_token_ids_gives_the_prompt_ids():
    res = sample_sharegpt(DATA / "sharegpt_tiny.json", 4, np.random.default_rng(0), ShareGPTFilter(),
                          keep_token_ids=True)
    texts = {p for p, _ in read_sharegpt_pairs(DATA / "sharegpt_tiny.json")[0]}
    for r in res.requests:
        assert len(r.prompt_token_ids) == r.prompt_len
        assert load_tokenizer().decode(list(r.prompt_token_ids)) in texts
    assert all(s.prompt_token_ids is None for s in build_workload(_cfg(num_requests=4)).specs)


@pytest.mark.parametrize("fname, needles", [
    ("missing.json", ["missing.json", "workload.path", "does not exist"]),
    ("sharegpt_bad_syntax.json", ["sharegpt_bad_syntax.json", "invalid JSON", "line 4"]),
    ("sharegpt_not_list.json", ["sharegpt_not_list.json", "top level", "JSON list", "JSON object"]),
    ("sharegpt_bad_record.json", ["sharegpt_bad_record.json", "record 1", "'conversations' list"]),
    ("sharegpt_bad_turn.json", ["sharegpt_bad_turn.json", "record 2", "sg-broken", "turn 1",
                                '"from": str, "value": str']),
    ("sharegpt_all_filtered.json", ["sharegpt_all_filtered.json", "passed the filters", ">= 4 tokens",
                                    "<= 1024", "<= 2048", "sharegpt_min_tokens"]),
])
def test_errors_name_file_record_and_expectation(fname, needles):
    with pytest.raises(WorkloadError) as e:
        build_workload(WorkloadConfig(source="sharegpt", path=str(DATA / fname)))
    for needle in needles:
        assert needle in str(e.value), (needle, str(e.value))
