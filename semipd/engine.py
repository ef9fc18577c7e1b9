"""semi-PD: per device one prefill and one decode worker stepping concurrently on their own
timelines over ONE KV pool (and one weight copy); the hand-off moves the request with its
block table, nothing is copied.

Contention (MPS semantics): a share is a cap, not a reservation. Alone, a worker's step
runs at the speed of its cap (the executor's duration at that share). While both workers
of a device are busy, their progress rates are re-computed (progress-rate sharing: each
step tracks the fraction of its work done; the rates change whenever the other worker
starts or stops a step, and its end time is recomputed then):
- `resources` (default): the GPU is two resources, SM compute and HBM bandwidth. At its
  solo speed a step uses compute_s / duration_s of the device's compute and
  memory_s / duration_s of its bandwidth (executor.resource_demands_s). If the two
  steps together ask more than 1 of either resource, both slow down by the larger
  oversubscription factor (a fluid model). A compute-bound prefill next to a
  memory-bound decode thus overlaps well, two compute-bound steps do not; with
  x + y <= 100 caps the compute never oversubscribes, but bandwidth still can.
- `proportional`, or an executor without resource demands: if x + y > 100, each runs at
  the effective share s * 100 / (x + y) (SMs split in proportion to the caps).
- `measured`: each step slows down by the factor measured for its role on the real
  workers (semipd/measured_contention.py: a contention profile of the machine, per layout:
  overlapping shares x + y > 100, or disjoint): two processes time-sharing CPU cores.
"""
from __future__ import annotations

import math
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
from semipd.controller import SLO, Decision, make_controller
from semipd.measured_contention import read as read_measured
from semipd.window import TtftSample, WindowCollector


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
    contended_s: float | None = None  # proportional model: duration if contended throughout
    use: tuple[float, float] | None = None  # resources model: (compute, bandwidth) fractions


@dataclass
class _Device:
    prefill: Worker
    decode: Worker
    x_pct: float   # the shares in percent as the controller set them (no float round trip)
    y_pct: float
    inflight: dict[str, _InFlight] = field(default_factory=dict)
    pending: dict[str, tuple[float, float]] = field(default_factory=dict)  # worker -> (from_s, share_pct)


class SemiPDEngine(Engine):
    def __init__(self, *args, devices: list[_Device], controller, window_requests: int,
                 percentile: float, switch_delay_s: float, contention: str = "resources",
                 measured=None, **kw) -> None:
        super().__init__(*args, **kw)
        self.contention = contention
        self.measured = measured  # MeasuredContention with contention="measured"
        self.devices = devices
        self.controller = controller
        self.switch_delay_s = switch_delay_s
        self.window = WindowCollector(window_requests, percentile)
        self._busy_s: dict[int, float] = {}  # request id -> summed durations of its steps
        self.num_share_switches = 0          # controller decisions that changed the shares
        self.num_restarts = 0                # decisions that replaced a worker (same share included)
        self.timeline: list[tuple[float, int, float, float]] = []  # (time_s, device, x_pct, y_pct)
        for i, dev in enumerate(devices):
            dev.decode.scheduler.preempt_sink = dev.prefill.scheduler.waiting.appendleft
            self._record_partition(i)

    @property
    def shares_pct(self) -> tuple[float, float]:
        """Every device switches to the same shares; device 0 stands for all between switches."""
        return self.devices[0].x_pct, self.devices[0].y_pct

    # ----- hand-off -----------------------------------------------------------------
    def _on_outcome(self, worker: Worker, outcome: StepOutcome) -> None:
        dev = self.devices[worker.device]
        for req in outcome.handed_off:  # same pool: the block table moves as it is
            dev.decode.scheduler.add_running(req)

    # ----- the controller's window (semipd/window.py) -----------------------------------
    def _end_step(self, worker: Worker, plan: StepPlan, result: StepResult, start_s: float) -> None:
        """Engine._end_step plus the original's sampling: TTFT samples when a prefill step
        ends, TPOT samples for requests finishing on a decode worker, and a re-plan check
        after every decode step (where the original calls `replan`)."""
        now = self.loop.now_s
        latency_s = now - start_s
        busy = self._busy_s
        for seq in plan.seqs:
            busy[seq.request_id] = busy.get(seq.request_id, 0.0) + latency_s
        for req in worker.scheduler.running[:plan.num_lazy_decodes]:  # lazy decodes: the front
            busy[req.id] = busy.get(req.id, 0.0) + latency_s
        outcome = worker.finish_step(plan, result, start_s, now)
        prefill_switching = self._prefill_switching()
        if worker is self.devices[worker.device].prefill:
            for req in outcome.handed_off + outcome.finished:
                if len(req.token_times_s) == 1:  # its first token, not a recompute
                    ttft_s = now - req.arrival_s
                    self.window.add_ttft(TtftSample(ttft_s, latency_s, ttft_s - latency_s, req.arrival_s),
                                         prefill_switching)
        else:
            for req in outcome.finished:
                if req.finish_reason != "abort":  # a client that went away says nothing of TPOT
                    self.window.add_tpot(self._busy_s[req.id] / len(req.token_times_s), prefill_switching)
        for req in outcome.finished:
            self._busy_s.pop(req.id, None)
            self._done(req)
        self._on_outcome(worker, outcome)
        if worker is self.devices[worker.device].decode:
            self._maybe_replan()
        self.kick()

    def _done(self, req: Request) -> None:
        self._busy_s.pop(req.id, None)  # also for a request aborted between steps (Engine.abort)
        super()._done(req)

    def _prefill_switching(self) -> bool:
        return any(dev.prefill.name in dev.pending for dev in self.devices)

    def _maybe_replan(self) -> None:
        stats = self.window.take(switching=any(dev.pending for dev in self.devices))
        if stats is None:
            return
        x, y = self.shares_pct
        decision: Decision = self.controller.decide(stats, x, y)
        self.num_share_switches += decision.shares != (x, y)
        if decision.restart_prefill or decision.restart_decode:
            self.num_restarts += 1
            self._request_switch(decision)

    # ----- share switching --------------------------------------------------------------
    def _request_switch(self, decision: Decision) -> None:
        """Standby workers with the new shares start now and take over at each old
        worker's next iteration boundary after the start-up delay (asynchronous switch)."""
        ready_s = self.loop.now_s + self.switch_delay_s
        for dev in self.devices:
            for worker, pct, restart in ((dev.prefill, decision.x_pct, decision.restart_prefill),
                                         (dev.decode, decision.y_pct, decision.restart_decode)):
                if restart:
                    dev.pending[worker.name] = (ready_s, pct)
                    self._start_standby(dev, worker, pct)
        self.loop.at(ready_s, self.kick)

    def _start_standby(self, dev: _Device, worker: Worker, share_pct: float) -> None:
        """A real worker with standby switching starts its next process now; its switch is
        due only once that process reports ready (engines/torch/procs.py)."""
        begin = getattr(worker.executor, "begin_switch", None)
        source = begin(share_pct) if begin is not None else None
        if source is None:
            return
        dev.pending[worker.name] = (math.inf, share_pct)

        def ready() -> None:
            if worker.executor.standby_is_ready(source) and worker.name in dev.pending:
                dev.pending[worker.name] = (self.loop.now_s, dev.pending[worker.name][1])
                self.kick()
        self.loop.when_ready(source, ready)

    def _apply_pending(self, index: int, dev: _Device, worker: Worker) -> None:
        item = dev.pending.get(worker.name)
        if item is not None and item[0] <= self.loop.now_s and not worker.busy:  # iteration boundary
            del dev.pending[worker.name]
            share_pct = item[1]
            worker.share = share_pct / 100.0
            set_share = getattr(worker.executor, "set_share", None)
            if set_share is not None:  # a real worker: re-bind its cores (engines/torch/procs.py)
                set_share(share_pct)
            old = (dev.x_pct, dev.y_pct)
            if worker is dev.prefill:
                dev.x_pct = share_pct
            else:
                dev.y_pct = share_pct
            if (dev.x_pct, dev.y_pct) != old:
                self._record_partition(index)

    def _record_partition(self, index: int) -> None:
        dev = self.devices[index]
        self.timeline.append((self.loop.now_s, index, dev.x_pct, dev.y_pct))

    def kick(self) -> None:
        for i, dev in enumerate(self.devices):
            for worker in (dev.prefill, dev.decode):
                self._apply_pending(i, dev, worker)
        super().kick()

    # ----- concurrent stepping with contention ------------------------------------------
    def _schedule_step_end(self, worker: Worker, plan: StepPlan, result: StepResult,
                           start_s: float) -> None:
        dev = self.devices[worker.device]
        dev.inflight[worker.name] = _InFlight(worker, plan, result, start_s, last_s=start_s)
        self._retime(dev)

    def _retime(self, dev: _Device) -> None:
        now = self.loop.now_s
        steps = list(dev.inflight.values())
        durations = self._contended_durations(dev, steps)
        for st, duration_s in zip(steps, durations):
            st.done = min(1.0, st.done + (now - st.last_s) * st.rate)
            st.last_s = now
            rate = 1.0 / duration_s
            if rate != st.rate:
                st.rate = rate
                st.version += 1
                version = st.version
                self.loop.at(now + (1.0 - st.done) / rate, lambda st=st, v=version: self._step_end(dev, st, v))

    def _contended_durations(self, dev: _Device, steps: list[_InFlight]) -> list[float]:
        """Each step's whole-step duration at the current contention (see module doc)."""
        solo = [st.result.duration_s for st in steps]
        if len(steps) < 2:
            return solo
        if self.contention == "measured":
            prefill, decode = self.measured.slowdowns(dev.x_pct, dev.y_pct)
            return [d * (prefill if st.worker is dev.prefill else decode) for st, d in zip(steps, solo)]
        if self.contention == "resources" and all(hasattr(st.worker.executor, "resource_demands_s") for st in steps):
            for st in steps:
                if st.use is None:
                    compute_s, memory_s = st.worker.executor.resource_demands_s(st.plan)
                    st.use = (compute_s / st.result.duration_s, memory_s / st.result.duration_s)
            slowdown = resources_slowdown([st.use for st in steps])
            return [d * slowdown for d in solo]
        total_share = dev.prefill.share + dev.decode.share
        if total_share <= 1.0 + 1e-9:
            return solo
        return [self._proportional_s(st, total_share) for st in steps]

    def _proportional_s(self, st: _InFlight, total_share: float) -> float:
        if st.contended_s is None:
            ex = st.worker.executor  # a profiled model charges a step after idle its own factor
            idle = {"idle_before_s": st.start_s - st.worker.last_end_s} if getattr(ex, "reads_idle", False) else {}
            st.contended_s = ex.execute(st.plan, st.worker.share / total_share, **idle).duration_s
        return st.contended_s

    def _step_end(self, dev: _Device, st: _InFlight, version: int) -> None:
        if st.version != version or dev.inflight.get(st.worker.name) is not st:
            return  # superseded by a re-timing
        del dev.inflight[st.worker.name]
        self._retime(dev)  # the other worker now runs alone
        self._end_step(st.worker, st.plan, st.result, st.start_s)


def resources_slowdown(uses: list[tuple[float, float]]) -> float:
    """The `resources` contention model: steps using (compute, bandwidth) fractions of the
    device at their solo speed all slow down by the larger oversubscription, if any."""
    return max(1.0, sum(u[0] for u in uses), sum(u[1] for u in uses))


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
        devices.append(_Device(pre, dec, sp.prefill_share_pct, sp.decode_share_pct))
    return SemiPDEngine(cfg.name, workers=workers, pools=pools, loop=loop,
                        num_gpus=cfg.num_instances * cfg.tp * cfg.pp, max_model_len=max_model_len,
                        num_weight_copies=cfg.num_instances,  # prefill and decode share one copy
                        devices=devices, controller=make_controller(sp, slo),
                        window_requests=sp.window_requests, percentile=sp.percentile,
                        switch_delay_s=sp.switch_delay_s, contention=sp.contention,
                        measured=read_measured(sp.contention_profile) if sp.contention == "measured" else None)
