"""Simulate a configuration once per study: runs that differ only in what the simulation
never reads share one simulation (`sim_cache_dir`, set by paper.suite).

A simulated run is a deterministic function of its configuration, the code and the input
files. Its tag, results_dir, plots and progress settings do not enter it, and neither does
its SLO unless a semi-PD SLO-aware controller reads it (harness.build.sim_reads_slo): the
SLO is otherwise applied to the finished requests only. In the paper suite 42 % of the runs
were such repeats (Fig. 12's 8B and 70B panels are Fig. 15's tight ones; Fig. 15's loose
and tight panels differ only in the SLO).

The first run of a key writes its run directory as always, then `<sim_cache_dir>/<key>.pkl`:
its directory, its summary and its per-request metrics (token gaps left out). A later run of
the key copies the first one's result files, recomputes the SLO part of the summary from
those metrics with its own SLO, and sets its own tag and versions; every file is then what
simulating it would have written (tests/test_sim_cache.py compares them byte for byte).

The key hashes the configuration (minus the fields above), the source of the packages a
simulation runs, and the size and modification time of its input files, so an edit or a
new dataset never reuses a stale result.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

from harness.build import sim_reads_slo
from harness.config import RunConfig, hardware_of
from metrics.definitions import RequestMetrics
from metrics.results import atomic_write_bytes

ROOT = Path(__file__).resolve().parent.parent
# Packages whose code a simulated run executes (bench.py and conf/ enter through the config).
_CODE = ("engines", "harness", "metrics", "semipd", "sim", "workloads")
_NOT_SIMULATED = {"tag": "", "results_dir": "", "plots": False, "progress": False, "sim_cache_dir": None}
# Written afresh by every run (config.yaml, summary.json) or by its plotting.
_OWN_FILES = {"config.yaml", "summary.json", "latency.png", "timeline.png"}


@dataclasses.dataclass(frozen=True)
class Entry:
    run_dir: Path
    summary: dict[str, Any]
    metrics: RequestMetrics  # itl_s emptied: the SLO section does not read it


def key(cfg: RunConfig) -> str:
    same = dataclasses.replace(cfg, **_NOT_SIMULATED)
    if not sim_reads_slo(cfg):
        same = dataclasses.replace(same, slo=dataclasses.replace(cfg.slo, name="", ttft_s=1.0, tpot_s=1.0, scale=1.0))
    h = hashlib.sha256(_code_digest().encode())
    h.update(repr(same).encode())
    for path in (cfg.workload.path, cfg.executor.profile):
        h.update(repr(_inputs_stat(path)).encode())
    # The model and GPU as read from their files (a config.json edited in place is another model).
    h.update(repr((cfg.model.spec(), hardware_of(cfg.hardware).spec)).encode())
    return h.hexdigest()[:32]


def lookup(cache_dir: str | os.PathLike, k: str) -> Entry | None:
    """The entry of key `k` if its run directory is still complete, else None."""
    path = Path(cache_dir) / f"{k}.pkl"
    try:
        entry = pickle.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    return entry if (entry.run_dir / "summary.json").is_file() else None


def store(cache_dir: str | os.PathLike, k: str, run_dir: Path, summary: dict[str, Any],
          metrics: RequestMetrics) -> None:
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    light = dataclasses.replace(metrics, itl_s=metrics.itl_s[:0])
    entry = Entry(Path(run_dir).resolve(), summary, light)
    atomic_write_bytes(Path(cache_dir) / f"{k}.pkl", pickle.dumps(entry, protocol=pickle.HIGHEST_PROTOCOL))


def copy_results(entry: Entry, run_dir: Path) -> None:
    """The first run's result files (CSVs) into `run_dir`; not its config, summary or plots."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if run_dir.resolve() == entry.run_dir:
        return
    for src in entry.run_dir.iterdir():
        if src.is_file() and src.suffix == ".csv" and src.name not in _OWN_FILES:
            shutil.copyfile(src, run_dir / src.name)


@functools.cache
def _code_digest() -> str:
    h = hashlib.sha256()
    for pkg in _CODE:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            h.update(str(path.relative_to(ROOT)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def _inputs_stat(path: str | None) -> list[tuple[str, int, int]]:
    """(name, size, mtime) of an input file, or of every file under an input directory."""
    if not path:
        return []
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p] if p.exists() else []
    return [(str(f), (st := f.stat()).st_size, st.st_mtime_ns) for f in files]
