"""sim_cache_dir (harness/sim_cache.py): a run whose simulation an earlier run did writes
the files simulating it would have written, its own SLO applied; what the simulation
reads (an SLO-aware controller's SLO, the inputs) keeps runs apart."""
import dataclasses
import filecmp
import json

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from engines.errors import ConfigError
from harness import sim_cache
from harness.build import sim_reads_slo
from harness.run import run
from tests.test_bench import CONF

ENGINES = sorted(p.stem for p in (CONF / "engine").glob("*.yaml"))
SMALL = ["plots=false", "progress=false", "workload.num_requests=40", "workload.rate=6"]
# Different SLO groups (names) and targets; the tight one misses some requests.
TIGHT = ["slo=llama3_8b_sharegpt_tight", "slo.ttft_s=0.05", "slo.tpot_s=0.03", "tag=tight"]
LOOSE = ["slo=llama3_8b_sharegpt_loose", "slo.scale=2", "tag=loose"]


def _cfg(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return OmegaConf.to_object(compose("config", overrides=overrides + SMALL))


def _files(path):
    return sorted(p.name for p in path.iterdir() if p.is_file())


@pytest.mark.parametrize("engine", ENGINES)
def test_only_slo_aware_controllers_make_the_simulation_depend_on_the_slo(engine, tmp_path):
    tight, loose = _cfg([f"engine={engine}", *TIGHT]), _cfg([f"engine={engine}", *LOOSE])
    if sim_reads_slo(tight):
        assert sim_cache.key(tight) != sim_cache.key(loose)
        return
    assert sim_cache.key(tight) == sim_cache.key(loose)
    a, b = run(tight, tmp_path / "a"), run(loose, tmp_path / "b")
    assert a.summary["slo"] != b.summary["slo"]
    csvs = [n for n in _files(tmp_path / "a") if n.endswith(".csv")]
    assert "requests.csv" in csvs and "steps.csv" in csvs
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", csvs, shallow=False)
    assert not mismatch and not errors, f"{engine}: the SLO changed {mismatch + errors}"


@pytest.mark.parametrize("engine", ["unified_chunked", "disagg", "semipd_static"])
def test_a_reused_run_writes_what_simulating_it_writes(engine, tmp_path):
    cache = f"sim_cache_dir={tmp_path / 'cache'}"
    fresh = run(_cfg([f"engine={engine}", *LOOSE]), tmp_path / "fresh")
    first = run(_cfg([f"engine={engine}", *TIGHT, cache]), tmp_path / "first")
    reused = run(_cfg([f"engine={engine}", *LOOSE, cache]), tmp_path / "reused")
    assert first.requests and not reused.requests, "the second run must come from the cache"
    assert first.summary["slo_attainment"] < reused.summary["slo_attainment"], "the tight SLO must miss more"
    assert reused.summary == fresh.summary
    names = _files(tmp_path / "fresh")
    assert names == _files(tmp_path / "reused")
    same = [n for n in names if n != "config.yaml"]
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / "fresh", tmp_path / "reused", same, shallow=False)
    assert not mismatch and not errors, mismatch + errors
    # config.yaml: the run's own, which differs from the fresh one in sim_cache_dir only
    differ = set((tmp_path / "fresh/config.yaml").read_text().splitlines()) ^ \
        set((tmp_path / "reused/config.yaml").read_text().splitlines())
    assert {line.split(":")[0] for line in differ} == {"sim_cache_dir"}, differ
    assert json.loads((tmp_path / "reused/summary.json").read_text())["tag"] == "loose"


def test_an_slo_aware_controller_and_changed_inputs_are_not_reused(tmp_path):
    cache = f"sim_cache_dir={tmp_path / 'cache'}"
    run(_cfg(["engine=semipd", *TIGHT, cache]), tmp_path / "tight")
    assert run(_cfg(["engine=semipd", *LOOSE, cache]), tmp_path / "loose").requests, "slo_code reads the SLO"
    assert not run(_cfg(["engine=semipd", *TIGHT, "tag=again", cache]), tmp_path / "again").requests
    data = tmp_path / "trace.jsonl"
    data.write_text("x")
    with_file = _cfg(["engine=unified", f"workload.path={data}"])
    before = sim_cache.key(with_file)
    data.write_text("xy")
    assert sim_cache.key(with_file) != before, "an edited input file must change the key"


def test_a_deleted_first_run_is_simulated_again(tmp_path):
    cache = f"sim_cache_dir={tmp_path / 'cache'}"
    run(_cfg(["engine=unified", *TIGHT, cache]), tmp_path / "first")
    (tmp_path / "first/summary.json").unlink()
    assert run(_cfg(["engine=unified", *LOOSE, cache]), tmp_path / "second").requests


def test_sim_cache_dir_needs_a_simulation_without_plots(tmp_path):
    cfg = _cfg([f"sim_cache_dir={tmp_path}"])
    cfg.validate()
    for bad in ({"plots": True}, {"executor": dataclasses.replace(cfg.executor, name="torch")}):
        with pytest.raises(ConfigError, match="sim_cache_dir"):
            dataclasses.replace(cfg, **bad).validate()
