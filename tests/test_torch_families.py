"""The real engine on Llama-family checkpoints other than Llama-3: Llama with attention
biases, Mistral (within its sliding window) and Qwen2 (q, k, v biases). Random-weight
checkpoints made by the project (make_model, biases drawn like the weights so that they
matter); the greedy tokens must equal transformers' (float32), through prefill, chunked
prefill and decode steps."""
import dataclasses

import pytest
import torch

from engines.torch.checkpoint import load_config, load_model
from engines.torch.config import CheckpointError, LlamaConfig
from engines.torch.make_model import make_checkpoint
from tests.test_torch_model import assert_matches_hf, make_loop

MICRO = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                    rms_norm_eps=1e-6, rope_theta=10000.0, bos_token_id=1, eos_token_id=2)
FAMILIES = {
    "llama_bias": dataclasses.replace(MICRO, qkv_bias=True, o_bias=True),
    # Prompts (up to 40 tokens) + 12 new stay within the 64-token window.
    "mistral": dataclasses.replace(MICRO, model_type="mistral", sliding_window=64),
    "qwen2": dataclasses.replace(MICRO, model_type="qwen2", qkv_bias=True, rope_theta=1e6),
}
PROMPT_LENS, NUM_NEW = (3, 17, 40), 12


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    root = make_checkpoint(tmp_path_factory.mktemp(request.param) / "ckpt", config=FAMILIES[request.param],
                           seed=3, dtype="float32")
    hf = transformers.AutoModelForCausalLM.from_pretrained(root, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(2)
    prompts = [torch.randint(3, 512, (n,), generator=gen).tolist() for n in PROMPT_LENS]
    greedy = []
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([p])
            out = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=NUM_NEW,
                              min_new_tokens=NUM_NEW, pad_token_id=0)
            greedy.append(out[0, len(p):].tolist())
    return request.param, root, hf, prompts, greedy


def test_transformers_reads_the_family_and_its_biases(family):
    name, root, hf, _, _ = family
    expected = {"llama_bias": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
    assert type(hf).__name__ == expected[name]
    assert load_config(root) == FAMILIES[name]
    n_hf = sum(p.numel() for p in hf.parameters())
    assert n_hf == FAMILIES[name].num_params()
    if FAMILIES[name].qkv_bias:
        assert hf.model.layers[0].self_attn.q_proj.bias.abs().sum() > 0


@pytest.mark.parametrize("chunk", [None, 7])
def test_greedy_tokens_equal_transformers(family, chunk):
    _, root, _, prompts, greedy = family
    loop = make_loop(load_model(root, dtype=torch.float32))
    for rid, p in enumerate(prompts):
        loop.add(rid, p)
    while loop.step(chunk=chunk, max_new=NUM_NEW):
        pass
    assert_matches_hf(loop, greedy)


def test_the_simulator_reads_the_same_checkpoint(family):
    from sim.specs import load_model as sim_model
    name, root, _, _, _ = family
    spec = sim_model(name, str(root))
    assert spec.num_params() == FAMILIES[name].num_params()
    assert spec.max_context_tokens == FAMILIES[name].max_context_tokens  # Mistral: the 64-token window


def test_families_the_real_engine_does_not_run_are_refused(tmp_path):
    raw = {**MICRO.to_hf_dict("float32"), "model_type": "mixtral", "architectures": ["MixtralForCausalLM"]}
    with pytest.raises(CheckpointError, match=r"field 'model_type' must be one of llama, mistral, qwen2"):
        LlamaConfig.from_hf_dict(raw, source="x/config.json")
    with pytest.raises(CheckpointError, match=r"field 'attention_bias' is not supported for model_type mistral"):
        LlamaConfig.from_hf_dict({**FAMILIES["mistral"].to_hf_dict("float32"), "attention_bias": True})


@pytest.mark.parametrize("prompt_len, served", [(40, True), (70, False)])
def test_a_mistral_checkpoint_runs_through_the_harness_within_its_window(tmp_path, prompt_len, served):
    """bench.py executor=torch model.checkpoint=DIR: prompts within the 64-token window are
    served; longer ones are rejected with the window named as the model's context."""
    from tests.test_torch_bench import bench
    root = make_checkpoint(tmp_path / "mistral_micro", config=FAMILIES["mistral"], seed=3, dtype="bfloat16")
    res = bench(tmp_path / "run", f"model.checkpoint={root}", "model.name=mistral_micro", "workload.num_requests=3",
                "workload.rate=inf", f"workload.prompt_len={prompt_len}", "workload.output_len=8")
    if served:
        assert res.returncode == 0, res.stderr[-3000:]
        import json
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert summary["num_finished"] == 3 and summary["model"] == "mistral_micro"
    else:
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
        assert "context of 64" in res.stderr
