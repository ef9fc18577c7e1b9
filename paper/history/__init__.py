"""Before/after measurements of earlier changes: every `paper/history/*.json` file becomes one
table of REPORT.md's section "Changes measured against earlier versions".

File format (exact; every key but `note` required, no others):
    {"title": str, "what_changed": str, "command": str (how both sides were produced),
     "before_commit": str (git sha of the old code), "after": str ("this commit" or a sha),
     "columns": [str, ...], "rows": [[cell, ...], ...], "note": str (optional)}
A cell is a string, a number, a boolean or null; every row has one cell per column.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paper.tables import md_rows

HISTORY_DIR = Path(__file__).resolve().parent
_STR_FIELDS = ("title", "what_changed", "command", "before_commit", "after")
_ALLOWED = set(_STR_FIELDS) | {"columns", "rows", "note"}
_SHA = re.compile(r"^[0-9a-f]{7,40}$")


@dataclass(frozen=True)
class HistoryTable:
    title: str
    what_changed: str
    command: str
    before_commit: str
    after: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    note: str | None = None


def _fail(path: Path, field: str, expected: str, got: Any) -> None:
    raise ValueError(f"{path}: field '{field}': expected {expected}, got {got!r}")


def load(path: Path) -> HistoryTable:
    """Read and check one history file; errors name the file, the field and what was expected."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with keys {sorted(_ALLOWED)}")
    unknown = sorted(set(data) - _ALLOWED)
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {unknown}; allowed: {sorted(_ALLOWED)}")
    for key in _STR_FIELDS:
        if not isinstance(data.get(key), str) or not data[key].strip():
            _fail(path, key, "a non-empty string", data.get(key))
    if not _SHA.match(data["before_commit"]):
        _fail(path, "before_commit", "a git sha (7-40 lowercase hex digits)", data["before_commit"])
    if data["after"] != "this commit" and not _SHA.match(data["after"]):
        _fail(path, "after", "'this commit' or a git sha", data["after"])
    columns = data.get("columns")
    if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
        _fail(path, "columns", "a non-empty list of strings", columns)
    rows = data.get("rows")
    if not isinstance(rows, list) or not rows:
        _fail(path, "rows", "a non-empty list of rows", rows)
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(columns):
            _fail(path, f"rows[{i}]", f"a list of {len(columns)} cells (one per column)", row)
        for j, value in enumerate(row):
            if value is not None and not isinstance(value, (str, int, float, bool)):
                _fail(path, f"rows[{i}][{j}]", "a string, number, boolean or null", value)
    note = data.get("note")
    if note is not None and not isinstance(note, str):
        _fail(path, "note", "a string", note)
    return HistoryTable(data["title"], data["what_changed"], data["command"], data["before_commit"],
                        data["after"], tuple(columns), tuple(tuple(r) for r in rows), note)


def load_all(directory: Path = HISTORY_DIR) -> list[HistoryTable]:
    """Every *.json file of `directory`, in file-name order."""
    return [load(p) for p in sorted(Path(directory).glob("*.json"))]


def render_table(t: HistoryTable) -> str:
    after = "this commit" if t.after == "this commit" else f"`{t.after}`"
    text = (f"\n### {t.title}\n\n{t.what_changed}\n\n"
            f"Both sides: `{t.command}`; before: `{t.before_commit}`, after: {after}.\n\n"
            # 6 significant digits: before/after differences must stay visible
            f"{md_rows(t.columns, t.rows, float_format='.6g')}")
    return text + (f"\n{t.note}\n" if t.note else "")


def render_section(directory: Path = HISTORY_DIR) -> str:
    tables = load_all(directory)
    head = "\n## Changes measured against earlier versions\n"
    if not tables:
        return head + f"\nNo measurements recorded (no *.json in {Path(directory).name}/).\n"
    return head + "".join(render_table(t) for t in tables)
