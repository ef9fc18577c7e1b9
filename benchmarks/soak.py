"""Soak: many small randomized simulated runs of every design, every invariant checked
after every event (engines/invariants.py).

    python benchmarks/soak.py --runs 10000 --seed 0 --jobs 2

Run i uses seed `--seed + i`; a violation prints that seed and the drawn configuration,
and `python benchmarks/soak.py --seed S --runs 1` replays exactly that run. The draw
(benchmarks/soak_draw.py) covers unified (prefill-first and chunked), disaggregated xPyD,
semi-PD with every controller and contention model (partition switches included) and
clusters of those; pools from barely one request up; small and large budgets and chunks;
offered loads from idle to far beyond what the engine serves; skewed and bursty workloads.
Exit status 1 if any run broke an invariant.
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.soak_draw import SoakConfig, build, draw_config  # noqa: E402
from engines.invariants import InvariantChecker, InvariantViolation  # noqa: E402
from engines.request import Status  # noqa: E402


@dataclass(frozen=True)
class RunOutcome:
    seed: int
    design: str
    violation: str  # "" when every invariant held
    num_requests: int = 0
    num_rejected: int = 0
    num_preemptions: int = 0
    num_events: int = 0
    num_share_switches: int = 0
    num_kv_transfers: int = 0


def run_one(seed: int) -> RunOutcome:
    """Draw configuration `seed`, run it with the checker attached, report what broke."""
    cfg = draw_config(seed)
    try:
        return _run(cfg)
    except InvariantViolation as exc:
        return RunOutcome(seed, cfg.design, f"{exc}\nconfig: {cfg}")
    except Exception:  # an engine crash is a violation too, with its traceback
        return RunOutcome(seed, cfg.design, f"{traceback.format_exc()}config: {cfg}")


def run_checked(engine, loop, requests) -> InvariantChecker:
    """Submit every request at its arrival and run the loop with every invariant checked after
    each event and at the end (raises InvariantViolation)."""
    checker = InvariantChecker(engine, requests)
    checker.attach()
    for req in requests:
        loop.at(req.arrival_s, lambda req=req: engine.submit(req))
    loop.run(on_event=checker.after_event)
    checker.at_end()
    return checker


def _run(cfg: SoakConfig) -> RunOutcome:
    engine, loop, requests = build(cfg)
    checker = run_checked(engine, loop, requests)
    _check_rejections_justified(cfg, engine, requests)
    parts = getattr(engine, "parts", [engine])
    return RunOutcome(
        cfg.seed, cfg.design, "", len(requests),
        sum(r.status is Status.REJECTED for r in requests), sum(r.num_preemptions for r in requests),
        checker.num_events, sum(getattr(p, "num_share_switches", 0) for p in parts),
        sum(getattr(p, "num_transfers", 0) for p in parts))


def _check_rejections_justified(cfg: SoakConfig, engine, requests) -> None:
    """A rejected request must really be unservable: too long for the model, more KV than a
    pool minus its watermark, or (without chunking) more tokens than one step's budget."""
    for req in requests:
        if req.status is not Status.REJECTED:
            continue
        total = req.prompt_len + req.output_len
        reasons = [total > engine.max_model_len]
        for w in engine.workers:
            s = w.scheduler
            usable = s.pool.num_blocks - int(s.config.watermark * s.pool.num_blocks)
            reasons.append(s.pool.blocks_for_tokens(total) > usable)
            reasons.append(not s.config.chunked_prefill and s.role != "decode"
                           and total > s.config.max_num_batched_tokens)
        if not any(reasons):
            raise InvariantViolation(f"request {req.id} ({total} tokens) rejected although every "
                                     f"worker could serve it: {req.reject_reason}")


def soak(num_runs: int, seed: int, jobs: int, *, quiet: bool = False) -> list[RunOutcome]:
    seeds = range(seed, seed + num_runs)
    start = time.perf_counter()
    if jobs <= 1:
        return [_report(i, run_one(s), quiet, start) for i, s in enumerate(seeds)]
    with multiprocessing.Pool(jobs) as pool:
        return [_report(i, o, quiet, start) for i, o in enumerate(pool.imap(run_one, seeds, chunksize=8))]


def _report(index: int, outcome: RunOutcome, quiet: bool, start_s: float) -> RunOutcome:
    if quiet:
        return outcome
    if outcome.violation:
        print(f"VIOLATION seed={outcome.seed} design={outcome.design} "
              f"(replay: python benchmarks/soak.py --seed {outcome.seed} --runs 1)\n{outcome.violation}\n",
              flush=True)
    if (index + 1) % 1000 == 0:
        print(f"... {index + 1} runs, {time.perf_counter() - start_s:.0f} s", flush=True)
    return outcome


def summary_line(outcomes: list[RunOutcome], wall_s: float) -> str:
    designs: dict[str, int] = {}
    for o in outcomes:
        designs[o.design] = designs.get(o.design, 0) + 1
    bad = sum(bool(o.violation) for o in outcomes)
    return (f"{len(outcomes)} runs, {bad} with violations, {wall_s:.1f} s wall; "
            f"designs {dict(sorted(designs.items()))}; "
            f"{sum(o.num_requests for o in outcomes)} requests "
            f"({sum(o.num_rejected for o in outcomes)} rejected), "
            f"{sum(o.num_events for o in outcomes)} events checked, "
            f"{sum(o.num_preemptions for o in outcomes)} preemptions, "
            f"{sum(o.num_share_switches for o in outcomes)} partition switches, "
            f"{sum(o.num_kv_transfers for o in outcomes)} KV transfers")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=300, help="number of runs (default 300)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the first run; run i uses seed + i")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.jobs < 1:
        ap.error(f"--runs and --jobs must be >= 1; got {args.runs} and {args.jobs}")
    start = time.perf_counter()
    outcomes = soak(args.runs, args.seed, args.jobs)
    print(summary_line(outcomes, time.perf_counter() - start))
    return 1 if any(o.violation for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
