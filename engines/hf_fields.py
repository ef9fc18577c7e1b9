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

    # ----- reads every decoder config shares -------------------------------------------
    def attention_heads(self) -> tuple[int, int, int, int]:
        """(hidden_size, num_attention_heads, num_key_value_heads, head_dim), checked: KV
        heads divide the heads; head_dim given or hidden_size / heads."""
        hidden, heads = self.pos_int("hidden_size"), self.pos_int("num_attention_heads")
        kv_heads = self.pos_int("num_key_value_heads", heads)
        if heads % kv_heads:
            self.fail("num_key_value_heads", f"must divide num_attention_heads={heads}", kv_heads)
        if self.get("head_dim") is None and hidden % heads:
            self.fail("hidden_size", f"must be divisible by num_attention_heads={heads} (or give head_dim)", hidden)
        return hidden, heads, kv_heads, self.pos_int("head_dim", hidden // heads)

    def rope_dict(self) -> dict | None:
        """The RoPE parameters: transformers 5 writes `rope_parameters` (theta inside),
        older files `rope_scaling`."""
        for name in ("rope_parameters", "rope_scaling"):
            value = self.get(name)
            if value is not None:
                if not isinstance(value, dict):
                    self.fail(name, "must be an object", value)
                return value
        return None

    def rope_theta(self) -> float:
        rope = self.rope_dict() or {}
        if self.get("rope_theta") is None and "rope_theta" in rope:
            return float(rope["rope_theta"])
        return self.pos_float("rope_theta", 10000.0)

    def sliding_window(self, model_type: str) -> int | None:
        """The attention window of the families that have one: Mistral and Mixtral always
        (null: none), Qwen2 only with `use_sliding_window: true`."""
        if model_type not in WINDOWED or (model_type == "qwen2" and not self.flag("use_sliding_window")):
            return None
        return None if self.get("sliding_window") is None else self.pos_int("sliding_window")


WINDOWED = ("mistral", "mixtral", "qwen2")  # model types whose config may set a sliding window
