"""Simulator fidelity: the same workload, seed, model and KV pool on the real engine and on
the simulator with the profiled cost model, for each design at each rate; the simulator's
relative error of TTFT, TPOT and E2E (mean, P50, P90, P99) and of output throughput, and
the latency ECDFs of both overlaid.

    python -m harness.fidelity [--model small_llama] [--rates 1,2,4] [--num-requests 60]
        [--designs unified,unified_chunked,disagg,semipd_static,semipd_slo_code]
        [--profile P.csv] [--real-repeats 1] [--drift-anchors 1] [--out results/fidelity] [--reuse-real]

Without --profile it first profiles this machine (engines/torch/profiler.py, ~1.5 min for
small_llama), so the error is the simulator's and not a machine difference. With
--real-repeats N the real engine runs N times per point: the simulator is compared with
the median and the report adds the real runs' own spread (max |run / median - 1|), the
noise floor under any error. Writes REPORT.md, fidelity.csv and ecdf.png to --out.
Real runs need the machine to themselves (2 cores): nothing else should run meanwhile.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

from engines.errors import WorkerError
from harness.errors import USER_ERRORS

log = logging.getLogger(__name__)
DESIGNS = {  # name -> overrides (as benchmarks/real_designs.py runs them)
    "unified": ["engine=unified"],
    "unified_chunked": ["engine=unified_chunked"],
    "disagg": ["engine=disagg", "engine.kv_link=pcie"],  # the real copy is a memcpy in host memory
    "semipd_static": ["engine=semipd", "engine.semipd.controller=static"],
    "semipd_slo_code": ["engine=semipd", "engine.semipd.controller=slo_code", "engine.semipd.window_requests=10"],
}
INSTANCES = {"disagg": 2}  # GPUs ("devices") per design: the rate per device keeps the total rate equal
METRICS = ("ttft_s", "tpot_s", "e2e_s")
STATS = ("mean", "p50", "p90", "p99")
KV_CACHE_BYTES = 1 << 30  # the real executor's CPU default, given to both sides
# Goals of issue 13 at the light and medium rates.
MEAN_GOAL, P90_GOAL = 0.05, 0.10


def overrides(model: str, design: str, rate: float, num_requests: int, slo: str, executor: list[str],
              checkpoint: str | None = None) -> list[str]:
    return [f"model={model}", *([f"model.checkpoint={checkpoint}"] if checkpoint else []), "hardware=cpu", "workload=synthetic", "workload.distribution=sharegpt_like",
            f"workload.num_requests={num_requests}", "workload.seed=0", f"workload.rate={rate / INSTANCES.get(design, 1)}",
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


def drift_scale(cost, model: str, checkpoint: str | None = None) -> float:
    """The machine's speed now against the profile's: the median over the anchor steps
    (engines/torch/profiler.py ANCHORS) of their time now / the profiled cost model's."""
    from engines.torch.profiler import plan_for, time_anchors
    ratios = [measured / cost.step_time_s(plan_for(shape)[0], 1.0)
              for shape, measured in time_anchors(model, checkpoint=checkpoint)]
    return statistics.median(ratios)


def report_markdown(table: pd.DataFrame, rates: list[float], profile: str, meta: dict) -> str:
    pct = lambda x: f"{100 * x:+.1f}"  # noqa: E731
    light_medium = set(rates[:2])
    lines = [f"# Simulator fidelity: {meta['model']} on {meta['machine']}", "",
             f"Real engine (executor=torch, worker processes) vs simulator (executor=sim, "
             f"cost_model=profiled, profile `{profile}`); {meta['num_requests']} ShareGPT-like requests, "
             f"seed 0, same KV pool ({KV_CACHE_BYTES >> 20} MiB), {meta['real_repeats']} real run(s) per point. "
             "Cells: simulated / real - 1, in %.", "",
             "`profile scale`: the profile's multiplier (1 unless --drift-anchors 1 re-timed anchor steps "
             "before the real run; > 1 = the machine was slower than when profiled).", "",
             "| design | rate | TTFT mean | p50 | p90 | p99 | TPOT mean | p50 | p90 | p99 | E2E mean | p50 | p90 | "
             "p99 | throughput | real noise (max) | profile scale |",
             "|" + "---|" * 17]
    for _, r in table.iterrows():
        cells = [pct(r[f"err.{m}.{s}"]) for m in METRICS for s in STATS] + [pct(r["err.throughput"])]
        noise = max(r[c] for c in table.columns if c.startswith("noise."))
        scale = r.get("profile_scale", 1.0)
        lines.append(f"| {r['design']} | {r['rate']:g} | " + " | ".join(cells) + f" | {100 * noise:.1f} | {scale:.3f} |")
    checked = table[table["rate"].isin(light_medium)]
    means = [f"err.{m}.mean" for m in METRICS] + ["err.throughput"]
    p90s = [f"err.{m}.p90" for m in METRICS]
    worst_mean = checked[means].abs().max().max() if len(checked) else float("nan")
    worst_p90 = checked[p90s].abs().max().max() if len(checked) else float("nan")
    lines += ["", f"At the light and medium rates ({', '.join(f'{r:g}' for r in sorted(light_medium))} req/s): "
              f"worst |error| of the means and throughput {100 * worst_mean:.1f} % (goal {100 * MEAN_GOAL:.0f} %), "
              f"of the P90s {100 * worst_p90:.1f} % (goal {100 * P90_GOAL:.0f} %)."]
    return "\n".join(lines) + "\n"


def ecdf_figure(runs: dict[tuple[str, str], Path], designs: list[str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns
    fig, axes = plt.subplots(len(designs), len(METRICS), figsize=(4 * len(METRICS), 2.6 * len(designs)),
                             squeeze=False)
    for i, design in enumerate(designs):
        for j, metric in enumerate(METRICS):
            ax = axes[i][j]
            for kind, style in (("real", "-"), ("sim", "--")):
                run_dir = runs.get((design, kind))
                if run_dir is None:
                    continue
                req = pd.read_csv(run_dir / "requests.csv")
                sns.ecdfplot(req[metric].dropna(), ax=ax, linestyle=style, label=kind)
            ax.set_title(f"{design}: {metric.removesuffix('_s').upper()}", fontsize=9)
            ax.set_xlabel("s")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="small_llama")
    ap.add_argument("--checkpoint", default=None, help="the model's directory (default: checkpoints/<model>)")
    ap.add_argument("--rates", default="1,2,4", help="req/s in total: light, medium, near saturation")
    ap.add_argument("--num-requests", type=int, default=60)
    ap.add_argument("--designs", default=",".join(DESIGNS))
    ap.add_argument("--slo", default="cpu_small_llama_sharegpt_tight")
    ap.add_argument("--profile", default=None, help="a profile CSV of THIS machine (default: profile now)")
    ap.add_argument("--real-repeats", type=int, default=1)
    ap.add_argument("--out", default="results/fidelity")
    ap.add_argument("--drift-anchors", type=int, default=0,
                    help="1: before each real run, re-time a few anchor steps and scale the profile by "
                         "the machine's speed now against when it was profiled (default 0: as profiled)")
    ap.add_argument("--reuse-real", action="store_true",
                    help="take the real runs already in --out/runs (same options) instead of running them again")
    args = ap.parse_args(argv)
    designs = [d for d in args.designs.split(",") if d]
    unknown = [d for d in designs if d not in DESIGNS]
    if unknown:
        print(f"fidelity: --designs: unknown {unknown}; expected some of {list(DESIGNS)}", file=sys.stderr)
        return 2
    try:
        rates = [float(r) for r in args.rates.split(",")]
    except ValueError:
        print(f"fidelity: --rates must be comma-separated numbers, got {args.rates!r}", file=sys.stderr)
        return 2
    if args.real_repeats < 1 or not rates or any(r <= 0 for r in rates):
        print("fidelity: --real-repeats must be >= 1 and every rate > 0", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    from engines.torch.profiler import machine_description, run as profile_machine
    profile = args.profile
    if profile is None:
        print("profiling this machine ...", flush=True)
        profile = str(profile_machine(model=args.model, out=str(out / f"profile_cpu_{args.model}.csv"),
                                      checkpoint=args.checkpoint, log=lambda *_: None))
    from sim.profiled import ProfiledCostModel
    from sim.specs import get_hardware, get_model
    cost = ProfiledCostModel(profile, get_model(args.model), get_hardware("cpu"))
    rows, runs = [], {}  # runs: (design, real|sim) -> run dir at the middle rate, for the ECDFs
    mid_rate = rates[len(rates) // 2]
    try:
        for design in designs:
            for rate in rates:
                reals, scales = [], []
                for k in range(args.real_repeats):
                    d = out / "runs" / f"{design}_r{rate:g}_real{k}"
                    if rate == mid_rate and k == 0:
                        runs[(design, "real")] = d
                    if args.reuse_real and (d / "summary.json").is_file():
                        summary = json.loads((d / "summary.json").read_text())
                        reals.append(values(summary))
                        scales.append(summary.get("fidelity_profile_scale", 1.0))
                        continue
                    scales.append(drift_scale(cost, args.model, args.checkpoint) if args.drift_anchors else 1.0)
                    summary = one_run(overrides(args.model, design, rate, args.num_requests, args.slo,
                                                ["executor=torch"], args.checkpoint), d)
                    reals.append(values(summary))
                    # The scale the simulated run will use, kept with the real run it was measured for.
                    (d / "summary.json").write_text(json.dumps({**summary, "fidelity_profile_scale": scales[-1]},
                                                               indent=1))
                scale = statistics.median(scales)
                d = out / "runs" / f"{design}_r{rate:g}_sim"
                sim = values(one_run(overrides(args.model, design, rate, args.num_requests, args.slo,
                                               ["executor=sim", "executor.cost_model=profiled",
                                                f"executor.profile={profile}", f"executor.profile_scale={scale}"],
                                               args.checkpoint), d))
                if rate == mid_rate:
                    runs[(design, "sim")] = d
                rows.append({"design": design, "rate": rate, "profile_scale": scale, **compare(sim, reals)})
                print(f"  {design:16s} {rate:g} req/s: TTFT mean {100 * rows[-1]['err.ttft_s.mean']:+.1f} %, "
                      f"TPOT mean {100 * rows[-1]['err.tpot_s.mean']:+.1f} %, E2E mean "
                      f"{100 * rows[-1]['err.e2e_s.mean']:+.1f} %, throughput {100 * rows[-1]['err.throughput']:+.1f} % "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)
    except USER_ERRORS as err:
        print(f"fidelity: {err}", file=sys.stderr)
        return 2
    except WorkerError as err:  # a real run's worker died or failed: say which, no traceback
        print(f"fidelity: a real run failed: {err}", file=sys.stderr)
        return 1
    table = pd.DataFrame(rows)
    table.to_csv(out / "fidelity.csv", index=False)
    meta = {"model": args.model, "machine": machine_description(), "num_requests": args.num_requests,
            "real_repeats": args.real_repeats}
    (out / "REPORT.md").write_text(report_markdown(table, rates, profile, meta)
                                   + f"\n![latency ECDFs at {mid_rate:g} req/s](ecdf.png)\n")
    ecdf_figure(runs, designs, out / "ecdf.png")
    print(f"wrote {out / 'REPORT.md'} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
