"""RequestSpec: what a workload hands the driver. Frozen: it crosses the workload/engine seam."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestSpec:
    """One request of a workload.

    `arrival_s` is seconds from the start of the run. `output_len` is the number of
    tokens the request must generate (benchmark semantics: EOS is ignored).
    `prompt_token_ids`, when given, has exactly `prompt_len` entries; simulated runs
    do not need it, the real executor does (it makes up ids when absent).
    """

    id: int
    arrival_s: float
    prompt_len: int
    output_len: int
    prompt_token_ids: tuple[int, ...] | None = None
    source: str = ""  # dataset/task name, for per-source breakdowns
