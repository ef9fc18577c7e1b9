"""Request: the shared vocabulary of engines, drivers and metrics."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from workloads.spec import RequestSpec


class Status(str, enum.Enum):
    WAITING = "waiting"      # queued for (re)prefill
    RUNNING = "running"      # holds KV blocks, being prefilled or decoded
    TRANSFERRING = "transferring"  # KV in flight between instances (disaggregated)
    FINISHED = "finished"
    REJECTED = "rejected"    # never admitted; `reject_reason` says why


@dataclass(eq=False)
class Request:
    """A request's progress and timestamps.

    Invariant (vLLM v1 style): the sequence is prompt + generated tokens; the scheduler
    computes `num_tokens - num_computed_tokens` tokens next. A step that brings
    `num_computed_tokens` up to `num_tokens` samples one new token. After a
    recompute-style preemption `num_computed_tokens` drops to 0 and the generated
    tokens are recomputed as part of the prompt.
    """

    id: int
    arrival_s: float
    prompt_len: int
    output_len: int
    token_ids: list[int] | None = None  # prompt + generated ids (None in simulation)
    source: str = ""
    status: Status = Status.WAITING
    num_computed_tokens: int = 0
    num_output_tokens: int = 0
    block_ids: list[int] = field(default_factory=list)
    token_times_s: list[float] = field(default_factory=list)  # emission time of each output token
    first_scheduled_s: float | None = None
    prefill_done_s: float | None = None   # first token produced (end of prefill)
    finish_s: float | None = None
    num_preemptions: int = 0
    reject_reason: str = ""

    @classmethod
    def from_spec(cls, spec: RequestSpec) -> "Request":
        ids = list(spec.prompt_token_ids) if spec.prompt_token_ids is not None else None
        return cls(id=spec.id, arrival_s=spec.arrival_s, prompt_len=spec.prompt_len,
                   output_len=spec.output_len, token_ids=ids, source=spec.source)

    @property
    def num_tokens(self) -> int:
        return self.prompt_len + self.num_output_tokens

    @property
    def num_pending_tokens(self) -> int:
        return self.num_tokens - self.num_computed_tokens

    @property
    def is_prefill(self) -> bool:
        """True until the first output token exists; after a preemption, also while recomputing."""
        return self.num_pending_tokens > 1 or self.num_output_tokens == 0

    @property
    def first_token_s(self) -> float | None:
        return self.token_times_s[0] if self.token_times_s else None

    @property
    def is_done(self) -> bool:
        return self.num_output_tokens >= self.output_len

    def reject(self, reason: str, now_s: float) -> None:
        self.status = Status.REJECTED
        self.reject_reason = reason
        self.finish_s = now_s
