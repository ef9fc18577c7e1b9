"""Wall time of simulated runs: 1000 ShareGPT-like requests at 10 req/s/GPU, Llama-3-8B on
A100-80GB, per engine. Times the whole run (workload, simulation, metrics, result files;
plots off) and the simulation alone, as the median of `--repeats` runs in one process,
and prints each engine's ratio to the unified engine.

    python benchmarks/sim_speed.py [--repeats 5] [--engines unified,semipd,...]
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import harness.run as harness_run  # noqa: E402
from harness.config import RunConfig  # noqa: E402
from hydra.core.config_store import ConfigStore  # noqa: E402

CONF = str(Path(__file__).resolve().parent.parent / "conf")


def load_cfg(engine: str, overrides: list[str]) -> RunConfig:
    ConfigStore.instance().store(name="run_schema", node=RunConfig)
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        dcfg = compose("config", overrides=[f"engine={engine}", "plots=false", "progress=false", *overrides])
    return OmegaConf.to_object(dcfg)


def time_run(cfg: RunConfig) -> tuple[float, float]:
    """(whole run, simulation loop only) in seconds."""
    loop_s = []
    real_loop = harness_run.VirtualLoop

    class TimedLoop(real_loop):
        def run(self, on_event=None):
            t0 = time.perf_counter()
            end = super().run(on_event)
            loop_s.append(time.perf_counter() - t0)
            return end
    harness_run.VirtualLoop = TimedLoop
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            harness_run.run(cfg, Path(tmp))
            total = time.perf_counter() - t0
    finally:
        harness_run.VirtualLoop = real_loop
    return total, loop_s[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--engines", default="unified,unified_chunked,disagg,semipd")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. workload.rate=12")
    args = ap.parse_args()
    logging.getLogger("workloads").setLevel(logging.ERROR)  # the synthetic-fallback notice, once per run
    rows = []
    for engine in args.engines.split(","):
        cfg = load_cfg(engine, args.overrides)
        time_run(cfg)  # warm-up: imports, tokenizer and caches
        runs = [time_run(cfg) for _ in range(args.repeats)]
        rows.append((engine, statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)))
    base = rows[0][1]
    print(f"{'engine':18s} {'run s (median)':>15s} {'sim loop s':>11s} {'ratio to ' + rows[0][0]:>20s}")
    for engine, total, loop in rows:
        print(f"{engine:18s} {total:15.3f} {loop:11.3f} {total / base:20.2f}")


if __name__ == "__main__":
    main()
