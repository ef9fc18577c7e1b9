"""Compute shares on real hardware: what a worker's share (x or y, in percent, as the
controller sets it) becomes on a CPU and on a GPU.

- CPU: a number of cores, the worker's intra-op threads pinned to them (affinity).
  round(share x cores), at least 1. The prefill worker takes cores from the low end of
  the machine's core list, the decode worker from the high end, so x + y <= 100 gives
  disjoint sets and x + y > 100 overlapping ones (both run on the shared cores, as MPS
  lets shares sum past 100). The granularity is one core: on a 2-core machine every
  share maps to 1 or 2 cores, so (30, 70), (50, 50) and (40, 60) all run as 1 + 1.
- GPU (unverified here: no GPU): the worker process starts under an MPS daemon with
  CUDA_MPS_ACTIVE_THREAD_PERCENTAGE = its share, as the semi-PD paper's workers do
  (arXiv 2504.19867, Sec. 5). The percentage is fixed when the process creates its CUDA
  context, so a new share needs a new (standby) process.
"""
from __future__ import annotations

from typing import Literal, Sequence

Side = Literal["low", "high"]


def num_cores_for_share(share_pct: float, num_cores: int) -> int:
    if not 0 < share_pct <= 100:
        raise ValueError(f"a compute share is in (0, 100] percent, not {share_pct}")
    if num_cores < 1:
        raise ValueError(f"need at least one core, not {num_cores}")
    return min(num_cores, max(1, round(share_pct / 100 * num_cores)))


def cpu_cores_for_share(share_pct: float, cores: Sequence[int], side: Side) -> list[int]:
    """The cores a worker with `share_pct` runs on: the first (side=low) or last (high)
    num_cores_for_share of `cores` (sorted)."""
    ordered = sorted(cores)
    n = num_cores_for_share(share_pct, len(ordered))
    return ordered[:n] if side == "low" else ordered[-n:]


def side_of(role: str) -> Side:
    """Prefill takes cores from the low end, decode (and a unified worker) from the high end."""
    return "low" if role == "prefill" else "high"


def mps_environment(share_pct: float, pipe_dir: str | None = None) -> dict[str, str]:
    """Environment of a GPU worker capped to `share_pct` of the SMs by CUDA MPS.
    `pipe_dir` is the MPS daemon's pipe directory if not the default (/tmp/nvidia-mps)."""
    num_cores_for_share(share_pct, 1)  # validates the range
    env = {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": f"{share_pct:g}"}
    if pipe_dir:
        env["CUDA_MPS_PIPE_DIRECTORY"] = pipe_dir
    return env


def mps_daemon_commands(pipe_dir: str, log_dir: str) -> tuple[list[str], list[str]]:
    """(start, stop) commands of the MPS control daemon (`nvidia-cuda-mps-control -d`;
    stopped by writing `quit` to its stdin), with the pipe and log directories in the
    environment: CUDA_MPS_PIPE_DIRECTORY and CUDA_MPS_LOG_DIRECTORY."""
    env = ["env", f"CUDA_MPS_PIPE_DIRECTORY={pipe_dir}", f"CUDA_MPS_LOG_DIRECTORY={log_dir}"]
    return env + ["nvidia-cuda-mps-control", "-d"], env + ["sh", "-c", "echo quit | nvidia-cuda-mps-control"]


class MpsDaemon:
    """The CUDA MPS control daemon of one real semi-PD run on a GPU (unverified here: no
    GPU). `start()` runs `nvidia-cuda-mps-control -d` with the run's own pipe and log
    directories under `root`; workers get `environment(share_pct)`; `stop()` sends `quit`.
    `run` is subprocess.run (injectable for tests)."""

    def __init__(self, root: str, run=None) -> None:
        import os
        import subprocess
        self.pipe_dir, self.log_dir = os.path.join(root, "pipe"), os.path.join(root, "log")
        self._run, self._real = run or subprocess.run, run is None
        self.started = False

    def start(self) -> None:
        import os
        import shutil
        if self._real and shutil.which("nvidia-cuda-mps-control") is None:
            raise RuntimeError("semi-PD on a GPU needs CUDA MPS: nvidia-cuda-mps-control is not on PATH")
        os.makedirs(self.pipe_dir, exist_ok=True)
        os.makedirs(self.log_dir, exist_ok=True)
        start, _ = mps_daemon_commands(self.pipe_dir, self.log_dir)
        self._run(start, check=True, timeout=30)
        self.started = True

    def environment(self, share_pct: float) -> dict[str, str]:
        return mps_environment(share_pct, self.pipe_dir)

    def stop(self) -> None:
        if self.started:
            _, stop = mps_daemon_commands(self.pipe_dir, self.log_dir)
            self._run(stop, check=False, timeout=30)
            self.started = False
