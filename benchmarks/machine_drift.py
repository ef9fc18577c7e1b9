"""How steady is this machine's speed? Times a compute-bound bf16 GEMM (512 x 2048 x 4096)
and a memory-bound one (4 x 4096 x 8192: 64 MiB of weights read per call) every ~2 s
and prints the median of 10 calls each time, on both cores, nothing else running.

    python benchmarks/machine_drift.py [--seconds 90]

Quoted in README ("How noisy this machine is"): on a shared VM the two move by 10-20 %
within seconds, and not together, which bounds how close a simulator profiled at one
moment can come to a real run at another.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=90.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    a = torch.randn(512, 2048, dtype=torch.bfloat16)
    b = torch.randn(2048, 4096, dtype=torch.bfloat16)
    x = torch.randn(4, 4096, dtype=torch.bfloat16)
    w = torch.randn(4096, 8192, dtype=torch.bfloat16)
    gemm, gemv = [], []
    t0 = time.time()
    while time.time() - t0 < args.seconds:
        c, m = [], []
        for _ in range(10):
            s = time.perf_counter()
            a @ b
            c.append(time.perf_counter() - s)
            s = time.perf_counter()
            x @ w
            m.append(time.perf_counter() - s)
        gemm.append(statistics.median(c))
        gemv.append(statistics.median(m))
        print(f"{time.time() - t0:5.1f} s  gemm {1e3 * gemm[-1]:.2f} ms  gemv {1e3 * gemv[-1]:.2f} ms", flush=True)
        time.sleep(2)
    for name, v in (("gemm", gemm), ("gemv", gemv)):
        print(f"{name}: median {1e3 * statistics.median(v):.2f} ms, min {1e3 * min(v):.2f}, max {1e3 * max(v):.2f} "
              f"(max / min {max(v) / min(v):.2f}) over {len(v)} samples")


if __name__ == "__main__":
    main()
