"""Specs: published parameter counts, KV sizes, registries."""
import dataclasses

import pytest

from sim.specs import get_hardware, get_model, hardware_names, model_names


@pytest.mark.parametrize("name, expected", [
    ("llama3_8b", 8.03e9), ("llama3_70b", 70.6e9), ("llama31_405b", 405.8e9)])
def test_param_counts_match_published(name, expected):
    assert get_model(name).num_params() == pytest.approx(expected, rel=0.005)


def test_toy_models_sizes():
    assert get_model("small_llama").num_params() == pytest.approx(100e6, rel=0.05)
    assert get_model("tiny_llama").num_params() == 68_028_672  # untied 128256 x 256 embedding + head


def test_kv_bytes_per_token_llama3_8b_is_128_kib():
    assert get_model("llama3_8b").kv_bytes_per_token() == 131072


def test_weight_bytes_is_params_times_dtype():
    m = get_model("llama3_70b")
    assert m.weight_bytes() == 2 * m.num_params()


def test_max_context():
    assert get_model("llama3_8b").max_context_tokens == 8192
    assert get_model("llama31_405b").max_context_tokens == 131072


def test_lookup_errors_list_valid_names():
    with pytest.raises(ValueError, match="llama3_8b"):
        get_model("gpt5")
    with pytest.raises(ValueError, match="a100_80g.*h100_80g"):
        get_hardware("tpu")


def test_specs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_hardware("a100_80g").num_sms = 1  # type: ignore[misc]


@pytest.mark.parametrize("name", hardware_names())
def test_efficiencies_are_fractions(name):
    hw = get_hardware(name)
    for f in ("compute_efficiency_max", "bandwidth_efficiency", "link_efficiency",
              "elementwise_bandwidth_efficiency", "attention_compute_efficiency",
              "bandwidth_saturation_share"):
        assert 0 < getattr(hw, f) <= 1, f
    assert hw.peak_tflops_fp8 == 0 or hw.peak_tflops_fp8 > hw.peak_tflops_bf16


def test_file_names_match_names():
    assert all(get_hardware(n).name == n for n in hardware_names())
    assert all(get_model(n).name == n for n in model_names())
    assert {"a100_80g", "h100_80g", "cpu", "l40s", "h20"} <= set(hardware_names())
    assert {"llama3_8b", "deepseek_v3", "tiny_llama"} <= set(model_names())


def test_hardware_has_what_the_paper_setups_need():
    # DeepSeek-V3 FP8 on H200; the A800 cluster test; 405B on A100-40GB (datasheets).
    h200, a800, a100 = (get_hardware(n) for n in ("h200_141g", "a800_80g", "a100_40g"))
    assert h200.peak_tflops_fp8 == 1979.0 and h200.hbm_bytes > 140 * 2**30
    assert 2 * a800.nvlink_bandwidth_bytes_s == 400e9  # 400 GB/s total, 200 each way
    assert 2 * a100.nvlink_bandwidth_bytes_s == 600e9 and a100.hbm_bytes == 40 * 2**30
    assert a100.peak_tflops_fp8 == 0.0  # FP8 weights there would be weight-only


def test_bundled_models_compose_through_the_config_path():
    """model=<name> (Hydra) and get_model(name) (Python) read the same bundled config.json,
    with the bundled entry's context cap; model.config=PATH names the model after its directory."""
    from pathlib import Path
    from harness.goodput import compose
    for name in model_names():
        cfg = compose([f"model={name}"])
        assert cfg.model.name == name and cfg.model.spec() == get_model(name)
    assert get_model("deepseek_v2_lite").max_context_tokens == 32768  # conf/model: the model card's 32k
    qwen = Path(__file__).parent / "data" / "hf" / "Qwen2.5-7B"
    cfg = compose([f"model.config={qwen}"])
    assert cfg.model.name == "Qwen2.5-7B" and cfg.model.spec().vocab == 152064
    assert compose([f"model.config={qwen}/config.json", "model.name=q"]).model.spec().name == "q"


def test_hardware_config_lists_every_spec_field():
    from harness.config import HardwareConfig
    spec_fields = {f.name for f in dataclasses.fields(get_hardware("a100_80g"))}
    assert {f.name for f in dataclasses.fields(HardwareConfig)} == spec_fields | {"calibration_source"}
