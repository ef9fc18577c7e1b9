"""MATH-500 -> request lengths: prompt = the problem text, output = tokens of the solution.

File format: HuggingFaceH4/MATH-500 `test.jsonl` (the 500 held-out MATH test problems of
Lightman et al., "Let's Verify Step by Step", 2023; the same file as openai/prm800k
`prm800k/math_splits/test.jsonl`): one JSON object per line with `problem`, `solution`,
`answer`, `subject`, `level` and `unique_id`. Only `problem` and `solution` are needed.
As in the semi-PD paper's DeepSeek-V3 runs, the prompt is the bare problem (no chat
template or instruction added) and the output length is the tokenized reference
solution, generated in full (EOS ignored); the paper sends all 500 problems.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workloads.errors import WorkloadError
from workloads.fileio import iter_jsonl, record_error, str_field
from workloads.records import SampledRequest, SourceResult, choose_indices
from workloads.tokenizer import count_tokens, encode_ids

log = logging.getLogger(__name__)

SOURCE_NAME = "math500"  # the `source` of every request from a MATH-500 file
REQUIRED_KEYS = ("problem", "solution")


@dataclass(frozen=True, slots=True)
class Math500Item:
    problem: str
    solution: str
    subject: str
    line_no: int


def _parse(path: Path, line_no: int, rec: Mapping[str, object]) -> Math500Item:
    where = f"line {line_no}"
    missing = [key for key in REQUIRED_KEYS if key not in rec]
    if missing:
        raise WorkloadError(
            f"{path}: {where}: a MATH-500 record needs 'problem' and 'solution' strings (the "
            "HuggingFaceH4/MATH-500 test.jsonl format: problem, solution, answer, subject, "
            f"level, unique_id), but {' and '.join(map(repr, missing))} "
            f"{'is' if len(missing) == 1 else 'are'} missing; the record's keys are {sorted(rec)}."
        )
    subject = rec.get("subject")
    return Math500Item(str_field(rec, "problem", path, where), str_field(rec, "solution", path, where),
                       subject if isinstance(subject, str) else "", line_no)


def read_math500(path: Path) -> list[Math500Item]:
    """Every record of a MATH-500 JSONL file (errors name the file and line)."""
    if path.is_dir():
        raise WorkloadError(f"workload.path {str(path)!r} is a directory; source=math500 expects "
                            "the MATH-500 JSONL file itself (HuggingFaceH4/MATH-500 test.jsonl).")
    items = [_parse(path, n, rec) for n, rec in iter_jsonl(path)]
    if not items:
        raise WorkloadError(f"{path} (workload.path) holds no MATH-500 records.")
    return items


def _lengths(chosen: list[Math500Item], tokenizer: str | None, keep_ids: bool
             ) -> tuple[list[int], list[int], list[tuple[int, ...]] | None]:
    """Prompt lengths, output lengths and (optionally) prompt ids, one batch per field."""
    outputs = count_tokens([it.solution for it in chosen], tokenizer).tolist()
    if not keep_ids:
        return count_tokens([it.problem for it in chosen], tokenizer).tolist(), outputs, None
    ids = [tuple(x) for x in encode_ids([it.problem for it in chosen], tokenizer)]
    return [len(x) for x in ids], outputs, ids


def sample_math500(
    path: Path,
    num_requests: int,
    rng: np.random.Generator,
    tokenizer: str | None = None,
    keep_token_ids: bool = False,
    oversample: bool = False,
) -> SourceResult:
    """Shuffle the problems with the seed and take the first N (all 500 for the paper's run)."""
    items = read_math500(path)
    picks = choose_indices(len(items), num_requests, rng, shuffle=True, oversample=oversample)
    chosen = [items[i] for i in picks.tolist()]
    if len(chosen) < num_requests:
        log.warning("MATH-500 file %s has %d problems, fewer than the %d requested; using %d "
                    "(set workload.oversample=true to repeat problems).",
                    path, len(items), num_requests, len(chosen))
    prompts, outputs, ids = _lengths(chosen, tokenizer, keep_token_ids)
    for it, p_len, o_len in zip(chosen, prompts, outputs):
        if p_len < 1 or o_len < 1:
            field_name, text = ("problem", it.problem) if p_len < 1 else ("solution", it.solution)
            raise record_error(path, f"line {it.line_no}",
                               f"a non-empty {field_name!r} (at least one token)", text)
    requests = tuple(SampledRequest(p, o, ids[k] if ids is not None else None, SOURCE_NAME)
                     for k, (p, o) in enumerate(zip(prompts, outputs)))
    stats = {"records": len(items),
             "subjects": dict(sorted(Counter(it.subject or "(none)" for it in items).items()))}
    return SourceResult(requests, f"math500 file {path}", stats)
