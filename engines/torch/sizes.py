"""Named model sizes for generated checkpoints, built from the ONE table of model shapes
(sim/specs.py MODELS), so the simulator and the real engine agree on every dimension.

Kept torch-free so configs can read shapes without torch. All sizes use the Llama-3
tokenizer (vocab 128256) and Llama-3.1-style rope scaling.
"""
from __future__ import annotations

from engines.torch.config import LlamaConfig
from sim.specs import MODELS, ModelSpec

LLAMA3_VOCAB_SIZE = 128256
LLAMA3_BOS_ID = 128000  # <|begin_of_text|>
LLAMA3_EOS_ID = 128001  # <|end_of_text|>
CHECKPOINT_SIZES = ("tiny_llama", "small_llama")


def _llama3_rope(max_position: int, factor: float = 8.0) -> dict:
    # transformers requires original_max_position_embeddings < max_position_embeddings,
    # so the "pre-extension" context is max_position / factor (as in Llama-3.1: 8192 * 16).
    return {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": int(max_position / factor)}


def config_from_spec(spec: ModelSpec) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=spec.vocab, hidden_size=spec.hidden, intermediate_size=spec.intermediate,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads, head_dim=spec.head_dim,
        max_position_embeddings=spec.max_context_tokens, rms_norm_eps=spec.rms_norm_eps,
        rope_theta=spec.rope_theta, rope_scaling=_llama3_rope(spec.max_context_tokens),
        tie_word_embeddings=spec.tied_embeddings, bos_token_id=LLAMA3_BOS_ID, eos_token_id=LLAMA3_EOS_ID)


# tiny_llama: 68,028,672 params (untied); small_llama: 99.8M (tied), see sim/specs.py.
SIZES: dict[str, LlamaConfig] = {name: config_from_spec(MODELS[name]) for name in CHECKPOINT_SIZES}


def get_size(name: str) -> LlamaConfig:
    try:
        return SIZES[name]
    except KeyError:
        raise ValueError(f"unknown model size {name!r}; known: {sorted(SIZES)}") from None
