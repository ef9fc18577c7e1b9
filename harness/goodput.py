"""Goodput commands (DistServe / semi-PD sense), over simulated or real runs.

    python -m harness.goodput rate --lo 4 --hi 24 engine=semipd slo=llama3_8b_sharegpt_tight
    python -m harness.goodput slo-scale --rate 12 --scales 0.5,0.75,1,1.5,2 engine=unified
    python -m harness.goodput rate --launcher ray [--launcher-override hydra.launcher.ray.init.address=auto] ...

`rate`: highest per-GPU rate with SLO attainment >= target (sweep + bisection).
`slo-scale`: attainment at a fixed rate with both SLO targets multiplied by each scale
(`slo.scale`). Trailing arguments are Hydra overrides of conf/config.yaml. Without
--launcher the runs go one after another in this process; with it, the rate grid, each
bisection and the SLO scales are Hydra multiruns under that launcher (harness/sweep.py):
joblib on this machine's cores, ray on a local Ray instance or a cluster.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import tempfile
from pathlib import Path

from harness.config import RunConfig
from harness.errors import USER_ERRORS
from harness.run import run
from harness.sweep import LAUNCHERS, Launcher, shared_ray_instance, sweep_summaries
from metrics.goodput import Goodput, search_goodput


def attainment_at(cfg: RunConfig, rate: float, out_root: Path, slo_scale: float = 1.0) -> float:
    slo = dataclasses.replace(cfg.slo, scale=slo_scale)
    cfg = dataclasses.replace(cfg, workload=dataclasses.replace(cfg.workload, rate=rate), slo=slo,
                              plots=False, progress=False)
    summary = run(cfg, out_root / f"rate{rate:.4g}_slo{slo_scale:g}").summary
    return summary["slo_attainment"] or 0.0


class Evaluator:
    """SLO attainment of one configuration (Hydra overrides of conf/config.yaml) at given
    rates and SLO scales: run in this process (launcher None), or as multiruns under
    `launcher`, each into its own directory under `out_root`."""

    def __init__(self, overrides: list[str], out_root: Path, launcher: Launcher | None = None) -> None:
        self.overrides, self.out_root, self.launcher = list(overrides), out_root, launcher
        self.cfg = compose(self.overrides)  # bad overrides fail here, before any run
        self._sweeps = 0

    def at_rates(self, rates: list[float], slo_scale: float = 1.0) -> list[float]:
        if self.launcher is None:
            return [attainment_at(self.cfg, r, self.out_root, slo_scale) for r in rates]
        return self._sweep(self.overrides + [f"slo.scale={float(slo_scale)!r}"], "workload.rate", rates)

    def at_slo_scales(self, rate: float, scales: list[float]) -> list[float]:
        if self.launcher is None:
            return [attainment_at(self.cfg, rate, self.out_root, s) for s in scales]
        return self._sweep(self.overrides + [f"workload.rate={float(rate)!r}"], "slo.scale", scales)

    def goodput(self, lo: float, hi: float, *, target: float = 0.9, num_grid: int = 5,
                num_bisect: int = 4) -> Goodput:
        """search_goodput with the grid's rates as one sweep."""
        return search_goodput(lambda r: self.at_rates([r])[0], lo, hi, target=target, num_grid=num_grid,
                              num_bisect=num_bisect, evaluate_many=self.at_rates)

    def _sweep(self, overrides: list[str], key: str, values: list[float]) -> list[float]:
        self._sweeps += 1
        out = self.out_root / f"sweep{self._sweeps}_{key.replace('.', '_')}"
        return [s["slo_attainment"] or 0.0 for s in sweep_summaries(overrides, key, values, out, self.launcher)]


def compose(overrides: list[str]) -> RunConfig:
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf
    ConfigStore.instance().store(name="run_schema", node=RunConfig)
    conf = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return OmegaConf.to_object(hydra_compose("config", overrides=overrides))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["rate", "slo-scale"])
    ap.add_argument("--lo", type=float, default=1.0)
    ap.add_argument("--hi", type=float, default=20.0)
    ap.add_argument("--grid", type=int, default=5)
    ap.add_argument("--bisect", type=int, default=4)
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--rate", type=float, default=10.0, help="slo-scale: the per-GPU rate")
    ap.add_argument("--scales", default="0.5,0.75,1,1.25,1.5,2")
    ap.add_argument("--out", default=None, help="keep the run directories here (default: a temp dir)")
    ap.add_argument("--launcher", default=None, choices=LAUNCHERS,
                    help="run the sweeps as Hydra multiruns under this launcher (default: in this process)")
    ap.add_argument("--jobs", type=int, default=None, help="--launcher joblib or a local ray: parallel runs")
    ap.add_argument("--launcher-override", action="append", default=[],
                    help="a hydra.launcher.* override, e.g. hydra.launcher.ray.init.address=auto (repeatable)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args(argv)
    if args.launcher is None and (args.jobs is not None or args.launcher_override):
        ap.error("--jobs and --launcher-override need --launcher (joblib, ray or basic)")
    logging.basicConfig(level=logging.ERROR)
    try:
        launcher = None if args.launcher is None else Launcher(args.launcher, args.jobs, tuple(args.launcher_override))
        with tempfile.TemporaryDirectory() as tmp, shared_ray_instance(launcher) as used:
            evaluator = Evaluator(args.overrides, Path(args.out or tmp), used)
            result = _rate(evaluator, args) if args.mode == "rate" else _slo_scale(evaluator, args)
    except USER_ERRORS as err:  # a bug keeps its traceback
        raise SystemExit(f"error: {err}") from None
    print(json.dumps(result, indent=2))


def _rate(evaluator: Evaluator, args) -> dict:
    cfg = evaluator.cfg
    g = evaluator.goodput(args.lo, args.hi, target=args.target, num_grid=args.grid, num_bisect=args.bisect)
    for rate, att in g.points:
        print(f"rate {rate:8.3f} req/s/GPU  attainment {att * 100:6.1f} %")
    return {"engine": cfg.engine.name, "model": cfg.model.name, "workload": cfg.workload.name,
            "slo": {"ttft_s": cfg.slo.ttft_target_s, "tpot_s": cfg.slo.tpot_target_s}, "target": args.target,
            "goodput_rate_per_gpu": g.rate, "bound": g.bound}


def _slo_scale(evaluator: Evaluator, args) -> dict:
    cfg = evaluator.cfg
    scales = [float(s) for s in args.scales.split(",")]
    rows = dict(zip(scales, evaluator.at_slo_scales(args.rate, scales)))
    for s, att in rows.items():
        print(f"SLO x{s:<5g} attainment {att * 100:6.1f} %")
    return {"engine": cfg.engine.name, "rate_per_gpu": args.rate, "attainment_by_slo_scale": rows}


if __name__ == "__main__":
    main()
