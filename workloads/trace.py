"""Request traces as CSV: Splitwise / Azure LLM inference traces as processed by Vidur.

Columns: `arrived_at` (seconds from the trace start), `num_prefill_tokens`,
`num_decode_tokens`; extra columns are ignored. `arrived_at` may be absent (Vidur's
length-only traces); then the file gives lengths only and cannot drive `arrival=trace`.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from workloads.errors import WorkloadError
from workloads.fileio import record_error
from workloads.records import SampledRequest, SourceResult, choose_indices

TIME_COLUMN = "arrived_at"
LENGTH_COLUMNS = ("num_prefill_tokens", "num_decode_tokens")


def _number(text: str | None, column: str, path: Path, line: int, integer: bool) -> float:
    kind = "an integer" if integer else "a number"
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (integer and not value.is_integer()):
        raise record_error(path, f"line {line}, column {column!r}", f"{kind} >= 0", text)
    return value


def read_trace(path: Path) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(arrival times or None, prefill tokens, decode tokens), one entry per row."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in LENGTH_COLUMNS if c not in header]
        if missing:
            raise WorkloadError(
                f"{path}: line 1: expected a CSV header with columns {TIME_COLUMN}, "
                f"{', '.join(LENGTH_COLUMNS)}; missing {', '.join(missing)} (found: "
                f"{', '.join(header) or 'nothing'})."
            )
        has_time = TIME_COLUMN in header
        times, prefill, decode = [], [], []
        for row in reader:
            line = reader.line_num
            if has_time:
                times.append(_number(row.get(TIME_COLUMN), TIME_COLUMN, path, line, False))
            prefill.append(_number(row.get(LENGTH_COLUMNS[0]), LENGTH_COLUMNS[0], path, line, True))
            decode.append(_number(row.get(LENGTH_COLUMNS[1]), LENGTH_COLUMNS[1], path, line, True))
    arrivals = np.array(times, dtype=float) if has_time else None
    return arrivals, np.array(prefill, dtype=np.int64), np.array(decode, dtype=np.int64)


def sample_trace(
    path: Path, num_requests: int, rng: np.random.Generator, oversample: bool = False
) -> SourceResult:
    """The first N requests in time order (a timed trace), else a seeded sample."""
    arrivals, prefill, decode = read_trace(path)
    # A request must have a prompt and produce a token; real traces hold a few zero rows.
    valid = np.flatnonzero((prefill >= 1) & (decode >= 1))
    if len(valid) == 0:
        raise WorkloadError(
            f"No usable rows in trace {path}: every row has num_prefill_tokens or "
            "num_decode_tokens < 1 (or the file has no rows)."
        )
    if arrivals is not None:  # stable: ties keep file order
        valid = valid[np.argsort(arrivals[valid], kind="stable")]
    picks = choose_indices(len(valid), num_requests, rng, shuffle=arrivals is None, oversample=oversample)
    rows = valid[picks].tolist()
    requests = tuple(
        SampledRequest(int(prefill[r]), int(decode[r]), None, "trace",
                       float(arrivals[r]) if arrivals is not None else None)
        for r in rows
    )
    stats = {"rows": len(prefill), "dropped_zero_length_rows": len(prefill) - len(valid),
             "has_timestamps": arrivals is not None}
    return SourceResult(requests, f"trace file {path}", stats)
