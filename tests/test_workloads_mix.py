"""distribution=mix: ShareGPT-like requests plus an exact share of ~4k-token prompts."""
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from workloads import WorkloadConfig, WorkloadError, build_workload
from workloads.config import config_from_mapping
from workloads.sharegpt import ShareGPTFilter
from workloads.synthetic import SHAREGPT_LIKE_MEAN_OUTPUT_TOKENS

ROOT = Path(__file__).resolve().parent.parent


def _mix(**kw):
    kw.setdefault("num_requests", 1000)
    return build_workload(WorkloadConfig(source="synthetic", distribution="mix", **kw))


def _split(w):
    long = [s for s in w.specs if s.source == "long"]
    short = [s for s in w.specs if s.source == "sharegpt_like"]
    assert len(long) + len(short) == len(w.specs)
    return long, short


def test_default_mix_is_exactly_five_percent_long():
    w = _mix()
    assert w.describe()["requests_per_source"] == {"sharegpt_like": 950, "long": 50}
    assert w.describe()["source_stats"]["mix_long_requests"] == 50
    assert w.source_used == ("synthetic mix (950 sharegpt_like + 50 long requests, long prompts "
                             "~4096 tokens)")


@pytest.mark.parametrize("n, fraction, expected", [(333, 0.1, 33), (7, 0.5, 4), (1000, 0.0, 0),
                                                   (40, 1.0, 40), (999, 0.05, 50)])
def test_long_count_is_the_rounded_fraction(n, fraction, expected):
    long, _ = _split(_mix(num_requests=n, mix_long_fraction=fraction))
    assert len(long) == expected and abs(len(long) / n - fraction) <= 0.5 / n


def test_fraction_holds_for_every_seed():
    for seed in range(5):
        long, _ = _split(_mix(seed=seed, mix_long_fraction=0.05))
        assert len(long) / 1000 == pytest.approx(0.05, abs=1e-9)


def test_long_prompts_are_about_4k_tokens():
    long, short = _split(_mix(num_requests=20_000, mix_long_fraction=0.5))
    prompt = np.array([s.prompt_len for s in long])
    assert np.median(prompt) == pytest.approx(4096, rel=0.01)
    assert np.log(prompt).std() == pytest.approx(0.1, abs=0.01)
    assert all(s.prompt_len + s.output_len <= 8192 for s in long)
    p = np.array([s.prompt_len for s in short])
    o = np.array([s.output_len for s in short])
    assert ShareGPTFilter().keeps(p, o).all()  # the ShareGPT part obeys vLLM's filter


def test_outputs_of_both_parts_follow_the_sharegpt_like_distribution():
    long, short = _split(_mix(num_requests=20_000, mix_long_fraction=0.5))
    for part in (long, short):
        out = np.array([s.output_len for s in part])
        assert out.mean() == pytest.approx(SHAREGPT_LIKE_MEAN_OUTPUT_TOKENS, rel=0.04)
        assert 4 <= out.min() and out.max() <= 2044


def test_sigma_zero_and_clipping_to_the_context():
    long, _ = _split(_mix(mix_long_prompt_sigma=0.0, mix_long_fraction=0.2))
    assert {s.prompt_len for s in long} == {4096}
    clipped, _ = _split(_mix(mix_long_fraction=0.5, mix_max_total_tokens=4200))
    assert all(s.prompt_len + s.output_len <= 4200 for s in clipped)
    assert any(s.prompt_len + s.output_len == 4200 for s in clipped)


def test_same_seed_same_mix_and_other_seeds_differ():
    a, b = _mix(seed=3), _mix(seed=3)
    assert a.specs == b.specs  # lengths, sources, arrivals: bit-identical
    c = _mix(seed=4)
    assert [s.source for s in a.specs] != [s.source for s in c.specs]
    assert Counter(s.source for s in c.specs) == Counter(s.source for s in a.specs)


def test_conf_workload_sharegpt_long_mix_yaml():
    values = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/workload/sharegpt_long_mix.yaml"))
    cfg = config_from_mapping(values)
    assert (cfg.name, cfg.source, cfg.distribution, cfg.num_requests, cfg.rate) == (
        "sharegpt_long_mix", "synthetic", "mix", 1000, 8.0)
    assert build_workload(cfg).describe()["requests_per_source"] == {"sharegpt_like": 950, "long": 50}


@pytest.mark.parametrize("kw, needles", [
    ({"mix_long_fraction": -0.1}, ["workload.mix_long_fraction", "[0, 1]", "-0.1"]),
    ({"mix_long_fraction": 1.5}, ["workload.mix_long_fraction", "[0, 1]", "1.5"]),
    ({"mix_long_fraction": float("nan")}, ["workload.mix_long_fraction", "nan"]),
    ({"mix_long_prompt_tokens": 0}, ["workload.mix_long_prompt_tokens", ">= 1"]),
    ({"mix_long_prompt_sigma": -0.5}, ["workload.mix_long_prompt_sigma", ">= 0"]),
    ({"mix_max_total_tokens": 2048}, ["workload.mix_max_total_tokens", "sharegpt_max_total_tokens",
                                      "2048 <= 2048"]),
])
def test_option_errors(kw, needles):
    with pytest.raises(WorkloadError) as e:
        _mix(**kw)
    for needle in needles:
        assert needle in str(e.value), (needle, str(e.value))


def test_fraction_is_validated_for_every_source():
    with pytest.raises(WorkloadError, match=r"mix_long_fraction must be a fraction in \[0, 1\]"):
        build_workload(WorkloadConfig(source="synthetic", mix_long_fraction=2.0))
    build_workload(WorkloadConfig(source="synthetic", num_requests=5, mix_max_total_tokens=100))
