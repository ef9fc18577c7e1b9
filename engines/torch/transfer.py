"""Real P -> D KV transfer for disaggregation on one machine: a copy process.

Each disaggregated instance has its own KV pool in shared memory (engines/torch/runtime.py).
A transfer copies a request's blocks from the prefill pool to the decode blocks the driver
allocated, in a process of its own attached to every pool, so neither worker stops for it
and the driver's loop only waits on a pipe (the KVTransport protocol of engines/disagg.py).

Why shared memory rather than torch.distributed (gloo): on one host both would move the
same bytes through memory, but gloo would also serialise them through a socket and need a
rendezvous; a memcpy between pools that already live in shared memory is the CPU
counterpart of the intra-node NVLink/PCIe copy DistServe makes between GPUs. Between
machines a network transport would be needed (not built: every instance runs here).

Transfers run one at a time, in the order started (a single link), and report the bytes
copied (whole blocks, all layers, K and V) and the time from start to landing as the
driver saw it (queueing behind earlier transfers included).
"""
from __future__ import annotations

import signal
import time
import traceback
from collections import deque
from typing import Callable

import torch

from engines.blocks import BlockPool
from engines.torch.paged_attention import KVCache
from engines.torch.procs import START_TIMEOUT_S, STOP_TIMEOUT_S, ChildProcess

NAME = "kv-transfer"


class ProcessTransport:
    def __init__(self, loop, caches: dict[str, KVCache]) -> None:
        """`caches`: the KV cache of every pool, by BlockPool name (shared memory)."""
        self.loop = loop
        self.child = ChildProcess(NAME, _copy_main, (caches,))
        self._pending: deque[tuple[float, Callable[[int, float], None]]] = deque()
        self.copy_s: list[float] = []  # time inside the copy process, per transfer

    @property
    def process(self):
        return self.child.process

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        self.child.wait_ready(timeout_s)

    def start(self, num_tokens: int, src: BlockPool, src_blocks: list[int], dst: BlockPool,
              dst_blocks: list[int], on_done: Callable[[int, float], None]) -> None:
        # The blocks holding the computed tokens; the decode side may have one more (room
        # for the next token), which needs no data.
        n = min(len(src_blocks), len(dst_blocks), src.blocks_for_tokens(num_tokens))
        self.child.send(("copy", src.name, src_blocks[:n], dst.name, dst_blocks[:n]), "when sent a transfer")
        self._pending.append((self.loop.now_s, on_done))
        if len(self._pending) == 1:
            self.loop.when_ready(self.child.conn, self._landed)
        return None

    def _landed(self) -> None:
        message = self.child.receive("during a transfer")
        start_s, on_done = self._pending.popleft()
        if self._pending:
            self.loop.when_ready(self.child.conn, self._landed)
        self.copy_s.append(message[2])
        on_done(message[1], self.loop.now_s - start_s)

    def close(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        self.child.close(timeout_s)


def copy_blocks(src: KVCache, src_blocks: list[int], dst: KVCache, dst_blocks: list[int]) -> int:
    """Copy blocks (every layer, K and V) from `src` to `dst`; returns the bytes copied."""
    if not src_blocks:
        return 0
    s = torch.tensor(src_blocks, dtype=torch.long)
    d = torch.tensor(dst_blocks, dtype=torch.long)
    moved = src.data.index_select(2, s)
    dst.data.index_copy_(2, d, moved)
    return moved.numel() * moved.element_size()


def _copy_main(conn, caches: dict[str, KVCache]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)  # a memcpy: one thread leaves the cores to the workers
    try:
        conn.send(("ready",))
        while True:
            message = conn.recv()
            if message[0] == "stop":
                return
            _, src, src_blocks, dst, dst_blocks = message
            start = time.perf_counter()
            num_bytes = copy_blocks(caches[src], src_blocks, caches[dst], dst_blocks)
            conn.send(("done", num_bytes, time.perf_counter() - start))
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        return
    except BaseException:
        try:
            conn.send(("error", traceback.format_exc()))
        except (BrokenPipeError, OSError):
            pass
        raise SystemExit(1)
