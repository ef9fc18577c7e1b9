"""Trace CSV (Vidur/Splitwise format) and generic JSONL sources."""
from pathlib import Path

import pytest

from workloads import WorkloadConfig, WorkloadError, build_workload

DATA = Path(__file__).parent / "data"
TRACE = str(DATA / "trace_tiny.csv")  # 6 rows, the one at 0.75 s has 0 decode tokens


def test_trace_lengths_and_timestamps_are_honoured():
    w = build_workload(WorkloadConfig(source="trace", path=TRACE, arrival="trace"))
    assert [(s.arrival_s, s.prompt_len, s.output_len) for s in w.specs] == [
        (0.0, 100, 20), (0.5, 250, 50), (1.25, 1000, 100), (2.0, 30, 5), (3.5, 512, 128)]
    assert [s.id for s in w.specs] == [0, 1, 2, 3, 4]
    assert w.total_rate == pytest.approx(4 / 3.5)  # observed: (N - 1) gaps over the span
    assert w.describe()["source_stats"]["dropped_zero_length_rows"] == 1


def test_trace_time_scale_and_first_n_in_time_order():
    w = build_workload(WorkloadConfig(source="trace", path=TRACE, arrival="trace",
                                      trace_time_scale=2.0, num_requests=2))
    assert [(s.arrival_s, s.prompt_len) for s in w.specs] == [(0.0, 100), (1.0, 250)]


def test_trace_lengths_with_generated_arrivals():
    w = build_workload(WorkloadConfig(source="trace", path=TRACE, arrival="poisson", rate=2.0))
    assert sorted(s.prompt_len for s in w.specs) == [30, 100, 250, 512, 1000]
    assert w.total_rate == 2.0 and w.specs[-1].arrival_s == pytest.approx(5 / 2.0)


def test_lengths_only_trace():
    w = build_workload(WorkloadConfig(source="trace", path=str(DATA / "trace_lengths_only.csv")))
    assert sorted((s.prompt_len, s.output_len) for s in w.specs) == [(10, 1), (20, 2), (30, 3)]
    with pytest.raises(WorkloadError, match="arrived_at"):
        build_workload(WorkloadConfig(source="trace", arrival="trace",
                                      path=str(DATA / "trace_lengths_only.csv")))


@pytest.mark.parametrize("fname, needles", [
    ("trace_bad_value.csv", ["trace_bad_value.csv", "line 3", "num_prefill_tokens", "'abc'"]),
    ("trace_missing_column.csv", ["trace_missing_column.csv", "num_decode_tokens", "header"]),
])
def test_trace_errors(fname, needles):
    with pytest.raises(WorkloadError) as e:
        build_workload(WorkloadConfig(source="trace", path=str(DATA / fname)))
    for needle in needles:
        assert needle in str(e.value), (needle, str(e.value))


def test_trace_without_path_names_the_option():
    with pytest.raises(WorkloadError, match="workload.path"):
        build_workload(WorkloadConfig(source="trace", path=None))


def test_generic_jsonl_tokenizes_text_and_takes_lengths():
    w = build_workload(WorkloadConfig(source="jsonl", path=str(DATA / "generic.jsonl"), keep_token_ids=True))
    got = sorted((s.prompt_len, s.output_len, s.source, s.prompt_token_ids is not None) for s in w.specs)
    # "Summarize the plot of Hamlet in one paragraph." and the translation prompt: 12 tokens each.
    assert got == [(12, 16, "jsonl", True), (12, 64, "chat", True), (300, 40, "rag", False),
                   (1200, 200, "jsonl", False)]


def test_generic_jsonl_arrival_times():
    w = build_workload(WorkloadConfig(source="jsonl", path=str(DATA / "generic_timed.jsonl"), arrival="trace"))
    assert [(s.id, s.arrival_s, s.prompt_len) for s in w.specs] == [(0, 0.1, 20), (1, 0.2, 10), (2, 1.7, 30)]


def test_generic_jsonl_bad_record_names_line_and_key():
    with pytest.raises(WorkloadError) as e:
        build_workload(WorkloadConfig(source="jsonl", path=str(DATA / "generic_bad.jsonl")))
    msg = str(e.value)
    assert "generic_bad.jsonl" in msg and "line 3" in msg and "'output_len'" in msg and "missing" in msg
