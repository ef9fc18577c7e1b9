"""The regression matrix: small fixed runs whose summaries are the committed baselines
(`results/baselines/`), re-run by every CI job and compared with them (`make regress`).

    python benchmarks/regress_matrix.py [--out results/regress/latest] [--suite sim]
    python -m metrics.compare results/regress/latest results/baselines

The real engine is not in this matrix: its timings are gated as an A/B against the baseline
commit measured in the same run (benchmarks/torch_ab.py; `make regress` runs both).

Suite `sim`: unified, unified_chunked, disagg and semipd on Llama-3-8B / A100-80GB, on the
ShareGPT-like and LongBench-like workloads at a light and a loaded per-GPU rate each,
500 requests (enough to fill the semi-PD controller's 400-request window once, so its
share switches are covered), with the paper's tight SLOs for each dataset.

Runs go in-process through `harness.run.run`, with configs composed from `conf/` by
Hydra's compose API: the same composition as `python bench.py <overrides>` (byte-identical
results; each run's command is kept in `matrix.json`), but one interpreter for the whole
matrix (imports and Hydra cost ~1.7 s per `bench.py` process: 16 processes would take ~40 s
instead of ~11 s), fixed run-directory names (a `bench.py -m` sweep's are timestamped, and
it draws a comparison figure), and tests can plant a slowdown by monkeypatching the cost
model in this process.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.config_store import ConfigStore  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from harness.config import RunConfig  # noqa: E402
from harness.run import run  # noqa: E402
from metrics.results import atomic_write_text  # noqa: E402

DEFAULT_OUT = ROOT / "results" / "regress" / "latest"
MARKER = "matrix.json"  # written into the output directory; also marks it as ours to wipe
# Pinned, not left to conf/config.yaml's defaults: a change of defaults must not move the
# baselines, while a change of an engine, model or hardware file must.
SIM_COMMON = ("executor=sim", "model=llama3_8b", "hardware=a100_80g", "workload.seed=0",
              "plots=false", "progress=false")


@dataclass(frozen=True)
class MatrixEntry:
    """One run of the matrix; `overrides` are `bench.py` command-line overrides."""

    engine: str
    workload: str
    rate_per_gpu: float
    slo: str
    num_requests: int = 500
    common: tuple[str, ...] = SIM_COMMON

    @property
    def name(self) -> str:
        return f"{self.engine}_{self.workload}_r{self.rate_per_gpu:g}"

    def overrides(self) -> list[str]:
        return [f"engine={self.engine}", f"workload={self.workload}", f"workload.rate={self.rate_per_gpu}",
                f"slo={self.slo}", f"workload.num_requests={self.num_requests}", *self.common]


SIM_ENGINES = ("unified", "unified_chunked", "disagg", "semipd")
# (workload, SLO, rates): a light load every design meets, and one where they differ
# (queueing, semi-PD's controller moving the decode share; see the baselines).
SIM_WORKLOADS = (("sharegpt", "llama3_8b_sharegpt_tight", (10.0, 20.0)),
                 ("longbench", "llama3_8b_longbench_tight", (0.5, 1.0)))
SIM_MATRIX = tuple(MatrixEntry(e, w, r, slo) for w, slo, rates in SIM_WORKLOADS for r in rates for e in SIM_ENGINES)
SUITES: dict[str, tuple[MatrixEntry, ...]] = {"sim": SIM_MATRIX}


def compose_config(overrides: Sequence[str]) -> tuple[RunConfig, str]:
    """(typed config, resolved YAML) exactly as bench.py would build them."""
    ConfigStore.instance().store(name="run_schema", node=RunConfig)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        dcfg = compose("config", overrides=list(overrides))
    return OmegaConf.to_object(dcfg), OmegaConf.to_yaml(dcfg, resolve=True)


def prepare_out_dir(out: Path) -> None:
    """Start from an empty directory, so no stale run is compared. Only a directory this
    script made (it holds MARKER) or an empty one is wiped."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise SystemExit(f"error: {out} is not empty and was not made by {Path(__file__).name}; "
                             "choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def run_matrix(entries: Sequence[MatrixEntry], out: Path,
               say: Callable[[str], None] = print) -> list[Path]:
    """Run every entry into `out/<entry.name>/`; returns the run directories."""
    prepare_out_dir(out)
    atomic_write_text(out / MARKER, json.dumps(
        [{"name": e.name, **asdict(e), "command": _command(e)} for e in entries], indent=1) + "\n")
    start, dirs = time.perf_counter(), []
    for i, entry in enumerate(entries, 1):
        t0 = time.perf_counter()
        cfg, yaml_text = compose_config(entry.overrides())
        run(cfg, out / entry.name, config_yaml=yaml_text)
        dirs.append(out / entry.name)
        say(f"[{i:2d}/{len(entries)}] {entry.name:<32} {time.perf_counter() - t0:5.2f} s")
    say(f"{len(entries)} runs in {time.perf_counter() - start:.1f} s -> {out}")
    return dirs


def _command(entry: MatrixEntry) -> str:
    return "python bench.py " + " ".join(entry.overrides())


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    ap.add_argument("--suite", choices=sorted(SUITES), action="append",
                    help="suite(s) to run (default: all)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Every run would warn that the ShareGPT/LongBench files are absent: the matrix uses the
    # synthetic fallbacks on purpose (summary.json records `workload_source`).
    logging.getLogger("workloads.sources").setLevel(logging.ERROR)
    suites = args.suite or sorted(SUITES)
    entries = [e for s in suites for e in SUITES[s]]
    run_matrix(entries, args.out)


if __name__ == "__main__":
    main()
