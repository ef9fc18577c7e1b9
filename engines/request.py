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
    # Sampled ids that end the request early: the model's EOS ids unless the run ignores
    # EOS (vLLM's SamplingParams.ignore_eos). Empty: it runs to output_len.
    stop_token_ids: frozenset[int] = frozenset()
    finish_reason: str = ""  # once FINISHED: "length", "stop" (a stop id) or "abort" (Engine.abort)
    # Sampling temperature of this request (a server's per-request option); None: the executor's.
    temperature: float | None = None
    abort_requested: bool = False  # Engine.abort: finish it at the next safe point

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

    def append_output_token(self, token_id: int | None, now_s: float) -> bool:
        """Record one sampled output token at `now_s` (`token_id` None: an executor that makes
        no tokens); True if it ends the request, with `finish_reason` set. A stop token counts
        as an output token, as vLLM counts EOS (vllm/v1/core/sched/utils.py, check_stop)."""
        if token_id is not None and self.token_ids is not None:
            self.token_ids.append(token_id)
        self.num_output_tokens += 1
        self.token_times_s.append(now_s)
        if self.num_output_tokens == 1:
            self.prefill_done_s = now_s
        # vLLM's order: reaching the length cap wins over a stop token sampled at the cap.
        if self.num_output_tokens >= self.output_len:
            self.finish_reason = "length"
        elif token_id is not None and token_id in self.stop_token_ids:
            self.finish_reason = "stop"
        return bool(self.finish_reason)

    def reject(self, reason: str, now_s: float) -> None:
        self.status = Status.REJECTED
        self.reject_reason = reason
        self.finish_s = now_s
