"""The token-budget scheduler shared by every engine and executor (vLLM v1 style).

Each step gets `max_num_batched_tokens` and `max_num_seqs`. A request's next work is
`num_tokens - num_computed_tokens` tokens: the whole prompt for a new request, one token
for a decode, the rest of the prompt for a chunked prefill, prompt + generated tokens
after a recompute-style preemption. No phase-specific code paths beyond two policies:

- `prefill_first` (vLLM <= 0.6 default, "vLLM-D"): if waiting requests can be admitted,
  the step is prefill-only with whole prompts; otherwise it is a decode step.
- chunked (`chunked_prefill=True`, "vLLM-S"): running requests first (decodes and
  unfinished chunks), then new prompts fill the remaining budget, split into chunks.
- `policy="sglang"` (SGLang v0.4 default, engines/policy_sglang.py): prefill batches and
  decode steps alternate, a prefill that fits goes first, KV admission is a reservation.

Preemption when KV runs out: `recompute` drops the KV (vLLM, SGLang); `swap` (DistServe's
decode stage) moves it to host memory, keeping the progress: the request goes to
`swap_sink` and the tokens moved are counted in `swapped_out_tokens` for the engine to cost.

The role filter makes the same scheduler serve disaggregated and semi-PD workers:
`prefill` workers hand a request off when its first token is sampled; `decode` workers
only receive prefilled requests (`add_running`).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Literal

from engines.blocks import BlockPool
from engines.lazy_decodes import LazyDecodes
from engines.policy_sglang import SGLangPolicy, default_max_running_requests
from engines.plan import ScheduledSeq, StepPlan, StepResult, StepShape
from engines.request import Request, Status

Role = Literal["mixed", "prefill", "decode"]
_new_tuple = tuple.__new__
POLICIES = ("vllm", "sglang")
PREEMPTION_MODES = ("recompute", "swap")


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 512
    chunked_prefill: bool = False
    # Admission keeps this fraction of the pool free for running requests to grow into,
    # so a new prefill does not immediately force a preemption (vLLM's watermark, 1 %).
    watermark: float = 0.01
    policy: str = "vllm"               # vllm | sglang (then max_num_batched_tokens = chunk size)
    max_prefill_tokens: int = 16384    # sglang: input tokens per prefill batch
    mixed_chunk: bool = False          # sglang: --enable-mixed-chunk
    # sglang: max_running_requests; None derives SGLang's default from the pool and context.
    max_running_requests: int | None = None
    max_model_len_tokens: int = 0      # the model's context (sglang's default above needs it)
    preemption: str = "recompute"      # recompute | swap (swap: decode role only)

    def __post_init__(self) -> None:
        if self.max_num_batched_tokens <= 0 or self.max_num_seqs <= 0:
            raise ValueError("scheduler: max_num_batched_tokens and max_num_seqs must be > 0, got "
                             f"{self.max_num_batched_tokens} and {self.max_num_seqs}")
        if self.policy not in POLICIES or self.preemption not in PREEMPTION_MODES:
            raise ValueError(f"scheduler: policy must be one of {POLICIES} and preemption one of "
                             f"{PREEMPTION_MODES}; got '{self.policy}' and '{self.preemption}'")
        if self.max_prefill_tokens <= 0 or (self.max_running_requests is not None
                                            and self.max_running_requests <= 0):
            raise ValueError("scheduler: max_prefill_tokens and max_running_requests must be > 0; got "
                             f"{self.max_prefill_tokens} and {self.max_running_requests}")


@dataclass
class StepOutcome:
    finished: list[Request]
    handed_off: list[Request]  # prefill role: first token sampled, to be moved to a decode worker


class Scheduler:
    def __init__(self, config: SchedulerConfig, pool: BlockPool, *, role: Role = "mixed",
                 name: str = "worker") -> None:
        self.config = config
        self.pool = pool
        self.role = role
        self.name = name
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self._inflight: list[Request] = []  # requests of the plan being executed, in plan order
        self._watermark_blocks = int(config.watermark * pool.num_blocks)
        # Where preempted requests go. Default: the front of this scheduler's own queue.
        # A decode-role scheduler gets a sink that routes them to a prefill worker.
        self.preempt_sink: Callable[[Request], None] | None = None
        self.num_preemptions = 0
        # Swap preemption: where swapped-out requests go, and the KV tokens moved to host
        # memory since the engine last took the count (it costs them over the host link).
        self.swap_sink: Callable[[Request], None] | None = None
        self.swapped_out_tokens = 0
        if config.preemption == "swap" and role != "decode":
            raise ValueError(f"scheduler '{name}': preemption=swap is modelled for decode workers "
                             f"(DistServe's decode stage) only, not role '{role}'")
        self.sglang: SGLangPolicy | None = None
        if config.policy == "sglang":
            if role != "mixed":
                raise ValueError(f"scheduler '{name}': policy=sglang schedules a unified (mixed) "
                                 f"worker, not role '{role}'")
            self.sglang = SGLangPolicy(self, self._sglang_max_running())
        self.lazy: LazyDecodes | None = None

    def enable_lazy_decodes(self) -> bool:
        """Advance steady decodes as one cohort (engines/lazy_decodes.py): for simulation with
        an executor that reads only the plan's shape. Not with policy=sglang (its own
        batching) or aborts (a server's). True if enabled."""
        if self.sglang is None and self.lazy is None:
            self.lazy = LazyDecodes(self)
        return self.lazy is not None

    def sync(self) -> None:
        """Bring every request's fields up to date (lazy decodes lag while in the cohort)."""
        if self.lazy is not None:
            self.lazy.dissolve()

    # ----- intake -------------------------------------------------------------------
    def rejection_reason(self, req: Request) -> str | None:
        """Why this scheduler can never serve `req` (None if it can)."""
        total_tokens = req.prompt_len + req.output_len
        need_blocks = self.pool.blocks_for_tokens(total_tokens)
        usable_blocks = self.pool.num_blocks - self._watermark_blocks
        if need_blocks > usable_blocks:
            return (f"needs {need_blocks} KV blocks for {total_tokens} tokens but pool "
                    f"'{self.pool.name}' has {usable_blocks} usable")
        if not self.config.chunked_prefill and self.sglang is None and self.role != "decode" \
                and total_tokens > self.config.max_num_batched_tokens:
            return (f"{total_tokens} tokens exceed max_num_batched_tokens="
                    f"{self.config.max_num_batched_tokens} without chunked prefill")
        return None

    def add_request(self, req: Request) -> None:
        req.status = Status.WAITING
        self.waiting.append(req)

    def add_running(self, req: Request) -> None:
        """Take over a request whose KV is already in this scheduler's pool (decode role)."""
        req.status = Status.RUNNING
        self.running.append(req)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    @property
    def num_requests(self) -> int:
        return len(self.waiting) + len(self.running)

    # ----- scheduling ---------------------------------------------------------------
    def schedule(self, now_s: float) -> StepPlan | None:
        """Decide the next step, taking KV blocks for it; None if nothing can run now."""
        budget = self.config.max_num_batched_tokens
        scheduled: list[tuple[Request, int]] = []
        lazy = self.lazy
        if lazy is not None:
            lazy.in_step = 0
        if self.sglang is not None:
            scheduled = self.sglang.schedule(now_s)
        elif self.role == "decode":
            self._schedule_running(budget, scheduled)
        elif self.config.chunked_prefill:
            budget = self._schedule_running(budget, scheduled)
            if len(scheduled) + (lazy.in_step if lazy else 0) == len(self.running):  # no preemption
                self._admit_waiting(budget, scheduled, now_s)
        else:  # prefill_first
            self._admit_waiting(budget, scheduled, now_s)
            if not scheduled and self.role == "mixed":
                self._schedule_running(budget, scheduled)
        if not scheduled and not (lazy and lazy.in_step):
            return None
        return self._make_plan(scheduled)

    def _schedule_running(self, budget: int, out: list[tuple[Request, int]]) -> int:
        """Schedule running requests in admission order, preempting from the back when
        KV runs out (the newest request is the cheapest to recompute)."""
        pool, running = self.pool, self.running
        block_size, max_seqs = pool.block_size_tokens, self.config.max_num_seqs
        i = 0
        if self.lazy is not None:  # the cohort is running[:i], all decodes: one token each
            i = self.lazy.take(budget, max_seqs)
            budget -= i
            max_seqs -= i
        # Once per running request per step: the pending count and the room in its last
        # block are read inline (no property or call) on the common path.
        while i < len(running) and budget > 0 and len(out) < max_seqs:
            req = running[i]
            n = req.prompt_len + req.num_output_tokens - req.num_computed_tokens
            if n > budget:
                n = budget
            end = req.num_computed_tokens + n
            if end > len(req.block_ids) * block_size:
                while not pool.ensure_capacity(req.block_ids, end):
                    victim = running[-1]
                    self._preempt(victim)
                    if victim is req:
                        return budget
            out.append((req, n))
            budget -= n
            i += 1
        return budget

    def _admit_waiting(self, budget: int, out: list[tuple[Request, int]], now_s: float) -> None:
        pool, waiting = self.pool, self.waiting
        chunked = self.config.chunked_prefill
        while waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            req = waiting[0]
            n = req.num_pending_tokens
            if n > budget:
                if not chunked:
                    break
                n = budget
            need = pool.blocks_for_tokens(req.num_computed_tokens + n) - len(req.block_ids)
            if pool.num_free_blocks - need < self._watermark_blocks:
                break
            pool.ensure_capacity(req.block_ids, req.num_computed_tokens + n)
            waiting.popleft()
            req.status = Status.RUNNING
            if req.first_scheduled_s is None:
                req.first_scheduled_s = now_s
            self.running.append(req)
            out.append((req, n))
            budget -= n

    def _sglang_max_running(self) -> int:
        if self.config.max_running_requests is not None:
            return self.config.max_running_requests
        if self.config.max_model_len_tokens <= 0:
            raise ValueError(f"scheduler '{self.name}': policy=sglang without max_running_requests "
                             "needs max_model_len_tokens to derive SGLang's default")
        return default_max_running_requests(self.pool.num_blocks * self.pool.block_size_tokens,
                                            self.config.max_model_len_tokens)

    def _preempt(self, req: Request) -> None:
        """Recompute-style preemption: drop the KV, keep the generated tokens. Swap-style:
        the KV goes to host memory (the engine costs the copy), the progress is kept."""
        self.running.remove(req)
        self.pool.free(req.block_ids)
        req.block_ids.clear()
        req.num_preemptions += 1
        req.status = Status.WAITING
        self.num_preemptions += 1
        if self.config.preemption == "swap":
            if self.swap_sink is None:
                raise RuntimeError(f"scheduler '{self.name}': preemption=swap needs an engine swap_sink")
            self.swapped_out_tokens += req.num_computed_tokens
            self.swap_sink(req)
            return
        req.num_computed_tokens = 0
        if self.preempt_sink is not None:
            self.preempt_sink(req)
        else:
            self.waiting.appendleft(req)

    def _make_plan(self, scheduled: list[tuple[Request, int]]) -> StepPlan:
        seqs = []
        p_pairs = p_kv = p_tok = p_ctx = d_pairs = d_kv = d_tok = d_ctx = samples = 0
        for req, n in scheduled:
            ctx = req.num_computed_tokens
            num_tokens = req.prompt_len + req.num_output_tokens
            sample = ctx + n == num_tokens
            samples += sample
            if n <= 1 and req.num_output_tokens:  # a decode: n * ctx + n * (n + 1) // 2 pairs
                d_pairs += n * (ctx + 1)
                d_kv += ctx + n
                d_tok += n
                d_ctx += ctx
                is_prefill = False
            else:
                p_pairs += n * ctx + n * (n + 1) // 2  # causal: token i sees ctx + i + 1 keys
                p_kv += ctx + n
                p_tok += n
                p_ctx += ctx
                is_prefill = True
            ids = req.token_ids[ctx:ctx + n] if req.token_ids is not None else None
            # tuple.__new__ with every field: the NamedTuple without its __new__'s keyword
            # handling, half the cost of ScheduledSeq(...) (one per running request per step)
            seqs.append(_new_tuple(ScheduledSeq, (req.id, ctx, n, sample, is_prefill, req.block_ids, ids,
                                                  req.temperature)))
        self._inflight = [req for req, _ in scheduled]
        num_lazy = self.lazy.in_step if self.lazy is not None else 0
        if num_lazy:  # the cohort: one new token each, all sampling
            ctx = self.lazy.context_tokens()
            d_pairs += ctx + num_lazy  # a decode at context c attends to c + 1 keys
            d_kv += ctx + num_lazy
            d_tok += num_lazy
            d_ctx += ctx
            samples += num_lazy
        shape = StepShape(p_pairs, p_kv, p_tok, p_ctx, d_pairs, d_kv, d_tok, d_ctx, samples)
        return StepPlan(self.name, tuple(seqs), p_tok, d_tok, shape, num_lazy)

    # ----- results ------------------------------------------------------------------
    def update(self, plan: StepPlan, result: StepResult, now_s: float) -> StepOutcome:
        """Apply a finished step at time `now_s`: advance requests, emit tokens, finish."""
        outcome = StepOutcome([], [])
        tokens = result.sampled_token_ids
        k = 0
        if plan.num_lazy_decodes:  # the cohort is the front of the plan
            if tokens is not None:
                raise RuntimeError(f"scheduler '{self.name}': lazy decodes with an executor that samples tokens")
            self.lazy.step_done(now_s, outcome.finished)
        for seq, req in zip(plan.seqs, self._inflight):
            req.num_computed_tokens += seq.num_new_tokens
            token = None
            if seq.samples:  # the k-th sampled token is this seq's, whatever happens to it
                token = tokens[k] if tokens is not None else None
                k += 1
            if req.abort_requested:  # its client went away while the step ran: drop the token
                self._finish(req, now_s, "abort")
                outcome.finished.append(req)
                continue
            if not seq.samples:
                continue
            if req.append_output_token(token, now_s):  # output_len reached, or a stop (EOS) id
                self._finish(req, now_s)
                outcome.finished.append(req)
                if self.sglang is not None:
                    self.sglang.on_finished()
            elif self.role == "prefill":
                outcome.handed_off.append(req)
                req.status = Status.TRANSFERRING
        self._inflight = []
        if outcome.finished or outcome.handed_off:
            self.running = [r for r in self.running if r.status is Status.RUNNING]
        if self.lazy is not None:
            self.lazy.join()
        return outcome

    def abort(self, req: Request, now_s: float) -> bool:
        """Finish `req` as aborted (finish_reason "abort") and free its blocks, if it is queued
        or running here between steps; a request in the step being computed is finished when
        the step ends (`update`). False if this scheduler does not hold it."""
        if self.lazy is not None:
            raise RuntimeError(f"scheduler '{self.name}': abort with lazy decodes (a simulation-only mode)")
        req.abort_requested = True
        if req in self._inflight:
            return True
        if req in self.waiting:
            self.waiting.remove(req)
        elif req in self.running:
            self.running.remove(req)
        else:
            return False
        self._finish(req, now_s, "abort")
        return True

    def _finish(self, req: Request, now_s: float, reason: str | None = None) -> None:
        self.pool.free(req.block_ids)
        req.block_ids.clear()
        req.status = Status.FINISHED
        req.finish_s = now_s
        if reason is not None:
            req.finish_reason = reason
            if self.sglang is not None:  # an aborted request leaves the policy's state too
                self.sglang.on_finished()
                if self.sglang.chunked is req:
                    self.sglang.chunked = None
