"""Generic JSONL requests: one object per line with `output_len` and either `prompt`
(text, tokenized with the configured tokenizer) or `prompt_len`.

Optional keys: `source` (or `dataset`) names the request's source for per-source
breakdowns; `arrival_s` (seconds) lets the file drive `arrival=trace`. When both `prompt`
and `prompt_len` are given, the text wins: a stored length may come from another tokenizer.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workloads.errors import WorkloadError
from workloads.fileio import int_field, iter_jsonl, record_error, str_field
from workloads.records import SampledRequest, SourceResult, choose_indices
from workloads.tokenizer import count_tokens, encode_ids


@dataclass(frozen=True, slots=True)
class _Row:
    prompt: str | None
    prompt_len: int
    output_len: int
    source: str
    arrival_s: float | None
    line_no: int


def _parse(path: Path, line_no: int, rec: Mapping[str, object]) -> _Row:
    where = f"line {line_no}"
    output_len = int_field(rec, "output_len", path, where, minimum=1)
    if "prompt" in rec:
        prompt, prompt_len = str_field(rec, "prompt", path, where), 0
    elif "prompt_len" in rec:
        prompt, prompt_len = None, int_field(rec, "prompt_len", path, where, minimum=1)
    else:
        raise record_error(path, where, "a 'prompt' (text) or 'prompt_len' (int) key", sorted(rec))
    source = rec.get("source", rec.get("dataset", "jsonl"))
    arrival = rec.get("arrival_s")
    if arrival is not None and (
        isinstance(arrival, bool) or not isinstance(arrival, (int, float))
        or not math.isfinite(arrival) or arrival < 0
    ):
        raise record_error(path, where, "'arrival_s' to be a number >= 0 (seconds)", arrival)
    return _Row(prompt, prompt_len, output_len, str(source),
                None if arrival is None else float(arrival), line_no)


def sample_jsonl(
    path: Path,
    num_requests: int,
    rng: np.random.Generator,
    tokenizer: str | None = None,
    keep_token_ids: bool = False,
    keep_order: bool = False,
    oversample: bool = False,
) -> SourceResult:
    rows = [_parse(path, n, rec) for n, rec in iter_jsonl(path)]
    if not rows:
        raise WorkloadError(f"{path} (workload.path) holds no JSONL records.")
    picks = choose_indices(len(rows), num_requests, rng, shuffle=not keep_order, oversample=oversample)
    chosen = [rows[i] for i in picks.tolist()]
    texts = [r.prompt for r in chosen if r.prompt is not None]
    enc = encode_ids(texts, tokenizer) if keep_token_ids else None
    lens = [len(x) for x in enc] if enc is not None else count_tokens(texts, tokenizer).tolist()
    requests, k = [], 0
    for r in chosen:
        n, prompt_ids = r.prompt_len, None
        if r.prompt is not None:  # texts were tokenized in `chosen` order
            n, prompt_ids = lens[k], (tuple(enc[k]) if enc is not None else None)
            k += 1
        if n < 1:
            raise record_error(path, f"line {r.line_no}", "a prompt of at least one token", r.prompt)
        requests.append(SampledRequest(n, r.output_len, prompt_ids, r.source, r.arrival_s))
    return SourceResult(tuple(requests), f"jsonl file {path}", {"records": len(rows)})
