"""Real-engine regression gate as an A/B in one run: the baseline code (the commit recorded in
results/baselines/torch.json, checked out into a temporary git worktree) and the candidate
(this working tree) are measured on the same machine, interleaved, each in fresh processes of
the same virtual environment, and the gate judges candidate / baseline.

    python benchmarks/torch_ab.py [--pairs 4] [--repeats 2]       # the gate (`make regress`)
    python benchmarks/torch_ab.py --aa --gates 20                 # A/A noise study (`make regress-aa`)
    python benchmarks/torch_ab.py --accept                        # record HEAD as the baseline (`make baseline`)

Why: a timing recorded on one machine is no reference for another (the ratio of a decode step
to a dense forward moved ~35 % between two 2-core machines of one kind, against a few percent
within one machine); the same code measured beside the candidate is.

Each side runs ITS OWN `benchmarks/torch_regress.py --out DIR --repeats R` (so an API change in
the engine does not break the baseline) and reports medians in DIR/torch_tiny_llama_offline/
summary.json; that command line and the gated keys of its summary are the contract between
commits. Processes alternate A B A B ... (see `interleave`); per metric, the gate takes the
median over pairs of candidate / baseline within the pair.

Outcomes: PASS / FAIL (exit 1) per the limits in torch.json (set above the A/A noise, README);
SKIPPED (exit 0, the reason printed) when the baseline commit cannot be found or its code does
not run; a candidate that does not run is a failure. TORCH_REGRESS_PLANT_SLOWDOWN=0.3 slows
the candidate only (a check of the gate itself).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.baseline_tree import baseline_tree, dirty_files, head_commit  # noqa: E402
from metrics.compare import Rule, format_table, judge  # noqa: E402
from metrics.results import atomic_write_text  # noqa: E402

FORMAT = "semipd-bench-torch-ab/1"
BASELINE_FILE = ROOT / "results" / "baselines" / "torch.json"
PLANT_ENV = "TORCH_REGRESS_PLANT_SLOWDOWN"
RUN_NAME = "torch_tiny_llama_offline"       # torch_regress.py's output subdirectory (contract)
PROCESS_TIMEOUT_S = 300                     # one measuring process; normally ~5-10 s
MARKER = "torch_ab.json"


@dataclass(frozen=True)
class Side:
    name: str            # "baseline" | "candidate"
    root: Path           # the tree whose code runs
    plant: bool = False  # pass TORCH_REGRESS_PLANT_SLOWDOWN through (candidate only)
    commit: str = ""     # the commit the code must report (checked for the baseline)


@dataclass
class GateResult:
    status: str                                   # PASS | FAIL | SKIPPED
    reason: str = ""
    rows: list[dict] = field(default_factory=list)
    samples: dict[str, list[dict]] = field(default_factory=dict)


class SideFailed(RuntimeError):
    def __init__(self, side: Side, message: str) -> None:
        super().__init__(f"{side.name} ({side.root}): {message}")
        self.side = side


def load_baseline(path: Path = BASELINE_FILE) -> tuple[str, list[Rule]]:
    """(baseline commit, gated rules); a malformed file is a clear error naming it."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") != FORMAT:
            raise ValueError(f"\"format\" is {doc.get('format')!r}, expected {FORMAT!r}")
        rules = [Rule(**r) for r in doc["rules"]]
        if bad := [r.metrics for r in rules if r.kind != "ratio"]:
            raise ValueError(f"rules for {bad} must have kind \"ratio\"")
        return str(doc.get("baseline_commit") or ""), rules
    except FileNotFoundError:
        raise SystemExit(f"error: {path} does not exist (create it with `make baseline`)") from None
    except (ValueError, KeyError, TypeError) as err:
        raise SystemExit(f"error: {path}: {err}") from None


def measure(side: Side, out_dir: Path, repeats: int) -> dict[str, float]:
    """One fresh process of `side`'s own torch_regress.py; its summary's numeric values."""
    env = dict(os.environ)
    if not side.plant:
        env.pop(PLANT_ENV, None)
    cmd = [sys.executable, str(side.root / "benchmarks" / "torch_regress.py"), "--out", str(out_dir),
           "--repeats", str(repeats)]
    try:  # cwd = the side's tree: its checkpoints/ and its packages (sys.path[0] is its root)
        res = subprocess.run(cmd, cwd=side.root, env=env, capture_output=True, text=True,
                             timeout=PROCESS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SideFailed(side, f"measurement did not finish in {PROCESS_TIMEOUT_S} s") from None
    if res.returncode != 0:
        tail = "\n".join(res.stderr.strip().splitlines()[-8:])
        raise SideFailed(side, f"measurement exited {res.returncode}:\n{tail}")
    summary = json.loads((out_dir / RUN_NAME / "summary.json").read_text(encoding="utf-8"))
    # The code that ran says which commit it is (harness/versions.py asks git in its own tree):
    # a baseline that imported the candidate's packages (e.g. through the editable install)
    # would compare the candidate with itself.
    ran = str((summary.get("versions") or {}).get("git_commit", ""))
    if side.commit and not ran.startswith(side.commit[:7]):
        raise SideFailed(side, f"ran the code of commit {ran!r}, not {side.commit[:12]}")
    return {k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def interleave(baseline: Side, candidate: Side, pairs: int, repeats: int, out: Path,
               say=print) -> dict[str, list[dict]]:
    """A B A B ...: no two processes of one side run back to back, so a burst of load from
    elsewhere (measured: an A/A gate read 0.85 when alternating the order, A B B A, put two
    baseline processes next to each other in a slow spell) hits both sides of a pair; a slow
    drift biases each pair by only the drift over one process (~8 s)."""
    samples: dict[str, list[dict]] = {baseline.name: [], candidate.name: []}
    for i in range(pairs):
        for side in (baseline, candidate):
            t0 = time.perf_counter()
            values = measure(side, out / f"{side.name}_{i}", repeats)
            samples[side.name].append(values)
            say(f"  pair {i + 1}/{pairs} {side.name:<9} decode step {values.get('decode_step_s', 0) * 1e3:6.2f} ms"
                f"  {values.get('output_throughput_tok_s', 0):7.0f} tok/s  ({time.perf_counter() - t0:4.1f} s)")
    return samples


def _pairs(samples: dict[str, list[dict]], metric: str) -> list[tuple[float, float]]:
    return [(b[metric], c[metric]) for b, c in zip(samples["baseline"], samples["candidate"])
            if metric in b and metric in c and b[metric] > 0]


def judge_pairs(samples: dict[str, list[dict]], rules: Sequence[Rule]) -> list[dict]:
    """Per gated metric: medians of each side, the median over pairs of candidate/baseline, the
    verdict of its rule."""
    rows = []
    for rule in rules:
        m = rule.metrics
        pairs = _pairs(samples, m)
        if not pairs:
            rows.append({"metric": m, "verdict": "missing"})
            continue
        ratio = statistics.median(c / b for b, c in pairs)
        rows.append({"metric": m, "baseline": statistics.median(b for b, _ in pairs),
                     "candidate": statistics.median(c for _, c in pairs), "ratio": ratio,
                     "direction": rule.direction, "max_change": rule.max_change,
                     "verdict": judge(rule, 1.0, ratio)})
    return rows


def run_gate(baseline: Side, candidate: Side, rules: Sequence[Rule], pairs: int, repeats: int,
             out: Path, say=print) -> GateResult:
    try:
        samples = interleave(baseline, candidate, pairs, repeats, out, say)
    except SideFailed as err:
        if err.side.name == "baseline":
            return GateResult("SKIPPED", f"the baseline code does not run: {err}")
        return GateResult("FAIL", f"the candidate does not run: {err}")
    rows = judge_pairs(samples, rules)
    failed = [r["metric"] for r in rows if r["verdict"] in ("slower", "missing")]
    return GateResult("FAIL" if failed else "PASS", f"{', '.join(failed)} beyond the limit" if failed else "",
                      rows, samples)


def format_rows(rows: Sequence[dict]) -> str:
    body = []
    for r in rows:
        if "ratio" not in r:
            body.append([r["metric"], "-", "-", "-", "-", r["verdict"]])
            continue
        sign = "+" if r["direction"] == "lower_is_better" else "-"
        body.append([r["metric"], f"{r['baseline']:.5g}", f"{r['candidate']:.5g}", f"{r['ratio']:.4f}",
                     f"{sign}{r['max_change']:.0%}", r["verdict"]])
    return format_table(["metric", "baseline", "candidate", "cand/base", "limit", "verdict"], body,
                        right=(1, 2, 3, 4))


def _prepare_out(out: Path) -> None:
    """Start empty; only a directory this script made (it holds MARKER) or an empty one is wiped."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise SystemExit(f"error: {out} is not empty and was not made by {Path(__file__).name}; choose another --out")
        import shutil
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / MARKER, "{}\n")


def gate_main(args, rules: Sequence[Rule], commit: str) -> int:
    candidate = Side("candidate", ROOT, plant=True)
    head = head_commit(ROOT)[:12] + ("-dirty" if dirty_files(ROOT) else "")
    print(f"real-engine A/B: candidate = this tree ({head}), baseline = commit {commit[:12] or '(none)'}; "
          f"{args.pairs} interleaved pairs of fresh processes x {args.repeats} offline runs each")
    with baseline_tree(ROOT, commit) as tree:
        if tree.path is None:
            result = GateResult("SKIPPED", tree.problem)
        else:
            result = run_gate(Side("baseline", tree.path, commit=commit), candidate, rules, args.pairs, args.repeats, args.out)
    if result.rows:
        print("\n" + format_rows(result.rows) + "\n")
    doc = {"baseline_commit": commit, "candidate": head, "pairs": args.pairs, "repeats": args.repeats,
           "status": result.status, "reason": result.reason, "rows": result.rows, "samples": result.samples}
    atomic_write_text(args.out / MARKER, json.dumps(doc, indent=1) + "\n")
    line = {"PASS": "PASS: the real engine is within the limits of the baseline commit",
            "FAIL": f"FAIL: real engine: {result.reason}",
            "SKIPPED": f"SKIPPED (not a failure): real-engine A/B not run: {result.reason}"}[result.status]
    print(line)
    return 1 if result.status == "FAIL" else 0


def aa_main(args, rules: Sequence[Rule]) -> int:
    """The same code as both sides, `--gates` times: the noise the limits must sit above."""
    side_a, side_b = Side("baseline", ROOT), Side("candidate", ROOT)
    gates, t0 = [], time.perf_counter()
    for g in range(args.gates):
        result = run_gate(side_a, side_b, rules, args.pairs, args.repeats, args.out / f"gate_{g}", say=lambda s: None)
        gates.append(result)
        ratios = "  ".join(f"{r['metric']} {r.get('ratio', float('nan')):.4f}" for r in result.rows)
        print(f"A/A gate {g + 1:2d}/{args.gates}: {result.status:<7} {ratios}  ({time.perf_counter() - t0:5.0f} s)",
              flush=True)
    # Every metric both sides report, gated or not: the study also shows which is least noisy.
    limits = {r.metrics: f"{r.max_change:.0%}" for r in rules}
    names = sorted({m for g in gates for s in g.samples.get("baseline", []) for m in s})
    body, stats = [], {}
    for m in sorted(names, key=lambda m: (m not in limits, m)):
        vals = [statistics.median(c / b for b, c in p) for g in gates if (p := _pairs(g.samples, m))]
        if not vals:
            continue
        worst = max(abs(v - 1) for v in vals)
        stats[m] = {"min": min(vals), "median": statistics.median(vals), "max": max(vals),
                    "worst_abs_change": worst, "limit": limits.get(m, "not gated")}
        body.append([m, f"{min(vals):.4f}", f"{statistics.median(vals):.4f}", f"{max(vals):.4f}",
                     f"{worst:.1%}", limits.get(m, "not gated")])
    passed = sum(g.status == "PASS" for g in gates)
    print("\n" + format_table(["metric", "min", "median", "max", "worst |ratio-1|", "limit"], body,
                              right=(1, 2, 3, 4, 5)))
    print(f"\nA/A: {passed} of {len(gates)} gates pass ({args.pairs} pairs x {args.repeats} runs each, "
          f"{time.perf_counter() - t0:.0f} s)")
    atomic_write_text(args.out / MARKER, json.dumps(
        {"mode": "aa", "gates": len(gates), "passed": passed, "pairs": args.pairs, "repeats": args.repeats,
         "stats": stats, "statuses": [g.status for g in gates]}, indent=1) + "\n")
    return 0 if passed == len(gates) else 1


def accept_main(path: Path) -> int:
    """Record HEAD as the baseline commit, keeping the hand-set rules (limits)."""
    if dirty := dirty_files(ROOT):
        print(f"error: the real-engine baseline is a commit, and these tracked files differ from HEAD: "
              f"{', '.join(dirty[:5])}{' ...' if len(dirty) > 5 else ''}. Commit them, run `make baseline` "
              f"again, and commit {path}.", file=sys.stderr)
        return 2
    doc = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    commit = head_commit(ROOT)
    doc = {"format": FORMAT,
           "about": "Real-engine regression baseline: the commit whose code `make regress` measures beside the "
                    "candidate (benchmarks/torch_ab.py). Written by `make baseline`; edit `rules` (limits, set "
                    "above the A/A noise in README) by hand, never the commit.",
           "baseline_commit": commit, "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "rules": doc.get("rules", [])}
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    print(f"real-engine baseline: commit {commit} recorded in {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "regress" / "torch_ab")
    ap.add_argument("--baseline-file", type=Path, default=BASELINE_FILE)
    ap.add_argument("--pairs", type=int, default=4, help="interleaved baseline/candidate pairs (default 4)")
    ap.add_argument("--repeats", type=int, default=2, help="offline runs per process (default 2)")
    ap.add_argument("--aa", action="store_true", help="A/A: this tree as both sides (noise study)")
    ap.add_argument("--gates", type=int, default=20, help="with --aa: how many whole gates (default 20)")
    ap.add_argument("--accept", action="store_true", help="record HEAD as the baseline commit")
    args = ap.parse_args(argv)
    args.out = args.out.resolve()  # the measuring processes run in other directories (each side's tree)
    # SIGTERM (a CI timeout) unwinds like Ctrl-C: the running measurement is killed by
    # subprocess.run and the temporary worktree is removed by baseline_tree's `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.accept:
        return accept_main(args.baseline_file)
    if args.pairs < 1 or args.repeats < 1 or args.gates < 1:
        ap.error("--pairs, --repeats and --gates must be >= 1")
    commit, rules = load_baseline(args.baseline_file)
    _prepare_out(args.out)
    return aa_main(args, rules) if args.aa else gate_main(args, rules, commit)


if __name__ == "__main__":
    sys.exit(main())
