"""Disaggregated serving (DistServe-style xPyD): prefill instances and decode instances,
each with its own weights and KV pool; a finished prefill's KV is transferred P -> D.

The hand-off: a request whose first token is sampled waits in its decode instance's
`pending` queue until that pool has room for its KV (a full decode pool shows up here
as queueing, Fig. 4 of the semi-PD paper); then the decode blocks are taken and the
transfer runs for `kv_bytes / bandwidth + latency` without blocking any worker. The
prefill blocks are freed only when the transfer completes.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable

from engines.blocks import BlockPool
from engines.config import EngineConfig
from engines.engine import Engine
from engines.loop import Loop
from engines.plan import Executor
from engines.request import Request
from engines.scheduler import Scheduler, StepOutcome
from engines.worker import Worker


@dataclass(frozen=True)
class KVLink:
    name: str
    bandwidth_bytes_s: float  # one direction, per GPU pair (TP shards move in parallel)
    latency_s: float

    def transfer_s(self, num_bytes: float) -> float:
        return num_bytes / self.bandwidth_bytes_s + self.latency_s


class DisaggEngine(Engine):
    def __init__(self, *args, link: KVLink, kv_bytes_per_token_per_gpu: float, **kw) -> None:
        super().__init__(*args, **kw)
        self.link = link
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
        for d in self.decoders:
            d.preempt_sink = self._requeue_for_prefill

    def _on_outcome(self, worker: Worker, outcome: StepOutcome) -> None:
        for req in outcome.handed_off:
            self._held[req.id] = (req, worker.scheduler.pool)
            dec = min(self.decoders, key=lambda d: (d.num_requests + len(self.pending[d.name]),
                                                    -d.pool.num_free_blocks))
            self.pending[dec.name].append(req)

    def kick(self) -> None:
        self._start_transfers()  # every event may have freed decode blocks
        super().kick()

    def _start_transfers(self) -> None:
        for dec in self.decoders:
            queue = self.pending[dec.name]
            while queue:  # FCFS: the head blocks the rest, as in DistServe's decode admission
                req = queue[0]
                dst_blocks = dec.pool.blocks_for_tokens(req.num_computed_tokens + 1)
                if not dec.pool.can_allocate(dst_blocks):
                    break
                queue.popleft()
                self._transfer(req, dec, dec.pool.allocate(dst_blocks))

    def _transfer(self, req: Request, dec: Scheduler, dst_blocks: list[int]) -> None:
        duration_s = self.link.transfer_s(req.num_computed_tokens * self.kv_bytes_per_token_per_gpu)
        self._incoming[req.id] = (dst_blocks, dec.pool)
        self.num_transfers += 1
        self.transfer_s_total += duration_s
        self.loop.at(self.loop.now_s + duration_s, lambda: self._transfer_done(req, dec, dst_blocks))

    def _transfer_done(self, req: Request, dec: Scheduler, dst_blocks: list[int]) -> None:
        _, src_pool = self._held.pop(req.id)
        del self._incoming[req.id]
        src_pool.free(req.block_ids)  # only now: the prefill side kept the KV until it arrived
        req.block_ids[:] = dst_blocks
        dec.add_running(req)
        self.kick()

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

    def transfer_stats(self) -> dict[str, float]:
        return {"num_kv_transfers": self.num_transfers, "kv_transfer_s_total": self.transfer_s_total,
                "kv_link": self.link.name, "kv_link_bandwidth_bytes_s": self.link.bandwidth_bytes_s}


def build_disagg(cfg: EngineConfig, *, loop: Loop, make_executor: Callable[[], Executor],
                 num_kv_blocks: int, max_model_len: int, link: KVLink,
                 kv_bytes_per_token_per_gpu: float) -> DisaggEngine:
    """`cfg.num_prefill` prefill and `cfg.num_decode` decode instances, each a TP group of
    `cfg.tp` GPUs with its own weights and a pool of `num_kv_blocks`."""
    workers, pools = [], []
    roles = [("prefill", i) for i in range(cfg.num_prefill)] + [("decode", i) for i in range(cfg.num_decode)]
    for device, (role, i) in enumerate(roles):
        name = f"{role}{i}"
        pool = BlockPool(num_kv_blocks, cfg.block_size_tokens, name=f"kv_{name}")
        sched = Scheduler(cfg.scheduler_config(max_model_len), pool, role=role, name=name)
        workers.append(Worker(name, sched, make_executor(), device=device))
        pools.append(pool)
    return DisaggEngine(cfg.name, workers=workers, pools=pools, loop=loop,
                        num_gpus=len(roles) * cfg.tp * cfg.pp, max_model_len=max_model_len, num_weight_copies=len(roles),
                        link=link, kv_bytes_per_token_per_gpu=kv_bytes_per_token_per_gpu)
