"""Lazy decodes (engines/lazy_decodes.py) change how fast a simulation runs, never what it
gives: every design, with and without preemption, writes the same run directory byte for
byte as the eager path, and the cohort really carries the decodes."""
import filecmp

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import harness.run as harness_run
from engines.lazy_decodes import LazyDecodes
from tests.test_bench import CONF

SMALL = ["plots=false", "progress=false", "model=llama3_8b", "hardware=a100_80g"]
TIGHT_KV = "executor.kv_cache_bytes=1073741824"  # 512 blocks of 16 tokens: preemptions
CASES = {
    "unified_chunked": ["engine=unified_chunked", "workload.rate=3", "workload.num_requests=150"],
    "unified_chunked_tight": ["engine=unified_chunked", "workload.rate=10", "workload.num_requests=150", TIGHT_KV],
    "unified_prefill_first_tight": ["engine=unified", "workload.rate=10", "workload.num_requests=150", TIGHT_KV],
    "disagg_swap_tight": ["engine=disagg", "workload.rate=4", "workload.num_requests=150", TIGHT_KV],
    "semipd": ["engine=semipd", "workload.rate=4", "workload.num_requests=150"],
    "semipd_static_tight": ["engine=semipd_static", "workload.rate=10", "workload.num_requests=150", TIGHT_KV],
    "cluster": ["engine=cluster_1p3d4s", "workload.rate=3", "workload.num_requests=150"],
    "small_seq_cap": ["engine=unified_chunked", "engine.max_num_seqs=4", "workload.rate=6",
                      "workload.num_requests=60"],
}


def _run(overrides, path, lazy: bool, monkeypatch):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = OmegaConf.to_object(compose("config", overrides=overrides + SMALL))
    if not lazy:
        monkeypatch.setattr(harness_run, "_lazy_decodes_apply", lambda cfg, engine: False)
    peak = []
    join = LazyDecodes.join

    def counting_join(self):
        join(self)
        peak.append(self.count)
    monkeypatch.setattr(LazyDecodes, "join", counting_join)
    try:
        result = harness_run.run(cfg, path)
    finally:
        monkeypatch.undo()
    return result, max(peak, default=0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_lazy_decodes_give_the_eager_results_byte_for_byte(case, tmp_path, monkeypatch):
    lazy, cohort = _run(CASES[case], tmp_path / "lazy", True, monkeypatch)
    eager, none = _run(CASES[case], tmp_path / "eager", False, monkeypatch)
    assert none == 0 and cohort > 1, "the lazy run must carry decodes in a cohort, the eager one none"
    names = sorted(p.name for p in (tmp_path / "eager").iterdir() if p.is_file())
    assert names == sorted(p.name for p in (tmp_path / "lazy").iterdir() if p.is_file())
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / "lazy", tmp_path / "eager", names, shallow=False)
    assert not mismatch and not errors, mismatch + errors
    assert [r.token_times_s for r in lazy.requests] == [r.token_times_s for r in eager.requests]
    assert [(r.num_computed_tokens, r.num_output_tokens, r.block_ids) for r in lazy.requests] == \
        [(r.num_computed_tokens, r.num_output_tokens, r.block_ids) for r in eager.requests]
    if case.endswith("_tight"):
        assert lazy.summary["num_preemptions"] > 0, "the tight pool must preempt (the cohort dissolves)"


def test_sglang_and_integrity_checked_runs_stay_eager(tmp_path, monkeypatch):
    for extra in (["engine=sglang"], ["engine=unified_chunked", "check_integrity=true"]):
        _, cohort = _run(extra + ["workload.rate=3", "workload.num_requests=40"], tmp_path / extra[-1], True,
                         monkeypatch)
        assert cohort == 0, extra
