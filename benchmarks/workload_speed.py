"""Wall time to build 1000 synthetic requests, per length distribution (median of
`--repeats` builds after one warm-up build).

    python benchmarks/workload_speed.py [--repeats 20] [--num-requests 1000]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workloads import WorkloadConfig, build_workload  # noqa: E402

DISTRIBUTIONS = ("sharegpt_like", "longbench_like", "math500_like", "mix", "fixed", "uniform")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--num-requests", type=int, default=1000)
    args = ap.parse_args()
    print(f"{'distribution':<16} {'median ms':>10} {'max ms':>8}")
    for dist in DISTRIBUTIONS:
        cfg = WorkloadConfig(source="synthetic", distribution=dist, num_requests=args.num_requests)
        build_workload(cfg)  # warm-up: first numpy calls
        times_ms = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            build_workload(cfg)
            times_ms.append((time.perf_counter() - start) * 1e3)
        print(f"{dist:<16} {statistics.median(times_ms):>10.2f} {max(times_ms):>8.2f}")


if __name__ == "__main__":
    main()
