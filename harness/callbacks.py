"""Hydra callbacks: after a multirun, draw the comparison figure from its run directories;
during one, a progress bar over its runs (done / total, ETA, failures as they happen)."""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
PROGRESS_FILE = "progress.jsonl"  # in the sweep dir: one line per finished run, from the run's process
POLL_S = 0.5


class CompareOnMultirunEnd(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from metrics.compare_plot import plot_comparison
        out = plot_comparison(Path(config.hydra.sweep.dir))
        if out is not None:
            print(f"comparison figure: {out}")


def sweep_size(config: DictConfig) -> int | None:
    """How many runs the basic sweeper makes of this multirun: the product of the sizes of
    its choice and range sweeps (hydra.sweeper.params, then the command line's, which win);
    None when a sweep cannot be counted up front (glob, interval)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    params = {str(k): str(v) for k, v in (OmegaConf.select(config, "hydra.sweeper.params") or {}).items()}
    for override in OmegaConf.select(config, "hydra.overrides.task") or []:
        key, _, value = str(override).partition("=")
        params[key] = value
    parser, size = OverridesParser.create(), 1
    for key, value in params.items():
        parsed = parser.parse_override(f"{key}={value}")
        if not parsed.is_sweep_override():
            continue
        try:
            size *= len(list(parsed.sweep_iterator()))
        except Exception:  # noqa: BLE001 - glob needs the config loader, interval is not finite
            return None
    return size


class SweepProgress(Callback):
    """Each run appends a line to <sweep dir>/progress.jsonl when it ends (in its own
    process: joblib and Ray launchers run jobs elsewhere); the multirun's process reads that
    file in a thread and shows a tqdm bar (runs done of the sweep size, ETA, failures) on a
    terminal, and writes each failure as a line when it happens, on a terminal or not."""

    def __init__(self) -> None:
        self._start_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # Launchers that run jobs in other processes (joblib, Ray) pickle the callbacks with each
    # job; the watcher thread stays with the multirun's process.
    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    # ----- in each run's process -----
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._start_s = time.perf_counter()

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode != RunMode.MULTIRUN:
            return
        status = getattr(getattr(job_return, "status", None), "name", "UNKNOWN")
        line = json.dumps({"job": hydra_cfg.job.num, "status": status.lower(),
                           "seconds": round(time.perf_counter() - self._start_s, 3),
                           "overrides": list(hydra_cfg.overrides.task)}) + "\n"
        path = Path(hydra_cfg.sweep.dir) / PROGRESS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        # One write of one short line to a file opened for appending: whole, whichever process writes.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    # ----- in the multirun's process -----
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not OmegaConf.select(config, "progress", default=True):
            return
        path = Path(config.hydra.sweep.dir) / PROGRESS_FILE
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, args=(path, sweep_size(config)), daemon=True,
                                        name="sweep-progress")
        self._thread.start()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5.0)
            self._thread = None

    def _watch(self, path: Path, total: int | None) -> None:
        from tqdm import tqdm
        bar = tqdm(total=total, unit="run", desc="sweep", disable=None, file=sys.stderr, dynamic_ncols=True)
        seen = failed = 0
        try:
            while True:
                stopping = self._stop.wait(POLL_S)  # read once more after the stop: the last runs' lines
                # Whole lines only: a run may be writing the last one right now.
                lines = path.read_text().split("\n")[:-1] if path.is_file() else []
                for line in lines[seen:]:
                    rec = json.loads(line)
                    if rec["status"] != "completed":
                        failed += 1
                        tqdm.write(f"sweep: run {rec['job']} {rec['status']} after {rec['seconds']:.1f} s "
                                   f"({' '.join(rec['overrides'])})", file=sys.stderr)
                    bar.update(1)
                seen = len(lines)
                if failed:
                    bar.set_postfix(failed=failed)
                if stopping:
                    return
        finally:
            bar.close()
