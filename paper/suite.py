"""Run every paper experiment (conf/experiment/fig*.yaml) as a Hydra multirun, on both
cores (two multiruns at a time, basic launcher) or on Ray; then, for the rate-sweep figures,
the rates where our systems cross their SLOs (paper/crossing.py; on Ray under it, here two
experiments at a time), the host-overhead diagnostic (paper/overhead.py) and the goodput
study; then the figures and REPORT.md.

    python -m paper.suite                 # full scale (make paper)
    python -m paper.suite --scale ci      # reduced: fewer requests, first and last rate
    python -m paper.suite --only fig12    # experiments whose name starts with fig12
    python -m paper.suite --launcher ray [--launcher-override hydra.launcher.ray.init.address=auto]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from omegaconf import OmegaConf

from harness.callbacks import sweep_size
from harness.errors import USER_ERRORS
from harness.sweep import LAUNCHERS, NO_COMPARE, Launcher, multirun, shared_ray_instance
from harness.versions import versions
from metrics.results import atomic_write_text
from paper import crossing, overhead
from paper.progress import PhaseProgress

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "conf" / "experiment"
CI_REQUESTS = 120
OVERHEAD_BISECTIONS = {"full": 4, "ci": 1}
SIM_CACHE = ".sim_cache"  # under --out, removed when the suite ends


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


def sim_cache(out: Path) -> list[str]:
    """Every run of the suite shares one simulation cache (harness/sim_cache.py): Fig. 12's
    8B and 70B panels are Fig. 15's tight ones, and Fig. 15's loose and tight panels differ
    only in the SLO, which only the semi-PD controller reads (42 % of the suite's runs)."""
    return [f"sim_cache_dir={out / SIM_CACHE}"]


def run_experiment(name: str, out_root: Path, scale: str, launcher: Launcher) -> float:
    args = [f"experiment={name}", f"results_dir={out_root}", NO_COMPARE, *launcher.hydra_overrides(),
            *sim_cache(out_root)]  # paper.report draws every figure
    t0 = time.perf_counter()
    multirun(args + (ci_overrides(name) if scale == "ci" else []), f"experiment {name}")
    return time.perf_counter() - t0


def sweep_runs(name: str, scale: str) -> int | None:
    """How many runs the experiment's multirun makes at this scale."""
    params = OmegaConf.load(EXPERIMENTS / f"{name}.yaml").hydra.sweeper.params
    task = ci_overrides(name) if scale == "ci" else []
    return sweep_size(OmegaConf.create({"hydra": {"sweeper": {"params": params}, "overrides": {"task": task}}}))


def run_experiments(names: list[str], out: Path, scale: str, launcher: Launcher) -> None:
    """Each experiment a multirun. Under `basic` (the default), `jobs` experiments at once,
    each multirun's runs one after another in its own process; under joblib or Ray, one
    experiment after another, its runs spread over joblib's workers or Ray's. Here `basic`
    is faster: joblib's workers start afresh for every multirun, and a multirun's start-up
    and end leave a core idle (full scale, 2 cores: 154 s for `make paper` against 196 s)."""
    sizes = [sweep_runs(name, scale) for name in names]
    total = None if None in sizes else sum(sizes)
    with PhaseProgress("paper runs", total, "run", len(names), [out / name for name in names]) as progress:
        def one(name: str) -> None:
            progress.finished(f"{name}: {run_experiment(name, out, scale, launcher):.1f} s")

        each(names, one, local_jobs(launcher) if launcher.name == "basic" else 1)


def local_jobs(launcher: Launcher) -> int:
    return launcher.jobs or os.cpu_count() or 1


def each(names: list[str], fn, workers: int) -> list:
    """fn(name) for every name, `workers` at a time (1: one after another, in order)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, names))


def run_all(names: list[str], out: Path, scale: str, launcher: Launcher, goodput: bool) -> None:
    run_experiments(names, out, scale, launcher)
    extra = ([f"workload.num_requests={CI_REQUESTS}"] if scale == "ci" else []) + sim_cache(out)
    swept = [n for n in names if n.startswith(crossing.CROSSING_FIGURES)]
    if scale == "ci":  # one panel per figure: each probe or grid is a multirun's start-up
        swept = [n for n in swept if n in {e for e, _ in overhead.PANELS.values()}]
    found = find_crossings(swept, out, launcher, extra)
    if found:
        crossing.write(found, out)
    if goodput:
        t0 = time.perf_counter()
        findings = [overhead.diagnose(fig, EXPERIMENTS, out, extra, OVERHEAD_BISECTIONS[scale])
                    for fig in overhead.PANELS]
        overhead.write(findings, out)
        print(f"host-overhead diagnostic: {time.perf_counter() - t0:.1f} s", flush=True)
        from paper.goodput_study import study
        t0 = time.perf_counter()
        # On this machine (joblib, basic) the study runs in this process: a multirun per
        # sequential bisection costs more start-up than the parallel grid saves (full scale,
        # 2 cores: 147.5 s under joblib with 2 jobs vs 79.3 s in process, the same goodput.json).
        # Ray may be a cluster: there the study's runs go too.
        study(scale, out, launcher if launcher.name == "ray" else None, sim_cache(out))
        print(f"goodput study: {time.perf_counter() - t0:.1f} s", flush=True)


def find_crossings(names: list[str], out: Path, launcher: Launcher, extra: list[str]) -> list[crossing.Crossing]:
    """paper/crossing.py for each experiment. On Ray, one after another, each probe and grid
    a multirun whose runs Ray spreads. On this machine, `jobs` experiments at once, each
    multirun under the basic launcher (its runs in one process): a crossing multirun has
    1-5 runs per system, too few to pay joblib's worker start-up (README, "Paper reproduction")."""
    def one(name: str) -> crossing.Crossing:
        t0 = time.perf_counter()
        c = crossing.find_crossing(name, EXPERIMENTS, out, inner, extra)
        what = (f"our crossing range {c.lo:.4g}-{c.hi:.4g}, probes {c.probes}" if c.needed
                else "every system crosses inside the paper's range")
        progress.finished(f"crossing {name}: {what}; {time.perf_counter() - t0:.1f} s")
        return c

    inner = launcher if launcher.name == "ray" else Launcher("basic")
    with PhaseProgress("crossing searches", len(names), "search", len(names)) as progress:
        return each(names, one, 1 if launcher.name == "ray" else local_jobs(launcher))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=["full", "ci"], default="full")
    ap.add_argument("--out", default="results/paper")
    ap.add_argument("--only", default=None, help="run only experiments whose name starts with this")
    ap.add_argument("--jobs", type=int, default=2,
                    help="parallel multiruns (basic) or runs (joblib, a local ray) on this machine")
    ap.add_argument("--launcher", default="basic", choices=LAUNCHERS,
                    help="basic: --jobs experiments at once on this machine; joblib: one at a time, its runs "
                         "on --jobs workers; ray: on a local Ray instance or a cluster")
    ap.add_argument("--launcher-override", action="append", default=[],
                    help="a hydra.launcher.* override, e.g. hydra.launcher.ray.init.address=auto (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep earlier runs in --out")
    args = ap.parse_args(argv)
    try:
        launcher = Launcher(args.launcher, args.jobs, tuple(args.launcher_override))
    except USER_ERRORS as err:
        raise SystemExit(f"error: {err}") from None
    out = Path(args.out).resolve()
    # Before the clean slate below deletes a committed report: its files must not make the
    # tree look modified.
    provenance = {"command": " ".join(["python -m paper.suite", *(argv if argv is not None else sys.argv[1:])]),
                  "commit": versions()["git_commit"], "scale": args.scale, "launcher": args.launcher}
    if out.exists() and not args.keep and args.only is None:
        shutil.rmtree(out)  # a clean slate: the report reads every run below --out
    names = experiments(args.only)
    t_all = time.perf_counter()
    try:
        with shared_ray_instance(launcher) as used:  # a local Ray instance: one for every multirun
            run_all(names, out, args.scale, used, goodput=args.only is None)
    except USER_ERRORS as err:  # a failed experiment or sweep names its command and output
        raise SystemExit(f"error: {err}") from None
    finally:
        shutil.rmtree(out / SIM_CACHE, ignore_errors=True)
    provenance["seconds"] = round(time.perf_counter() - t_all, 1)
    atomic_write_text(out / "suite.json", json.dumps(provenance, indent=2))
    from paper.report import build
    build(out)
    print(f"paper suite ({args.scale}): {len(names)} experiments in {time.perf_counter() - t_all:.0f} s; "
          f"report: {out / 'REPORT.md'}")


if __name__ == "__main__":
    main()
