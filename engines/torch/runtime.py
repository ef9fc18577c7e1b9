"""Build a TorchExecutor from the harness's settings (the harness imports this lazily, so
simulated runs never import torch)."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from engines.errors import ConfigError
from engines.torch.checkpoint import load_config, load_model
from engines.torch.config import CheckpointError, LlamaConfig
from engines.torch.executor import Sampling, TorchExecutor, num_blocks_for_budget
from engines.torch.attention_padded import PaddedAttention
from engines.torch.make_model import make_checkpoint
from engines.torch.model import LlamaModel
from engines.torch.paged_attention import KVCache, TorchAttention
from engines.torch.procs import ProcessExecutor, WorkerSpec, share_model
from engines.torch.sizes import CHECKPOINT_SIZES

log = logging.getLogger(__name__)
_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}
DEFAULT_CPU_KV_BYTES = 1 << 30  # 1 GiB: ~500k tokens of tiny_llama KV in bf16


@dataclass(frozen=True)
class TorchSetup:
    checkpoint: Path
    config: LlamaConfig
    num_blocks: int
    dtype: torch.dtype
    device: str


def prepare(model_name: str, checkpoint: str | None, *, device: str, dtype: str,
            block_size: int, kv_cache_bytes: int | None, gpu_memory_utilization: float) -> TorchSetup:
    """Resolve the checkpoint (generating a random-weight one for a named size on first
    use) and size the KV pool from the memory budget."""
    if dtype not in _DTYPES:
        raise ConfigError("executor.dtype", f"one of {', '.join(_DTYPES)}", dtype)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("executor.device", "cpu (torch sees no CUDA device)", device)
    path = Path(checkpoint or f"checkpoints/{model_name}")
    if not path.exists() and model_name in CHECKPOINT_SIZES:
        log.warning("checkpoint %s does not exist: writing a random-weight %s checkpoint there", path, model_name)
        make_checkpoint(path, model_name, seed=0, dtype="bfloat16")
    config = load_config(path)  # CheckpointError (a ValueError) names the file and field
    budget = kv_cache_bytes or _default_kv_bytes(device, gpu_memory_utilization)
    num_blocks = num_blocks_for_budget(config, budget, block_size, _DTYPES[dtype])
    if num_blocks < 1:
        raise ConfigError("executor.kv_cache_bytes", f"large enough for one KV block of {block_size} tokens "
                          f"of {path} in {dtype}", budget)
    return TorchSetup(path, config, num_blocks, _DTYPES[dtype], device)


def _default_kv_bytes(device: str, utilization: float) -> int:
    if not device.startswith("cuda"):
        return DEFAULT_CPU_KV_BYTES
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return int(free * utilization * 0.8)  # leave room for activations (unverified here)


def make_executor(setup: TorchSetup, *, block_size: int, temperature: float, seed: int,
                  num_threads: int | None, attention: str = "auto") -> TorchExecutor:
    backend = attention_backend(attention, setup.device)
    try:
        model = load_model(setup.checkpoint, dtype=setup.dtype, device=setup.device)
    except FileNotFoundError as err:
        raise CheckpointError(f"checkpoint {setup.checkpoint}: {err}") from None
    return TorchExecutor(model, num_blocks=setup.num_blocks, block_size=block_size, device=setup.device,
                         dtype=setup.dtype, sampling=Sampling(temperature, seed), threads=num_threads,
                         attention=backend)


def attention_backend(name: str, device: str):
    """The executor.attention backend; None = the executor's default for the device
    (flashinfer on CUDA where installed, else TorchAttention with the kernel if it builds)."""
    if name == "padded":
        return PaddedAttention(device)
    if name == "auto":
        return None
    try:
        return TorchAttention(device, decode_kernel=name == "kernel")
    except RuntimeError as err:
        raise ConfigError("executor.attention", "auto, torch or padded here", f"{name} ({err})") from None


class ProcessRuntime:
    """The worker processes of one run, and what they share.

    One weight copy and one KV pool per instance (`Worker.device`): semi-PD's prefill and
    decode workers of an instance attach to the same ones; unified and disaggregated
    instances each get their own. An instance runs on its slice of the machine's cores
    (cores split evenly between instances); within it a worker takes the cores of its
    share (semipd/partition.py). Use as a context manager, or call close(): every
    process it started is stopped and reaped, also on errors and Ctrl-C.
    """

    def __init__(self, setup: TorchSetup, *, block_size: int, temperature: float, seed: int,
                 attention: str = "auto", cores: Sequence[int] | None = None, pack_weights: bool = True,
                 share_switch: str = "inplace", mps: bool = False, shares_cores: bool = False) -> None:
        attention_backend(attention, setup.device)  # bad executor.attention fails here, not in a worker
        self.setup, self.block_size, self.attention, self.pack_weights = setup, block_size, attention, pack_weights
        # On a GPU the MPS percentage is fixed per process: only a standby can change it.
        self.share_switch = "standby" if setup.device.startswith("cuda") else share_switch
        self.sampling = Sampling(temperature, seed)
        self.cores = sorted(cores if cores is not None else os.sched_getaffinity(0))
        self.executors: list[ProcessExecutor] = []
        self.instances: dict[int, tuple[LlamaModel, KVCache]] = {}
        self.transport = None  # disaggregation: the KV copy process
        self.notes: list[str] = []  # how the real run differs from the configuration (summary.json)
        # semi-PD on a CPU: the two workers' core sets overlap whenever x + y > 100. Their
        # OpenMP threads then wait passively (procs.WorkerSpec.omp_passive): with spinning
        # threads semi-PD (100, 100) met 2 % of the SLOs at 1 req/s and 55 % at 2 req/s on
        # small_llama (2 cores), with sleeping ones 98 % and 90 % (benchmarks/real_designs.py;
        # benchmarks/results/2026-12-06/real_designs/).
        self.shares_cores = shares_cores and setup.device == "cpu"
        # semi-PD on a GPU: workers share the device's SMs by MPS percentages (unverified here).
        self.mps = None
        if mps and setup.device.startswith("cuda"):
            import tempfile
            from semipd.partition import MpsDaemon
            self._mps_dir = tempfile.TemporaryDirectory(prefix="semipd-mps-")
            self.mps = MpsDaemon(self._mps_dir.name)
            try:
                self.mps.start()
            except (RuntimeError, OSError) as err:
                self._mps_dir.cleanup()
                raise ConfigError("executor.device", "a GPU with CUDA MPS for semi-PD (its workers share the "
                                  f"SMs by MPS percentages): {err}", setup.device) from None

    def instance(self, index: int) -> tuple[LlamaModel, KVCache]:
        """The shared (weights, KV pool) of instance `index`, loaded on first use."""
        if index not in self.instances:
            s = self.setup
            try:
                model = load_model(s.checkpoint, dtype=s.dtype, device=s.device)
            except FileNotFoundError as err:
                raise CheckpointError(f"checkpoint {s.checkpoint}: {err}") from None
            c = model.config
            kv = KVCache(c.num_hidden_layers, s.num_blocks, self.block_size, c.num_key_value_heads,
                         c.head_dim, s.dtype, s.device)
            if s.device == "cpu":  # CUDA tensors are shared through CUDA IPC when pickled
                share_model(model)
                kv.share_memory()
            self.instances[index] = (model, kv)
        return self.instances[index]

    def instance_cores(self, index: int, num_instances: int) -> list[int]:
        if len(self.cores) < num_instances:
            raise ConfigError("engine", f"at most {len(self.cores)} instances (one core each) on this "
                              "machine's cores", f"{num_instances} instances")
        per = len(self.cores) // num_instances
        return self.cores[index * per:(index + 1) * per]

    def start(self, name: str, *, role: str, share_pct: float, instance: int,
              num_instances: int) -> ProcessExecutor:
        """Start a worker process for `name` (not waiting for it: see wait_ready)."""
        from semipd.partition import cpu_cores_for_share, side_of
        own = self.instance_cores(instance, num_instances)
        side = side_of(role)
        spec = WorkerSpec(name, tuple(cpu_cores_for_share(share_pct, own, side)), side, self.block_size,
                          self.sampling, self.attention, self.setup.device, self.pack_weights, share_pct,
                          self.mps.pipe_dir if self.mps else None, self.shares_cores)
        model, kv = self.instance(instance)
        executor = ProcessExecutor(spec, model, kv, own, switch=self.share_switch)
        self.executors.append(executor)
        return executor

    def start_transport(self, loop, pool_instances: dict[str, int]):
        """The P -> D copy process (engines/torch/transfer.py) over the pools named in
        `pool_instances` (pool name -> instance)."""
        from engines.torch.transfer import ProcessTransport
        self.transport = ProcessTransport(loop, {name: self.instance(i)[1] for name, i in pool_instances.items()})
        return self.transport

    def wait_ready(self) -> None:
        for executor in self.executors:
            executor.wait_ready()
        if self.transport is not None:
            self.transport.wait_ready()

    def pss_bytes(self) -> dict[str, int]:
        """Proportional set size of the driver and each worker: shared pages are split
        between the processes that map them, so the sum counts each page once."""
        out = {"driver": _pss_bytes(os.getpid())}
        for ex in self.executors:
            if ex.pid is not None and ex.process.is_alive():
                out[ex.name] = _pss_bytes(ex.pid)
        if self.transport is not None and self.transport.process.is_alive():
            out["kv-transfer"] = _pss_bytes(self.transport.process.pid)
        return out

    def summary(self) -> dict:
        """summary.json keys of a run on worker processes (measured while they live)."""
        pss = self.pss_bytes()
        out = {"runtime": "processes", "num_worker_processes": len(self.executors),
                "worker_cores": {ex.name: list(ex.cores) for ex in self.executors},
                "memory_pss_bytes": pss, "memory_pss_bytes_total": sum(pss.values()),
                "num_model_copies_loaded": len(self.instances),
                "share_switch": self.share_switch, "omp_wait_policy": "passive" if self.shares_cores else "default",
                "share_rebind_s": [t for ex in self.executors for t in ex.rebind_s],
                "num_standby_handovers": sum(ex.num_handovers for ex in self.executors),
                "runtime_notes": self.notes}
        if self.transport is not None:
            out["kv_copy_s_total"] = sum(self.transport.copy_s)
        return out

    def close(self) -> None:
        for executor in self.executors:
            executor.close()
        if self.transport is not None:
            self.transport.close()
        if self.mps is not None:
            self.mps.stop()
            self._mps_dir.cleanup()

    def __enter__(self) -> "ProcessRuntime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _pss_bytes(pid: int) -> int:
    """Pss from /proc/<pid>/smaps_rollup (Linux >= 4.14), in bytes; 0 if unreadable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
