"""LlamaConfig: the model shape, parsed from / written to a Hugging Face config.json.

The real engine runs the Llama family: Llama (optionally with `attention_bias`: q, k, v
and o biases), Mistral (Llama's layers; served within its `sliding_window`: the run's
context is capped at the window, sim/hf_config.py, so full attention is the window's) and
Qwen2 / Qwen2.5 (q, k and v biases).

Torch-free on purpose (sizes.py and the simulator read it). Parsing errors raise
CheckpointError naming the file and the field, because a bad config.json is the most
common way a checkpoint directory is wrong.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engines.errors import UserError
from engines.hf_fields import HFFields as _Fields, read_json_object


class CheckpointError(UserError):
    """A checkpoint directory is missing, incomplete or disagrees with its config."""


_ROPE_TYPES = ("default", "linear", "llama3")
_LLAMA3_ROPE_KEYS = ("factor", "low_freq_factor", "high_freq_factor",
                     "original_max_position_embeddings")


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict | None = field(default=None, hash=False)
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = field(default=None, hash=False)
    model_type: str = "llama"            # llama | mistral | qwen2 (ARCHITECTURES)
    qkv_bias: bool = False               # q, k and v projections with bias (Qwen2; Llama attention_bias)
    o_bias: bool = False                 # o projection with bias (Llama attention_bias)
    sliding_window: int | None = None    # Mistral (and Qwen2 with use_sliding_window)

    @property
    def max_context_tokens(self) -> int:
        """The longest sequence this engine serves: the position limit, or the sliding
        window if smaller (within it full attention is the window's attention)."""
        return min(self.max_position_embeddings, self.sliding_window or self.max_position_embeddings)

    @property
    def eos_token_ids(self) -> frozenset[int]:
        """The end-of-sequence ids, whether config.json gives one id or a list (Llama-3
        instruct: [128001, 128009]); empty without any."""
        eos = self.eos_token_id
        if eos is None:
            return frozenset()
        return frozenset([eos] if isinstance(eos, int) else eos)

    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_key_value_heads * self.head_dim

    def num_params(self) -> int:
        """Exact parameter count, embeddings and LM head included."""
        h, i = self.hidden_size, self.intermediate_size
        attn = h * (self.q_size + 2 * self.kv_size) + self.q_size * h
        attn += (self.q_size + 2 * self.kv_size) * self.qkv_bias + h * self.o_bias
        per_layer = attn + 3 * h * i + 2 * h
        head = 0 if self.tie_word_embeddings else self.vocab_size * h
        return self.vocab_size * h + self.num_hidden_layers * per_layer + h + head

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.num_hidden_layers * self.kv_size * dtype_bytes

    def to_hf_dict(self, dtype: str) -> dict[str, Any]:
        """config.json as transformers' (Llama|Mistral|Qwen2)ForCausalLM and vLLM read it."""
        extra: dict[str, Any] = {}
        if self.model_type == "mistral":
            extra = {"sliding_window": self.sliding_window}
        elif self.model_type == "qwen2":
            extra = {"sliding_window": self.sliding_window, "use_sliding_window": self.sliding_window is not None,
                     "max_window_layers": self.num_hidden_layers}
        return {
            "architectures": [ARCHITECTURES[self.model_type]], "model_type": self.model_type,
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads, "head_dim": self.head_dim,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps, "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling, "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu", "attention_bias": self.o_bias, "mlp_bias": False,
            "attention_dropout": 0.0, "initializer_range": 0.02, "pretraining_tp": 1,
            "bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_id,
            "use_cache": True, "torch_dtype": dtype, **extra,
        }

    @classmethod
    def from_json_file(cls, path: str | Path) -> "LlamaConfig":
        path = Path(path)
        return cls.from_hf_dict(read_json_object(path, CheckpointError), source=str(path))

    @classmethod
    def from_hf_dict(cls, raw: dict[str, Any], source: str = "config.json") -> "LlamaConfig":
        f = _Fields(raw, source, CheckpointError)
        model_type = _check_supported(f)
        hidden, heads, kv_heads, head_dim = f.attention_heads()
        return cls(
            vocab_size=f.pos_int("vocab_size"), hidden_size=hidden,
            intermediate_size=f.pos_int("intermediate_size"),
            num_hidden_layers=f.pos_int("num_hidden_layers"), num_attention_heads=heads,
            num_key_value_heads=kv_heads, head_dim=head_dim,
            max_position_embeddings=f.pos_int("max_position_embeddings", 2048),
            rms_norm_eps=f.pos_float("rms_norm_eps", 1e-6),
            rope_theta=f.rope_theta(), rope_scaling=_rope_scaling(f),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            bos_token_id=raw.get("bos_token_id"), eos_token_id=_eos_token_id(f), model_type=model_type,
            qkv_bias=model_type == "qwen2" or (model_type == "llama" and f.flag("attention_bias")),
            o_bias=model_type == "llama" and f.flag("attention_bias"), sliding_window=f.sliding_window(model_type))


ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def _check_supported(f: _Fields) -> str:
    """The config's model_type, one the real engine runs."""
    model_type = f.get("model_type", "llama")
    if model_type not in ARCHITECTURES:
        f.fail("model_type", f"must be one of {', '.join(ARCHITECTURES)} (the Llama family the real engine "
               "runs; the simulator takes more: sim/hf_config.py)", model_type)
    if f.get("hidden_act", "silu") != "silu":
        f.fail("hidden_act", "must be 'silu' (SwiGLU MLP)", f.raw["hidden_act"])
    if f.get("mlp_bias", False):
        f.fail("mlp_bias", "is not supported (no bias terms in the MLP)", True)
    if model_type != "llama" and f.get("attention_bias", False):
        f.fail("attention_bias", f"is not supported for model_type {model_type}", True)
    return model_type


def _eos_token_id(f: _Fields) -> int | list[int] | None:
    """An id, a list of ids (as Hugging Face configs allow) or null."""
    value = f.get("eos_token_id")
    ids = value if isinstance(value, list) else [value]
    if value is not None and not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        f.fail("eos_token_id", "must be a token id, a list of token ids or null", value)
    return value


def _rope_scaling(f: _Fields) -> dict | None:
    rope = f.rope_dict()
    if rope is None:
        return None
    name = "rope_scaling" if "rope_scaling" in f.raw else "rope_parameters"
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in _ROPE_TYPES:
        f.fail(name, f"has unsupported rope_type (supported: {_ROPE_TYPES})", rope_type)
    needed = _LLAMA3_ROPE_KEYS if rope_type == "llama3" else ("factor",) * (rope_type == "linear")
    for key in needed:
        value = rope.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            f.fail(f"{name}.{key}", f"must be a positive number for rope_type {rope_type!r}", value)
    if rope_type == "default":
        return None
    return {"rope_type": rope_type, **{k: rope[k] for k in needed}}
