"""The default sweeper validates one job per swept value before launching (not every job),
and composes a job with the same group choices as an earlier one from it (memo_loader.py)."""
import itertools
import subprocess
import sys

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

from hydra_plugins.semipd_sweeper import memo_loader
from hydra_plugins.semipd_sweeper.covering_sweeper import covering_jobs
from hydra_plugins.semipd_sweeper.memo_loader import MemoSweepConfigLoader
from tests.test_bench import CONF, ROOT


def test_covering_jobs_hold_every_override_once():
    grid = [[f"engine={e}", f"workload.rate={r}", "x=1"] for e in "abcde" for r in (1, 2, 3, 4, 5)]
    kept = covering_jobs(grid)
    assert {o for job in kept for o in job} == {o for job in grid for o in job}
    assert len(kept) == 5 and kept[0] == grid[0]  # a 5 x 5 grid: its diagonal
    assert covering_jobs([]) == [] and covering_jobs([["a=1"], ["a=1"]]) == [["a=1"]]


def test_a_bad_swept_value_fails_before_any_run(tmp_path):
    """engine=nope is the last value of the last job: the covering check still composes it."""
    done = subprocess.run([sys.executable, "bench.py", "-m", "engine=unified,nope", "workload.rate=4,8",
                           "workload.num_requests=5", "plots=false", "progress=false",
                           f"hydra.sweep.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "nope" in done.stderr
    assert not list(tmp_path.glob("*/summary.json")), "no job may run when a swept value cannot compose"


def _jobs(experiment: str) -> list[list[str]]:
    """Every job of the experiment's sweep, as Hydra's BasicSweeper lists it, behind the
    command line's own overrides (value overrides among them, to be kept apart too)."""
    params = OmegaConf.load(CONF / "experiment" / f"{experiment}.yaml").hydra.sweeper.params
    axes = [[f"{k}={v}" for v in str(values).split(",")] for k, values in params.items()]
    head = [f"experiment={experiment}", "results_dir=/tmp/x", "workload.num_requests=50", "tag=t"]
    return [head + list(combo) for combo in itertools.product(*axes)]


# engine x rate grids (one with experiment-set values), two value axes, a cluster, rate only
@pytest.mark.parametrize("experiment", ["fig15_llama3_8b_sharegpt_tight", "fig4_decode_kv_pressure",
                                        "fig9_pd_ratio", "fig16_cluster", "rate_sweep"])
def test_memo_composition_equals_hydras_for_every_job(experiment):
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF)))
    memo = MemoSweepConfigLoader(loader)
    # a hydra override that interpolates a job's value, as harness/sweep.py gives
    master = loader.load_configuration("config", overrides=[f"experiment={experiment}", "hydra.sweep.subdir=${hydra.job.num}"],
                                       run_mode=RunMode.MULTIRUN)
    jobs = _jobs(experiment) + [["engine=unified", "workload.rate=3", "+x=1"], ["~tag", "workload.rate=2"],
                                ["workload.rate=5", "engine=unified", "slo.scale=2"]]
    for job in jobs:
        want, got = loader.load_sweep_config(master, job), memo.load_sweep_config(master, job)
        assert OmegaConf.to_yaml(got) == OmegaConf.to_yaml(want), job
        assert OmegaConf.is_struct(got) and not OmegaConf.is_readonly(got.hydra)
        with open_dict(got), open_dict(want):
            del got["hydra"], want["hydra"]
        assert OmegaConf.to_yaml(got, resolve=True) == OmegaConf.to_yaml(want, resolve=True), job
    assert 0 < len(memo_loader._templates) < len(jobs), "later jobs must come from a kept composition"
