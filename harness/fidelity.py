"""Simulator fidelity: the same workload, seed, model and KV pool on the real engine and on
the simulator with the profiled cost model, for each design at each rate; the simulator's
relative error of TTFT, TPOT and E2E (mean, P50, P90, P99) and of output throughput, and
the latency ECDFs of both overlaid.

    python -m harness.fidelity [--model small_llama] [--rates 1,2,4] [--num-requests 60]
        [--designs unified,unified_chunked,disagg,semipd_static,semipd_slo_code]
        [--profile P.csv] [--profile-repeats 3] [--real-repeats 4] [--drift-runs 1 | --drift-anchors 1]
        [--run-calibration 0|1]
        [--out results/fidelity] [--reuse-real]

The real engine runs every point --real-repeats times, in passes over all points (odd
passes in reverse order); 4 by default, as two runs of the same point on a 2-core VM can
differ by 10-30 % (README, "Fidelity report"). Without --profile the machine is profiled within the same
measurement (engines/torch/profiler.py): a round of the grid before each pass and one
after the last, merged by the median, so profile and real runs sample the same minutes
of a machine whose speed drifts (10-20 % over minutes on a shared 2-core VM), and the
error is the simulator's, not a machine difference. Each round also records short real
runs of other seeds (--run-calibration, CALIBRATION_*) whose steps the profile keeps as run
rows: the profiled model's run factors (sim/profiled.py). The simulator is compared with the
median real run; the report adds the real runs' own spread (max |run / median - 1|), the
noise floor under any error. --drift-runs 1 also records a short real run right before
each compared one and scales that point's simulated run by the machine's speed it shows
(run_scale), reporting the errors with and without the scale. Writes REPORT.md,
fidelity.csv and ecdf.png to --out.
Real runs need the machine to themselves (2 cores): nothing else should run meanwhile.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

from engines.errors import WorkerError
from harness.errors import USER_ERRORS
from harness.fidelity_profile import add_run_rows, merge_contention, merge_rounds, run_rows
from harness.fidelity_report import KV_CACHE_BYTES, METRICS, STATS, ecdf_figure, report_markdown

log = logging.getLogger(__name__)
DESIGNS = {  # name -> overrides (as benchmarks/real_designs.py runs them)
    "unified": ["engine=unified"],
    "unified_chunked": ["engine=unified_chunked"],
    "disagg": ["engine=disagg", "engine.kv_link=pcie"],  # the real copy is a memcpy in host memory
    "semipd_static": ["engine=semipd", "engine.semipd.controller=static"],
    "semipd_slo_code": ["engine=semipd", "engine.semipd.controller=slo_code", "engine.semipd.window_requests=10"],
}
INSTANCES = {"disagg": 2}  # GPUs ("devices") per design: the rate per device keeps the total rate equal
# Each profile round's calibration runs (--run-calibration 1): their steps become the
# profile's run rows (sim/profiled.py); unified gives prefill-only steps, unified_chunked
# mixed ones, and disagg (when compared) the steps of instances on a share of the cores that
# run next to each other (their own thread count's run factors). Other seeds than the
# compared runs' (0): the simulator is fitted on the profile only, never on the runs it is
# compared with. semipd_static (when a semi-PD design is compared under measured contention)
# gives the passive workers' steps with the measured contention divided out (run_rows).
CALIBRATION_DESIGNS, CALIBRATION_RATE, CALIBRATION_REQUESTS, CALIBRATION_SEED = (
    ("unified", "unified_chunked", "disagg", "semipd_static"), 2.0, 20, 1000)
# --drift-runs 1: a short real run of this design (the calibration rate and size, seeds from
# DRIFT_SEED) right before each compared real run; the machine's speed then against the profile's.
DRIFT_DESIGN, DRIFT_SEED = "unified_chunked", 2000


def calibration_designs(designs: list[str], semipd_measured: bool = True) -> tuple[str, ...]:
    """The calibration runs for these compared designs: unified and unified_chunked always,
    disagg only when disagg is compared (its instances' thread count has no other use),
    semipd_static when a semi-PD design is compared under measured contention."""
    wanted = {"unified", "unified_chunked", *(d for d in designs if not is_semipd(d))}
    if semipd_measured and any(map(is_semipd, designs)):
        wanted.add("semipd_static")
    return tuple(d for d in CALIBRATION_DESIGNS if d in wanted)


def is_semipd(design: str) -> bool:
    return DESIGNS[design][0] == "engine=semipd"


def overrides(model: str, design: str, rate: float, num_requests: int, slo: str, executor: list[str],
              checkpoint: str | None = None, seed: int = 0) -> list[str]:
    return [f"model={model}", *([f"model.checkpoint={checkpoint}"] if checkpoint else []), "hardware=cpu", "workload=synthetic", "workload.distribution=sharegpt_like",
            f"workload.num_requests={num_requests}", f"workload.seed={seed}", f"workload.rate={rate / INSTANCES.get(design, 1)}",
            f"slo={slo}", f"executor.kv_cache_bytes={KV_CACHE_BYTES}", "plots=false", "progress=false",
            *DESIGNS[design], *executor]


def one_run(args_overrides: list[str], out: Path) -> dict:
    from harness.goodput import compose
    from harness.run import run
    run(compose(args_overrides), out)
    return json.loads((out / "summary.json").read_text())


def values(summary: dict) -> dict[str, float]:
    out = {f"{m}.{s}": summary[m][s] for m in METRICS for s in STATS}
    out["throughput"] = summary["output_throughput_tok_s"]
    return out


def compare(sim: dict[str, float], reals: list[dict[str, float]]) -> dict[str, float]:
    """Relative error of the simulator per metric against the median real run, and the
    real runs' spread around that median."""
    row = {}
    for key in sim:
        med = statistics.median(r[key] for r in reals)
        row[f"err.{key}"] = sim[key] / med - 1.0 if med else float("nan")
        row[f"noise.{key}"] = max(abs(r[key] / med - 1.0) for r in reals) if med else float("nan")
    return row


def run_scale(cost, run_dir: Path) -> float:
    """The machine's speed during a short real run on all cores (--drift-runs) against the
    profile's: the run's busy time over what the profiled model, run factors included,
    predicts for the same steps. A ratio of sums weighs each kind of step by its share of
    the time, as the latencies do."""
    from sim.profiled import row_plan
    rows = run_rows(run_dir, threads=len(os.sched_getaffinity(0)))
    predicted = sum(cost.step_time_s(row_plan(r), 1.0) for _, r in rows.iterrows())
    return float(rows["median_s"].sum() / predicted)


def drift_scale(cost, model: str, checkpoint: str | None = None, dtype: str = "bfloat16") -> float:
    """The machine's speed now against the profile's: the median over the anchor steps
    (engines/torch/profiler.py ANCHORS) of their time now / the profiled cost model's."""
    from engines.torch.profiler import plan_for, time_anchors
    ratios = [measured / cost.grid_step_time_s(plan_for(shape)[0], 1.0)
              for shape, measured in time_anchors(model, dtype=dtype, checkpoint=checkpoint)]
    return statistics.median(ratios)


def run_order(designs: list[str], rates: list[float], passes: int) -> list[list[tuple[str, float]]]:
    """The real runs of each pass: every (design, rate), odd passes in reverse order, so a
    point's runs sit symmetric about the middle of the measurement and a steady drift of
    the machine's speed moves its mean as little as the profile's (whose rounds are
    spread the same way)."""
    points = [(d, r) for d in designs for r in rates]
    return [points if k % 2 == 0 else points[::-1] for k in range(passes)]


def measure(args, out: Path, log=print) -> tuple[pd.DataFrame, str, dict]:
    """Run the comparison: real passes interleaved with profile rounds (unless a profile is
    given), then one simulated run per point with the merged profile. Returns the table
    (one row per design and rate), the profile path and the ECDF run directories."""
    from engines.torch.profiler import run as profile_machine, run_contention
    from semipd.measured_contention import read as read_contention
    from sim.profiled import ProfiledCostModel
    from sim.specs import get_hardware, get_model
    start = time.perf_counter()
    designs, rates = args.designs, args.rates
    rounds: list[Path] = []
    contention_rounds: list[Path] = []
    semipd = args.semipd_contention == "measured" and any(map(is_semipd, designs))

    def profile_round() -> None:
        k = len(rounds)
        log(f"profiling this machine, round {k + 1} ...")
        rounds.append(profile_machine(model=args.model, out=str(out / "profile_rounds" / f"round{k}.csv"),
                                      checkpoint=args.checkpoint, repeats=args.profile_repeats, seed=k,
                                      dtype=args.dtype, log=lambda *_: None))
        if semipd:  # how semi-PD's two workers slow each other down (the `measured` contention model)
            contention_rounds.append(run_contention(model=args.model, dtype=args.dtype, repeats=args.profile_repeats,
                                                    out=str(out / "profile_rounds" / f"contention{k}.csv"),
                                                    checkpoint=args.checkpoint, log=lambda *_: None))
        cores = len(os.sched_getaffinity(0))
        for i, design in enumerate(calibration_designs(designs, semipd) if args.run_calibration else ()):
            # Short real runs of other seeds: their steps become the profile's run rows.
            d = out / "profile_rounds" / f"run{k}_{design}"
            one_run(overrides(args.model, design, CALIBRATION_RATE, CALIBRATION_REQUESTS, args.slo,
                              ["executor=torch", f"executor.dtype={args.dtype}"], args.checkpoint,
                              seed=CALIBRATION_SEED + 10 * k + i), d)
            if is_semipd(design):  # both workers on every core (shares 100 + 100), threads sleeping
                add_run_rows(rounds[-1], d, threads=cores, omp_wait="passive",
                             contention=read_contention(contention_rounds[-1]).slowdowns(100.0, 100.0))
            else:  # the real runtime gives each instance an equal part of the cores
                add_run_rows(rounds[-1], d, threads=max(1, cores // INSTANCES.get(design, 1)))

    profile = args.profile
    cost = ProfiledCostModel(profile, get_model(args.model), get_hardware("cpu")) if profile else None
    reals: dict[tuple[str, float], list[dict]] = {}
    scales: dict[tuple[str, float], list[float]] = {}
    drift_runs: dict[tuple[str, float], list[Path]] = {}  # --drift-runs: each real run's drift run
    torch_executor = ["executor=torch", f"executor.dtype={args.dtype}"]
    runs = {}  # (design, real|sim) -> run dir at the middle rate, for the ECDFs
    mid_rate = rates[len(rates) // 2]
    for k, points in enumerate(run_order(designs, rates, args.real_repeats)):
        if profile is None:
            profile_round()
        for design, rate in points:
            d = out / "runs" / f"{design}_r{rate:g}_real{k}"
            if rate == mid_rate and k == 0:
                runs[(design, "real")] = d
            drift = d.with_name(d.name + "_drift")
            if args.reuse_real and (d / "summary.json").is_file():
                summary = json.loads((d / "summary.json").read_text())
                if args.drift_runs and not (drift / "steps.csv").is_file():
                    raise ValueError(f"--reuse-real --drift-runs 1: {d} has no drift run ({drift}); "
                                     "run without --reuse-real")
            else:
                scale = 1.0
                if args.drift_anchors:
                    cost = cost or ProfiledCostModel(merge_rounds(rounds, out / "profile_so_far.csv"),
                                                     get_model(args.model), get_hardware("cpu"))
                    scale = drift_scale(cost, args.model, args.checkpoint, args.dtype)
                if args.drift_runs:  # the seeds differ from every compared and calibration run's
                    one_run(overrides(args.model, DRIFT_DESIGN, CALIBRATION_RATE, CALIBRATION_REQUESTS, args.slo,
                                      torch_executor, args.checkpoint, seed=DRIFT_SEED + sum(map(len, reals.values()))),
                            drift)
                summary = one_run(overrides(args.model, design, rate, args.num_requests, args.slo,
                                            torch_executor, args.checkpoint), d)
                # The scale the simulated run will use, kept with the real run it was measured for.
                summary["fidelity_profile_scale"] = scale
                (d / "summary.json").write_text(json.dumps(summary, indent=1))
            reals.setdefault((design, rate), []).append(values(summary))
            if args.drift_runs:
                drift_runs.setdefault((design, rate), []).append(drift)
            scales.setdefault((design, rate), []).append(summary.get("fidelity_profile_scale", 1.0))
            log(f"  real pass {k + 1}/{args.real_repeats} {design:16s} {rate:g} req/s "
                f"({time.perf_counter() - start:.0f} s)")
    contention = args.contention_profile if args.semipd_contention == "measured" else None
    if profile is None:
        profile_round()
        profile = str(merge_rounds(rounds, out / f"profile_cpu_{args.model}.csv"))
        if contention_rounds:
            contention = str(merge_contention(contention_rounds, out / f"contention_cpu_{args.model}.csv"))
    contention_overrides = (["engine.semipd.contention=measured", f"engine.semipd.contention_profile={contention}"]
                            if contention else [])
    if drift_runs:  # each drift run against the final profile: the machine's speed at its real run
        cost = ProfiledCostModel(profile, get_model(args.model), get_hardware("cpu"))
        scales = {point: [run_scale(cost, p) for p in paths] for point, paths in drift_runs.items()}

    def simulate(design: str, rate: float, scale: float, d: Path) -> dict[str, float]:
        return values(one_run(overrides(args.model, design, rate, args.num_requests, args.slo,
                                        ["executor=sim", "executor.cost_model=profiled",
                                         f"executor.profile={profile}", f"executor.profile_scale={scale}",
                                         *(contention_overrides if is_semipd(design) else [])],
                                        args.checkpoint), d))

    rows = []
    for design in designs:
        for rate in rates:
            scale = statistics.median(scales[(design, rate)]) * getattr(args, "sim_scale", 1.0)
            d = out / "runs" / f"{design}_r{rate:g}_sim"
            sim = simulate(design, rate, scale, d)
            if rate == mid_rate:
                runs[(design, "sim")] = d
            rows.append({"design": design, "rate": rate, "profile_scale": scale,
                         **compare(sim, reals[(design, rate)])})
            if drift_runs:  # the same without the drift scale, to show what it changes
                unscaled = compare(simulate(design, rate, 1.0, d.with_name(d.name + "_unscaled")),
                                   reals[(design, rate)])
                rows[-1].update({f"unscaled.{k}": v for k, v in unscaled.items() if k.startswith("err.")})
            r = rows[-1]
            log(f"  {design:16s} {rate:g} req/s: TTFT mean {100 * r['err.ttft_s.mean']:+.1f} %, TPOT mean "
                f"{100 * r['err.tpot_s.mean']:+.1f} %, E2E mean {100 * r['err.e2e_s.mean']:+.1f} %, "
                f"throughput {100 * r['err.throughput']:+.1f} %")
    return pd.DataFrame(rows), profile, runs


def parse_args(argv: list[str] | None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="small_llama")
    ap.add_argument("--checkpoint", default=None, help="the model's directory (default: checkpoints/<model>)")
    ap.add_argument("--rates", default="1,2,4", help="req/s in total: light, medium, near saturation")
    ap.add_argument("--num-requests", type=int, default=60)
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"),
                    help="the real engine's and the profile's dtype")
    ap.add_argument("--designs", default=",".join(DESIGNS))
    ap.add_argument("--slo", default="cpu_small_llama_sharegpt_tight")
    ap.add_argument("--profile", default=None, help="a profile CSV of THIS machine (default: profile now, "
                    "in rounds between the real passes)")
    ap.add_argument("--contention-profile", default=None,
                    help="with --profile: a contention profile of THIS machine (profiler contention=1) for "
                         "semi-PD's `measured` contention model (default: measured in the profile rounds, or "
                         "the engine's default model when --profile is given)")
    ap.add_argument("--semipd-contention", default="measured", choices=("measured", "resources"),
                    help="the simulator's contention model for semi-PD: measured in the profile rounds "
                         "(default) or the GPU-style `resources` model")
    ap.add_argument("--profile-repeats", type=int, default=3, help="timed steps per shape and profile round")
    ap.add_argument("--real-repeats", type=int, default=4, help="real runs (passes) per point")
    ap.add_argument("--out", default="results/fidelity")
    ap.add_argument("--drift-anchors", type=int, default=0,
                    help="1: before each real run, re-time a few anchor steps and scale the profile by "
                         "the machine's speed now against when it was profiled (default 0: as profiled)")
    ap.add_argument("--drift-runs", type=int, default=0, choices=(0, 1),
                    help=f"1: before each real run, a short real run ({DRIFT_DESIGN}, {CALIBRATION_REQUESTS} requests "
                         f"at {CALIBRATION_RATE:g} req/s, seeds from {DRIFT_SEED}) whose busy time against the "
                         "profile's prediction scales the simulated run (the report also gives the errors "
                         "without it); default 0")
    ap.add_argument("--run-calibration", type=int, default=1, choices=(0, 1),
                    help="1 (default): each profile round also records short real runs (unified, "
                         "unified_chunked and, when compared, disagg; "
                         f"{CALIBRATION_REQUESTS} requests each at {CALIBRATION_RATE:g} req/s, "
                         f"seeds from {CALIBRATION_SEED}) whose steps set the profiled model's run factors; "
                         "0: the grid alone")
    ap.add_argument("--reuse-real", action="store_true",
                    help="take the real runs already in --out/runs (same options) instead of running them again")
    args = ap.parse_args(argv)
    args.designs = [d for d in args.designs.split(",") if d]
    unknown = [d for d in args.designs if d not in DESIGNS]
    if unknown or not args.designs:
        raise ValueError(f"--designs: unknown {unknown or 'none given'}; expected some of {list(DESIGNS)}")
    try:
        args.rates = [float(r) for r in args.rates.split(",")]
    except ValueError:
        raise ValueError(f"--rates must be comma-separated numbers, got {args.rates!r}") from None
    if args.drift_runs and args.drift_anchors:
        raise ValueError("--drift-runs and --drift-anchors both scale the profile: give one")
    if args.real_repeats < 1 or args.profile_repeats < 1 or args.num_requests < 1:
        raise ValueError("--real-repeats, --profile-repeats and --num-requests must be >= 1")
    if not args.rates or any(r <= 0 for r in args.rates):
        raise ValueError(f"--rates: every rate must be > 0, got {args.rates}")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except ValueError as err:
        print(f"fidelity: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    from engines.torch.profiler import machine_description
    try:
        table, profile, runs = measure(args, out, log=lambda m: print(m, flush=True))
    except USER_ERRORS as err:
        print(f"fidelity: {err}", file=sys.stderr)
        return 2
    except WorkerError as err:  # a real run's worker died or failed: say which, no traceback
        print(f"fidelity: a real run failed: {err}", file=sys.stderr)
        return 1
    table.to_csv(out / "fidelity.csv", index=False)
    meta = {"model": f"{args.model} ({args.dtype})", "machine": machine_description(), "num_requests": args.num_requests,
            "real_repeats": args.real_repeats}
    mid_rate = args.rates[len(args.rates) // 2]
    (out / "REPORT.md").write_text(report_markdown(table, args.rates, profile, meta)
                                   + f"\n![latency ECDFs at {mid_rate:g} req/s](ecdf.png)\n")
    ecdf_figure(runs, args.designs, out / "ecdf.png")
    print(f"wrote {out / 'REPORT.md'} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
