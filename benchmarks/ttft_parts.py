"""Where a fidelity report's TTFT goes: waiting for the step, and the step that made the
first token, real against simulated.

    .venv/bin/python benchmarks/ttft_parts.py <harness.fidelity --out dir> [--out ttft_parts.csv]

For every run in <dir>/runs (real and simulated, each design and rate) and every request,
the step that produced its first token is the step with a prefill chunk whose end is the
request's first_token_s (steps.csv, requests.csv). TTFT = wait (arrival to that step's
start: queueing and earlier chunks) + that step's duration. Prints the means per run and,
per design and rate, simulated / mean of the real runs - 1 for TTFT, the wait and the step.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

MATCH_S = 1e-5  # a step's end and a first token are stamped from the same clock reading


def parts(run: Path) -> dict[str, float]:
    requests = pd.read_csv(run / "requests.csv")
    requests = requests[requests["first_token_s"].notna()]
    steps = pd.read_csv(run / "steps.csv")
    steps = steps[steps["num_prefill_tokens"] > 0].copy()
    steps["end_s"] = steps["start_s"] + steps["duration_s"]
    steps = steps.sort_values("end_s")
    ends = steps["end_s"].to_numpy()
    i = np.clip(np.searchsorted(ends, requests["first_token_s"].to_numpy() - MATCH_S), 0, len(ends) - 1)
    matched = np.abs(ends[i] - requests["first_token_s"].to_numpy()) <= MATCH_S
    first = steps.iloc[i[matched]]
    req = requests[matched]
    return {"requests": len(requests), "matched": int(matched.sum()), "ttft_ms": 1e3 * req["ttft_s"].mean(),
            "wait_ms": 1e3 * (first["start_s"].to_numpy() - req["arrival_s"].to_numpy()).mean(),
            "step_ms": 1e3 * first["duration_s"].mean(),
            "step_tokens": first["num_prefill_tokens"].mean() + first["num_decode_tokens"].mean()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--out", default=None, help="CSV of the per-run means (default: <dir>/ttft_parts.csv)")
    args = ap.parse_args(argv)
    runs = sorted((Path(args.dir) / "runs").glob("*_r*_*"))
    if not runs:
        print(f"ttft_parts: no runs under {Path(args.dir) / 'runs'}", file=sys.stderr)
        return 2
    rows = []
    for run in runs:
        m = re.fullmatch(r"(.+)_r([\d.]+)_(real\d+|sim)", run.name)
        if m and (run / "steps.csv").is_file():
            rows.append({"design": m[1], "rate": float(m[2]), "run": m[3], **parts(run)})
    table = pd.DataFrame(rows)
    table.to_csv(args.out or Path(args.dir) / "ttft_parts.csv", index=False)
    print(table.round(1).to_string(index=False))
    print("\nsimulated / mean of the real runs - 1, in %:")
    for (design, rate), g in table.groupby(["design", "rate"], sort=False):
        real, sim = g[g["run"] != "sim"], g[g["run"] == "sim"]
        if real.empty or sim.empty:
            continue
        err = {k: 100 * (sim[k].iloc[0] / real[k].mean() - 1) for k in ("ttft_ms", "wait_ms", "step_ms")}
        print(f"  {design:16s} {rate:g} req/s: TTFT {err['ttft_ms']:+.1f}, wait {err['wait_ms']:+.1f}, "
              f"first-token step {err['step_ms']:+.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
