"""The paper suite's progress: a bar with ETA on a terminal, a line per finished item always.

The suite's multiruns are other processes whose output it keeps (for the error message of a
failed one), so their own bars never show. Instead each phase has one bar here: the
experiments phase counts runs, read from the `progress.jsonl` each multirun's runs append to
as they end (harness/callbacks.py, SweepProgress), and names a failed run when its line
appears; the crossing searches count searches. Off a terminal the bar is off (tqdm's
`disable=None`) and the lines stay, so CI logs read as before.
"""
from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from harness.callbacks import POLL_S, PROGRESS_FILE


class PhaseProgress:
    """`with PhaseProgress(desc, total, unit, sweep_dirs) as p:` - a bar of `total` `unit`s;
    `p.finished(text)` prints "[i/n] text" for the i-th of `items` finished items and, without
    `sweep_dirs`, advances the bar by one; with them, a thread advances it by the runs that
    their progress.jsonl files gain."""

    def __init__(self, desc: str, total: int | None, unit: str, items: int,
                 sweep_dirs: list[Path] | None = None) -> None:
        from tqdm import tqdm
        self._tqdm = tqdm
        self._bar = tqdm(total=total, desc=desc, unit=unit, disable=None, file=sys.stderr, dynamic_ncols=True)
        self._items, self._done = items, 0
        self._lock = threading.Lock()
        self._files = [Path(d) / PROGRESS_FILE for d in (sweep_dirs or [])]
        self._seen = {f: _lines(f) for f in self._files}  # --keep: lines of earlier runs are not ours
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="suite-progress") \
            if self._files else None

    def __enter__(self) -> "PhaseProgress":
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5.0)
        self._bar.close()

    def finished(self, text: str) -> None:
        with self._lock:
            self._done += 1
            self._tqdm.write(f"[{self._done}/{self._items}] {text}", file=sys.stdout)
            sys.stdout.flush()
            if self._thread is None:
                self._bar.update(1)

    def _watch(self) -> None:
        while True:
            stopping = self._stop.wait(POLL_S)  # once more after the stop: the last runs' lines
            for f in self._files:
                lines = _lines(f)
                new, self._seen[f] = lines[len(self._seen[f]):], lines
                with self._lock:
                    for line in new:
                        rec = json.loads(line)
                        if rec["status"] != "completed":
                            self._tqdm.write(f"run {rec['status']} after {rec['seconds']:.1f} s: {f.parent.name} "
                                             f"{' '.join(rec['overrides'])}", file=sys.stderr)
                    self._bar.update(len(new))
            if stopping:
                return


def _lines(path: Path) -> list[str]:
    """Whole lines only: a run may be writing the last one right now."""
    return path.read_text().split("\n")[:-1] if path.is_file() else []
