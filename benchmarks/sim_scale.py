"""Long simulated runs: wall time and peak memory (RSS) of whole `bench.py` processes at
growing request counts, to show that memory grows with the requests and no faster (a
week-long production trace is ~100,000s of requests).

    .venv/bin/python benchmarks/sim_scale.py [--requests 1000,10000,100000] [--out FILE.md] [overrides...]

Each run is `bench.py` (plots and progress off) under GNU time, which reports the process's
peak RSS. Default workload: ShareGPT-like synthetic lengths on Llama-3-8B / A100-80GB,
chunked unified serving at 10 req/s. Prints a table with the marginal memory per request
between consecutive sizes: if memory grew faster than the requests, it would rise with N.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ["engine=unified_chunked", "model=llama3_8b", "hardware=a100_80g", "workload=synthetic",
           "workload.distribution=sharegpt_like", "workload.rate=10"]
TIME = "/usr/bin/time"


def measure(n: int, overrides: list[str], work: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one whole bench.py process."""
    report = work / f"time_{n}.txt"
    cmd = [TIME, "-f", "%e %M", "-o", str(report), sys.executable, str(ROOT / "bench.py"), *overrides,
           f"workload.num_requests={n}", "plots=false", "progress=false", f"hydra.run.dir={work}/run_{n}"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"sim_scale: {n} requests failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    wall_s, rss_kib = report.read_text().split()[-2:]
    return float(wall_s), int(rss_kib) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", default="1000,10000,100000", help="comma-separated request counts")
    ap.add_argument("--out", type=Path, help="also write the table (markdown) here")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides replacing the default workload")
    args = ap.parse_args()
    if not Path(TIME).exists():
        sys.exit(f"sim_scale: needs GNU time at {TIME} (apt install time)")
    overrides = args.overrides or DEFAULT
    sizes = sorted(int(x) for x in args.requests.split(","))
    rows = ["| requests | wall (s) | peak RSS (MiB) | marginal RSS per request (KiB) |", "|---|---|---|---|"]
    prev = None
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            wall_s, rss_mib = measure(n, overrides, Path(tmp))
            marginal = "" if prev is None else f"{(rss_mib - prev[1]) * 1024 / (n - prev[0]):.2f}"
            rows.append(f"| {n:,} | {wall_s:.1f} | {rss_mib:.0f} | {marginal} |")
            print(rows[-1], flush=True)
            prev = (n, rss_mib)
    text = "\n".join([f"# {' '.join(overrides)}", *rows]) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
