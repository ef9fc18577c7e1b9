"""Regression check: compare fresh runs with committed baselines, print a table, exit 1 on
a regression.   python -m metrics.compare NEW BASE [--accept] [--all]   (`make regress`)

NEW and BASE are each a baseline file or a directory of baseline files (`*.json` directly
inside) and/or run directories (any depth, found by their `summary.json`). Runs are joined
on `RunKey`; their metrics are the numeric leaves of `summary.json` (`ttft_s.p90`, ...),
each judged by the first `Rule` of the BASE run whose pattern matches it:
- `exact` (the simulator is deterministic): |new - base| <= rel_tol * max(|base|, |new|),
  else "changed" (fails), whichever way it moved;
- `ratio` (real timings): new/base may move up to `max_change` in the bad `direction`;
  beyond that "slower" (fails), as far the other way "faster" (passes);
- `info`: listed with `--all`, never fails.
A run or metric only in BASE is "missing" (fails), only in NEW "new" (passes).
`--accept` then writes NEW's runs as the baselines (`<executor>.json`), keeping the rules.
"""
from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from engines.errors import UserError
from metrics.results import atomic_write_text

FORMAT = "semipd-bench-baselines/1"
KEY_FIELDS = ("engine", "workload", "rate_per_gpu", "model", "hardware", "executor")
# summary.json entries that describe the run (or identify it) rather than measure it.
NOT_METRICS = frozenset(KEY_FIELDS) | {"engine_label", "design", "workload_source", "total_rate",
                                       "num_gpus", "num_rate_units", "slo", "versions",
                                       "tpot_definition", "controller"}
FAILING = ("missing", "changed", "slower")
# Worst first: a run's verdict is its worst metric's.
SEVERITY = ("missing", "changed", "slower", "new", "faster", "ok", "info")
KINDS = ("exact", "ratio", "info")
DIRECTIONS = ("higher_is_better", "lower_is_better", "either")
Scalar = float | int | bool | None
WHOLE_RUN = "(whole run)"


@dataclass(frozen=True)
class RunKey:
    """What a run measured: runs with equal keys are compared with each other."""

    engine: str
    workload: str
    rate_per_gpu: float
    model: str
    hardware: str
    executor: str

    @classmethod
    def of(cls, values: Mapping[str, Any], origin: str) -> RunKey:
        if missing := [f for f in KEY_FIELDS if values.get(f) is None]:
            raise UserError(f"{origin}: no {', '.join(missing)}; cannot tell which run this is")
        return cls(**{f: (float(values[f]) if f == "rate_per_gpu" else str(values[f])) for f in KEY_FIELDS})

    @property
    def label(self) -> str:
        return f"{self.executor}:{self.engine} {self.workload} r{self.rate_per_gpu:g} {self.model}@{self.hardware}"

    def sort_key(self) -> tuple:
        return (self.executor, self.model, self.hardware, self.workload, self.rate_per_gpu, self.engine)


@dataclass(frozen=True)
class Rule:
    """How one metric (or a pattern of them) is judged; see the module docstring."""

    metrics: str = "*"           # fnmatch pattern over metric names; the first match wins
    kind: str = "exact"          # exact | ratio | info
    rel_tol: float = 1e-9        # exact: float noise only
    max_change: float = 0.0      # ratio: allowed move of new/base in the bad direction (0.1 = 10 %)
    direction: str = "either"    # ratio: higher_is_better | lower_is_better | either

    def __post_init__(self) -> None:  # a typo in a hand-edited rule must not pass silently
        if self.kind not in KINDS or self.direction not in DIRECTIONS:
            raise UserError(f"bad rule {self}: kind in {KINDS}, direction in {DIRECTIONS}")


# Without a baseline file: simulated runs must reproduce. Recorded real-engine timings are
# only listed: a time recorded on one machine is no reference for another, so the real engine
# is gated by an A/B against the baseline commit measured in the same run
# (benchmarks/torch_ab.py), not through this table.
DEFAULT_RULES = {"sim": (Rule(),)}
INFO_ONLY = (Rule(kind="info"),)


@dataclass
class RunEntry:
    key: RunKey
    metrics: dict[str, Scalar]
    origin: str                                  # run directory or baseline file
    versions: dict[str, str] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()                 # the run's own, then its file's

    def rule_for(self, metric: str) -> Rule:
        rules = (*self.rules, *DEFAULT_RULES.get(self.key.executor, INFO_ONLY), *INFO_ONLY)
        return next(r for r in rules if fnmatch.fnmatchcase(metric, r.metrics))


@dataclass(frozen=True)
class Row:
    run: str      # RunKey.label
    metric: str   # or WHOLE_RUN for a missing/new run
    base: Scalar
    new: Scalar
    verdict: str  # ok | changed | slower | faster | missing | new | info


def flatten_metrics(summary: Mapping[str, Any]) -> dict[str, Scalar]:
    """Numeric leaves of a summary, named by their path (`ttft_s.p90`, `final_shares_pct.0`)."""
    out: dict[str, Scalar] = {}

    def walk(name: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{name}.{k}", v)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(f"{name}.{i}", v)
        elif value is None or isinstance(value, (int, float)):
            out[name] = value

    for key, value in summary.items():
        if key not in NOT_METRICS:
            walk(key, value)
    return out


def load_entries(path: str | Path) -> list[RunEntry]:
    """Every run below `path` (see the module docstring for what is looked at)."""
    path = Path(path)
    if path.is_file():
        return _load_baseline_file(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or directory")
    entries = [e for f in sorted(path.glob("*.json")) for e in _load_baseline_file(f, strict=False)]
    for summary_path in sorted(path.rglob("summary.json")):
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        entries.append(RunEntry(RunKey.of(summary, str(summary_path)), flatten_metrics(summary),
                                str(summary_path.parent), dict(summary.get("versions") or {})))
    return entries


def _load_baseline_file(path: Path, strict: bool = True) -> list[RunEntry]:
    """A baseline file's runs; `strict=False` skips other JSON files (e.g. a vLLM export)."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        if strict:
            raise UserError(f"{path}: not a baseline file (no \"format\": \"{FORMAT}\")")
        return []
    try:
        file_rules = tuple(Rule(**r) for r in doc.get("rules", []))
        return [RunEntry(RunKey.of(run["key"], str(path)), dict(run["metrics"]), str(path),
                         dict(doc.get("versions") or {}),
                         tuple(Rule(**r) for r in run.get("rules", [])) + file_rules)
                for run in doc.get("runs", [])]
    except (KeyError, TypeError) as err:  # a hand-edited file missing a field or with an unknown one
        raise UserError(f"{path}: malformed baseline file ({type(err).__name__}: {err})") from None


def _index(entries: Sequence[RunEntry], side: str) -> dict[RunKey, RunEntry]:
    out: dict[RunKey, RunEntry] = {}
    for e in entries:
        if e.key in out:
            raise UserError(f"{side}: two runs of {e.key.label}: {out[e.key].origin} and {e.origin}")
        out[e.key] = e
    return out


def judge(rule: Rule, base: Scalar, new: Scalar) -> str:
    """The verdict on one metric (module docstring)."""
    if rule.kind == "info":
        return "info"
    if base is None or new is None or isinstance(base, bool) or isinstance(new, bool):
        return "ok" if base == new else "changed"
    if rule.kind == "exact":
        return "ok" if abs(new - base) <= rule.rel_tol * max(abs(base), abs(new)) else "changed"
    if base == 0:
        return "ok" if new == 0 else "changed"
    ratio, limit = new / base, rule.max_change
    up, down = ratio > 1 + limit, ratio < 1 - limit
    if rule.direction == "either":
        return "changed" if up or down else "ok"
    worse, better = (down, up) if rule.direction == "higher_is_better" else (up, down)
    return "slower" if worse else "faster" if better else "ok"


def compare(new: Sequence[RunEntry], base: Sequence[RunEntry]) -> list[Row]:
    """One row per (run, metric) in either side, in a stable order."""
    new_by, base_by = _index(new, "NEW"), _index(base, "BASE")
    rows: list[Row] = []
    for key in sorted(new_by.keys() | base_by.keys(), key=RunKey.sort_key):
        b, n = base_by.get(key), new_by.get(key)
        if b is None or n is None:
            rows.append(Row(key.label, WHOLE_RUN, None, None, "new" if b is None else "missing"))
            continue
        names = list(b.metrics) + [m for m in n.metrics if m not in b.metrics]
        for m in names:
            verdict = ("missing" if m not in n.metrics else "new" if m not in b.metrics
                       else judge(b.rule_for(m), b.metrics[m], n.metrics[m]))
            rows.append(Row(key.label, m, b.metrics.get(m), n.metrics.get(m), verdict))
    return rows


def _fmt_value(v: Scalar) -> str:
    return "-" if v is None else str(v) if isinstance(v, (bool, int)) else f"{v:.6g}"


def _fmt_ratio(base: Scalar, new: Scalar) -> str:
    if not isinstance(base, (int, float)) or not isinstance(new, (int, float)) or base == 0:
        return "-"
    r = new / base
    # Float-noise-sized changes would print as 1.0000: show the deviation instead.
    return f"1{r - 1:+.1e}" if r != 1 and abs(r - 1) < 5e-5 else f"{r:.4f}"


def format_table(header: Sequence[str], body: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Fixed-width columns for CI logs; the columns numbered in `right` are right-aligned."""
    widths = [max(len(r[i]) for r in (header, *body)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


# Listed first when a run moved, so that a capped table still shows what people read.
HEADLINE = ("request_throughput", "output_throughput_tok_s", "ttft_s.p90", "tpot_s.p90", "itl_s.p90",
            "e2e_s.p90", "slo_attainment", "num_finished", "num_rejected", "num_preemptions")


def report(rows: Sequence[Row], *, show_all: bool = False, max_per_run: int = 12) -> str:
    """A table of runs, then one of the metrics that moved (at most `max_per_run` per run,
    headline metrics first), or of every metric with `show_all`."""
    runs: dict[str, list[Row]] = {}
    for r in rows:
        runs.setdefault(r.run, []).append(r)
    run_body, body = [], []
    for run, rs in runs.items():
        moved = [r for r in rs if r.verdict not in ("ok", "info")]
        run_body.append([run, str(sum(r.metric != WHOLE_RUN for r in rs)), str(len(moved)),
                         min((r.verdict for r in rs), key=SEVERITY.index)])
        shown = rs if show_all else sorted(moved, key=lambda r: r.metric not in HEADLINE)[:max_per_run]
        body += [[r.run, r.metric, _fmt_value(r.base), _fmt_value(r.new), _fmt_ratio(r.base, r.new), r.verdict]
                 for r in shown]
        if len(shown) < len(moved):
            body.append([run, f"... {len(moved) - len(shown)} more (--all)", "", "", "", ""])
    parts = [format_table(["run", "metrics", "differing", "verdict"], run_body, right=(1, 2))]
    if body:
        parts.append(format_table(["run", "metric", "base", "new", "ratio", "verdict"], body, right=(2, 3, 4)))
    return "\n\n".join(parts)


def accept(new: Sequence[RunEntry], base_path: Path) -> list[Path]:
    """Write NEW's runs as the baselines: `<executor>.json` in `base_path` (or that file)."""
    executors = sorted({e.key.executor for e in new})
    if base_path.suffix == ".json" and len(executors) > 1:
        raise UserError(f"{base_path} is one file but NEW has executors {executors}")
    return [_write_baseline_file(base_path if base_path.suffix == ".json" else base_path / f"{ex}.json",
                                 ex, [e for e in new if e.key.executor == ex]) for ex in executors]


def _write_baseline_file(path: Path, executor: str, entries: Sequence[RunEntry]) -> Path:
    # Rules are hand-chosen (thresholds from measured noise): keep them across --accept.
    old = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    run_rules = {RunKey.of(r["key"], str(path)): r["rules"] for r in old.get("runs", []) if r.get("rules")}
    rules = old.get("rules", [dataclasses.asdict(r) for r in DEFAULT_RULES.get(executor, INFO_ONLY)])
    versions = next((e.versions for e in entries if e.versions), {})
    runs = [{"key": dataclasses.asdict(e.key), "source": Path(e.origin).name,
             **({"rules": run_rules[e.key]} if e.key in run_rules else {}), "metrics": e.metrics}
            for e in sorted(entries, key=lambda e: e.key.sort_key())]
    doc = {"format": FORMAT,
           "about": "Regression baselines, written by `make baseline` (metrics.compare --accept); "
                    "edit `rules` by hand, never the numbers.",
           "executor": executor, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "git_commit": versions.get("git_commit", "unknown"), "versions": versions,
           "rules": rules, "runs": runs}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=1, allow_nan=False) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("new", type=Path, help="fresh results: run directories and/or baseline files")
    ap.add_argument("base", type=Path, help="baselines, e.g. results/baselines")
    ap.add_argument("--accept", action="store_true", help="make NEW the baselines (after showing the diff)")
    ap.add_argument("--all", action="store_true", help="list every metric, not only those that moved")
    args = ap.parse_args(argv)
    try:  # a checker that finds nothing to check must not pass
        new = load_entries(args.new)
        base = load_entries(args.base) if args.base.exists() or not args.accept else []
        if not new or not (base or args.accept):
            raise UserError(f"no runs in {args.new}" if not new else
                             f"no baselines in {args.base}: create them with --accept (make baseline)")
        rows = compare(new, base)
    except (UserError, FileNotFoundError, json.JSONDecodeError) as err:  # a bug keeps its traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"regression check: {args.new} ({len(new)} runs) against {args.base} ({len(base)} runs)\n")
    print(report(rows, show_all=args.all) + "\n")
    if args.accept:
        print("\n".join(f"baselines written: {p}" for p in accept(new, args.base)))
        return 0
    return _verdict(rows, args.base)


def _verdict(rows: Sequence[Row], base: Path) -> int:
    failed = [r for r in rows if r.verdict in FAILING]
    if failed:
        names = list(dict.fromkeys(r.metric for r in sorted(failed, key=lambda r: r.metric not in HEADLINE)))
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        print(f"FAIL: {len(failed)} metric(s) in {len({r.run for r in failed})} run(s) are "
              f"{'/'.join(sorted({r.verdict for r in failed}))}: {shown}\n"
              f"If intended: `make baseline` (metrics.compare NEW BASE --accept) and commit {base}.")
        return 1
    print(f"PASS: {sum(r.metric != WHOLE_RUN for r in rows)} metrics in "
          f"{len({r.run for r in rows})} runs match the baselines.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
