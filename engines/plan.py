"""StepPlan / StepResult: the only things an executor sees.

A plan is the scheduler's decision for one step of one worker; a result is what the
executor reports back. Frozen, so that an executor cannot change scheduler state.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, Sequence, runtime_checkable


class ScheduledSeq(NamedTuple):
    """One request's slice of a step.

    The step computes tokens [num_context_tokens, num_context_tokens + num_new_tokens)
    of the request's sequence, attending to everything before them (already in KV).
    `samples` is True when the slice reaches the end of the sequence, so the step
    produces the request's next output token. A NamedTuple: immutable like a frozen
    dataclass, and half its construction cost (one per running request per step).
    """

    request_id: int
    num_context_tokens: int
    num_new_tokens: int
    samples: bool
    is_prefill: bool
    block_ids: Sequence[int]             # the request's block table (read-only view)
    token_ids: Sequence[int] | None = None  # ids of the new tokens (real executors only)
    temperature: float | None = None     # the request's sampling temperature; None: the executor's


class StepShape(NamedTuple):
    """A step's sums over its seqs, what cost models and the step log need: prefill and
    decode query-key pairs (causal), KV tokens read and query tokens, and the seqs that
    sample. The scheduler adds them up while it builds the plan."""

    prefill_pairs: int = 0
    prefill_kv_tokens: int = 0
    prefill_tokens: int = 0
    prefill_context_tokens: int = 0
    decode_pairs: int = 0
    decode_kv_tokens: int = 0
    decode_tokens: int = 0
    decode_context_tokens: int = 0
    num_samples: int = 0


def shape_of(seqs: Sequence[ScheduledSeq]) -> StepShape:
    p_pairs = p_kv = p_tok = p_ctx = d_pairs = d_kv = d_tok = d_ctx = samples = 0
    for s in seqs:
        new, ctx = s.num_new_tokens, s.num_context_tokens
        pairs = new * ctx + new * (new + 1) // 2  # causal: token i sees ctx + i + 1 keys
        if s.is_prefill:
            p_pairs += pairs
            p_kv += ctx + new
            p_tok += new
            p_ctx += ctx
        else:
            d_pairs += pairs
            d_kv += ctx + new
            d_tok += new
            d_ctx += ctx
        samples += s.samples
    return StepShape(p_pairs, p_kv, p_tok, p_ctx, d_pairs, d_kv, d_tok, d_ctx, samples)


@dataclass(frozen=True, slots=True)
class StepPlan:
    worker: str
    seqs: tuple[ScheduledSeq, ...]
    num_prefill_tokens: int
    num_decode_tokens: int
    # The scheduler's sums over `seqs` (the invariant checker compares them); None: from seqs.
    precomputed_shape: StepShape | None = None
    # Decodes in the step but not listed in `seqs`, only counted in `precomputed_shape`: a
    # simulated scheduler with lazy decodes (engines/lazy_decodes.py) hands an executor that
    # reads only the shape (SimExecutor.plan_shape_only) its steady decodes as sums.
    num_lazy_decodes: int = 0

    @property
    def shape(self) -> StepShape:
        return self.precomputed_shape if self.precomputed_shape is not None else shape_of(self.seqs)

    @property
    def batch_size(self) -> int:
        return len(self.seqs) + self.num_lazy_decodes

    @property
    def num_tokens(self) -> int:
        return self.num_prefill_tokens + self.num_decode_tokens


@dataclass(frozen=True, slots=True)
class StepResult:
    """`duration_s` at the worker's current share; `sampled_token_ids[i]` is the token for
    the i-th sampling seq of the plan (None from executors that make no tokens)."""

    duration_s: float
    sampled_token_ids: tuple[int, ...] | None = None


class Executor(Protocol):
    """Runs a step. `share` is the fraction (0, 1] of the device's compute the worker may use."""

    def execute(self, plan: StepPlan, share: float) -> StepResult: ...


@runtime_checkable
class AsyncExecutor(Protocol):
    """Runs a step elsewhere (a worker process) while the driver goes on: `submit` starts
    it, `ready_source` becomes readable (multiprocessing.connection.wait) when it ended,
    and `collect` returns its result (or raises if the worker failed)."""

    ready_source: Any

    def submit(self, plan: StepPlan, share: float) -> None: ...

    def collect(self) -> StepResult: ...


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One row of `steps.csv`: what a worker did in one step and when."""

    worker: str
    start_s: float
    duration_s: float
    num_prefill_tokens: int
    num_decode_tokens: int
    batch_size: int
    share: float  # fraction of the device's compute the worker was capped to
    # The step's shape beyond token counts, for replaying it through a cost model
    # (sim-vs-real fidelity): tokens already in KV that its prefill chunks and its decodes
    # attend to, and the sequences that sample a token.
    prefill_context_tokens: int = 0
    decode_context_tokens: int = 0
    num_samples: int = 0
