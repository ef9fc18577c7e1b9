"""Worker: a scheduler plus an executor, with a compute share and a step log."""
from __future__ import annotations

import math

from engines.plan import AsyncExecutor, Executor, StepPlan, StepRecord, StepResult
from engines.scheduler import Scheduler, StepOutcome


class Worker:
    """Steps one scheduler with one executor. `share` is the fraction of the device's
    compute the worker is capped to (1.0 for a whole GPU or TP group)."""

    def __init__(self, name: str, scheduler: Scheduler, executor: Executor, *,
                 share: float = 1.0, device: int = 0) -> None:
        self.name = name
        self.scheduler = scheduler
        self.executor = executor
        self.share = share
        self.device = device  # index of the GPU / TP group this worker runs on
        self.busy = False
        self.records: list[StepRecord] = []
        self.last_end_s = -math.inf  # when its last step ended (none yet: idle since ever)

    @property
    def executor(self) -> Executor:
        return self._executor

    @executor.setter
    def executor(self, executor: Executor) -> None:
        # isinstance against a runtime-checkable Protocol inspects its attributes: once per
        # executor, not once per step (a simulated run takes ~10k steps per 1,000 requests).
        self._executor = executor
        self._is_async = isinstance(executor, AsyncExecutor)
        self._reads_idle = getattr(executor, "reads_idle", False)

    def start_step(self, now_s: float) -> tuple[StepPlan, StepResult | None] | None:
        """Plan and start one step at `now_s`; None if there is nothing to run. The result
        is None for an asynchronous executor (one with `submit`, e.g. a worker process):
        the step then runs while the caller goes on, and `executor.collect()` returns it."""
        if self.busy:
            return None
        plan = self.scheduler.schedule(now_s)
        if plan is None:
            return None
        if self._is_async:
            self.executor.submit(plan, self.share)
            result = None
        elif self._reads_idle:
            result = self.executor.execute(plan, self.share, idle_before_s=now_s - self.last_end_s)
        else:
            result = self.executor.execute(plan, self.share)
        self.busy = True
        return plan, result

    def finish_step(self, plan: StepPlan, result: StepResult, start_s: float,
                    end_s: float) -> StepOutcome:
        self.busy = False
        self.last_end_s = end_s
        shape = plan.shape
        self.records.append(StepRecord(self.name, start_s, end_s - start_s, plan.num_prefill_tokens,
                                       plan.num_decode_tokens, plan.batch_size, self.share,
                                       shape.prefill_context_tokens, shape.decode_context_tokens,
                                       shape.num_samples))
        return self.scheduler.update(plan, result, end_s)
