"""What every request source returns, before arrival times and ids are attached."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class SampledRequest:
    """One request's lengths as drawn from a source.

    `prompt_token_ids`, when present, has exactly `prompt_len` entries. `arrival_s` is
    set only by sources that carry timestamps (trace CSV, JSONL with `arrival_s`); it is
    used when the arrival process is `trace`.
    """

    prompt_len: int
    output_len: int
    prompt_token_ids: tuple[int, ...] | None = None
    source: str = ""
    arrival_s: float | None = None


@dataclass(frozen=True)
class SourceResult:
    """A source's requests plus a sentence saying where they came from."""

    requests: tuple[SampledRequest, ...]
    description: str
    stats: dict[str, object] = field(default_factory=dict)


def choose_indices(
    num_available: int,
    num_requests: int,
    rng: np.random.Generator,
    shuffle: bool = True,
    oversample: bool = False,
) -> np.ndarray:
    """Indices of the records to use: shuffled (or in file order), the first N.

    With `oversample`, a pool smaller than N is topped up by drawing extra records with
    replacement (as vLLM's oversampling does), so the run still has N requests.
    """
    order = rng.permutation(num_available) if shuffle else np.arange(num_available)
    chosen = order[:num_requests]
    missing = num_requests - len(chosen)
    if missing > 0 and oversample and num_available > 0:
        chosen = np.concatenate([chosen, rng.integers(0, num_available, size=missing)])
    return chosen
