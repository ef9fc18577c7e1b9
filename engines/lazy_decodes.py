"""Lazy decodes: a simulated scheduler's steady decodes advanced as one cohort, O(1) per step.

A request that is decoding (one new token per step) does the same thing every step until it
finishes, needs a new KV block, or is preempted. Eagerly that is per request per step: a
ScheduledSeq, a budget check, a token time, a finish check (~2 us each in CPython, so a
simulated run cost O(output tokens)). The cohort keeps the decodes at the FRONT of the
scheduler's `running` list (admission order, so the budget, the seq cap and preemption see
the same order as eagerly) frozen at the step they joined, and advances them all at once:

- the step's sums (StepShape) come from running totals: sum of contexts = sum over members
  of (context at join - step at join) + members x step;
- a member's token times are the cohort's step end times from its join step on (one list
  append per step), copied into the request when it leaves;
- its finish step and its next block boundary are known when it joins (buckets by step);
- anything unusual (a block shortage that may preempt, more decodes than the token budget
  or the seq cap) first dissolves the cohort: every member's fields are brought up to date
  and the eager path runs that step exactly as before.

So a run gives the same steps, times and results as the eager path, byte for byte (tested in
tests/test_lazy_decodes.py). It is only for simulation: executors that compute tokens need
every seq (`StepPlan.seqs`), and requests with sampled ids or stop ids are never lazy. While
a request is a member its `num_computed_tokens`, `num_output_tokens` and `token_times_s` are
those of its join step: `Scheduler.sync()` brings every member up to date.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from engines.request import Request, Status

if TYPE_CHECKING:
    from engines.scheduler import Scheduler

_TRIM_EVERY_STEPS = 4096  # drop step times no member needs any more, so memory stays O(batch)


class LazyDecodes:
    def __init__(self, scheduler: "Scheduler") -> None:
        self.sched = scheduler
        self.count = 0          # members: they are scheduler.running[:count]
        self.in_step = 0        # members in the step being planned / computed (0: not in it)
        self.steps = 0          # steps that computed the cohort
        self._join: dict[Request, int] = {}   # member -> cohort step it joined at
        self._ctx_base = 0      # sum over members of (context tokens at join - join step)
        self._times: list[float] = []         # end times of cohort steps _times_from, ...
        self._times_from = 0
        self._trim_at = _TRIM_EVERY_STEPS
        self._finish_at: dict[int, list[Request]] = {}  # cohort step -> members sampling their last token
        self._block_at: dict[int, list[Request]] = {}   # cohort step -> members needing a new block

    # ----- planning -----------------------------------------------------------------
    def take(self, budget: int, max_seqs: int) -> int:
        """Put the whole cohort into the step being planned, allocating the blocks its
        members cross into; returns how many it took (0 after dissolving it when it does
        not fit the budget, the seq cap or the free blocks: the eager path decides then)."""
        n = self.count
        if not n:
            return 0
        pool = self.sched.pool
        crossing = [r for r in self._block_at.pop(self.steps, ()) if r in self._join]
        if n > budget or n > max_seqs or len(crossing) > pool.num_free_blocks:
            self.dissolve()
            return 0
        if crossing:
            # Block ids as the eager path hands them out: one at a time, in running order.
            taken = pool.allocate(len(crossing))
            later = self.steps + pool.block_size_tokens
            bucket = self._block_at.setdefault(later, [])
            for req, block in zip(crossing, reversed(taken)):
                req.block_ids.append(block)
                bucket.append(req)
        self.in_step = n
        return n

    def context_tokens(self) -> int:
        """The members' context tokens summed, in the step being planned."""
        return self._ctx_base + self.count * self.steps

    # ----- results ------------------------------------------------------------------
    def step_done(self, now_s: float, finished: list[Request]) -> None:
        """The cohort's step ended at `now_s`: members that sampled their last token finish
        (appended to `finished` in running order)."""
        k = self.steps
        self._times.append(now_s)
        self.steps = k + 1
        self.in_step = 0
        done = self._finish_at.pop(k, None)
        if done:
            for req in done:
                self._leave(req)
                req.finish_reason = "length"
                self.sched._finish(req, now_s)
                finished.append(req)
            self.count -= len(done)  # the scheduler drops them from `running`

    def join(self) -> None:
        """Admit the decoding requests right behind the cohort in `running` (the cohort
        stays a prefix of it, so budget and seq-cap order is the eager order)."""
        running, i, k = self.sched.running, self.count, self.steps
        block_size = self.sched.pool.block_size_tokens
        while i < len(running):
            req = running[i]
            ctx, out = req.num_computed_tokens, req.num_output_tokens
            if not (out and ctx == req.prompt_len + out - 1 and req.status is Status.RUNNING
                    and req.token_ids is None and not req.stop_token_ids and not req.abort_requested):
                break
            self._join[req] = k
            self._ctx_base += ctx - k
            self._finish_at.setdefault(k + req.output_len - out - 1, []).append(req)
            self._block_at.setdefault(k + len(req.block_ids) * block_size - ctx, []).append(req)
            i += 1
        self.count = i
        if not i:
            self._times.clear()
            self._times_from = k
            self._trim_at = _TRIM_EVERY_STEPS
        elif len(self._times) >= self._trim_at:
            oldest = min(self._join.values())
            del self._times[:oldest - self._times_from]
            self._times_from = oldest
            self._trim_at = len(self._times) + _TRIM_EVERY_STEPS

    def dissolve(self) -> None:
        """Bring every member up to date and empty the cohort (the eager path takes over)."""
        for req in self.sched.running[:self.count]:
            self._leave(req)
        self.count = self.in_step = 0
        self._finish_at.clear()
        self._block_at.clear()
        self._times.clear()
        self._times_from = self.steps
        self._trim_at = _TRIM_EVERY_STEPS

    def _leave(self, req: Request) -> None:
        k0 = self._join.pop(req)
        steps = self.steps - k0
        self._ctx_base -= req.num_computed_tokens - k0
        req.num_computed_tokens += steps
        req.num_output_tokens += steps
        req.token_times_s.extend(self._times[k0 - self._times_from:self.steps - self._times_from])
