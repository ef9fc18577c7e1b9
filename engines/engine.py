"""Engine: workers over KV pools, fed by a loop. Designs differ only in how they are
composed (see unified.py, disagg.py, semipd/engine.py) and in `_on_outcome`, the hand-off."""
from __future__ import annotations

from typing import Callable

from engines.blocks import BlockPool
from engines.loop import Loop
from engines.plan import StepPlan, StepResult
from engines.request import Request, Status
from engines.scheduler import Scheduler, StepOutcome
from engines.worker import Worker


class Engine:
    def __init__(self, name: str, *, workers: list[Worker], pools: list[BlockPool], loop: Loop,
                 num_gpus: int, max_model_len: int, num_weight_copies: int) -> None:
        self.name = name
        self.num_weight_copies = num_weight_copies  # model weight copies held across all GPUs
        self.workers = workers
        self.pools = pools
        self.loop = loop
        self.num_gpus = num_gpus
        self.max_model_len = max_model_len
        self.on_request_done: Callable[[Request], None] | None = None
        self._next_entry = 0
        self.kv = KVUsageTracker(pools)
        self.runtime = None  # real runs: the worker processes (engines/torch/runtime.py), closed by close()

    def close(self) -> None:
        """Stop and reap the worker processes of a real run (nothing to do in simulation)."""
        if self.runtime is not None:
            self.runtime.close()

    # ----- intake -----------------------------------------------------------------
    def entry_schedulers(self) -> list[Scheduler]:
        """Schedulers that accept new requests (round-robin between them)."""
        return [w.scheduler for w in self.workers if w.scheduler.role != "decode"]

    def submit(self, req: Request) -> None:
        """A request arrives now: queue it, or reject it with a reason (never drop it)."""
        now = self.loop.now_s
        entries = self.entry_schedulers()
        sched = entries[self._next_entry % len(entries)]
        self._next_entry += 1
        reason = self._rejection_reason(req, sched)
        if reason is not None:
            req.reject(reason, now)
            self._done(req)
            return
        sched.add_request(req)
        self.kick()

    def abort(self, req: Request) -> None:
        """Stop serving `req` (a server's client went away) and free its KV blocks: at once if
        it is queued or between steps, when its step ends if one is computing it, when its KV
        lands if it is in transfer (engines/disagg.py). It finishes with finish_reason "abort"."""
        if req.status in (Status.FINISHED, Status.REJECTED):
            return
        req.abort_requested = True
        for worker in self.workers:
            if worker.scheduler.abort(req, self.loop.now_s):
                break
        if req.status is Status.FINISHED:
            self._done(req)
        self.kick()  # the freed blocks may admit others

    def _rejection_reason(self, req: Request, sched: Scheduler) -> str | None:
        total = req.prompt_len + req.output_len
        if total > self.max_model_len:
            return (f"prompt {req.prompt_len} + output {req.output_len} tokens exceed the "
                    f"model's context of {self.max_model_len} tokens")
        for s in self._schedulers_on_path(sched):
            reason = s.rejection_reason(req)
            if reason is not None:
                return reason
        return None

    def _schedulers_on_path(self, entry: Scheduler) -> list[Scheduler]:
        """Schedulers a request entering at `entry` may need: the entry and every decode worker."""
        return [entry] + [w.scheduler for w in self.workers if w.scheduler.role == "decode"]

    # ----- stepping ---------------------------------------------------------------
    def kick(self) -> None:
        """Start a step on every idle worker that has work."""
        now = self.loop.now_s
        for worker in self.workers:
            if not worker.busy and worker.scheduler.has_work():
                started = worker.start_step(now)
                if started is None:
                    continue
                plan, result = started
                if result is None:  # computing elsewhere: end the step when it reports back
                    self.loop.when_ready(worker.executor.ready_source,
                                         lambda w=worker, p=plan, s=now: self._end_step(w, p, w.executor.collect(), s))
                else:
                    self._schedule_step_end(worker, plan, result, now)
        self.kv.observe(now)

    def _schedule_step_end(self, worker: Worker, plan: StepPlan, result: StepResult,
                           start_s: float) -> None:
        self.loop.at(start_s + result.duration_s,
                     lambda: self._end_step(worker, plan, result, start_s))

    def _end_step(self, worker: Worker, plan: StepPlan, result: StepResult, start_s: float) -> None:
        outcome = worker.finish_step(plan, result, start_s, self.loop.now_s)
        for req in outcome.finished:
            self._done(req)
        self._on_outcome(worker, outcome)
        self.kick()

    def _on_outcome(self, worker: Worker, outcome: StepOutcome) -> None:
        """Hand-off hook; a unified engine has none."""
        if outcome.handed_off:
            raise RuntimeError(f"{self.name}: worker {worker.name} handed off requests "
                               "but this engine has no hand-off")

    def _done(self, req: Request) -> None:
        if self.on_request_done is not None:
            self.on_request_done(req)

    def live_block_tables(self, pool: BlockPool) -> list[list[int]]:
        """Block tables of requests currently holding blocks of `pool` (for integrity checks)."""
        tables = []
        for w in self.workers:
            if w.scheduler.pool is pool:
                tables.extend(r.block_ids for r in w.scheduler.running if r.block_ids)
        return tables


class KVUsageTracker:
    """Peak and time-averaged use of each pool, plus a thinned time series (Fig. 3).

    Usage only changes inside events, so sampling after every event and integrating the
    piecewise-constant usage between samples is exact."""

    def __init__(self, pools: list[BlockPool], series_interval_s: float = 0.5) -> None:
        self.pools = pools
        self.series_interval_s = series_interval_s
        self._last_s = 0.0
        self._last_used = [0] * len(pools)
        self._area = [0.0] * len(pools)  # block-seconds
        self._next_series_s = 0.0
        self.series: list[tuple[float, str, int]] = []  # (time_s, pool, used_blocks)

    def observe(self, now_s: float) -> None:
        dt = now_s - self._last_s
        for i, pool in enumerate(self.pools):
            self._area[i] += self._last_used[i] * dt
            self._last_used[i] = pool.num_used_blocks
        self._last_s = now_s
        if now_s >= self._next_series_s:
            self.series.extend((now_s, p.name, p.num_used_blocks) for p in self.pools)
            self._next_series_s = now_s + self.series_interval_s

    def summary(self) -> dict[str, dict]:
        out = {}
        for i, p in enumerate(self.pools):
            mean = self._area[i] / self._last_s if self._last_s > 0 else 0.0
            out[p.name] = {"num_blocks": p.num_blocks, "block_size_tokens": p.block_size_tokens,
                           "peak_used_blocks": p.peak_used_blocks,
                           "peak_used_fraction": p.peak_used_blocks / p.num_blocks,
                           "mean_used_fraction": mean / p.num_blocks}
        return out


def finalize_unfinished(requests: list[Request], now_s: float) -> int:
    """Account for requests the run could not finish (e.g. a stalled engine): mark them
    rejected with a reason, so every accepted request shows up in the results."""
    count = 0
    for req in requests:
        if req.status not in (Status.FINISHED, Status.REJECTED):
            req.reject(f"unfinished at end of run (status {req.status.value}, "
                       f"{req.num_output_tokens}/{req.output_len} tokens)", now_s)
            count += 1
    return count
