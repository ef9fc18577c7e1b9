"""Typed reads of a Hugging Face config.json, with errors that name the file and the field.

Shared by the simulator's model descriptions (sim/hf_config.py) and the real engine's
checkpoint config (engines/torch/config.py). Torch-free.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engines.errors import UserError


def read_json_object(path: Path, error: type[UserError]) -> dict[str, Any]:
    """The JSON object in `path`, or `error` naming the file and what is wrong."""
    if not path.is_file():
        raise error(f"{path}: config.json not found")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a JSON object, got {type(raw).__name__}")
    return raw


class HFFields:
    """Typed access to config.json fields; a bad or missing one raises `error` with the
    file (`source`) and the field in its message."""

    def __init__(self, raw: dict[str, Any], source: str, error: type[UserError]):
        self.raw, self.source, self.error = raw, source, error

    def fail(self, name: str, what: str, value: Any = None):
        got = "" if value is None else f", got {value!r}"
        raise self.error(f"{self.source}: field '{name}' {what}{got}")

    def get(self, name: str, default: Any = None, required: bool = False) -> Any:
        value = self.raw.get(name)
        if value is None:
            if required and default is None:
                self.fail(name, "is missing")
            return default
        return value

    def pos_int(self, name: str, default: int | None = None) -> int:
        value = self.get(name, default, required=True)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            self.fail(name, "must be a positive integer", value)
        return value

    def nonneg_int(self, name: str, default: int | None = None) -> int:
        value = self.get(name, default, required=True)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(name, "must be a non-negative integer", value)
        return value

    def pos_float(self, name: str, default: float | None = None) -> float:
        value = self.get(name, default, required=True)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            self.fail(name, "must be a positive number", value)
        return float(value)

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            self.fail(name, "must be true or false", value)
        return value
