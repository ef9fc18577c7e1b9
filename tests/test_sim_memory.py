"""KV capacity: vLLM's budget rule and the does-not-fit error."""
import pytest

from sim.memory import (ModelDoesNotFitError, estimate_activation_reserve_bytes,
                        kv_capacity_blocks)
from sim.specs import GIB, get_hardware, get_model


def test_llama3_8b_a100_80g_capacity():
    m, hw = get_model("llama3_8b"), get_hardware("a100_80g")
    reserve = estimate_activation_reserve_bytes(m)
    assert 1.5 * GIB < reserve < 3 * GIB
    tokens = 16 * kv_capacity_blocks(m, hw, tp=1)
    expected = (72 * GIB - m.weight_bytes() - reserve) / 131072  # (72 - 15 - 2) GiB / 128 KiB
    assert tokens == pytest.approx(expected, abs=16)
    assert 400_000 < tokens < 480_000


def test_explicit_reserve_and_block_size():
    m, hw = get_model("llama3_8b"), get_hardware("a100_80g")
    small = kv_capacity_blocks(m, hw, tp=1, activation_reserve_bytes=0, block_size_tokens=32)
    big = kv_capacity_blocks(m, hw, tp=1, activation_reserve_bytes=4 * GIB, block_size_tokens=32)
    assert small - big == pytest.approx(4 * GIB / (32 * 131072), abs=1)


def test_70b_does_not_fit_one_a100_40g_and_says_why():
    with pytest.raises(ModelDoesNotFitError) as err:
        kv_capacity_blocks(get_model("llama3_70b"), get_hardware("a100_40g"), tp=1)
    msg = str(err.value)
    for number in ("40.0 GiB", "0.90", "36.0 GiB", "131.4 GiB", "tp=1"):
        assert number in msg
    assert isinstance(err.value, ValueError)


def test_capacity_grows_with_tp_and_shrinks_with_copies():
    m, hw = get_model("llama3_70b"), get_hardware("a100_80g")
    tp2, tp4 = (kv_capacity_blocks(m, hw, tp=t) for t in (2, 4))
    assert 0 < tp2 < tp4
    assert kv_capacity_blocks(m, hw, tp=4, num_weight_copies=2) < tp4


def test_405b_needs_pipeline_parallelism_on_a100_40g():
    m, hw = get_model("llama31_405b"), get_hardware("a100_40g")
    with pytest.raises(ModelDoesNotFitError):
        kv_capacity_blocks(m, hw, tp=8)
    assert kv_capacity_blocks(m, hw, tp=8, pp=4) > 0
