"""Specs: published parameter counts, KV sizes, registries."""
import dataclasses

import pytest

from sim.specs import HARDWARE, MODELS, get_hardware, get_model


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


@pytest.mark.parametrize("hw", list(HARDWARE.values()), ids=list(HARDWARE))
def test_efficiencies_are_fractions(hw):
    for f in ("compute_efficiency_max", "bandwidth_efficiency", "link_efficiency",
              "elementwise_bandwidth_efficiency", "attention_compute_efficiency",
              "bandwidth_saturation_share"):
        assert 0 < getattr(hw, f) <= 1, f
    assert hw.peak_tflops_fp8 == 0 or hw.peak_tflops_fp8 > hw.peak_tflops_bf16


def test_registry_names_match_keys():
    assert all(k == v.name for k, v in {**HARDWARE, **MODELS}.items())


def test_hardware_has_what_the_paper_setups_need():
    # DeepSeek-V3 FP8 on H200; the A800 cluster test; 405B on A100-40GB (datasheets).
    h200, a800, a100 = (get_hardware(n) for n in ("h200_141g", "a800_80g", "a100_40g"))
    assert h200.peak_tflops_fp8 == 1979.0 and h200.hbm_bytes > 140 * 2**30
    assert 2 * a800.nvlink_bandwidth_bytes_s == 400e9  # 400 GB/s total, 200 each way
    assert 2 * a100.nvlink_bandwidth_bytes_s == 600e9 and a100.hbm_bytes == 40 * 2**30
    assert a100.peak_tflops_fp8 == 0.0  # FP8 weights there would be weight-only


def test_new_models_compose_as_configs():
    from pathlib import Path
    conf = Path(__file__).resolve().parent.parent / "conf" / "model"
    for name in ("deepseek_v2_lite", "deepseek_v3"):
        assert (conf / f"{name}.yaml").read_text().strip() == f"name: {name}"
        assert get_model(name).name == name
