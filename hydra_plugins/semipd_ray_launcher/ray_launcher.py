"""Hydra's Ray launcher (hydra-ray-launcher, the `cluster` extra), made to join an existing
cluster as well as to start a local instance from one config (conf/hydra/launcher/ray.yaml).

The plugin passes `hydra.launcher.ray.init` to `ray.init` after setting a small object
store, which Ray refuses when it joins a running cluster (object store, CPUs and GPUs
belong to the cluster then). This launcher initializes Ray first, with the options that
make sense for the case: with `address` set, only the connection's (address, namespace,
runtime_env, ...); without it, every option given, for the local instance it starts. The
plugin then finds Ray initialized and runs each job as a Ray task. The plugin and Ray are
imported only when a multirun launches (Hydra imports every module here at start-up, with or
without the extra installed).
"""
from __future__ import annotations

from typing import Any, Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

# ray.init options that size a new local instance: Ray raises on them when it joins a cluster.
LOCAL_ONLY = frozenset({"num_cpus", "num_gpus", "resources", "labels", "object_store_memory",
                        "include_dashboard", "dashboard_host", "dashboard_port", "_system_config"})
MISSING_EXTRA = "hydra/launcher=ray needs the cluster extra: pip install -e '.[cluster]' (hydra-ray-launcher, ray)"


def init_kwargs(init: dict[str, Any]) -> dict[str, Any]:
    """The ray.init keyword arguments for `init` (hydra.launcher.ray.init): unset (None)
    options dropped, and the local-instance ones too when an address is given."""
    given = {k: v for k, v in init.items() if v is not None}
    if given.get("address"):
        given = {k: v for k, v in given.items() if k not in LOCAL_ONLY}
    return given


class RayLauncher(Launcher):
    def __init__(self, ray: DictConfig) -> None:
        self.ray_cfg = ray
        self._setup: dict[str, Any] = {}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self._setup = {"hydra_context": hydra_context, "task_function": task_function, "config": config}

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        try:
            import ray
            from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher as PluginRayLauncher
        except ImportError as err:
            raise RuntimeError(f"{MISSING_EXTRA} ({err})") from None
        if not ray.is_initialized():
            ray.init(**init_kwargs(OmegaConf.to_container(self.ray_cfg.init, resolve=True)))
        plugin = PluginRayLauncher(self.ray_cfg)
        plugin.setup(**self._setup)
        return plugin.launch(job_overrides, initial_job_idx)
