"""Compose a sweep's job configs once per set of config-group choices.

Hydra's launchers compose every job's config from scratch (`ConfigLoader.load_sweep_config`:
the defaults list, every config file merged, then the overrides), ~0.11 s per job here,
which is most of what a job costs when the simulation itself is short or reused (cProfile
of 25 Fig. 15 jobs whose simulations were reused: 60 % composing). Jobs of one sweep that
choose the same config groups (`engine=...`) differ only in plain values (`workload.rate=...`),
which Hydra applies after composing, in order, and which cannot change the defaults list
(Hydra interpolates defaults from group choices only). So the first such job is composed by
Hydra and kept; each later one is a copy with its own values applied the way Hydra applies
them, and the override records (`hydra.overrides.task`, `hydra.job.override_dirname`) that
Hydra derives from them. Any other override (a group, `+`/`~`, a package, `hydra.*`) is part
of the key, so such jobs are composed afresh. tests/test_covering_sweeper.py compares every
job of five experiments' sweeps (and a few odd ones) with Hydra's own composition.
"""
from __future__ import annotations

import pickle
import uuid
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf, open_dict


# Compositions kept in this process, for the sweep of one loader (its token) only. A joblib
# worker unpickles a fresh loader for each job, so they cannot live on the loader.
_templates: dict[tuple, bytes] = {}  # pickled: loading one is ~1 ms, a deepcopy ~7 ms
_templates_token: list[str] = [""]


class MemoSweepConfigLoader:
    """A ConfigLoader (everything delegated to `inner`) whose `load_sweep_config` reuses the
    composition of an earlier job of the same sweep with the same group choices."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._token = uuid.uuid4().hex  # one sweep: no composition outlives it

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # unpickling looks up hooks before _inner exists
            raise AttributeError(name)
        return getattr(self._inner, name)

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        # unresolved, as Hydra reads them: `hydra.sweep.subdir=${hydra.job.num}` has no job yet
        hydra_overrides = OmegaConf.to_container(master_config.hydra.overrides.hydra)
        parsed = OverridesParser.create().parse_overrides(hydra_overrides + list(sweep_overrides))
        values, others = [], []
        for o in parsed:
            (values if self._plain_value(o) else others).append(o)
        key = (master_config.hydra.job.config_name, tuple(o.input_line for o in others),
               tuple(o.key_or_group for o in values))
        if _templates_token[0] != self._token:
            _templates.clear()
            _templates_token[0] = self._token
        template = _templates.get(key)
        if template is None:
            cfg = self._inner.load_sweep_config(master_config, sweep_overrides)
            _templates[key] = pickle.dumps(cfg, protocol=pickle.HIGHEST_PROTOCOL)
            return cfg
        cfg = pickle.loads(template)
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        app = [o for o in parsed if not o.is_hydra_override()]
        job = cfg.hydra.job.config.override_dirname
        with open_dict(cfg.hydra):
            cfg.hydra.overrides.task = [o.input_line for o in app]
            cfg.hydra.job.override_dirname = get_overrides_dirname(
                overrides=app, kv_sep=job.kv_sep, item_sep=job.item_sep, exclude_keys=job.exclude_keys)
        OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
        return cfg

    def _plain_value(self, o: Override) -> bool:
        """`key=value` setting an existing value: not a group choice, not +/~/@, not hydra.*"""
        return (o.is_hydra_override() is False and not o.is_add() and not o.is_delete()
                and not o.is_force_add() and o.package is None and not o.is_sweep_override()
                and not self._inner.repository.group_exists(o.key_or_group))
