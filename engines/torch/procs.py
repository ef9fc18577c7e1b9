"""Worker processes: the real multi-process runtime of every design.

The driver process keeps everything that decides (schedulers, block pools, controller,
clock); a worker process only computes: it receives a StepPlan (token ids, positions via
context lengths, block tables), runs the forward over weights and a KV pool it attached
to, and sends back the sampled tokens. Workers never allocate blocks.

- Processes are started with `spawn` (torch.multiprocessing), never fork: a forked
  child of a process that already ran OpenMP regions can deadlock.
- Weights and KV pools are placed in shared memory by the driver before the workers
  start (`share_model`, KVCache.share_memory); the Process arguments carry them as
  file descriptors (torch's file_descriptor sharing strategy), so workers attach without
  copying and nothing is left in /dev/shm when processes die: the segments are unlinked
  as soon as they are created and live only while a process holds them. On a CPU each
  worker also packs the linear weights for oneDNN (a private copy: packed tensors are
  opaque and cannot be shared) unless executor.pack_weights=false.
- A worker is pinned to cores (`semipd/partition.py`): its intra-op threads are
  set to the number of cores and every thread's affinity to the set. `set_share`
  re-binds a live worker in place at its next iteration boundary (messages are FIFO).
- Faults: a worker that dies shows up as EOF on its pipe (or a broken pipe on send), and
  raises WorkerDied naming it and its exit code; an exception inside a worker comes back
  as WorkerFailed with its traceback. Workers ignore SIGINT: on Ctrl-C the driver
  unwinds and `close()` stops and reaps them.
"""
from __future__ import annotations

import os
import signal
import time
import traceback
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.multiprocessing as mp

from engines.errors import WorkerError
from engines.plan import StepPlan, StepResult
from engines.torch.executor import Sampling, TorchExecutor
from engines.torch.model import LlamaModel
from engines.torch.paged_attention import KVCache

START_TIMEOUT_S = 120.0  # spawn + import torch + attach + build the kernel's cache entry
STOP_TIMEOUT_S = 10.0


class WorkerDied(WorkerError):
    def __init__(self, name: str, exitcode: int | None, during: str) -> None:
        code = "still running" if exitcode is None else (
            f"killed by signal {-exitcode}" if exitcode < 0 else f"exit code {exitcode}")
        super().__init__(f"worker process {name} died ({code}) {during}")
        self.name, self.exitcode = name, exitcode


class WorkerFailed(WorkerError):
    pass


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    cores: tuple[int, ...]          # CPU cores its threads run on (device=cpu)
    side: str                       # where its cores come from: low | high (semipd/partition.py)
    block_size: int
    sampling: Sampling
    attention: str = "auto"         # executor.attention
    device: str = "cpu"
    # Give the linears a private oneDNN-packed copy (model.pack_cpu_weights): faster, but
    # one more copy of the linear weights per worker; the shared weights stay one copy.
    pack_weights: bool = True


def share_model(model: LlamaModel) -> LlamaModel:
    """Move the weights to shared memory, in place. Packed copies cannot be shared
    (oneDNN's are opaque tensors without a storage): workers make their own."""
    if any(module.packed for module, _ in model.linear_weights()):
        raise ValueError("share the model before packing its weights (packed copies are per process)")
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            tensor.share_memory_()
    return model


def bind_cores(cores: Sequence[int]) -> None:
    """Run this process's threads (existing ones too) on `cores`, with that many
    intra-op threads. Linux affinity is per thread, so every task is re-bound."""
    wanted = set(cores)
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), wanted)
        except (ProcessLookupError, PermissionError):
            pass  # a thread that just exited
    torch.set_num_threads(len(wanted))


class ProcessExecutor:
    """Driver-side handle of one worker process (engines/plan.py, AsyncExecutor)."""

    def __init__(self, spec: WorkerSpec, model: LlamaModel, kv_cache: KVCache,
                 all_cores: Sequence[int]) -> None:
        self.spec, self.name, self.all_cores = spec, spec.name, tuple(all_cores)
        ctx = mp.get_context("spawn")
        self.ready_source, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, name=f"worker-{spec.name}",
                                   args=(child, spec, model, kv_cache), daemon=True)
        self.process.start()
        child.close()  # the child's end lives only in the child: its death means EOF here
        self.attention_name: str | None = None
        self.cores = spec.cores
        self.rebind_s: list[float] = []  # in-place share switches: time to re-bind, per switch

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        if not self.ready_source.poll(timeout_s):
            raise WorkerDied(self.name, self.process.exitcode, f"or did not start within {timeout_s:g} s")
        self.attention_name = self._receive("starting")[1]

    def submit(self, plan: StepPlan, share: float = 1.0) -> None:
        self._send(("step", plan), "when sent a step")

    def collect(self) -> StepResult:
        message = self._receive("during a step")
        if message[2] is not None:
            self.rebind_s.append(message[2])
        return message[1]

    def set_share(self, share_pct: float) -> None:
        """Run the next steps on the cores of `share_pct` (in place, at the iteration boundary)."""
        from semipd.partition import cpu_cores_for_share
        cores = tuple(cpu_cores_for_share(share_pct, self.all_cores, self.spec.side))
        if cores != self.cores:
            self.cores = cores
            self._send(("cores", cores), "when re-bound")

    def _send(self, message, during: str) -> None:
        try:
            self.ready_source.send(message)
        except (BrokenPipeError, ConnectionResetError, EOFError):
            self.process.join(1.0)
            raise WorkerDied(self.name, self.process.exitcode, during) from None

    def _receive(self, during: str):
        try:
            message = self.ready_source.recv()
        except (EOFError, ConnectionResetError):
            self.process.join(1.0)
            raise WorkerDied(self.name, self.process.exitcode, during) from None
        if message[0] == "error":
            raise WorkerFailed(f"worker process {self.name} failed {during}:\n{message[1]}")
        return message

    def close(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop the worker and reap it (terminate, then kill, if it does not stop)."""
        if self.process.is_alive():
            try:
                self.ready_source.send(("stop", None))
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass
            self.process.join(timeout_s)
        for stop in (self.process.terminate, self.process.kill):
            if self.process.is_alive():
                stop()
                self.process.join(timeout_s)
        self.ready_source.close()


def _worker_main(conn, spec: WorkerSpec, model: LlamaModel, kv_cache: KVCache) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides when workers stop
    try:
        if spec.device == "cpu":
            bind_cores(spec.cores)
        from engines.torch.runtime import attention_backend
        executor = TorchExecutor(model, num_blocks=kv_cache.num_blocks, block_size=spec.block_size,
                                 device=spec.device, kv_cache=kv_cache, sampling=spec.sampling,
                                 attention=attention_backend(spec.attention, spec.device),
                                 pack_weights=spec.pack_weights)
        conn.send(("ready", executor.attention_name))
        rebind_s = None
        while True:
            kind, payload = conn.recv()
            if kind == "stop":
                return
            if kind == "cores":
                start = time.perf_counter()
                bind_cores(payload)
                rebind_s = time.perf_counter() - start
                continue
            conn.send(("done", executor.execute(payload), rebind_s))
            rebind_s = None
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        return  # the driver is gone or stopping us
    except BaseException:
        try:
            conn.send(("error", traceback.format_exc()))
        except (BrokenPipeError, OSError):
            pass
        raise SystemExit(1)
