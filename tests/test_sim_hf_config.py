"""Models from Hugging Face config.json files (sim/hf_config.py) and GPUs from YAML files
(sim/specs.py hardware_from_fields): published parameter counts per family, and errors
that name the file and the field."""
import json
import math
from pathlib import Path

import pytest

from engines.errors import ConfigError
from sim.hf_config import ModelConfigError
from sim.specs import DEFAULT_EFFICIENCIES, get_model, hardware_from_fields, load_hardware, load_model

HF = Path(__file__).parent / "data" / "hf"


def fixture(name: str):
    return load_model(name, str(HF / name))


# (model, published total, published active or None, active counts the input embedding,
#  significant digits of the published active figure). Sources: the model cards
# (huggingface.co/<org>/<model>), Mixtral's release post (46.7B / 12.9B), DeepSeek-V2 and
# V3 reports (arXiv:2405.04434, 2412.19437). Mistral and Qwen count the input embedding
# in their MoE models' active parameters, DeepSeek does not.
PUBLISHED = [
    ("llama3_8b", 8.03e9, None, False, 0),
    ("Mistral-7B-v0.1", 7.24e9, None, False, 0),
    ("Qwen2.5-7B", 7.61e9, None, False, 0),
    ("Qwen3-8B", 8.2e9, None, False, 0),
    ("Qwen3-30B-A3B", 30.5e9, 3.3e9, True, 2),
    ("Mixtral-8x7B-v0.1", 46.7e9, 12.9e9, True, 3),
    ("deepseek_v2_lite", 15.7e9, 2.4e9, False, 2),
    ("deepseek_v3", 671e9, 37e9, False, 2),
]


def spec(name: str):
    return fixture(name) if (HF / name).is_dir() else get_model(name)


@pytest.mark.parametrize("name, total, active, with_embedding, digits", PUBLISHED, ids=[p[0] for p in PUBLISHED])
def test_parameter_counts_match_the_published_ones(name, total, active, with_embedding, digits):
    """Totals within 1 %. Active counts within 1 % where published to 3 significant digits;
    a 2-digit figure (2.4B, 3.3B, 37B) is itself only that precise (2.4B covers 2.35-2.45B,
    2 %), so those are held within 2.5 %: the counts are 2.45B, 3.35B and 36.6B."""
    m = spec(name)
    assert m.num_params() == pytest.approx(total, rel=0.01)
    if active is not None:
        assert m.active_params(count_embedding=with_embedding) == pytest.approx(
            active, rel=0.01 if digits >= 3 else 0.025)


def test_non_embedding_counts_of_the_qwen_cards():
    # Qwen2.5-7B: 6.53B non-embedding; Qwen3-8B: 6.95B; Qwen3-30B-A3B: 29.9B (model cards).
    for name, expected in (("Qwen2.5-7B", 6.53e9), ("Qwen3-8B", 6.95e9), ("Qwen3-30B-A3B", 29.9e9)):
        m = fixture(name)
        assert m.num_params() - 2 * m.vocab * m.hidden == pytest.approx(expected, rel=0.01)


def test_family_features():
    qwen2, qwen3, mistral, mixtral = (fixture(n) for n in ("Qwen2.5-7B", "Qwen3-8B", "Mistral-7B-v0.1",
                                                          "Mixtral-8x7B-v0.1"))
    assert qwen2.qkv_bias and not qwen2.o_bias and qwen2.sliding_window is None  # use_sliding_window: false
    assert qwen2.max_context_tokens == 131072 and qwen2.head_dim == 128 and qwen2.num_kv_heads == 4
    assert qwen3.qk_norm and qwen3.head_dim == 128 and not qwen3.qkv_bias
    # Served within the window: the context is capped at it.
    assert mistral.sliding_window == 4096 and mistral.max_context_tokens == 4096
    assert mixtral.moe.num_routed_experts == 8 and mixtral.moe.num_active_experts == 2
    assert mixtral.moe.num_shared_experts == 0 and mixtral.moe.num_dense_layers == 0
    v3 = get_model("deepseek_v3")
    assert v3.weight_dtype_bytes == 1 and v3.mla.q_lora_rank == 1536 and v3.moe.num_dense_layers == 3
    assert get_model("deepseek_v2_lite").mla.q_lora_rank == 0  # q_lora_rank: null


def test_biases_and_qk_norms_are_counted():
    import dataclasses
    qwen2 = fixture("Qwen2.5-7B")
    plain = dataclasses.replace(qwen2, qkv_bias=False)
    per_layer = (qwen2.num_heads + 2 * qwen2.num_kv_heads) * qwen2.head_dim  # 3584 + 2 x 512
    assert qwen2.num_params() - plain.num_params() == qwen2.num_layers * per_layer
    assert qwen2.weight_bytes() - plain.weight_bytes() == 2 * qwen2.num_layers * per_layer
    qwen3 = fixture("Qwen3-8B")
    assert qwen3.num_params() - dataclasses.replace(qwen3, qk_norm=False).num_params() == 36 * 2 * 128


def test_a_moe_model_runs_in_the_simulator():
    from engines.plan import ScheduledSeq, StepPlan
    from sim.cost_model import RooflineCostModel
    from sim.specs import get_hardware
    cost = RooflineCostModel(fixture("Mixtral-8x7B-v0.1"), get_hardware("h100_80g"), tp=2)
    plan = StepPlan("w", (ScheduledSeq(0, 0, 512, False, True, ()),), 512, 0)
    t = cost.step_time_s(plan, 1.0)
    assert math.isfinite(t) and t > 0


def write(tmp_path: Path, raw: dict) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(raw))
    return tmp_path


def base() -> dict:
    return json.loads((HF / "Mistral-7B-v0.1" / "config.json").read_text())


@pytest.mark.parametrize("change, message", [
    ({"architectures": ["GPT2LMHeadModel"]}, r"field 'architectures' names no supported family \(Llama, Mistral"),
    ({"architectures": None, "model_type": "gpt2"}, r"field 'architectures' is missing and model_type"),
    ({"hidden_size": None}, r"field 'hidden_size' is missing"),
    ({"num_key_value_heads": 5}, r"field 'num_key_value_heads' must divide num_attention_heads=32"),
    ({"hidden_act": "gelu"}, r"field 'hidden_act' must be 'silu'"),
    ({"quantization_config": {"quant_method": "awq"}}, r"field 'quantization_config.quant_method' must be 'fp8'"),
    ({"tie_word_embeddings": "no"}, r"field 'tie_word_embeddings' must be true or false"),
    ({"sliding_window": -1}, r"field 'sliding_window' must be a positive integer"),
])
def test_bad_configs_name_the_file_and_the_field(tmp_path, change, message):
    raw = {k: v for k, v in {**base(), **change}.items() if v is not None}
    path = write(tmp_path, raw)
    with pytest.raises(ModelConfigError, match=message) as err:
        load_model("x", str(path))
    assert str(path / "config.json") in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ModelConfigError, match="nowhere: no such file or directory"):
        load_model("x", str(tmp_path / "nowhere"))
    with pytest.raises(ModelConfigError, match="config.json: no such file or directory"):
        load_model("x", str(tmp_path))  # a directory without one
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelConfigError, match="not valid JSON"):
        load_model("x", str(tmp_path))


def test_context_cap(tmp_path):
    path = str(HF / "Qwen3-8B")
    assert load_model("q", path, 8192).max_context_tokens == 8192
    with pytest.raises(ModelConfigError, match="above what .* allows \\(40960 tokens\\)"):
        load_model("q", path, 100000)


def test_qwen3_moe_layouts_other_than_every_layer_are_refused(tmp_path):
    raw = json.loads((HF / "Qwen3-30B-A3B" / "config.json").read_text())
    with pytest.raises(ModelConfigError, match="field 'mlp_only_layers' must be empty"):
        load_model("x", str(write(tmp_path, {**raw, "mlp_only_layers": [0]})))


# ----- hardware ------------------------------------------------------------------------
def test_a_gpu_without_calibration_takes_the_defaults_and_says_so():
    l40s = load_hardware("l40s")
    assert l40s.uncalibrated == tuple(DEFAULT_EFFICIENCIES)
    assert l40s.spec.compute_efficiency_max == DEFAULT_EFFICIENCIES["compute_efficiency_max"]
    a100 = load_hardware("a100_80g")
    assert a100.uncalibrated == () and "Vidur A100" in a100.calibration_source


def test_partly_calibrated_gpu_lists_only_what_it_lacks():
    fields = {"name": "x", "peak_tflops_bf16": 100.0, "hbm_bytes": 2**30, "hbm_bandwidth_bytes_s": 1e12,
              "num_sms": 10, "nvlink_bandwidth_bytes_s": 0.0, "bandwidth_efficiency": 0.9}
    hw = hardware_from_fields(fields, "x.yaml")
    assert "bandwidth_efficiency" not in hw.uncalibrated and "kernel_floor_s" in hw.uncalibrated
    assert hw.spec.bandwidth_efficiency == 0.9 and isinstance(hw.spec.hbm_bytes, int)


@pytest.mark.parametrize("change, message", [
    ({"peak_tflops_bf16": None}, r"^x\.yaml: hardware\.peak_tflops_bf16 must be set"),
    ({"num_sms": 1.5}, r"^x\.yaml: hardware\.num_sms must be a non-negative integer"),
    ({"hbm_bandwidth_bytes_s": "fast"}, r"^x\.yaml: hardware\.hbm_bandwidth_bytes_s must be a non-negative number"),
    ({"bandwidth_efficiency": 0.0}, r"^x\.yaml: hardware\.bandwidth_efficiency must be positive"),
    ({"hbm_gb": 80}, r"^x\.yaml: hardware fields must be among"),
])
def test_bad_hardware_fields_name_the_file_and_the_field(change, message):
    fields = {"name": "x", "peak_tflops_bf16": 100.0, "hbm_bytes": 2**30, "hbm_bandwidth_bytes_s": 1e12,
              "num_sms": 10, "nvlink_bandwidth_bytes_s": 0.0, **change}
    with pytest.raises(ConfigError, match=message):
        hardware_from_fields(fields, "x.yaml")


def test_the_readme_example_runs_end_to_end(tmp_path):
    """README, "Simulate your own model and GPU": semi-PD with Qwen2.5-7B's config.json on an
    L40S file without calibration; bench.py's exit code, name and the uncalibrated list."""
    import subprocess
    import sys
    root = Path(__file__).resolve().parent.parent
    res = subprocess.run([sys.executable, "bench.py", "engine=semipd", f"model.config={HF / 'Qwen2.5-7B'}",
                          "hardware=l40s", "workload.num_requests=40", "plots=false", "progress=false",
                          f"hydra.run.dir={tmp_path}"], cwd=root, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "hardware l40s: no calibrated compute_efficiency_max" in res.stdout + res.stderr  # Hydra logs to stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["model"] == "Qwen2.5-7B" and summary["hardware"] == "l40s"
    assert summary["num_finished"] == 40 and summary["hardware_uncalibrated"] == list(DEFAULT_EFFICIENCIES)


def test_a_missing_model_config_fails_without_a_traceback(tmp_path):
    import subprocess
    import sys
    root = Path(__file__).resolve().parent.parent
    res = subprocess.run([sys.executable, "bench.py", f"model.config={tmp_path / 'nowhere'}",
                          "workload.num_requests=5", f"hydra.run.dir={tmp_path / 'run'}"],
                         cwd=root, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"{tmp_path / 'nowhere'}: no such file or directory (model.config: a config.json or a model " \
        "directory holding one)" in res.stderr
