"""ShareGPT conversations -> request lengths, sampled the way vLLM's benchmark does.

File format (e.g. ShareGPT_V3_unfiltered_cleaned_split.json): a JSON list of
{"id": str, "conversations": [{"from": "human"|"gpt", "value": str}, ...]}. The first two
turns give the prompt (a human turn) and the reference answer (a model turn); the output
length is the tokenized answer. Sampling mirrors vLLM's sample_sharegpt_requests: shuffle
with the seed, then take the first N pairs that pass the length filter.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workloads.errors import WorkloadError
from workloads.fileio import MISSING, read_json, record_error
from workloads.records import SampledRequest, SourceResult
from workloads.tokenizer import count_tokens, encode_ids

log = logging.getLogger(__name__)

# Real ShareGPT dumps use "human"/"gpt", with a few "user", "chatgpt", "bard", "bing".
PROMPT_ROLES = frozenset({"human", "user"})
ANSWER_ROLES = frozenset({"gpt", "chatgpt", "assistant", "bard", "bing", "model"})


@dataclass(frozen=True)
class ShareGPTFilter:
    """vLLM's filter: drop pairs with prompt or output < 4 tokens, prompt > 1024 tokens,
    or prompt + output > 2048 tokens (prompt and total bounds inclusive)."""

    min_tokens: int = 4
    max_prompt_tokens: int = 1024
    max_total_tokens: int = 2048

    def keeps(self, prompt_len: np.ndarray, output_len: np.ndarray) -> np.ndarray:
        return (
            (prompt_len >= self.min_tokens)
            & (output_len >= self.min_tokens)
            & (prompt_len <= self.max_prompt_tokens)
            & (prompt_len + output_len <= self.max_total_tokens)
        )

    def describe(self) -> str:
        return (
            f"prompt and output >= {self.min_tokens} tokens, prompt <= "
            f"{self.max_prompt_tokens} tokens, prompt + output <= {self.max_total_tokens} tokens"
        )


def _turn(path: Path, where: str, index: int, turn: object) -> tuple[str, str]:
    expected = 'a turn {"from": str, "value": str}'
    if not isinstance(turn, dict):
        raise record_error(path, f"{where}, turn {index}", expected, turn)
    role, value = turn.get("from", MISSING), turn.get("value", MISSING)
    if not isinstance(role, str) or not isinstance(value, str):
        raise record_error(path, f"{where}, turn {index}", expected, turn)
    return role, value


def read_sharegpt_pairs(path: Path) -> tuple[list[tuple[str, str]], dict[str, object]]:
    """(prompt, answer) texts of every usable conversation, and counts of the rest."""
    data = read_json(path)
    if not isinstance(data, list):
        kind = "object" if isinstance(data, dict) else type(data).__name__
        raise WorkloadError(f'{path}: top level: expected a JSON list of {{"id", "conversations": '
                            f"[...]}} records (the ShareGPT format), got a JSON {kind}.")
    pairs: list[tuple[str, str]] = []
    too_few = wrong_roles = 0
    for i, record in enumerate(data):
        where = f"record {i}"
        if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
            got = record.get("conversations", MISSING) if isinstance(record, dict) else record
            raise record_error(path, where, "a 'conversations' list", got)
        where = f"record {i} (id {record.get('id')!r})"
        turns = record["conversations"]
        if len(turns) < 2:
            too_few += 1
            continue
        (role0, prompt), (role1, answer) = _turn(path, where, 0, turns[0]), _turn(path, where, 1, turns[1])
        if role0 not in PROMPT_ROLES or role1 not in ANSWER_ROLES:
            wrong_roles += 1
            continue
        pairs.append((prompt, answer))
    stats = {"conversations": len(data), "dropped_fewer_than_two_turns": too_few,
             "dropped_not_human_then_model": wrong_roles}
    return pairs, stats


def _tokenize_pairs(
    pairs: list[tuple[str, str]], tokenizer: str | None, keep_ids: bool
) -> tuple[np.ndarray, np.ndarray, list[list[int]] | None]:
    texts = [p for p, _ in pairs] + [a for _, a in pairs]  # one batch: fewer Rust calls
    n = len(pairs)
    if not keep_ids:
        lens = count_tokens(texts, tokenizer)
        return lens[:n], lens[n:], None
    ids = encode_ids(texts, tokenizer)
    lens = np.array([len(x) for x in ids], dtype=np.int64)
    return lens[:n], lens[n:], ids[:n]


def sample_sharegpt(
    path: Path,
    num_requests: int,
    rng: np.random.Generator,
    flt: ShareGPTFilter,
    tokenizer: str | None = None,
    keep_token_ids: bool = False,
    oversample: bool = False,
) -> SourceResult:
    pairs, stats = read_sharegpt_pairs(path)
    order = rng.permutation(len(pairs))
    kept: list[SampledRequest] = []
    examined = 0
    # Tokenize in chunks, in shuffled order, only as far as needed: the first N passing
    # pairs are the same as vLLM's one-by-one loop, without tokenizing 90k conversations.
    while len(kept) < num_requests and examined < len(order):
        chunk = order[examined : examined + int(1.25 * (num_requests - len(kept))) + 64]
        examined += len(chunk)
        p_len, o_len, p_ids = _tokenize_pairs([pairs[j] for j in chunk], tokenizer, keep_token_ids)
        for k in np.flatnonzero(flt.keeps(p_len, o_len))[: num_requests - len(kept)].tolist():
            ids = tuple(p_ids[k]) if p_ids is not None else None
            kept.append(SampledRequest(int(p_len[k]), int(o_len[k]), ids, "sharegpt"))
    stats.update(pairs_examined=examined, kept=len(kept))
    if not kept:
        raise WorkloadError(
            f"No ShareGPT conversation in {path} passed the filters ({flt.describe()}): "
            f"{len(pairs)} of {stats['conversations']} records had a human turn followed by "
            "a model turn. Check the file, or loosen workload.sharegpt_min_tokens / "
            "sharegpt_max_prompt_tokens / sharegpt_max_total_tokens."
        )
    if len(kept) < num_requests:
        kept = _top_up(kept, num_requests, rng, oversample, path)
    return SourceResult(tuple(kept), f"sharegpt file {path}", stats)


def _top_up(
    kept: list[SampledRequest], num_requests: int, rng: np.random.Generator, oversample: bool, path: Path
) -> list[SampledRequest]:
    if not oversample:
        log.warning("Only %d of %d requested ShareGPT requests pass the filters in %s; "
                    "using %d (set workload.oversample=true to repeat requests).",
                    len(kept), num_requests, path, len(kept))
        return kept
    extra = rng.integers(0, len(kept), size=num_requests - len(kept)).tolist()
    return kept + [kept[i] for i in extra]
