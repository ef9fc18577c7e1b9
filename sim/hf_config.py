"""Model descriptions from Hugging Face config.json files (`model.config=PATH`, a file or a
model directory; nothing is downloaded).

Families, by the config's `architectures` entry (or its `model_type`):
- Llama (LlamaForCausalLM): GQA, optional `attention_bias` (q, k, v and o).
- Mistral (MistralForCausalLM): Llama's layers with a `sliding_window`. The simulator and
  the real engine serve it within the window, as vLLM does with --disable-sliding-window:
  the context is capped at the window, so every token sees all its keys (full attention
  equals sliding-window attention there).
- Qwen2 / Qwen2.5 (Qwen2ForCausalLM): q, k and v biases; its `sliding_window` is used
  only with `use_sliding_window: true`.
- Qwen3 (Qwen3ForCausalLM, Qwen3MoeForCausalLM): an explicit `head_dim`, RMSNorm of each
  query and key head (q_norm, k_norm); the MoE variant has routed experts in every layer.
- Mixtral (MixtralForCausalLM): Mistral with `num_local_experts` routed experts per layer,
  `num_experts_per_tok` of them per token, no shared experts.
- DeepSeek-V2 / V3 (DeepseekV2ForCausalLM, DeepseekV3ForCausalLM): MLA attention, MoE
  with shared experts after `first_k_dense_replace` dense layers, FP8 weights when
  `quantization_config.quant_method` is fp8.

Activations and the KV cache are 16-bit (2 bytes) whatever `torch_dtype` says: vLLM's
dtype=auto serves float32 checkpoints in 16 bits on a GPU. Field names and defaults
follow transformers' configuration classes (`configuration_<family>.py`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from engines.errors import UserError
from engines.hf_fields import HFFields, read_json_object
from sim.arch import MLASpec, MoESpec

log = logging.getLogger(__name__)

ARCHITECTURES = {  # config.json `architectures` entry -> family
    "LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3", "Qwen3MoeForCausalLM": "qwen3_moe", "MixtralForCausalLM": "mixtral",
    "DeepseekV2ForCausalLM": "deepseek_v2", "DeepseekV3ForCausalLM": "deepseek_v3",
}
SUPPORTED = "Llama, Mistral, Qwen2/Qwen2.5, Qwen3 (dense and MoE), Mixtral, DeepSeek-V2/V3"


class ModelConfigError(UserError):
    """A model config.json is missing, malformed, or describes an unsupported model."""


def config_path(path: str | Path) -> Path:
    """config.json itself, or the one in a model directory."""
    path = Path(path).expanduser()
    return path / "config.json" if path.is_dir() else path


def read_config(path: str | Path) -> dict[str, Any]:
    if not Path(path).expanduser().exists():
        raise ModelConfigError(f"{path}: no such file or directory (model.config: a config.json or a model "
                               "directory holding one)")
    return read_json_object(config_path(path), ModelConfigError)


def family_of(f: HFFields) -> str:
    archs = f.get("architectures")
    if archs is not None:
        if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
            f.fail("architectures", "must be a list of class names", archs)
        for arch in archs:
            if arch in ARCHITECTURES:
                return ARCHITECTURES[arch]
        f.fail("architectures", f"names no supported family ({SUPPORTED}: {', '.join(ARCHITECTURES)})", archs)
    model_type = f.get("model_type")
    if model_type in ARCHITECTURES.values():  # a family is named by its model_type
        return model_type
    f.fail("architectures", f"is missing and model_type does not name a supported family ({SUPPORTED})",
           model_type)


def spec_fields(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """The ModelSpec fields (all but `name`) that a config.json describes."""
    f = HFFields(raw, source, ModelConfigError)
    family = family_of(f)
    if f.get("hidden_act", "silu") != "silu":
        f.fail("hidden_act", "must be 'silu' (SwiGLU MLP, every supported family)", raw["hidden_act"])
    if f.flag("mlp_bias"):
        f.fail("mlp_bias", "is not supported (no bias terms in the MLP)", True)
    hidden, heads, kv_heads, head_dim = f.attention_heads()
    out: dict[str, Any] = dict(
        num_layers=f.pos_int("num_hidden_layers"), hidden=hidden, num_heads=heads, num_kv_heads=kv_heads,
        head_dim=head_dim, intermediate=f.pos_int("intermediate_size"),
        vocab=f.pos_int("vocab_size"), tied_embeddings=f.flag("tie_word_embeddings"), dtype_bytes=2,
        max_context_tokens=f.pos_int("max_position_embeddings"), rope_theta=f.rope_theta(),
        rms_norm_eps=f.pos_float("rms_norm_eps", 1e-6))
    if family in ("llama", "qwen3", "qwen3_moe"):
        out["qkv_bias"] = out["o_bias"] = f.flag("attention_bias")
    if family == "qwen2":
        out["qkv_bias"] = True  # Qwen2Attention: q_proj, k_proj, v_proj with bias, o_proj without
    if family in ("qwen3", "qwen3_moe"):
        out["qk_norm"] = True
    window = f.sliding_window(family)
    if window is not None:
        out["sliding_window"] = window
        if window < out["max_context_tokens"]:
            log.info("%s: context capped at the sliding window, %d tokens (max_position_embeddings %d)",
                     source, window, out["max_context_tokens"])
            out["max_context_tokens"] = window
    if family == "mixtral":
        out["moe"] = MoESpec(num_routed_experts=f.pos_int("num_local_experts"),
                             num_active_experts=f.pos_int("num_experts_per_tok"), num_shared_experts=0,
                             expert_intermediate=out["intermediate"], num_dense_layers=0)
    if family == "qwen3_moe":
        if f.get("decoder_sparse_step", 1) != 1:
            f.fail("decoder_sparse_step", "must be 1 (routed experts in every layer)", raw["decoder_sparse_step"])
        if f.get("mlp_only_layers", []):
            f.fail("mlp_only_layers", "must be empty (routed experts in every layer)", raw["mlp_only_layers"])
        out["moe"] = MoESpec(num_routed_experts=f.pos_int("num_experts"),
                             num_active_experts=f.pos_int("num_experts_per_tok"), num_shared_experts=0,
                             expert_intermediate=f.pos_int("moe_intermediate_size"), num_dense_layers=0)
    if family in ("deepseek_v2", "deepseek_v3"):
        out.update(_deepseek(f, out))
    out.update(_quantization(f))
    _check_moe(f, out)
    return out


def _deepseek(f: HFFields, out: dict[str, Any]) -> dict[str, Any]:
    mla = MLASpec(q_lora_rank=0 if f.get("q_lora_rank") is None else f.pos_int("q_lora_rank"),
                  kv_lora_rank=f.pos_int("kv_lora_rank"), qk_nope_head_dim=f.pos_int("qk_nope_head_dim"),
                  qk_rope_head_dim=f.pos_int("qk_rope_head_dim"), v_head_dim=f.pos_int("v_head_dim"))
    extra: dict[str, Any] = {"mla": mla, "head_dim": mla.qk_head_dim}
    if f.get("n_routed_experts") is not None:
        if f.get("moe_layer_freq", 1) != 1:
            f.fail("moe_layer_freq", "must be 1 (an MoE layer after every dense one is not supported)",
                   f.raw["moe_layer_freq"])
        extra["moe"] = MoESpec(num_routed_experts=f.pos_int("n_routed_experts"),
                               num_active_experts=f.pos_int("num_experts_per_tok"),
                               num_shared_experts=f.nonneg_int("n_shared_experts", 0),
                               expert_intermediate=f.pos_int("moe_intermediate_size"),
                               num_dense_layers=f.nonneg_int("first_k_dense_replace", 0))
    return extra


def _quantization(f: HFFields) -> dict[str, Any]:
    q = f.get("quantization_config")
    if q is None:
        return {}
    if not isinstance(q, dict):
        f.fail("quantization_config", "must be an object", q)
    method = q.get("quant_method")
    if method != "fp8":
        f.fail("quantization_config.quant_method", "must be 'fp8' (the only quantization supported: "
               "1-byte linear weights, 16-bit embeddings, LM head, norms and router)", method)
    return {"weight_dtype_bytes": 1}


def _check_moe(f: HFFields, out: dict[str, Any]) -> None:
    moe = out.get("moe")
    if moe is None:
        return
    if moe.num_active_experts > moe.num_routed_experts:
        f.fail("num_experts_per_tok", f"must be at most the {moe.num_routed_experts} routed experts",
               moe.num_active_experts)
    if moe.num_dense_layers >= out["num_layers"]:
        f.fail("first_k_dense_replace", f"must be below num_hidden_layers={out['num_layers']}",
               moe.num_dense_layers)
