"""How much semi-PD's prefill steps slow down beside the decode worker, by prompt size: in a
fidelity report's real runs, in its simulated runs, and in its contention profile.

    .venv/bin/python benchmarks/semipd_prefill_slowdown.py <harness.fidelity --out dir> [--out CSV]

Per prefill-only step of the semi-PD runs (<dir>/runs/semipd_*_r<rate>_{real<k>,sim}/steps.csv,
both workers on every core): its time over the passive grid's prediction for the same shape
(the report's merged profile, no run factor), for the steps that ran beside the decode
worker's steps for at least 90 % of their time. For a real step that ratio is the measured
contention slowdown times the run factor; for a simulated step it is what the simulator
charges (the `measured` model's one prefill factor times the same run factor). Beside them,
the contention profile's own prefill pairs (together / solo on overlapping cores, median
over its rounds), which all have 512 or more prompt tokens.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZE_EDGES = (0, 128, 256, 512, 1024, 1 << 20)  # prompt tokens of the step
OVERLAPPED = 0.9  # fraction of a step's time the other worker stepped too


def step_ratios(run: Path, cost) -> pd.DataFrame:
    """One row per prefill-only, single-prompt step of a semi-PD run: prompt tokens, the
    fraction of its time overlapped by the decode worker's steps, real / grid."""
    from harness.fidelity_profile import overlap_s
    from sim.profiled import shape_plan
    steps = pd.read_csv(run / "steps.csv")
    overlapped = overlap_s(steps) / steps["duration_s"]
    keep = (steps["worker"].str.startswith("prefill") & (steps["num_decode_tokens"] == 0)
            & (steps["batch_size"] == 1))
    steps = steps[keep]
    grid = [cost.grid_step_time_s(shape_plan(prefill_tokens=int(n), prefill_context=int(c),
                                             prefill_samples=bool(k)), float(s))
            for n, c, k, s in zip(steps["num_prefill_tokens"], steps["prefill_context_tokens"],
                                  steps["num_samples"], steps["share"])]
    return pd.DataFrame({"tokens": steps["num_prefill_tokens"], "overlapped": overlapped[keep],
                         "ratio": steps["duration_s"] / grid})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report_dir", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="write the table as CSV")
    args = ap.parse_args(argv)
    from sim.profiled import ProfiledCostModel
    from sim.specs import get_hardware, get_model
    profiles = sorted(args.report_dir.glob("profile_cpu_*.csv"))
    contention = sorted(args.report_dir.glob("contention_cpu_*.csv"))
    if not profiles or not contention:
        print(f"semipd_prefill_slowdown: no profile_cpu_*.csv and contention_cpu_*.csv in {args.report_dir}",
              file=sys.stderr)
        return 2
    model = re.fullmatch(r"profile_cpu_(.+)\.csv", profiles[0].name).group(1)
    cost = ProfiledCostModel(profiles[0], get_model(model), get_hardware("cpu"), omp_wait="passive")
    parts = []
    for run in sorted((args.report_dir / "runs").glob("semipd_*")):
        m = re.fullmatch(r"(semipd_\w+?)_r([0-9.]+)_(real\d+|sim)", run.name)
        if m and (run / "steps.csv").is_file():
            part = step_ratios(run, cost)
            part["design"], part["rate"] = m.group(1), float(m.group(2))
            part["source"] = "sim" if m.group(3) == "sim" else "real"
            parts.append(part)
    if not parts:
        print(f"semipd_prefill_slowdown: no semi-PD runs in {args.report_dir / 'runs'}", file=sys.stderr)
        return 2
    steps = pd.concat(parts, ignore_index=True)
    steps = steps[steps["overlapped"] >= OVERLAPPED]
    steps["prompt tokens"] = pd.cut(steps["tokens"], SIZE_EDGES)
    table = (steps.groupby(["prompt tokens", "source"], observed=True)["ratio"].agg(["median", "count"])
             .unstack("source"))
    table.columns = [f"{source} {stat}" for stat, source in table.columns]
    table["real / sim"] = table["real median"] / table["sim median"]
    pd.set_option("display.width", 160)
    print(f"semi-PD prefill steps overlapped >= {OVERLAPPED:.0%} by decode steps, step / passive grid "
          f"(profile {profiles[0]}), all designs and rates:")
    print(table.round(3).to_string())
    pairs = pd.read_csv(contention[0], comment="#")
    pairs = pairs[pairs["layout"] == "overlap"]
    measured = (pairs["prefill_together_s"] / pairs["prefill_solo_s"]).groupby(pairs["prefill_tokens"]).median()
    print(f"contention profile {contention[0]}, overlapping cores, prefill together / solo (median over rows):")
    print(measured.round(3).to_string())
    if args.out:
        table.to_csv(args.out, float_format="%.4g")
    return 0


if __name__ == "__main__":
    sys.exit(main())
