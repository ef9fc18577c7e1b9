"""Where a fidelity report's real steps part from the profiled model: every real run's step,
as its driver recorded it, against the prediction of the report's own profile (run factors
included), grouped by kind of step, by how long the worker sat idle before it, and by size.

    .venv/bin/python benchmarks/step_residuals.py <harness.fidelity --out dir> [--designs unified,...]
        [--rates 1,2] [--out step_residuals.csv]

Reads <dir>/profile_cpu_*.csv and <dir>/runs/<design>_r<rate>_real<k>/steps.csv (only
the 2-core designs: unified and unified_chunked by default, whose steps the full-share
profile predicts). Steps with more than one prefill chunk are left out, as in the run rows.
Prints the median of real / predicted and the count per group, and the time-weighted ratio
(sum real / sum predicted) of the prefill steps with and without an idle gap before them.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

IDLE_EDGES_S = (-1.0, 0.001, 0.05, 0.2, 1.0, 1e9)
IDLE_LABELS = ("<1 ms", "1-50 ms", "50-200 ms", "0.2-1 s", ">1 s")
SIZE_EDGES_S = (0.0, 0.03, 0.06, 0.12, 0.25, 10.0)  # of the predicted step time
ONE_WORKER_DESIGNS = ("unified", "unified_chunked")  # one worker on all cores: the full-share profile
IDLE_S = 0.2  # a gap this long or longer: the worker was idle (no request to step)


def residuals(run: Path, cost) -> pd.DataFrame:
    """One row per step of a real run: kind, idle gap before it (inf for the first),
    predicted (after-idle run factors included) and real duration."""
    from harness.fidelity_profile import run_rows
    from sim.profiled import row_plan, step_kind
    rows = run_rows(run, threads=2)
    return pd.DataFrame({
        "run": run.name, "kind": [step_kind(p, d) for p, d in zip(rows["prefill_tokens"], rows["decode_seqs"])],
        "idle_before_s": rows["idle_before_s"].to_numpy(), "real_s": rows["median_s"].to_numpy(),
        "predicted_s": [cost.step_time_s(row_plan(r), 1.0, r["idle_before_s"]) for _, r in rows.iterrows()]})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report_dir", type=Path)
    ap.add_argument("--designs", default="unified,unified_chunked")
    ap.add_argument("--rates", default=None, help="comma-separated req/s (default: every rate)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    from sim.profiled import ProfiledCostModel
    from sim.specs import get_hardware, get_model
    profiles = sorted(args.report_dir.glob("profile_cpu_*.csv"))
    if not profiles:
        print(f"step_residuals: no profile_cpu_*.csv in {args.report_dir}", file=sys.stderr)
        return 2
    model = re.fullmatch(r"profile_cpu_(.+)\.csv", profiles[0].name).group(1)
    cost = ProfiledCostModel(profiles[0], get_model(model), get_hardware("cpu"))
    designs = args.designs.split(",")
    if not set(designs) <= set(ONE_WORKER_DESIGNS):
        print(f"step_residuals: --designs takes {list(ONE_WORKER_DESIGNS)} (one worker on all cores), "
              f"got {designs}", file=sys.stderr)
        return 2
    try:
        rates = None if args.rates is None else {float(r) for r in args.rates.split(",")}
    except ValueError:
        print(f"step_residuals: --rates must be comma-separated req/s, got {args.rates!r}", file=sys.stderr)
        return 2
    runs = []
    for run in sorted((args.report_dir / "runs").glob("*_real[0-9]*")):
        m = re.fullmatch(r"(.+)_r([0-9.]+)_real\d+", run.name)
        if m and m.group(1) in designs and (rates is None or float(m.group(2)) in rates):
            runs.append(residuals(run, cost))
    if not runs:
        print(f"step_residuals: no real runs of {designs} in {args.report_dir / 'runs'}", file=sys.stderr)
        return 2
    table = pd.concat(runs, ignore_index=True)
    table["ratio"] = table["real_s"] / table["predicted_s"]
    table["idle"] = pd.cut(table["idle_before_s"].clip(upper=IDLE_EDGES_S[-1] / 2), IDLE_EDGES_S, labels=IDLE_LABELS)
    table["size"] = pd.cut(table["predicted_s"], SIZE_EDGES_S)
    pd.set_option("display.width", 160)
    print(f"{len(runs)} real runs, {len(table)} steps; real / predicted (profile {profiles[0]}):")
    print(table.groupby(["kind", "idle"], observed=True)["ratio"].agg(["median", "count"]).round(3).to_string())
    prefill = table[table["kind"] == "prefill"]
    print(prefill.groupby(["size", prefill["idle_before_s"] >= IDLE_S], observed=True)["ratio"]
          .agg(["median", "count"]).rename_axis(["predicted s", f"idle >= {IDLE_S} s"]).round(3).to_string())
    for idle, part in prefill.groupby(prefill["idle_before_s"] >= IDLE_S):
        print(f"prefill steps {'after' if idle else 'without'} an idle gap: sum real / sum predicted "
              f"{part['real_s'].sum() / part['predicted_s'].sum():.3f} ({len(part)} steps)")
    if args.out:
        table.to_csv(args.out, index=False, float_format="%.6g")
    return 0


if __name__ == "__main__":
    sys.exit(main())
