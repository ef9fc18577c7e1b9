"""The default sweeper validates one job per swept value before launching (not every job)."""
import subprocess
import sys

from hydra_plugins.semipd_sweeper.covering_sweeper import covering_jobs
from tests.test_bench import ROOT


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
