"""LongBench loader: v1 task files, task selection, truncation, pre-processed format.

Prompt lengths (Llama-3 tokens, template included), hand-checked:
  qasper:   q0001 217, q0002 203, q0003 254   (max_gen 128)
  hotpotqa: h0001 98,  h0002 97,  h0003 671   (max_gen 32)
  processed: 66 (max_gen 128), 309 (512), 11 (32)
"""
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from workloads import WorkloadConfig, WorkloadError, build_workload
from workloads.longbench import read_longbench_file, sample_longbench
from workloads.longbench_tasks import KNOWN_TASKS, PROMPT_TEMPLATES
from workloads.tokenizer import encode_ids

DATA = Path(__file__).parent / "data"
TINY = DATA / "longbench_tiny"


def _lengths(**kw):
    cfg = WorkloadConfig(source="longbench", path=str(kw.pop("path", TINY)), **kw)
    return Counter((s.prompt_len, s.output_len, s.source) for s in build_workload(cfg).specs)


def test_directory_of_task_files():
    assert _lengths(num_requests=6) == Counter({
        (217, 128, "qasper"): 1, (203, 128, "qasper"): 1, (254, 128, "qasper"): 1,
        (98, 32, "hotpotqa"): 1, (97, 32, "hotpotqa"): 1, (671, 32, "hotpotqa"): 1})


def test_task_selection_and_single_file():
    assert {src for _, _, src in _lengths(num_requests=6, longbench_tasks=["qasper"])} == {"qasper"}
    assert sum(_lengths(num_requests=6, longbench_tasks=["qasper"]).values()) == 3
    assert sum(_lengths(num_requests=10, path=TINY / "hotpotqa.jsonl").values()) == 3


def test_prompt_uses_the_task_template():
    item = read_longbench_file(TINY / "qasper.jsonl")[1]
    head, tail = PROMPT_TEMPLATES["qasper"].split("{context}")
    assert item.prompt.startswith(head) and "How many questions are in the dataset?" in item.prompt
    assert "5,000 questions" in item.prompt and item.max_gen == 128 and not item.processed


def test_middle_truncation():
    lengths = _lengths(num_requests=6, longbench_max_prompt_tokens=256)
    assert (256, 32, "hotpotqa") in lengths and (254, 128, "qasper") in lengths
    res = sample_longbench(TINY, ["hotpotqa"], 3, np.random.default_rng(0), max_prompt_tokens=256,
                           keep_token_ids=True)
    long = next(r for r in res.requests if r.prompt_len == 256)
    full = encode_ids([read_longbench_file(TINY / "hotpotqa.jsonl")[2].prompt])[0]
    assert long.prompt_token_ids == tuple(full[:128] + full[-128:])
    assert res.stats["num_truncated"] == 1


def test_preprocessed_format():
    assert _lengths(num_requests=3, path=DATA / "longbench_processed.jsonl") == Counter({
        (66, 128, "qasper"): 1, (309, 512, "gov_report"): 1, (11, 32, "longbench_processed"): 1})
    w = build_workload(WorkloadConfig(source="longbench", path=str(DATA / "longbench_processed.jsonl")))
    assert w.source_used.startswith("longbench processed file")


def test_missing_path_falls_back_to_longbench_like():
    w = build_workload(WorkloadConfig(source="longbench", path=None, num_requests=50))
    assert "longbench_like" in w.source_used and "no dataset file" in w.source_used


@pytest.mark.parametrize("kw, needles", [
    ({"longbench_tasks": ["qasperr"]}, ["qasperr", "workload.longbench_tasks", "narrativeqa", "qasper"]),
    ({"longbench_tasks": ["narrativeqa"]}, ["narrativeqa.jsonl", "not found", "workload.longbench_tasks"]),
    ({"path": DATA / "longbench_unknown_task.jsonl"}, ["not_a_task", "longbench_unknown_task.jsonl",
                                                       "line 1", "known tasks", "repobench-p"]),
    ({"path": DATA / "longbench_bad_line.jsonl"}, ["longbench_bad_line.jsonl", "line 2", "invalid JSON"]),
    ({"path": DATA / "longbench_missing_keys.jsonl"}, ["longbench_missing_keys.jsonl", "line 2",
                                                       '{"prompt", "max_gen"}', "question"]),
    ({"path": DATA / "no_such_dir"}, ["no_such_dir", "workload.path"]),
])
def test_errors(kw, needles):
    cfg = WorkloadConfig(source="longbench", path=str(kw.pop("path", TINY)), **kw)
    with pytest.raises(WorkloadError) as e:
        build_workload(cfg)
    for needle in needles:
        assert needle in str(e.value), (needle, str(e.value))
    assert len(KNOWN_TASKS) == 21
