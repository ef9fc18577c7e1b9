"""Serving pause of a compute-share switch on the real runtime: in place vs standby.

    .venv/bin/python benchmarks/share_switch.py [--switches 100] [--model tiny_llama]
        [--batch 32] [--context 256] [--every 4] [--modes inplace,standby] [--out F.json]

One worker process of the multi-process runtime (engines/torch/runtime.py) runs the same
decode step (batch x one new token over `context` tokens each) back to back, as a decode
worker under steady load. The share flips between 100 % and 50 % (all cores <-> half;
on 2 cores: 2 <-> 1) `--switches` times, each switch decided `--every` steps after the
previous one took effect and applied at an iteration boundary, as SemiPDEngine does:
- inplace: at the boundary the live process re-binds its threads (set_share);
- standby: at the decision a new process starts on the new cores, attaches to the same
  weights and KV and warms up; the old one keeps stepping; at the first boundary after
  the standby is ready it takes over and the old one is retired.
Pause of a switch = the time its cycle took (from the decision, through a standby's
start-up, the hand-over and `--every` steps at the new share, to the next decision)
beyond the same steps at calm speed (the median of 20 steps at each share, measured
first, 3 s after any switch): the time the worker lost to the switch, including
re-binding, hand-over, a cold first step and the retired process's exit, which on a CPU
competes for the same cores.
Printed: the distribution per mode (median, p90, p99, max), the standby start-up time
(decision to ready; the old process serves meanwhile, so it delays the switch) and how
much slower the old process's steps are meanwhile (the start-up - spawn, import, packing
the weights, warm-up - competes for the same cores on a CPU).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engines.plan import ScheduledSeq, StepPlan  # noqa: E402
from engines.torch import runtime  # noqa: E402
from engines.torch.procs import START_TIMEOUT_S  # noqa: E402

BLOCK = 16


def decode_plan(batch: int, context: int) -> StepPlan:
    per = -(-(context + 1) // BLOCK)
    seqs = tuple(ScheduledSeq(i, context, 1, True, False, tuple(range(i * per, (i + 1) * per))) for i in range(batch))
    return StepPlan("decode0", seqs, 0, batch)


def measure(mode: str, args) -> dict:
    setup = runtime.prepare(args.model, None, device="cpu", dtype=args.dtype, block_size=BLOCK,
                            kv_cache_bytes=None, gpu_memory_utilization=0.9)
    plan = decode_plan(args.batch, args.context)
    with runtime.ProcessRuntime(setup, block_size=BLOCK, temperature=0.0, seed=0, share_switch=mode) as rt:
        ex = rt.start("decode0", role="decode", share_pct=100.0, instance=0, num_instances=1)
        rt.wait_ready()
        step_ends, shares, kinds = [], [], []  # per step; kind: steady | first | startup
        share, switches, startups = 100.0, [], []

        def step(kind: str) -> None:
            ex.submit(plan)
            ex.collect()
            step_ends.append(time.perf_counter())
            shares.append(share)
            kinds.append(kind)

        for _ in range(3):
            step("warm-up")
        reference = {}  # calm step time per share, before any switching
        for ref_share in (100.0, 50.0):
            if ref_share != share:
                ex.begin_switch(ref_share)  # standby: wait for it, hand over, let the old one exit
                if ex.standby is not None:
                    ex.active.conn.poll(0)
                    ex.standby.conn.poll(START_TIMEOUT_S)
                    ex.standby_is_ready(ex.standby.conn)
                ex.set_share(ref_share)
                share = ref_share
                time.sleep(3.0)
            for _ in range(3):
                step("warm-up")
            reference[ref_share] = statistics.median(_timed(step, 20))
        while len(switches) < args.switches:
            decided_at = len(step_ends)
            target = 50.0 if share == 100.0 else 100.0
            decided = time.perf_counter()
            source = ex.begin_switch(target)
            if source is not None:  # standby: serve until it is ready
                while not source.poll(0):
                    step("startup")
                ex.standby_is_ready(source)
                startups.append(time.perf_counter() - decided)
            ex.set_share(target)
            share = target
            step("first")
            for _ in range(args.every - 1):
                step("after")
            switches.append((decided_at, len(step_ends)))
    ends = np.array(step_ends)
    durations = np.diff(ends, prepend=np.nan)
    # A switch's pause: the time its cycle (from the decision, through the standby's
    # start-up if any, to the next decision) took beyond the same steps at calm speed.
    pauses = [float(sum(durations[i] - reference[shares[i]] for i in range(a, b))) for a, b in switches]
    slowdown = [durations[i] / reference[shares[i]] for i in range(len(kinds)) if kinds[i] == "startup"]
    return {"mode": mode, "num_switches": len(pauses),
            "steady_step_ms": {f"{k:g}": 1e3 * v for k, v in reference.items()},
            "pause_ms": [1e3 * p for p in pauses], "standby_startup_s": startups,
            "startup_step_slowdown": slowdown}


def _timed(step, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        step("calm")
        out.append(time.perf_counter() - start)
    return out


def summary_row(r: dict) -> str:
    p = np.array(r["pause_ms"])
    startup = (f"{statistics.median(r['standby_startup_s']):.2f} s" if r["standby_startup_s"] else "-")
    slowdown = (f"{statistics.median(r['startup_step_slowdown']):.2f}x" if r["startup_step_slowdown"] else "-")
    return (f"| {r['mode']} | {r['num_switches']} | {np.median(p):.2f} | {np.percentile(p, 90):.2f} | "
            f"{np.percentile(p, 99):.2f} | {p.max():.2f} | {r['steady_step_ms']['100']:.1f} / "
            f"{r['steady_step_ms']['50']:.1f} | {startup} | {slowdown} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny_llama")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--switches", type=int, default=100)
    ap.add_argument("--every", type=int, default=10, help="steps at the new share before the next decision")
    ap.add_argument("--modes", default="inplace,standby")
    ap.add_argument("--out", help="also write the results as JSON here")
    args = ap.parse_args()
    results = [measure(mode, args) for mode in args.modes.split(",")]
    print(f"Share switches 100 % <-> 50 %, {args.model} {args.dtype}, decode batch {args.batch} x "
          f"{args.context} tokens, one worker process (pause in ms)\n")
    print("| mode | switches | pause p50 | p90 | p99 | max | step ms at 100 / 50 % | standby start-up p50 "
          "| steps during start-up, x steady |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(summary_row(r))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
