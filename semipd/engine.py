"""semi-PD: per device one prefill and one decode worker stepping concurrently on their own
timelines over ONE KV pool (and one weight copy); the hand-off moves the request with its
block table, nothing is copied.

Contention (MPS semantics): a share is a cap, not a reservation. While both workers of a
device are busy and x + y > 100, each progresses at the speed it would have with the
effective share s * 100 / (x + y) (the SMs divided in proportion to the caps); alone it
runs at its cap. A step's progress rate changes whenever the other worker starts or
stops a step, and its end time is recomputed then (progress-rate sharing).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from engines.blocks import BlockPool
from engines.config import EngineConfig
from engines.engine import Engine
from engines.loop import Loop
from engines.plan import Executor, StepPlan, StepResult
from engines.request import Request
from engines.scheduler import Scheduler, StepOutcome
from engines.worker import Worker
from semipd.controller import SLO, make_controller
from semipd.window import window_stats


@dataclass
class _InFlight:
    worker: Worker
    plan: StepPlan
    result: StepResult
    start_s: float
    done: float = 0.0        # fraction of the step's work completed
    rate: float = 0.0        # fraction per second
    last_s: float = 0.0
    version: int = 0
    contended_s: float | None = None  # duration if contended for the whole step (lazy)


@dataclass
class _Device:
    prefill: Worker
    decode: Worker
    inflight: dict[str, _InFlight] = field(default_factory=dict)
    pending: dict[str, tuple[float, float]] = field(default_factory=dict)  # worker -> (from_s, share)


class SemiPDEngine(Engine):
    def __init__(self, *args, devices: list[_Device], controller, window_requests: int,
                 percentile: float, switch_delay_s: float, **kw) -> None:
        super().__init__(*args, **kw)
        self.devices = devices
        self.controller = controller
        self.window_requests = window_requests
        self.percentile = percentile
        self.switch_delay_s = switch_delay_s
        self._window: list[Request] = []
        self.timeline: list[tuple[float, float, float]] = []  # (time_s, x_pct, y_pct) in effect
        for dev in devices:
            dev.decode.scheduler.preempt_sink = dev.prefill.scheduler.waiting.appendleft
        self._record_partition()

    @property
    def shares_pct(self) -> tuple[float, float]:
        d = self.devices[0]
        return d.prefill.share * 100.0, d.decode.share * 100.0

    # ----- hand-off -----------------------------------------------------------------
    def _on_outcome(self, worker: Worker, outcome: StepOutcome) -> None:
        dev = self.devices[worker.device]
        for req in outcome.handed_off:  # same pool: the block table moves as it is
            dev.decode.scheduler.add_running(req)

    # ----- share switching --------------------------------------------------------------
    def _done(self, req: Request) -> None:
        super()._done(req)
        if req.finish_s is None or not req.token_times_s:
            return  # rejected: no latency to learn from
        self._window.append(req)
        switching = any(dev.pending for dev in self.devices)
        if len(self._window) >= self.window_requests and not switching:
            stats = window_stats(self._window, self.percentile)
            self._window = []
            x, y = self.shares_pct
            new = self.controller.decide(stats, x, y)
            if new != (x, y):
                self._request_switch(*new)

    def _request_switch(self, x_pct: float, y_pct: float) -> None:
        """Standby workers with the new shares start now and take over at each old
        worker's next iteration boundary after the start-up delay (asynchronous switch)."""
        ready_s = self.loop.now_s + self.switch_delay_s
        for dev in self.devices:
            dev.pending = {dev.prefill.name: (ready_s, x_pct / 100.0),
                           dev.decode.name: (ready_s, y_pct / 100.0)}
        self.loop.at(ready_s, self.kick)

    def _apply_pending(self, dev: _Device, worker: Worker) -> None:
        item = dev.pending.get(worker.name)
        if item is not None and item[0] <= self.loop.now_s and worker.name not in dev.inflight:
            del dev.pending[worker.name]
            if worker.share != item[1]:
                worker.share = item[1]
                self._record_partition()

    def _record_partition(self) -> None:
        x, y = self.shares_pct
        self.timeline.append((self.loop.now_s, x, y))

    # ----- concurrent stepping with contention ------------------------------------------
    def kick(self) -> None:
        for dev in self.devices:
            for worker in (dev.prefill, dev.decode):
                self._apply_pending(dev, worker)
        super().kick()

    def _schedule_step_end(self, worker: Worker, plan: StepPlan, result: StepResult,
                           start_s: float) -> None:
        dev = self.devices[worker.device]
        dev.inflight[worker.name] = _InFlight(worker, plan, result, start_s, last_s=start_s)
        self._retime(dev)

    def _retime(self, dev: _Device) -> None:
        now = self.loop.now_s
        steps = list(dev.inflight.values())
        total_share = dev.prefill.share + dev.decode.share
        contended = len(steps) == 2 and total_share > 1.0 + 1e-9
        for st in steps:
            st.done = min(1.0, st.done + (now - st.last_s) * st.rate)
            st.last_s = now
            rate = 1.0 / self._duration(st, total_share) if contended else 1.0 / st.result.duration_s
            if rate != st.rate:
                st.rate = rate
                st.version += 1
                version = st.version
                self.loop.at(now + (1.0 - st.done) / rate, lambda st=st, v=version: self._step_end(dev, st, v))

    def _duration(self, st: _InFlight, total_share: float) -> float:
        if st.contended_s is None:
            effective = st.worker.share / total_share
            st.contended_s = st.worker.executor.execute(st.plan, effective).duration_s
        return st.contended_s

    def _step_end(self, dev: _Device, st: _InFlight, version: int) -> None:
        if st.version != version or dev.inflight.get(st.worker.name) is not st:
            return  # superseded by a re-timing
        del dev.inflight[st.worker.name]
        self._retime(dev)  # the other worker now runs alone
        self._end_step(st.worker, st.plan, st.result, st.start_s)


def build_semipd(cfg: EngineConfig, *, loop: Loop, make_executor: Callable[[], Executor],
                 num_kv_blocks: int, max_model_len: int, slo: SLO) -> SemiPDEngine:
    sp = cfg.semipd
    workers, pools, devices = [], [], []
    for i in range(cfg.num_instances):
        pool = BlockPool(num_kv_blocks, cfg.block_size_tokens, name=f"kv{i}")
        pre = Worker(f"prefill{i}", Scheduler(cfg.scheduler_config(max_model_len), pool, role="prefill",
                                              name=f"prefill{i}"),
                     make_executor(), share=sp.prefill_share_pct / 100.0, device=i)
        dec = Worker(f"decode{i}", Scheduler(cfg.scheduler_config(max_model_len), pool, role="decode",
                                             name=f"decode{i}"),
                     make_executor(), share=sp.decode_share_pct / 100.0, device=i)
        workers += [pre, dec]
        pools.append(pool)
        devices.append(_Device(pre, dec))
    return SemiPDEngine(cfg.name, workers=workers, pools=pools, loop=loop,
                        num_gpus=cfg.num_instances * cfg.tp * cfg.pp, max_model_len=max_model_len,
                        num_weight_copies=cfg.num_instances,  # prefill and decode share one copy
                        devices=devices, controller=make_controller(sp, slo),
                        window_requests=sp.window_requests, percentile=sp.percentile,
                        switch_delay_s=sp.switch_delay_s)
