"""Runs of one configuration at several values of one setting, as a Hydra multirun of
bench.py under a chosen launcher: the goodput search's rate grid and bisections and the
SLO-scale sweep (harness/goodput.py, paper/goodput_study.py) go where any other sweep goes,
both cores with joblib, a Ray cluster with `ray` (conf/hydra/launcher/ray.yaml).

Each multirun writes its jobs to <out>/<job number>/ and the job's summary.json is read
back; a failed multirun raises SweepError with the command and the end of its output.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from engines.errors import ConfigError, UserError

ROOT = Path(__file__).resolve().parent.parent
LAUNCHERS = ("joblib", "ray", "basic")
_TAIL_CHARS = 4000
# A study's multiruns skip the comparison figure of each multirun (harness/callbacks.py): the
# study draws its own, and importing the plotting stack costs ~1.2 s per multirun here.
NO_COMPARE = "~hydra.callbacks.compare"


class SweepError(UserError):
    """A multirun of the sweep failed (a bad override, a failed run)."""


@dataclasses.dataclass(frozen=True)
class Launcher:
    """A Hydra launcher for the sweeps: `joblib` (processes on this machine), `ray` (a local
    Ray instance, or a cluster given by an `hydra.launcher.ray.init.address=...` override)
    or `basic` (one run after another). `jobs`: parallel runs on this machine (joblib's
    n_jobs, a local Ray instance's CPUs); None: the launcher's default. `overrides`: more
    hydra.launcher.* overrides, passed as they are."""

    name: str = "joblib"
    jobs: int | None = None
    overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.name not in LAUNCHERS:
            raise ConfigError("--launcher", f"one of {list(LAUNCHERS)}", self.name)
        if self.jobs is not None and self.jobs < 1:
            raise ConfigError("--jobs", "a positive number of parallel runs", self.jobs)

    @property
    def joins_cluster(self) -> bool:
        return any(o.startswith("hydra.launcher.ray.init.address=") for o in self.overrides)

    def hydra_overrides(self) -> list[str]:
        out = [f"hydra/launcher={self.name}"]
        if self.jobs is not None and self.name == "joblib":
            out.append(f"hydra.launcher.n_jobs={self.jobs}")
        elif self.jobs is not None and self.name == "ray" and not self.joins_cluster:
            out.append(f"hydra.launcher.ray.init.num_cpus={self.jobs}")  # a cluster has its own CPUs
        return out + list(self.overrides)


@contextlib.contextmanager
def shared_ray_instance(launcher: Launcher | None):
    """For a study of many multiruns on a local Ray instance: start one instance here, with
    conf/hydra/launcher/ray.yaml's options (and `jobs` CPUs), for all of them, each multirun
    joining it instead of starting its own (Ray's start-up takes seconds); stop it at the end,
    on failure and Ctrl-C too. Yields the launcher to use. Other launchers, and ray with an
    address (a cluster), and None (no launcher) pass through unchanged."""
    if launcher is None or launcher.name != "ray" or launcher.joins_cluster:
        yield launcher
        return
    from omegaconf import OmegaConf

    from hydra_plugins.semipd_ray_launcher.ray_launcher import MISSING_EXTRA, init_kwargs
    try:
        import ray
    except ImportError as err:
        raise ConfigError("--launcher", MISSING_EXTRA, f"ray ({err})") from None
    options = init_kwargs(OmegaConf.to_container(OmegaConf.load(ROOT / "conf/hydra/launcher/ray.yaml").ray.init))
    if launcher.jobs is not None:
        options["num_cpus"] = launcher.jobs
    context = ray.init(**options)
    try:
        address = f"hydra.launcher.ray.init.address={context.address_info['gcs_address']}"
        yield dataclasses.replace(launcher, jobs=None, overrides=launcher.overrides + (address,))
    finally:
        ray.shutdown()


def multirun(args: list[str], what: str) -> None:
    """Run `bench.py -m <args>` from the project root; SweepError naming `what`, the
    command and the end of its output if it fails."""
    cmd = [sys.executable, str(ROOT / "bench.py"), "-m", *args]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        raise SweepError(f"{what} failed (exit {res.returncode}); command: {' '.join(cmd)}\n"
                         f"{(res.stdout + res.stderr)[-_TAIL_CHARS:]}")


def sweep_summaries(overrides: list[str], key: str, values: list[float], out: Path,
                    launcher: Launcher) -> list[dict]:
    """bench.py's summary.json of each run of `overrides` with `key` set to each of
    `values` (in order), run as one multirun under `launcher`, into out/<i>/."""
    if not values:
        return []
    if len(set(values)) != len(values):
        raise ValueError(f"sweep of {key}: repeated values {values}")
    multirun([*overrides, f"{key}={','.join(repr(float(v)) for v in values)}", f"hydra.sweep.dir={out.resolve()}",
              "hydra.sweep.subdir=${hydra.job.num}", "plots=false", "progress=false", NO_COMPARE,
              *launcher.hydra_overrides()], f"the sweep of {key} over {values}")
    return [json.loads((out / str(i) / "summary.json").read_text()) for i in range(len(values))]
