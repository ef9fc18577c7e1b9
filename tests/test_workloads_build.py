"""build_workload: config handling, fallback, ordering, describe(), option errors."""
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from workloads import RequestSpec, Workload, WorkloadConfig, WorkloadError, build_workload
from workloads.config import config_from_mapping

ROOT = Path(__file__).resolve().parent.parent


def test_specs_sorted_with_ids_and_frozen():
    w = build_workload(WorkloadConfig(source="synthetic", num_requests=500))
    assert isinstance(w, Workload) and len(w.specs) == 500
    assert [s.id for s in w.specs] == list(range(500))
    assert all(a.arrival_s <= b.arrival_s for a, b in zip(w.specs, w.specs[1:]))
    assert all(isinstance(s, RequestSpec) for s in w.specs)
    with pytest.raises(AttributeError):
        w.total_rate = 1.0  # type: ignore[misc]


def test_describe_is_json_ready():
    d = build_workload(WorkloadConfig(source="synthetic", num_requests=100), num_gpus=2).describe()
    json.dumps(d)
    assert d["num_requests"] == 100 and d["total_rate"] == 20.0 and d["rate_per_gpu"] == 10.0
    assert d["requests_per_source"] == {"sharegpt_like": 100} and d["prompt_len_mean"] > 0


def test_dataset_source_without_path_falls_back_and_says_so_once(caplog, monkeypatch):
    from workloads import sources
    monkeypatch.setattr(sources, "_WARNED", set())  # as in a fresh process
    with caplog.at_level(logging.WARNING, logger="workloads"):
        w = build_workload(WorkloadConfig(source="sharegpt", path="", num_requests=10))
        for seed in (1, 2):  # a sweep's further runs in the same process: recorded, not repeated
            again = build_workload(WorkloadConfig(source="sharegpt", path="", num_requests=10, seed=seed))
            assert again.source_used == w.source_used
        build_workload(WorkloadConfig(source="longbench", path="", num_requests=10))  # another fallback: its own line
    assert w.source_used == "synthetic sharegpt_like (no dataset file given: workload.path is empty)"
    assert caplog.text.count("workload.source=sharegpt but workload.path is empty") == 1
    assert caplog.text.count("workload.source=longbench but workload.path is empty") == 1


@pytest.mark.parametrize("kw, needles", [
    ({"source": "sharegptt"}, ["'sharegptt'", "workload.source", "'synthetic'", "'longbench'", "'jsonl'"]),
    ({"source": "synthetic", "distribution": "zipf"}, ["'zipf'", "workload.distribution", "'uniform'"]),
    ({"arrival": "bursty"}, ["'bursty'", "workload.arrival", "'gamma'"]),
    ({"arrival": "trace"}, ["arrival='trace'", "workload.source", "poisson"]),
    ({"num_requests": 0}, ["workload.num_requests", ">= 1"]),
    ({"rate": -1.0}, ["workload.rate", "> 0"]),
    ({"arrival": "gamma", "burstiness": 0.0}, ["workload.burstiness"]),
    ({"prompt_len_min": 10, "prompt_len_max": 5}, ["prompt_len_min..prompt_len_max", "10..5"]),
    ({"sharegpt_max_prompt_tokens": 4096}, ["sharegpt_max_total_tokens", "4096"]),
    ({"tokenizer": "/nope/tokenizer.json", "source": "jsonl", "path": str(ROOT / "tests/data/generic.jsonl")},
     ["/nope/tokenizer.json", "workload.tokenizer"]),
])
def test_option_errors_list_valid_values(kw, needles):
    with pytest.raises(WorkloadError) as e:
        build_workload(WorkloadConfig(**kw))
    for needle in needles:
        assert needle in str(e.value), (needle, str(e.value))


def test_num_gpus_must_be_positive():
    with pytest.raises(WorkloadError, match="num_gpus"):
        build_workload(WorkloadConfig(), num_gpus=0)


def test_hydra_structured_config_round_trip():
    node = OmegaConf.structured(WorkloadConfig)
    node.merge_with(OmegaConf.from_dotlist(["source=synthetic", "distribution=fixed", "rate=.inf",
                                            "longbench_tasks=[qasper]", "num_requests=3"]))
    cfg = OmegaConf.to_object(node)
    assert isinstance(cfg, WorkloadConfig) and cfg.longbench_tasks == ["qasper"]
    assert [s.arrival_s for s in build_workload(node).specs] == [0.0, 0.0, 0.0]  # DictConfig accepted
    assert "longbench_max_prompt_tokens: 7500" in OmegaConf.to_yaml(OmegaConf.structured(WorkloadConfig))


def test_mapping_with_unknown_key_lists_valid_options():
    assert config_from_mapping({"num_requests": 5}).num_requests == 5
    with pytest.raises(WorkloadError) as e:
        config_from_mapping({"num_request": 5})
    assert "num_request" in str(e.value) and "num_requests" in str(e.value)


def test_workloads_does_not_import_torch():
    code = "import sys, workloads; workloads.build_workload(workloads.WorkloadConfig()); " \
           "assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
