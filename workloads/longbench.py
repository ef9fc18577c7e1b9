"""LongBench -> request lengths: prompt = per-task template(context, input), output = max_gen.

Accepted inputs (`workload.path`):
  * a directory of LongBench v1 task files `<task>.jsonl` (records with input, context,
    answers, length, dataset, language, all_classes, _id), optionally restricted to
    `workload.longbench_tasks`;
  * one such task file;
  * a pre-processed JSONL of {"prompt": str, "max_gen": int} (optional "dataset"), the
    format the semi-PD scripts read.
Prompts longer than `max_prompt_tokens` are truncated in the middle, as LongBench does.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workloads.errors import WorkloadError
from workloads.fileio import MISSING, int_field, iter_jsonl, record_error, str_field
from workloads.longbench_tasks import KNOWN_TASKS, MAX_GEN_TOKENS, PROMPT_TEMPLATES, canonical_task
from workloads.records import SampledRequest, SourceResult, choose_indices
from workloads.tokenizer import count_tokens, encode_ids, truncate_middle, truncated_len

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LongBenchItem:
    """One record, prompt built but not yet tokenized."""

    prompt: str
    max_gen: int
    task: str
    processed: bool  # came from the {"prompt", "max_gen"} format


def unknown_task_error(task: str, where: str) -> WorkloadError:
    return WorkloadError(
        f"Unknown LongBench task {task!r} ({where}); known tasks are: {', '.join(KNOWN_TASKS)}."
    )


def _parse_record(path: Path, line_no: int, rec: Mapping[str, object]) -> LongBenchItem:
    where = f"line {line_no}"
    if "prompt" in rec:  # pre-processed format
        task = rec.get("dataset") if isinstance(rec.get("dataset"), str) else path.stem
        return LongBenchItem(str_field(rec, "prompt", path, where),
                             int_field(rec, "max_gen", path, where, minimum=1), str(task), True)
    if "context" not in rec and "input" not in rec:
        raise record_error(path, where, "a LongBench v1 record (input, context, dataset, ...) "
                           'or a pre-processed record {"prompt", "max_gen"}', sorted(rec))
    context, question = str_field(rec, "context", path, where), str_field(rec, "input", path, where)
    dataset = rec.get("dataset", MISSING)
    task = canonical_task(dataset if isinstance(dataset, str) and dataset else path.stem)
    if task not in PROMPT_TEMPLATES:
        raise unknown_task_error(task, f"{path}, {where}")
    # As LongBench's pred.py: str.format (braces inside the values are not re-parsed).
    prompt = PROMPT_TEMPLATES[task].format(context=context, input=question)
    return LongBenchItem(prompt, MAX_GEN_TOKENS[task], task, False)


def read_longbench_file(path: Path, tasks: frozenset[str] | None = None) -> list[LongBenchItem]:
    items = [_parse_record(path, n, rec) for n, rec in iter_jsonl(path)]
    return [it for it in items if tasks is None or it.task in tasks]


def longbench_files(path: Path, tasks: list[str]) -> list[Path]:
    """The task files to read: named tasks in a directory, all *.jsonl, or the one file."""
    for task in tasks:
        if canonical_task(task) not in PROMPT_TEMPLATES:
            raise unknown_task_error(task, "from workload.longbench_tasks")
    if not path.is_dir():
        return [path]
    if tasks:
        files = [path / f"{t}.jsonl" for t in tasks]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise WorkloadError(
                f"LongBench task file(s) {', '.join(missing)} not found; workload.path "
                f"({path}) should hold one <task>.jsonl per task in workload.longbench_tasks."
            )
        return files
    files = sorted(path.glob("*.jsonl"))
    if not files:
        raise WorkloadError(f"No *.jsonl task files in the LongBench directory {path} (workload.path).")
    return files


def _tokenize(items: list[LongBenchItem], max_prompt_tokens: int | None, tokenizer: str | None,
              keep_ids: bool) -> list[tuple[int, int, tuple[int, ...] | None]]:
    """(untruncated length, truncated length, truncated ids or None) per item."""
    prompts = [it.prompt for it in items]
    if not keep_ids:
        raw = count_tokens(prompts, tokenizer).tolist()
        return [(n, truncated_len(n, max_prompt_tokens), None) for n in raw]
    out = []
    for ids in encode_ids(prompts, tokenizer):
        kept = truncate_middle(ids, max_prompt_tokens)
        out.append((len(ids), len(kept), tuple(kept)))
    return out


def sample_longbench(
    path: Path,
    tasks: list[str],
    num_requests: int,
    rng: np.random.Generator,
    max_prompt_tokens: int | None = None,
    tokenizer: str | None = None,
    keep_token_ids: bool = False,
    oversample: bool = False,
) -> SourceResult:
    wanted = frozenset(canonical_task(t) for t in tasks) or None
    files = longbench_files(path, tasks)
    items = [it for f in files for it in read_longbench_file(f, wanted)]
    if not items:
        which = f" for tasks {sorted(wanted)}" if wanted else ""
        raise WorkloadError(f"No LongBench records{which} in {path} (workload.path).")
    picks = choose_indices(len(items), num_requests, rng, shuffle=True, oversample=oversample)
    chosen = [items[i] for i in picks.tolist()]
    if len(chosen) < num_requests:
        log.warning("LongBench data in %s has %d records, fewer than the %d requested; using "
                    "%d (set workload.oversample=true to repeat records).",
                    path, len(items), num_requests, len(chosen))
    # Tokenize only the sampled prompts: LongBench prompts run to tens of thousands of tokens.
    lengths = _tokenize(chosen, max_prompt_tokens, tokenizer, keep_token_ids)
    requests = tuple(SampledRequest(n, it.max_gen, ids, it.task)
                     for it, (_, n, ids) in zip(chosen, lengths))
    if all(it.processed for it in items):
        kind = "processed file"
    else:
        kind = "dir" if path.is_dir() else "file"
    limit = ("no truncation" if max_prompt_tokens is None
             else f"prompts truncated to {max_prompt_tokens} tokens")
    stats = {"records": len(items), "tasks": sorted({it.task for it in items}),
             "num_truncated": sum(1 for raw, n, _ in lengths if n < raw)}
    return SourceResult(requests, f"longbench {kind} {path} ({limit})", stats)
