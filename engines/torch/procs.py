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

import contextlib
import dataclasses
import os
import signal
import time
import traceback
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.multiprocessing as mp

from engines.errors import WorkerError
from engines.plan import ScheduledSeq, StepPlan, StepResult
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
    mps_share_pct: float = 100.0    # device=cuda: CUDA_MPS_ACTIVE_THREAD_PERCENTAGE (unverified: no GPU here)
    mps_pipe_dir: str | None = None  # device=cuda under the run's MPS daemon (semipd/partition.py)
    # OpenMP threads sleep instead of spinning when idle: for workers whose cores may be
    # shared with another worker's (semi-PD on a CPU, x + y > 100), where spinning threads
    # take the cores the other worker computes on.
    omp_passive: bool = False
    warm_up: bool = False           # a standby: run one step on a private scratch pool before "ready"


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
        with contextlib.suppress(ProcessLookupError, PermissionError):  # a thread that just exited
            os.sched_setaffinity(int(tid), wanted)
    torch.set_num_threads(len(wanted))


class ChildProcess:
    """A spawned child process and the driver's end of its pipe. The child's `target`
    gets its end of the pipe first, then `args`; it answers ("error", traceback) when it
    fails and returns on ("stop", None)."""

    def __init__(self, name: str, target, args: tuple, env: dict[str, str] | None = None) -> None:
        self.name = name
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=target, name=name, args=(child, *args), daemon=True)
        with _environment(env or {}):  # the child inherits the environment as it is at start()
            self.process.start()
        child.close()  # the child's end lives only in the child: its death means EOF here

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S):
        """The child's first message (it sends one when ready)."""
        if not self.conn.poll(timeout_s):
            raise WorkerDied(self.name, self.process.exitcode, f"or did not start within {timeout_s:g} s")
        return self.receive("starting")

    def send(self, message, during: str) -> None:
        try:
            self.conn.send(message)
        except (BrokenPipeError, ConnectionResetError, EOFError):
            self.process.join(1.0)
            raise WorkerDied(self.name, self.process.exitcode, during) from None

    def receive(self, during: str):
        try:
            message = self.conn.recv()
        except (EOFError, ConnectionResetError):
            self.process.join(1.0)
            raise WorkerDied(self.name, self.process.exitcode, during) from None
        if message[0] == "error":
            raise WorkerFailed(f"worker process {self.name} failed {during}:\n{message[1]}")
        return message

    def ask_to_stop(self) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):  # already gone
            self.conn.send(("stop", None))

    def close(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop and reap (terminate, then kill, if it does not stop)."""
        if self.process.is_alive():
            self.ask_to_stop()
            self.process.join(timeout_s)
        for stop in (self.process.terminate, self.process.kill):
            if self.process.is_alive():
                stop()
                self.process.join(timeout_s)
        self.conn.close()


class _Proc(ChildProcess):
    """One worker process, on `spec.cores`."""

    def __init__(self, spec: WorkerSpec, model: LlamaModel, kv_cache: KVCache) -> None:
        self.cores = spec.cores
        # On a GPU the share is the MPS percentage, read when the child creates its CUDA context.
        env = mps_env(spec) if spec.mps_pipe_dir else {}
        if spec.omp_passive:
            env["OMP_WAIT_POLICY"] = "PASSIVE"
        super().__init__(spec.name, _worker_main, (spec, model, kv_cache), env)


class ProcessExecutor:
    """Driver-side handle of one worker (engines/plan.py, AsyncExecutor): its active
    process, and during a standby switch the process that will take over.

    Share switches (`switch`):
    - inplace: `set_share` re-binds the live process's threads at the iteration boundary;
    - standby (the semi-PD paper's): `begin_switch` starts a new process on the new cores,
      attached to the same weights and KV, which warms up and reports ready; the engine
      hands over at the next iteration boundary after that (`set_share`), and the old
      process is asked to stop and reaped later, so no step waits for it.
    """

    def __init__(self, spec: WorkerSpec, model: LlamaModel, kv_cache: KVCache,
                 all_cores: Sequence[int], switch: str = "inplace") -> None:
        if switch not in SWITCH_MODES:
            raise ValueError(f"switch must be one of {SWITCH_MODES}, not {switch!r}")
        self.spec, self.name, self.all_cores, self.switch = spec, spec.name, tuple(all_cores), switch
        self._model, self._kv = model, kv_cache
        self.active = _Proc(spec, model, kv_cache)
        self.standby: _Proc | None = None
        self.standby_ready = False
        self._retired: list[_Proc] = []
        self.attention_name: str | None = None
        self.cores = spec.cores
        self.rebind_s: list[float] = []  # in-place switches: time to re-bind, per switch
        self.num_handovers = 0           # standby switches completed

    @property
    def ready_source(self):
        return self.active.conn

    @property
    def process(self):
        return self.active.process

    @property
    def pid(self) -> int | None:
        return self.active.process.pid

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        self.attention_name = self.active.wait_ready(timeout_s)[1]

    def submit(self, plan: StepPlan, share: float = 1.0) -> None:
        self.active.send(("step", plan), "when sent a step")

    def collect(self) -> StepResult:
        message = self.active.receive("during a step")
        if message[2] is not None:
            self.rebind_s.append(message[2])
        return message[1]

    def cores_for(self, share_pct: float) -> tuple[int, ...]:
        from semipd.partition import cpu_cores_for_share
        return tuple(cpu_cores_for_share(share_pct, self.all_cores, self.spec.side))

    def begin_switch(self, share_pct: float):
        """Standby mode: start the process for `share_pct` and return the source that
        becomes readable when it is ready (then call `standby_is_ready`); None when there
        is nothing to start (in-place mode, or the same cores)."""
        cores = self.cores_for(share_pct)
        if self.switch != "standby":
            return None
        if self.standby is not None:  # a newer decision replaces a standby not yet used
            self._retire(self.standby)
            self.standby = None
        if cores == self.cores:
            return None
        spec = dataclasses.replace(self.spec, cores=cores, warm_up=True, mps_share_pct=share_pct)
        self.standby, self.standby_ready = _Proc(spec, self._model, self._kv), False
        return self.standby.conn

    def standby_is_ready(self, source) -> bool:
        """Consume the standby's ready message; False if `source` is a retired standby."""
        if self.standby is None or source is not self.standby.conn:
            return False
        self.standby.receive("starting as a standby")
        self.standby_ready = True
        return True

    def set_share(self, share_pct: float) -> None:
        """At an iteration boundary: run the next steps on the cores of `share_pct`
        (on a GPU: the standby started with that MPS percentage)."""
        cores = self.cores_for(share_pct)
        if self.switch == "standby" and self.standby is not None:
            if not self.standby_ready or self.standby.cores != cores:
                raise RuntimeError(f"{self.name}: hand-over to a standby that is not ready for {share_pct} %")
            self._retire(self.active)
            self.active, self.standby, self.cores = self.standby, None, cores
            self.num_handovers += 1
        elif cores != self.cores:
            self.cores = cores
            self.active.send(("cores", cores), "when re-bound")

    def _retire(self, proc: _Proc) -> None:
        proc.ask_to_stop()
        self._retired.append(proc)
        for p in self._retired:  # reap those that have exited (is_alive polls waitpid);
            p.process.is_alive()  # pipes stay open until close(): the loop may still watch one

    def close(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop and reap every process of this worker (active, standby, retired)."""
        for proc in [self.active, self.standby, *self._retired]:
            if proc is not None:
                proc.close(timeout_s)


SWITCH_MODES = ("inplace", "standby")


def mps_env(spec: WorkerSpec) -> dict[str, str]:
    from semipd.partition import mps_environment
    return mps_environment(spec.mps_share_pct, spec.mps_pipe_dir)


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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
        if spec.warm_up:
            _warm_up(executor, kv_cache)
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


def _warm_up(executor: TorchExecutor, shared: KVCache) -> None:
    """A prefill and a decode step on a private 2-block pool (never the shared one, whose
    blocks belong to live requests): thread pools, allocator and caches are warm before
    the process takes over."""
    scratch = KVCache(shared.data.shape[0], 2, shared.block_size, shared.data.shape[4], shared.data.shape[5],
                      shared.data.dtype, shared.data.device)
    live, executor.kv_cache = executor.kv_cache, scratch
    try:
        n = shared.block_size
        executor.execute(StepPlan("warm-up", (ScheduledSeq(-1, 0, n, True, True, (0,)),), n, 0))
        executor.execute(StepPlan("warm-up", (ScheduledSeq(-1, n, 1, True, False, (0, 1)),), 0, 1))
    finally:
        executor.kv_cache = live
