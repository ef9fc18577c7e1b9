"""Hugging Face-format checkpoints: load into LlamaModel, save, with clear errors.

A checkpoint directory holds config.json (LlamaForCausalLM fields), model.safetensors or
shards listed in model.safetensors.index.json, tokenizer.json and tokenizer_config.json:
the same directory transformers' LlamaForCausalLM.from_pretrained and vLLM load.
Every failure is a CheckpointError naming the file, the field or the tensor.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from engines.torch.config import CheckpointError, LlamaConfig
from engines.torch.model import LlamaModel

__all__ = ["CheckpointError", "build_model", "expected_shapes", "load_config", "load_model",
           "save_checkpoint"]

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers some old exports carry


def expected_shapes(c: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """HF tensor name -> shape, in checkpoint order. lm_head only when untied."""
    h, i = c.hidden_size, c.intermediate_size
    shapes = {"model.embed_tokens.weight": (c.vocab_size, h)}
    for n in range(c.num_hidden_layers):
        p = f"model.layers.{n}."
        shapes.update({
            p + "input_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (c.q_size, h),
            p + "self_attn.k_proj.weight": (c.kv_size, h),
            p + "self_attn.v_proj.weight": (c.kv_size, h),
            p + "self_attn.o_proj.weight": (h, c.q_size),
            **({p + f"self_attn.{x}_proj.bias": (n_out,) for x, n_out in
                (("q", c.q_size), ("k", c.kv_size), ("v", c.kv_size))} if c.qkv_bias else {}),
            **({p + "self_attn.o_proj.bias": (h,)} if c.o_bias else {}),
            p + "post_attention_layernorm.weight": (h,),
            p + "mlp.gate_proj.weight": (i, h),
            p + "mlp.up_proj.weight": (i, h),
            p + "mlp.down_proj.weight": (h, i),
        })
    shapes["model.norm.weight"] = (h,)
    if not c.tie_word_embeddings:
        shapes["lm_head.weight"] = (c.vocab_size, h)
    return shapes


def load_config(path: str | os.PathLike) -> LlamaConfig:
    return LlamaConfig.from_json_file(_checkpoint_dir(path) / "config.json")


def load_model(path: str | os.PathLike, *, dtype: torch.dtype = torch.float32,
               device: str | torch.device = "cpu") -> LlamaModel:
    """Read a checkpoint directory into a LlamaModel (weights cast to `dtype`)."""
    root = _checkpoint_dir(path)
    config = LlamaConfig.from_json_file(root / "config.json")
    return build_model(config, _read_tensors(root, expected_shapes(config)),
                       dtype=dtype, device=device)


def build_model(config: LlamaConfig, tensors: dict[str, torch.Tensor], *,
                dtype: torch.dtype = torch.float32,
                device: str | torch.device = "cpu") -> LlamaModel:
    """A LlamaModel from HF-named tensors of the right shapes (see expected_shapes)."""
    model = LlamaModel(config, dtype=dtype, device=device)
    _assign(model, tensors)
    return model.eval()


def _checkpoint_dir(path: str | os.PathLike) -> Path:
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"{root}: checkpoint directory not found")
    return root


def _weight_files(root: Path) -> list[str]:
    """The safetensors files to read: the index's shards, else model.safetensors."""
    index = root / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: malformed index, needs a 'weight_map' object "
                                  f"({type(e).__name__}: {e})") from None
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index}: field 'weight_map' must be an object")
        return sorted(set(weight_map.values()))
    if (root / WEIGHTS_NAME).is_file():
        return [WEIGHTS_NAME]
    raise CheckpointError(f"{root}: no weights file ({WEIGHTS_NAME} or {INDEX_NAME})")


def _read_tensors(root: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    rank = {name: i for i, name in enumerate(shapes)}  # report problems in model order
    for file in _weight_files(root):
        path = root / file
        if not path.is_file():
            raise CheckpointError(f"{path}: weights file listed in {INDEX_NAME} not found")
        try:
            with safe_open(str(path), framework="pt") as f:
                for name in sorted(f.keys(), key=lambda n: rank.get(n, len(rank))):
                    _read_one(f, name, path, shapes, tensors, unexpected)
        except CheckpointError:
            raise
        except Exception as e:  # safetensors raises its own types for corrupt headers
            raise CheckpointError(f"{path}: cannot read safetensors ({e})") from None
    missing = [n for n in shapes if n not in tensors]
    if missing:
        raise CheckpointError(f"{root}: {len(missing)} tensor(s) missing: {_few(missing)}")
    if unexpected:
        raise CheckpointError(f"{root}: unexpected tensor(s) for this config: "
                              f"{_few(unexpected)}")
    return tensors


def _read_one(f, name: str, path: Path, shapes, tensors, unexpected) -> None:
    if name.endswith(_IGNORED_SUFFIXES):
        return
    if name not in shapes:
        # A tied checkpoint may still carry lm_head; it is the embedding, so skip it.
        if name != "lm_head.weight":
            unexpected.append(name)
        return
    found = tuple(f.get_slice(name).get_shape())
    if found != shapes[name]:
        raise CheckpointError(f"{path}: tensor '{name}' has shape {list(found)}, expected "
                              f"{list(shapes[name])} from config.json")
    tensors[name] = f.get_tensor(name)


def _few(names: list[str], limit: int = 5) -> str:
    more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _assign(model: LlamaModel, t: dict[str, torch.Tensor]) -> None:
    """Copy HF tensors into the model's fused parameters (casting dtype/device)."""
    with torch.no_grad():
        model.embed_tokens.copy_(t["model.embed_tokens.weight"])
        for n, layer in enumerate(model.layers):
            p = f"model.layers.{n}."
            layer.input_layernorm.copy_(t[p + "input_layernorm.weight"])
            layer.qkv_proj.copy_(torch.cat([t[p + f"self_attn.{x}_proj.weight"]
                                            for x in "qkv"]))
            layer.o_proj.copy_(t[p + "self_attn.o_proj.weight"])
            if layer.qkv_bias is not None:
                layer.qkv_bias.copy_(torch.cat([t[p + f"self_attn.{x}_proj.bias"] for x in "qkv"]))
            if layer.o_bias is not None:
                layer.o_bias.copy_(t[p + "self_attn.o_proj.bias"])
            layer.post_attention_layernorm.copy_(t[p + "post_attention_layernorm.weight"])
            layer.gate_up_proj.copy_(torch.cat([t[p + "mlp.gate_proj.weight"],
                                                t[p + "mlp.up_proj.weight"]]))
            layer.down_proj.copy_(t[p + "mlp.down_proj.weight"])
        model.norm.copy_(t["model.norm.weight"])
        if not model.config.tie_word_embeddings:
            model.lm_head.copy_(t["lm_head.weight"])


def save_checkpoint(out: str | os.PathLike, config: LlamaConfig,
                    tensors: dict[str, torch.Tensor], *,
                    max_shard_bytes: int | None = None) -> Path:
    """Write config.json and HF-named safetensors (sharded past `max_shard_bytes`)."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    dtype = str(next(iter(tensors.values())).dtype).removeprefix("torch.")
    _write_json(root / "config.json", config.to_hf_dict(dtype))
    shards = list(_shards(tensors, max_shard_bytes))
    if len(shards) == 1:
        _write_safetensors(root / WEIGHTS_NAME, shards[0])
        (root / INDEX_NAME).unlink(missing_ok=True)
        return root
    weight_map = {}
    for k, shard in enumerate(shards, start=1):
        file = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        _write_safetensors(root / file, shard)
        weight_map.update({name: file for name in shard})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    _write_json(root / INDEX_NAME, {"metadata": {"total_size": total}, "weight_map": weight_map})
    (root / WEIGHTS_NAME).unlink(missing_ok=True)
    return root


def _shards(tensors: dict[str, torch.Tensor], max_bytes: int | None) -> Iterable[dict]:
    shard, size = {}, 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shard and max_bytes is not None and size + nbytes > max_bytes:
            yield shard
            shard, size = {}, 0
        shard[name], size = t.contiguous(), size + nbytes
    yield shard


def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})  # transformers wants "pt"
    os.chmod(tmp, 0o644)  # readable by a server running as another user (e.g. vLLM)
    os.replace(tmp, path)


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)
