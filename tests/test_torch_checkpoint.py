"""Checkpoint save/load (engines/torch/checkpoint.py, make_model.py): formats and errors."""
import dataclasses
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from engines.torch.checkpoint import CheckpointError, load_config, load_model
from engines.torch.make_model import _parse, main, make_checkpoint, random_weights
from engines.torch.sizes import SIZES, get_size

MICRO = dataclasses.replace(get_size("tiny_llama"), vocab_size=512, hidden_size=64,
                            intermediate_size=128, num_hidden_layers=2, head_dim=16,
                            max_position_embeddings=512)


@pytest.fixture
def micro_dir(tmp_path):
    return make_checkpoint(tmp_path / "micro", config=MICRO, dtype="float32")


def edit_config(root, **fields):
    cfg = json.loads((root / "config.json").read_text())
    cfg.update(fields)
    (root / "config.json").write_text(json.dumps(cfg))


def test_param_counts_of_named_sizes():
    assert SIZES["tiny_llama"].num_params() == 68_028_672
    assert SIZES["small_llama"].num_params() == 99_756_544  # tied embedding, sim/specs.py
    assert MICRO.num_params() == sum(t.numel() for t in random_weights(MICRO).values())


def test_round_trip_and_fused_weights(micro_dir):
    model = load_model(micro_dir)
    saved = load_file(str(micro_dir / "model.safetensors"))
    assert load_config(micro_dir) == MICRO
    q, k, v = (saved[f"model.layers.1.self_attn.{x}_proj.weight"] for x in "qkv")
    assert torch.equal(model.layers[1].qkv_proj, torch.cat([q, k, v]))
    assert torch.equal(model.lm_head, saved["lm_head.weight"])


def test_same_seed_same_weights_and_sharded_load(tmp_path):
    a = make_checkpoint(tmp_path / "a", config=MICRO, seed=3)
    b = make_checkpoint(tmp_path / "b", config=MICRO, seed=3, max_shard_bytes=40_000)
    assert len(list(b.glob("model-*-of-*.safetensors"))) > 1
    assert (b / "model.safetensors.index.json").is_file()
    ma, mb = load_model(a), load_model(b)
    assert all(torch.equal(x, y) for x, y in zip(ma.parameters(), mb.parameters()))


def test_transformers_loads_tied_checkpoint_with_same_logits(tmp_path):
    transformers = pytest.importorskip("transformers")
    root = make_checkpoint(tmp_path / "tied", dtype="float32",
                           config=dataclasses.replace(MICRO, tie_word_embeddings=True))
    assert "lm_head.weight" not in load_file(str(root / "model.safetensors"))
    ours = load_model(root)
    assert ours.lm_head is ours.embed_tokens
    hf = transformers.LlamaForCausalLM.from_pretrained(root, dtype=torch.float32).eval()
    ids = torch.arange(5, 30)
    from engines.torch.paged_attention import KVCache, SeqSlice, TorchAttention
    cache = KVCache(2, 4, 16, 2, 16, torch.float32)
    attn = TorchAttention()
    with torch.inference_mode():
        logits = ours(ids, attn.build([SeqSlice(0, 25, [2, 0])], 16), cache, attn,
                      torch.arange(25))
        torch.testing.assert_close(logits, hf(ids[None]).logits[0], atol=1e-4, rtol=1e-4)
    tok = transformers.AutoTokenizer.from_pretrained(root)
    assert tok("Hello world").input_ids[-2:] == [9906, 1917]
    assert tok.eos_token_id == 128001


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="nowhere: checkpoint directory not found"):
        load_model(tmp_path / "nowhere")


def test_missing_or_malformed_config(micro_dir):
    (micro_dir / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        load_model(micro_dir)
    (micro_dir / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json not found"):
        load_model(micro_dir)


@pytest.mark.parametrize("field, value, message", [
    ("hidden_size", None, "field 'hidden_size' is missing"),
    ("num_hidden_layers", "four",
     "field 'num_hidden_layers' must be a positive integer, got 'four'"),
    ("num_key_value_heads", 3, "field 'num_key_value_heads' must divide"),
    ("hidden_act", "gelu", "field 'hidden_act' must be 'silu'"),
    ("rope_scaling", {"rope_type": "yarn", "factor": 2.0}, "field 'rope_scaling' has unsupported"),
    ("rope_scaling", {"rope_type": "llama3", "factor": 8.0},
     r"field 'rope_scaling.low_freq_factor' must be a positive number"),
])
def test_bad_config_fields_are_named(micro_dir, field, value, message):
    edit_config(micro_dir, **{field: value})
    with pytest.raises(CheckpointError, match=message) as err:
        load_model(micro_dir)
    assert "config.json" in str(err.value)


def test_missing_weights_file(micro_dir):
    (micro_dir / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights file"):
        load_model(micro_dir)


def test_shape_disagreeing_with_config_names_tensor_and_shapes(micro_dir):
    edit_config(micro_dir, intermediate_size=100)
    with pytest.raises(CheckpointError) as err:
        load_model(micro_dir)
    assert ("tensor 'model.layers.0.mlp.gate_proj.weight' has shape [128, 64], "
            "expected [100, 64]") in str(err.value)
    assert "model.safetensors" in str(err.value)


def test_missing_and_unexpected_tensors_are_named(micro_dir):
    path = micro_dir / "model.safetensors"
    tensors = load_file(str(path))
    del tensors["lm_head.weight"], tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"2 tensor\(s\) missing: "
                       r"model.layers.1.mlp.up_proj.weight, lm_head.weight"):
        load_model(micro_dir)
    tensors = load_file(str(path)) | {"lm_head.weight": torch.zeros(512, 64),
                                      "model.layers.1.mlp.up_proj.weight": torch.zeros(128, 64),
                                      "model.layers.9.extra.weight": torch.zeros(1)}
    save_file(tensors, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="unexpected tensor.*model.layers.9.extra.weight"):
        load_model(micro_dir)


def test_shard_listed_in_index_but_missing(tmp_path):
    root = make_checkpoint(tmp_path / "sharded", config=MICRO, max_shard_bytes=40_000)
    shard = sorted(root.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"{shard.name}: weights file listed"):
        load_model(root)
    (root / "model.safetensors.index.json").write_text('{"metadata": {}}')
    with pytest.raises(CheckpointError, match="weight_map"):
        load_model(root)


def test_cli_writes_a_loadable_directory(tmp_path, capsys):
    main(["name=tiny_llama", f"out={tmp_path / 'tiny'}", "seed=1", "dtype=bfloat16"])
    assert "68,028,672 params" in capsys.readouterr().out
    for name in ("config.json", "generation_config.json", "model.safetensors",
                 "tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "tiny" / name).is_file()
    assert load_config(tmp_path / "tiny") == get_size("tiny_llama")
    with pytest.raises(SystemExit, match="bad argument"):
        _parse(["name=tiny_llama", "outdir=x"])
    with pytest.raises(SystemExit, match="unknown model size 'huge_llama'"):
        main(["name=huge_llama", f"out={tmp_path / 'x'}"])
    shutil.rmtree(tmp_path / "tiny")
