"""Fidelity gate (part of `make regress`): the simulator against the real engine on the
machine at hand, failing when the simulator's error grows beyond limits set above its
measured noise.

    python benchmarks/fidelity_gate.py [--out results/regress/fidelity]
    python benchmarks/fidelity_gate.py --aa 8      # the noise study behind the limits

A reduced harness.fidelity run (tiny_llama in float32, one rate, two designs; settings
and limits in results/baselines/fidelity.json): the machine is profiled within the same
run, in rounds between two real passes (harness/fidelity.py), so the error is the
simulator's and not a difference between this machine and another. float32 because bf16
matmuls are emulated (~25x slower) on CPUs without AVX512-BF16, where the gate must run too.

The gate fails when |simulated / real - 1| of any checked metric of any design exceeds
its limit (per design and metric) in two gates in a row: a failing gate is run once more
(`--confirm 1`, the default), and the change fails only if that one fails too. The
machine's speed moves by 10-35 % within minutes, so one gate can land in a slow patch; a
simulator that really drifted from the engine fails both. `--aa N` runs N whole gates and
prints, per metric, the largest |error| seen: the limits sit above that (README, "Fidelity gate"). FIDELITY_GATE_PLANT_SIM_SCALE=x
multiplies every simulated step time by x, to show the gate catches a simulator that
drifts from the real engine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import fidelity  # noqa: E402

LIMITS = ROOT / "results" / "baselines" / "fidelity.json"
CHECKED = ("ttft_s.mean", "tpot_s.mean", "e2e_s.mean", "throughput", "e2e_s.p90")


def gate_args(cfg: dict, out: Path) -> list[str]:
    return ["--model", cfg["model"], "--dtype", cfg["dtype"], "--designs", ",".join(cfg["designs"]),
            "--rates", str(cfg["rate"]), "--num-requests", str(cfg["num_requests"]), "--slo", cfg["slo"],
            "--real-repeats", str(cfg["real_repeats"]), "--profile-repeats", str(cfg["profile_repeats"]),
            "--semipd-contention", cfg.get("semipd_contention", "measured"),
            "--run-calibration", str(cfg.get("run_calibration", 0)),
            "--out", str(out), *(["--checkpoint", cfg["checkpoint"]] if cfg.get("checkpoint") else [])]


def one_gate(cfg: dict, out: Path, sim_scale: float = 1.0) -> pd.DataFrame:
    """The gate's measurement: per design, the simulator's error on each checked metric."""
    args = fidelity.parse_args(gate_args(cfg, out))
    args.sim_scale = sim_scale
    table, _, _ = fidelity.measure(args, out, log=lambda m: print(m, flush=True))
    table.to_csv(out / "fidelity.csv", index=False)
    return table


def verdicts(table: pd.DataFrame, limits: dict[str, dict[str, float]]) -> pd.DataFrame:
    rows = []
    for _, r in table.iterrows():
        for metric in CHECKED:
            err, limit = float(r[f"err.{metric}"]), limits[r["design"]][metric]
            rows.append({"design": r["design"], "metric": metric, "error": err, "limit": limit,
                         "verdict": "ok" if abs(err) <= limit else "FAIL"})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results/regress/fidelity")
    ap.add_argument("--limits", default=str(LIMITS))
    ap.add_argument("--aa", type=int, default=0, help="run N whole gates and print the largest |error| per metric")
    ap.add_argument("--confirm", type=int, default=1,
                    help="re-run a failing gate up to N times; fail only if every one fails (default 1)")
    args = ap.parse_args(argv)
    if args.confirm < 0:
        ap.error(f"--confirm {args.confirm}: expected 0 or more re-runs")
    try:
        cfg = json.loads(Path(args.limits).read_text())
        limits = {d: {m: float(cfg["limits"][d][m]) for m in CHECKED} for d in cfg["designs"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"fidelity gate: {args.limits}: expected JSON with the gate's settings and, per design, a "
              f"'limits' entry for each of {CHECKED} ({err!r})", file=sys.stderr)
        return 2
    try:
        sim_scale = float(os.environ.get("FIDELITY_GATE_PLANT_SIM_SCALE", "1"))
    except ValueError:
        print("fidelity gate: FIDELITY_GATE_PLANT_SIM_SCALE must be a number", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    start = time.perf_counter()
    if args.aa:
        tables = []
        for g in range(args.aa):
            t = one_gate(cfg, out / f"gate{g}")
            tables.append(t.assign(gate=g))
            print(f"gate {g + 1}/{args.aa} done ({time.perf_counter() - start:.0f} s)", flush=True)
        all_gates = pd.concat(tables)
        all_gates.to_csv(out / "aa.csv", index=False)
        print(pd.DataFrame([{"design": d, "metric": m, "worst |error|": float(g[f"err.{m}"].abs().max()),
                             "limit": limits[d][m], "gates within limit": int((g[f"err.{m}"].abs() <= limits[d][m]).sum())}
                            for d, g in all_gates.groupby("design") for m in CHECKED]).to_string(index=False))
        return 0
    for attempt in range(1 + args.confirm):
        where = out if attempt == 0 else out / f"confirm{attempt}"
        where.mkdir(exist_ok=True)
        v = verdicts(one_gate(cfg, where, sim_scale), limits)
        v.to_csv(where / "verdicts.csv", index=False)
        print(v.assign(error=v["error"].map(lambda e: f"{100 * e:+.1f} %"),
                       limit=v["limit"].map(lambda e: f"{100 * e:.0f} %")).to_string(index=False))
        past = int((v["verdict"] != "ok").sum())
        failed = past > 0
        if not failed or attempt == args.confirm:
            break
        print(f"fidelity gate: {past} check(s) past their limit; "
              f"running the gate again to confirm ({attempt + 1}/{args.confirm})", flush=True)
    print(f"fidelity gate: {'FAIL' if failed else 'PASS'} after {attempt + 1} gate(s) "
          f"({time.perf_counter() - start:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
