"""Run every paper experiment (conf/experiment/fig*.yaml) as a Hydra multirun, on both
cores (joblib launcher), then build the figures and REPORT.md.

    python -m paper.suite                 # full scale (make paper)
    python -m paper.suite --scale ci      # reduced: fewer requests, first and last rate
    python -m paper.suite --only fig12    # experiments whose name starts with fig12
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "conf" / "experiment"
CI_REQUESTS = 120


def experiments(only: str | None) -> list[str]:
    names = sorted(p.stem for p in EXPERIMENTS.glob("fig*.yaml"))
    return [n for n in names if only is None or n.startswith(only)]


def ci_overrides(name: str) -> list[str]:
    """Reduced sweep: every system, but only the first and last value of the other swept
    lists (rates, P:D counts), and fewer requests."""
    params = OmegaConf.load(EXPERIMENTS / f"{name}.yaml").hydra.sweeper.params
    out = [f"workload.num_requests={CI_REQUESTS}"]
    for key, values in params.items():
        if key != "engine":
            items = str(values).split(",")
            out.append(f"{key}={','.join(dict.fromkeys([items[0], items[-1]]))}")
    return out


def run_experiment(name: str, out_root: Path, scale: str, jobs: int) -> float:
    cmd = [sys.executable, "bench.py", "-m", f"experiment={name}", f"results_dir={out_root}",
           "hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
    if scale == "ci":
        cmd += ci_overrides(name)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        sys.stderr.write(res.stdout[-3000:] + res.stderr[-5000:])
        raise SystemExit(f"error: experiment {name} failed (exit {res.returncode}); command: {' '.join(cmd)}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=["full", "ci"], default="full")
    ap.add_argument("--out", default="results/paper")
    ap.add_argument("--only", default=None, help="run only experiments whose name starts with this")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep earlier runs in --out")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    if out.exists() and not args.keep and args.only is None:
        shutil.rmtree(out)  # a clean slate: the report reads every run below --out
    names = experiments(args.only)
    t_all = time.perf_counter()
    for i, name in enumerate(names, 1):
        dt = run_experiment(name, out, args.scale, args.jobs)
        print(f"[{i}/{len(names)}] {name}: {dt:.1f} s", flush=True)
    if args.only is None:
        from paper.goodput_study import study
        t0 = time.perf_counter()
        study(args.scale, out)
        print(f"goodput study: {time.perf_counter() - t0:.1f} s", flush=True)
    from paper.report import build
    build(out)
    print(f"paper suite ({args.scale}): {len(names)} experiments in {time.perf_counter() - t_all:.0f} s; "
          f"report: {out / 'REPORT.md'}")


if __name__ == "__main__":
    main()
