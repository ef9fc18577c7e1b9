"""Goodput commands (DistServe / semi-PD sense), over simulated or real runs.

    python -m harness.goodput rate --lo 4 --hi 24 engine=semipd slo=llama3_8b_sharegpt_tight
    python -m harness.goodput slo-scale --rate 12 --scales 0.5,0.75,1,1.5,2 engine=unified

`rate`: highest per-GPU rate with SLO attainment >= target (sweep + bisection).
`slo-scale`: attainment at a fixed rate with both SLO targets multiplied by each scale.
Trailing arguments are Hydra overrides of conf/config.yaml.
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
from metrics.goodput import search_goodput


def attainment_at(cfg: RunConfig, rate: float, out_root: Path, slo_scale: float = 1.0) -> float:
    slo = dataclasses.replace(cfg.slo, ttft_s=cfg.slo.ttft_s * slo_scale, tpot_s=cfg.slo.tpot_s * slo_scale)
    cfg = dataclasses.replace(cfg, workload=dataclasses.replace(cfg.workload, rate=rate), slo=slo,
                              plots=False, progress=False)
    summary = run(cfg, out_root / f"rate{rate:.4g}_slo{slo_scale:g}").summary
    return summary["slo_attainment"] or 0.0


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
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.ERROR)
    try:
        cfg = compose(args.overrides)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(args.out or tmp)
            result = _rate(cfg, root, args) if args.mode == "rate" else _slo_scale(cfg, root, args)
    except USER_ERRORS as err:  # a bug keeps its traceback
        raise SystemExit(f"error: {err}") from None
    print(json.dumps(result, indent=2))


def _rate(cfg: RunConfig, root: Path, args) -> dict:
    g = search_goodput(lambda r: attainment_at(cfg, r, root), args.lo, args.hi, target=args.target,
                       num_grid=args.grid, num_bisect=args.bisect)
    for rate, att in g.points:
        print(f"rate {rate:8.3f} req/s/GPU  attainment {att * 100:6.1f} %")
    return {"engine": cfg.engine.name, "model": cfg.model.name, "workload": cfg.workload.name,
            "slo": {"ttft_s": cfg.slo.ttft_s, "tpot_s": cfg.slo.tpot_s}, "target": args.target,
            "goodput_rate_per_gpu": g.rate, "bound": g.bound}


def _slo_scale(cfg: RunConfig, root: Path, args) -> dict:
    scales = [float(s) for s in args.scales.split(",")]
    rows = {s: attainment_at(cfg, args.rate, root, s) for s in scales}
    for s, att in rows.items():
        print(f"SLO x{s:<5g} attainment {att * 100:6.1f} %")
    return {"engine": cfg.engine.name, "rate_per_gpu": args.rate, "attainment_by_slo_scale": rows}


if __name__ == "__main__":
    main()
