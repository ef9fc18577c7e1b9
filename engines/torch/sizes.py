"""Named model sizes for generated checkpoints: the bundled config.json of each
(models/<name>/config.json), the same file the simulator reads (sim/specs.py load_model),
so the simulator and the real engine agree on every dimension.

Kept torch-free so configs can read shapes without torch. Both sizes use the Llama-3
tokenizer (vocab 128256) and Llama-3.1-style rope scaling (llama3, factor 8; transformers
requires original_max_position_embeddings < max_position_embeddings, so the "pre-extension"
context is max_position_embeddings / 8).
"""
from __future__ import annotations

from engines.torch.config import LlamaConfig
from sim.specs import MODELS_DIR

CHECKPOINT_SIZES = ("tiny_llama", "small_llama")


def get_size(name: str) -> LlamaConfig:
    """tiny_llama: 68,028,672 params (untied, as Llama-3 8B); small_llama: 99,756,544 (tied)."""
    if name not in CHECKPOINT_SIZES:
        raise ValueError(f"unknown model size {name!r}; known: {sorted(CHECKPOINT_SIZES)}")
    return LlamaConfig.from_json_file(MODELS_DIR / name / "config.json")


SIZES: dict[str, LlamaConfig] = {name: get_size(name) for name in CHECKPOINT_SIZES}
