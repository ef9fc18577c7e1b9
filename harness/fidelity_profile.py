"""What a fidelity run adds to and makes of its profile (harness/fidelity.py): a real run's
steps as the profile's run rows (sim/profiled.py: the run factors), with the idle gap before
each and, for semi-PD, the measured contention divided out; the rounds' profiles and
contention profiles merged into one each."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd


def idle_before_s(steps: pd.DataFrame) -> pd.Series:
    """Per step of a steps.csv, how long its worker sat idle before it: its start minus the
    end of the same worker's previous step (inf for a worker's first step), indexed as
    `steps` (rows need not be in start order)."""
    by_start = steps.sort_values("start_s", kind="stable")
    previous_end = (by_start["start_s"] + by_start["duration_s"]).groupby(by_start["worker"]).shift(1)
    return (by_start["start_s"] - previous_end).fillna(math.inf).reindex(steps.index)


def overlap_s(steps: pd.DataFrame) -> pd.Series:
    """Per step of a steps.csv, how long other workers' steps ran during it (summed over
    them), indexed as `steps`."""
    start = steps["start_s"].to_numpy()
    end = start + steps["duration_s"].to_numpy()
    worker = steps["worker"].to_numpy()
    out = pd.Series(0.0, index=steps.index)
    for name in set(worker):
        mine, others = worker == name, worker != name
        s2, e2 = start[others], end[others]
        out[mine] = [float((np.minimum(e2, b) - np.maximum(s2, a)).clip(min=0.0).sum())
                     for a, b in zip(start[mine], end[mine])]
    return out


def run_rows(run_dir: Path, threads: int, omp_wait: str = "active", contention=None) -> pd.DataFrame:
    """A real run's steps (its steps.csv, as its driver recorded them) as profile rows of
    `kind=run` with the idle gap before each, indexed as the steps.csv rows they come from;
    steps with more than one prefill chunk are left out (a row holds one).

    `contention` (a semi-PD run's (prefill, decode) slowdowns from the `measured` model,
    semipd/measured_contention.py): each step's time with that slowdown divided out, as the
    simulator applies it: a step running at 1/f of its speed while the other worker steps
    did solo work d - overlap (1 - 1/f). So the run factor of semi-PD's workers is what
    their steps take beyond the grid and the contention the simulator already charges."""
    from engines.torch.profiler import COLUMNS
    steps = pd.read_csv(run_dir / "steps.csv")
    idle = idle_before_s(steps)
    if contention is not None:
        factor = steps["worker"].str.startswith("prefill").map({True: contention[0], False: contention[1]})
        steps["duration_s"] = steps["duration_s"] - overlap_s(steps) * (1.0 - 1.0 / factor)
    prefill_seqs = steps["batch_size"] - steps["num_decode_tokens"]
    steps = steps[prefill_seqs <= 1]
    decodes = steps["num_decode_tokens"]
    return pd.DataFrame({
        "kind": "run", "omp_wait": omp_wait, "threads": threads,
        "prefill_seqs": (steps["num_prefill_tokens"] > 0).astype(int), "prefill_tokens": steps["num_prefill_tokens"],
        "prefill_context": steps["prefill_context_tokens"], "decode_seqs": decodes,
        "decode_context": (steps["decode_context_tokens"] / decodes.clip(lower=1)).round().astype(int),
        "num_samples": steps["num_samples"], "median_s": steps["duration_s"], "min_s": steps["duration_s"],
        "max_s": steps["duration_s"], "repeats": 1, "idle_before_s": idle.loc[steps.index]})[list(COLUMNS)]


def add_run_rows(profile: Path, run_dir: Path, threads: int, omp_wait: str = "active", contention=None) -> int:
    """Append a real run's steps to a profile CSV as run rows (sim/profiled.py: the run
    factors; run_rows). Returns the number of rows added."""
    rows = run_rows(run_dir, threads, omp_wait, contention)
    with profile.open("a") as f:
        rows.to_csv(f, header=False, index=False, float_format="%.6g")
    return len(rows)


def merge_rounds(paths: list[Path], out: Path) -> Path:
    """One profile from several rounds of the same grid: per row the median of the rounds'
    medians; the first round's header, with the number of rounds."""
    from sim.profiled import SHAPE_COLUMNS, read_profile
    allrows = pd.concat([read_profile(p)[1] for p in paths])
    merged = allrows.groupby(list(SHAPE_COLUMNS), sort=False).agg(median_s=("median_s", "median"), min_s=("min_s", "min"),
                                                   max_s=("max_s", "max"), repeats=("repeats", "sum")).reset_index()
    header = [line for line in paths[0].read_text().splitlines() if line.startswith("#")
              and not line.startswith("# rounds:")]
    header.append(f"# rounds: {len(paths)} (interleaved with the real runs of harness.fidelity)")
    out.write_text("\n".join(header) + "\n" + merged.to_csv(index=False, float_format="%.6g"))
    return out


def merge_contention(paths: list[Path], out: Path) -> Path:
    """One contention profile from several rounds: all their rows (semipd/measured_contention.py
    takes the median per layout and role)."""
    lines = paths[0].read_text().splitlines()
    head = [line for line in lines if line.startswith("#")]
    rows = [line for p in paths for line in p.read_text().splitlines()[len(head) + 1:] if line]
    out.write_text("\n".join(head + [f"# rounds: {len(paths)}", lines[len(head)]] + rows) + "\n")
    return out
