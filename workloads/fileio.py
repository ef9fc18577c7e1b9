"""Reading dataset files with errors that name the file, the record and the expectation."""
from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

from workloads.errors import WorkloadError


def require_path(path: str | None, what: str, option: str = "workload.path") -> Path:
    """The path as a Path, or a WorkloadError saying which option to fix."""
    if not path:
        raise WorkloadError(f"No {what} given: set {option} to the file's location.")
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise WorkloadError(
            f"The {what} {str(resolved)!r} (from {option}) does not exist; "
            f"check the path (relative paths are resolved from {Path.cwd()})."
        )
    return resolved


_UNSET = object()
MISSING = object()  # pass as `got` when the key is absent


def record_error(path: Path, where: str, expected: str, got: object = _UNSET) -> WorkloadError:
    """A malformed-record error: file, record position, what was expected, what was found."""
    if got is _UNSET:
        found = ""
    elif got is MISSING:
        found = ", but the key is missing"
    else:
        found = f", got {_short(got)}"
    return WorkloadError(f"{path}: {where}: expected {expected}{found}.")


def read_json(path: Path) -> object:
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise WorkloadError(
                f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}."
            ) from None


def iter_jsonl(path: Path) -> Iterator[tuple[int, Mapping[str, object]]]:
    """(line number, record) for each non-blank line; every record must be a JSON object."""
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise WorkloadError(
                    f"{path}: line {line_no}: invalid JSON ({e.msg}); a JSONL file holds "
                    "one JSON object per line."
                ) from None
            if not isinstance(record, dict):
                raise record_error(path, f"line {line_no}", "a JSON object", record)
            yield line_no, record


def int_field(
    record: Mapping[str, object], key: str, path: Path, where: str, minimum: int = 0
) -> int:
    """record[key] as an int >= minimum (bools and non-integral floats rejected)."""
    value = record.get(key, MISSING)
    ok = isinstance(value, int) and not isinstance(value, bool)
    if isinstance(value, float) and value.is_integer():
        value, ok = int(value), True
    if not ok or value < minimum:  # type: ignore[operator]
        raise record_error(path, where, f"{key!r} to be an integer >= {minimum}", value)
    return int(value)  # type: ignore[arg-type]


def str_field(record: Mapping[str, object], key: str, path: Path, where: str) -> str:
    value = record.get(key, MISSING)
    if not isinstance(value, str):
        raise record_error(path, where, f"{key!r} to be a string", value)
    return value


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
