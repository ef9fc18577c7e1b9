"""Run directories (atomic, byte-reproducible), the summary table and plots."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from engines.plan import StepRecord
from engines.request import Request, Status
from metrics.plots import plot_run, run_frames
import pytest

from engines.errors import UserError
from metrics.results import (REQUEST_COLUMNS, STEP_COLUMNS, TOKEN_TIMES_FILE, format_summary_table,
                             load_run_dir, load_token_times, token_times_frame, write_run_dir)
from metrics.summary import summarize

CONFIG = "engine: semipd\nmodel: llama\n"


def make_run(n: int = 4, tokens: int = 3) -> tuple[list[Request], list[StepRecord]]:
    reqs = []
    for i in range(n):
        times = [i * 0.1 + 0.2 + 0.03 * k for k in range(tokens)]
        reqs.append(Request(id=i, arrival_s=i * 0.1, prompt_len=7 + i, output_len=tokens,
                            status=Status.FINISHED, num_output_tokens=tokens,
                            token_times_s=times, finish_s=times[-1], source="NA", finish_reason="length"))
    rejected = Request(id=n, arrival_s=n * 0.1, prompt_len=9999, output_len=4, source="sharegpt")
    rejected.reject("prompt_too_long", now_s=n * 0.1)
    steps = [StepRecord(worker=w, start_s=k * 0.03, duration_s=0.0299, num_prefill_tokens=5 * k,
                        num_decode_tokens=k, batch_size=k % 5 + 1, share=0.6)
             for k in range(3 * n) for w in ("prefill", "decode")]
    return reqs + [rejected], steps


def write(tmp_path, name="run", **kw):
    reqs, steps = make_run(**kw)
    summary = summarize(reqs, slo_ttft_s=0.25, slo_tpot_s=0.05,
                        extra={"engine": "semipd", "model": "llama", "rate_per_gpu": 2.0})
    return write_run_dir(tmp_path / name, config_yaml=CONFIG, requests=reqs, steps=steps,
                         summary=summary, extra_csvs={"shares": pd.DataFrame({"t_s": [0.1], "share": [0.5]})})


def test_run_dir_files_columns_and_roundtrip(tmp_path):
    d = write(tmp_path)
    assert sorted(p.name for p in d.iterdir()) == [
        "config.yaml", "requests.csv", "shares.csv", "steps.csv", "summary.json"]
    assert (d / "config.yaml").read_text() == CONFIG
    header = (d / "requests.csv").read_text().splitlines()[0]
    assert header == ",".join(REQUEST_COLUMNS)
    assert (d / "steps.csv").read_text().splitlines()[0] == ",".join(STEP_COLUMNS)
    summary, req, steps = load_run_dir(d)
    assert list(summary)[:3] == ["engine", "model", "rate_per_gpu"]
    assert summary == json.loads((d / "summary.json").read_text())
    assert list(req["status"]) == ["finished"] * 4 + ["rejected"]
    assert list(req["reject_reason"]) == [""] * 4 + ["prompt_too_long"]
    assert list(req["finish_reason"]) == ["length"] * 4 + [""]  # rejected: the reason is reject_reason
    assert list(req["source"]) == ["NA"] * 4 + ["sharegpt"]  # "NA" is not missing
    assert np.isnan(req["ttft_s"].iloc[-1]) and req["ttft_s"].iloc[0] == 0.2
    assert req["first_token_s"].iloc[1] == 0.3
    assert len(steps) == 24 and set(steps["worker"]) == {"prefill", "decode"}


def test_identical_runs_are_byte_identical(tmp_path):
    a, b = write(tmp_path, "a"), write(tmp_path, "b")
    for name in ("config.yaml", "requests.csv", "steps.csv", "summary.json", "shares.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_atomic_write_leaves_no_temp_files_and_overwrites(tmp_path):
    d = write(tmp_path)
    d = write(tmp_path)  # rewriting an existing run dir
    assert not [p for p in d.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


def test_empty_run_dir(tmp_path):
    summary = summarize([], slo_ttft_s=1.0, slo_tpot_s=0.1)
    d = write_run_dir(tmp_path / "empty", config_yaml="", requests=[], steps=[], summary=summary)
    s, req, steps = load_run_dir(d)
    assert list(req.columns) == list(REQUEST_COLUMNS) and len(req) == 0
    assert list(steps.columns) == list(STEP_COLUMNS) and len(steps) == 0
    assert "null" in (d / "summary.json").read_text() and "NaN" not in (d / "summary.json").read_text()
    assert "TTFT" in format_summary_table(s)
    out = plot_run(d, tmp_path / "empty.png")
    assert out.stat().st_size > 0


def test_summary_table(tmp_path):
    summary, _, _ = load_run_dir(write(tmp_path))
    table = format_summary_table(summary)
    assert "semipd" in table and "4/5 finished, 1 rejected" in table
    ttft_row = next(line for line in table.splitlines() if line.startswith("TTFT"))
    assert ttft_row.split()[1:] == ["200.0"] * 4  # every TTFT is 0.2 s
    assert "TTFT<=250.0 ms" in table and "attainment" in table


def test_plot_from_run_dir_and_from_memory(tmp_path):
    d = write(tmp_path)
    assert plot_run(d, d / "latency.png").stat().st_size > 0
    reqs, steps = make_run(n=1000, tokens=200)
    summary = summarize(reqs, slo_ttft_s=0.25, slo_tpot_s=0.05, extra={"engine": "unified"})
    frames = run_frames(summary, reqs, steps)
    assert frames.itl_s is not None and len(frames.itl_s) == 1000 * 199
    out = plot_run(frames, tmp_path / "big.png")  # 199,000 ITL samples: plotting speed is a benchmark's job
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp"))


def test_token_times_roundtrip_and_mismatch(tmp_path):
    reqs, steps = make_run()
    d = write_run_dir(tmp_path / "run", config_yaml=CONFIG, requests=reqs, steps=steps,
                      summary=summarize(reqs, slo_ttft_s=1.0, slo_tpot_s=1.0),
                      extra_csvs={"token_times": token_times_frame(reqs)})
    _, req, _ = load_run_dir(d)
    expect = [r.token_times_s for r in reqs]
    for got, want in zip(load_token_times(d, req), expect):
        assert got == pytest.approx(want, abs=1e-9)  # 9 significant digits
    assert [len(t) for t in load_token_times(d, req.iloc[::-1])] == [len(t) for t in expect[::-1]]  # by id
    req.loc[0, "num_output_tokens"] = 2
    with pytest.raises(UserError, match="does not match requests.csv"):
        load_token_times(d, req)
    (d / TOKEN_TIMES_FILE).unlink()
    assert load_token_times(d, req) is None


def test_incomplete_run_dir_names_what_is_missing(tmp_path):
    d = write(tmp_path)
    (d / "steps.csv").unlink()
    with pytest.raises(UserError, match="steps.csv missing"):
        load_run_dir(d)


def test_metrics_never_import_the_harness():
    """metrics/ is below harness/ (harness.run writes run directories with it), so no cycle."""
    import subprocess
    import sys
    code = ("import importlib, pkgutil, sys, metrics\n"
            "for m in pkgutil.iter_modules(metrics.__path__): importlib.import_module('metrics.' + m.name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'harness'))")
    from pathlib import Path
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("rows", [
    [(1, 0.1, "a", True, None), (2, float("nan"), 'say "hi", then go', False, 3.0)],
    [(10**12, 1e-7, "", True, float("inf")), (-3, 123456.789012345, "line\nbreak", False, -0.0)],
    [],
])
def test_table_text_is_what_pandas_writes(rows):
    """The run path writes CSVs without pandas (metrics/table.py); the text must be the
    bytes pandas' to_csv gave for the same rows (the result-file contract did not move)."""
    from metrics.results import frame_to_csv
    from metrics.table import Table
    table = Table(("id", "x_s", "label", "flag", "maybe_s"), rows)
    assert table.csv_text() == frame_to_csv(table.to_frame())
    reqs, steps = make_run()
    from metrics.results import requests_frame, requests_table, steps_frame, steps_table
    assert requests_table(reqs).csv_text() == frame_to_csv(requests_frame(reqs))
    assert steps_table(steps).csv_text() == frame_to_csv(pd.DataFrame.from_records(
        [tuple(getattr(s, c) for c in STEP_COLUMNS) for s in steps], columns=list(STEP_COLUMNS)))
    assert steps_frame(steps).shape == (len(steps), len(STEP_COLUMNS))


@pytest.mark.parametrize("rows, one_format", [
    ([("w0", 0.1, 3, 1e-7, -0.0), ("decode1", 12345.6789, -2, float("inf"), 2.5)], True),
    ([("w0", 0.1, 3, 1e-7, 1.0), ("w 1", 0.2, 10**20, 1e300, 0.0)], True),
    ([("w,0", 0.1, 3, 1.0, 1.0), ("w1", 0.2, 4, 1.0, 1.0)], False),  # quoted
    ([("w0", 0.1, 3, 1.0, 1.0), ("w1", float("nan"), 4, 1.0, 1.0)], False),  # NaN is empty
    ([("w0", 0.1, 3, 1.0, 1.0), ("w1", 0.2, True, 1.0, 1.0)], False),  # bool is True
    ([("w0", 0.1, 3, 1.0, 1.0), ("w1", 0.2, 4, 1, 1.0)], False),  # int among floats
])
def test_table_one_format_per_row_writes_what_pandas_writes(rows, one_format):
    from metrics.results import frame_to_csv
    from metrics.table import Table, _row_format
    table = Table(("worker", "start_s", "n", "x", "share"), rows)
    assert (_row_format(rows, 5) is not None) == one_format
    assert table.csv_text() == frame_to_csv(table.to_frame())
