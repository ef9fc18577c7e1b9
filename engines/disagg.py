"""Disaggregated serving (DistServe-style xPyD): prefill instances and decode instances,
each with its own weights and KV pool; a finished prefill's KV is transferred P -> D.

The hand-off: a request whose first token is sampled waits in its decode instance's
`pending` queue until that pool has room for its KV (a full decode pool shows up here
as queueing, Fig. 4 of the semi-PD paper); then the decode blocks are taken and the
transfer runs for `kv_bytes / bandwidth + latency` without blocking any worker. The
prefill blocks are freed only when the transfer completes.

When a decode instance runs out of KV it preempts its newest request (DistServe's
decode stage pops the batch's last request). `engine.preemption=recompute` sends it
back to a prefill instance; `swap` (DistServe's default, LLMServe/DistServe
`distserve/decoding_stage_scheduler.py`, `block_manager.py`) copies its KV to host memory
over the host link and keeps its progress. The swap-out delays the step that needed the
room (the allocator waits for the copy); swapped requests come back before new arrivals,
FCFS, taking decode blocks at once and running when the copy back lands.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Protocol

from engines.blocks import BlockPool
from engines.config import EngineConfig
from engines.engine import Engine
from engines.loop import Loop
from engines.plan import Executor, StepPlan, StepResult
from engines.request import Request, Status
from engines.scheduler import Scheduler, StepOutcome
from engines.worker import Worker


@dataclass(frozen=True)
class KVLink:
    name: str
    bandwidth_bytes_s: float  # one direction, per GPU pair (TP shards move in parallel)
    latency_s: float

    def transfer_s(self, num_bytes: float) -> float:
        return num_bytes / self.bandwidth_bytes_s + self.latency_s


@dataclass(frozen=True)
class TransferRecord:
    """One row of `kv_transfers.csv`: a request's KV moving from a prefill to a decode pool."""

    request_id: int
    src_pool: str
    dst_pool: str
    start_s: float
    duration_s: float
    num_bytes: int
    num_tokens: int


OnTransferDone = Callable[[int, float], None]  # (bytes moved, seconds)


class KVTransport(Protocol):
    """Moves a request's KV between pools and calls `on_done` when it has landed. Returns
    the duration if known in advance (a simulated link), else None."""

    def start(self, num_tokens: int, src: BlockPool, src_blocks: list[int], dst: BlockPool,
              dst_blocks: list[int], on_done: OnTransferDone) -> float | None: ...


class SimulatedTransport:
    """The simulator's transport: no data, a duration from the link (bytes / bandwidth +
    latency) on the loop's clock."""

    def __init__(self, loop: Loop, link: KVLink, kv_bytes_per_token_per_gpu: float) -> None:
        self.loop, self.link, self.kv_bytes_per_token_per_gpu = loop, link, kv_bytes_per_token_per_gpu

    def start(self, num_tokens, src, src_blocks, dst, dst_blocks, on_done: OnTransferDone) -> float:
        num_bytes = num_tokens * self.kv_bytes_per_token_per_gpu
        duration_s = self.link.transfer_s(num_bytes)
        self.loop.at(self.loop.now_s + duration_s, lambda: on_done(int(num_bytes), duration_s))
        return duration_s


class DisaggEngine(Engine):
    def __init__(self, *args, link: KVLink, kv_bytes_per_token_per_gpu: float,
                 host_link: KVLink | None = None, transport: KVTransport | None = None, **kw) -> None:
        super().__init__(*args, **kw)
        self.link = link
        # A real run's transport copies the KV (engines/torch/transfer.py); `link` is then
        # only a label.
        self.transport = transport or SimulatedTransport(self.loop, link, kv_bytes_per_token_per_gpu)
        self.transfers: list[TransferRecord] = []
        self.host_link = host_link  # GPU <-> host memory, for swap preemption
        self.kv_bytes_per_token_per_gpu = kv_bytes_per_token_per_gpu
        self.decoders = [w.scheduler for w in self.workers if w.scheduler.role == "decode"]
        self.prefillers = [w.scheduler for w in self.workers if w.scheduler.role == "prefill"]
        self.pending: dict[str, deque[Request]] = {d.name: deque() for d in self.decoders}
        # Handed-off requests still holding prefill KV (pending or in transfer), by id.
        self._held: dict[int, tuple[Request, BlockPool]] = {}
        # Decode blocks taken for a transfer in flight, by request id.
        self._incoming: dict[int, tuple[list[int], BlockPool]] = {}
        self.num_transfers = 0
        self.transfer_s_total = 0.0
        # Swapped-out requests per decode instance (KV in host memory), FCFS.
        self.swapped: dict[str, deque[Request]] = {d.name: deque() for d in self.decoders}
        self.num_swap_outs = self.num_swap_ins = 0  # decode steps that swapped out; requests swapped in
        self.swap_out_s_total = self.swap_in_s_total = 0.0
        for d in self.decoders:
            d.preempt_sink = self._requeue_for_prefill
            if d.config.preemption == "swap":
                if host_link is None:
                    raise ValueError(f"{self.name}: engine.preemption=swap needs a host link to cost the copies")
                d.swap_sink = self.swapped[d.name].append

    def _on_outcome(self, worker: Worker, outcome: StepOutcome) -> None:
        for req in outcome.handed_off:
            self._held[req.id] = (req, worker.scheduler.pool)
            dec = min(self.decoders, key=lambda d: (d.num_requests + len(self.pending[d.name]),
                                                    -d.pool.num_free_blocks))
            self.pending[dec.name].append(req)

    def kick(self) -> None:
        self._start_transfers()  # every event may have freed decode blocks
        super().kick()

    def _schedule_step_end(self, worker: Worker, plan: StepPlan, result: StepResult, start_s: float) -> None:
        """A decode step that swapped requests out waits for the copies to host memory."""
        tokens = worker.scheduler.swapped_out_tokens
        if tokens:
            worker.scheduler.swapped_out_tokens = 0
            swap_s = self.host_link.transfer_s(tokens * self.kv_bytes_per_token_per_gpu)
            self.num_swap_outs += 1
            self.swap_out_s_total += swap_s
            result = StepResult(result.duration_s + swap_s, result.sampled_token_ids)
        super()._schedule_step_end(worker, plan, result, start_s)

    def _swap_in(self, dec: Scheduler) -> bool:
        """Bring swapped requests back (FCFS, before new arrivals); False if the head must wait."""
        queue = self.swapped[dec.name]
        while queue:
            req = queue[0]
            if req.abort_requested:  # its KV is in host memory only: nothing to free here
                queue.popleft()
                self._finish_aborted(req)
                continue
            need = dec.pool.blocks_for_tokens(req.num_computed_tokens + 1)
            if not dec.pool.can_allocate(need):
                return False
            queue.popleft()
            blocks = dec.pool.allocate(need)
            duration_s = self.host_link.transfer_s(req.num_computed_tokens * self.kv_bytes_per_token_per_gpu)
            self._incoming[req.id] = (blocks, dec.pool)
            self.num_swap_ins += 1
            self.swap_in_s_total += duration_s
            self.loop.at(self.loop.now_s + duration_s, lambda r=req, b=blocks: self._swap_in_done(r, dec, b))
        return True

    def _swap_in_done(self, req: Request, dec: Scheduler, blocks: list[int]) -> None:
        del self._incoming[req.id]
        req.block_ids[:] = blocks
        dec.add_running(req)
        if req.abort_requested:
            dec.abort(req, self.loop.now_s)
            self._done(req)
        self.kick()

    def _start_transfers(self) -> None:
        for dec in self.decoders:
            queue = self.pending[dec.name]
            for req in [r for r in queue if r.abort_requested]:  # client gone: free its prefill KV
                queue.remove(req)
                _, src_pool = self._held.pop(req.id)
                src_pool.free(req.block_ids)
                req.block_ids.clear()
                self._finish_aborted(req)
            if not self._swap_in(dec):
                continue  # swapped requests go first, as in DistServe's get_next_batch
            while queue:  # FCFS: the head blocks the rest, as in DistServe's decode admission
                req = queue[0]
                dst_blocks = dec.pool.blocks_for_tokens(req.num_computed_tokens + 1)
                if not dec.pool.can_allocate(dst_blocks):
                    break
                queue.popleft()
                self._transfer(req, dec, dec.pool.allocate(dst_blocks))

    def _transfer(self, req: Request, dec: Scheduler, dst_blocks: list[int]) -> None:
        self._incoming[req.id] = (dst_blocks, dec.pool)
        self.num_transfers += 1
        src_pool, start_s, num_tokens = self._held[req.id][1], self.loop.now_s, req.num_computed_tokens
        known_s: list[float | None] = [None]

        def landed(num_bytes: int, duration_s: float) -> None:
            if known_s[0] is None:
                self.transfer_s_total += duration_s
            self.transfers.append(TransferRecord(req.id, src_pool.name, dec.pool.name, start_s, duration_s,
                                                 num_bytes, num_tokens))
            self._transfer_done(req, dec, dst_blocks)
        known_s[0] = self.transport.start(num_tokens, src_pool, list(req.block_ids), dec.pool, dst_blocks, landed)
        if known_s[0] is not None:  # summed at the start, in start order (bit-identical simulated totals)
            self.transfer_s_total += known_s[0]

    def _transfer_done(self, req: Request, dec: Scheduler, dst_blocks: list[int]) -> None:
        _, src_pool = self._held.pop(req.id)
        del self._incoming[req.id]
        src_pool.free(req.block_ids)  # only now: the prefill side kept the KV until it arrived
        req.block_ids[:] = dst_blocks
        dec.add_running(req)
        if req.abort_requested:  # aborted while its KV was in flight
            dec.abort(req, self.loop.now_s)
            self._done(req)
        self.kick()

    def _finish_aborted(self, req: Request) -> None:
        req.status, req.finish_s, req.finish_reason = Status.FINISHED, self.loop.now_s, "abort"
        self._done(req)

    def _requeue_for_prefill(self, req: Request) -> None:
        """A decode instance ran out of KV and dropped `req` (recompute-style; DistServe
        swaps to CPU instead): it goes to the front of the least busy prefill queue to
        recompute prompt + generated tokens, then transfers again."""
        min(self.prefillers, key=lambda p: p.num_requests).waiting.appendleft(req)

    def live_block_tables(self, pool: BlockPool) -> list[list[int]]:
        tables = super().live_block_tables(pool)
        tables += [req.block_ids for req, p in self._held.values() if p is pool]
        tables += [blocks for blocks, p in self._incoming.values() if p is pool]
        return tables

    def has_swapped(self) -> bool:
        return any(self.swapped.values())

    def transfer_stats(self) -> dict[str, float]:
        return {"num_kv_transfers": self.num_transfers, "kv_transfer_s_total": self.transfer_s_total,
                "kv_link": self.link.name, "kv_link_bandwidth_bytes_s": self.link.bandwidth_bytes_s,
                "num_swap_outs": self.num_swap_outs, "num_swap_ins": self.num_swap_ins,
                "swap_out_s_total": self.swap_out_s_total, "swap_in_s_total": self.swap_in_s_total}


def build_disagg(cfg: EngineConfig, *, loop: Loop, make_executor: Callable[[], Executor],
                 num_kv_blocks: int, max_model_len: int, link: KVLink,
                 kv_bytes_per_token_per_gpu: float, host_link: KVLink | None = None,
                 transport: KVTransport | None = None) -> DisaggEngine:
    """`cfg.num_prefill` prefill and `cfg.num_decode` decode instances, each a TP group of
    `cfg.tp` GPUs with its own weights and a pool of `num_kv_blocks`."""
    workers, pools = [], []
    roles = [("prefill", i) for i in range(cfg.num_prefill)] + [("decode", i) for i in range(cfg.num_decode)]
    for device, (role, i) in enumerate(roles):
        name = f"{role}{i}"
        pool = BlockPool(num_kv_blocks, cfg.block_size_tokens, name=f"kv_{name}")
        sched = Scheduler(cfg.scheduler_config(max_model_len, role=role), pool, role=role, name=name)
        workers.append(Worker(name, sched, make_executor(), device=device))
        pools.append(pool)
    return DisaggEngine(cfg.name, workers=workers, pools=pools, loop=loop,
                        num_gpus=len(roles) * cfg.tp * cfg.pp, max_model_len=max_model_len, num_weight_copies=len(roles),
                        link=link, kv_bytes_per_token_per_gpu=kv_bytes_per_token_per_gpu, host_link=host_link,
                        transport=transport)
