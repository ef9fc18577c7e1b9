"""harness/sweep.py and harness/goodput.py's Evaluator: the goodput search and the SLO-scale
sweep through a Hydra launcher give the same numbers as in this process; slo.scale scales
both targets; a failed sweep names its command."""
import dataclasses

import pytest

from engines.errors import ConfigError
from harness.goodput import Evaluator, attainment_at
from harness.sweep import Launcher, SweepError, sweep_summaries
from tests.test_bench import cfg_for

BASE = ["engine=semipd", "workload.num_requests=300", "slo=llama3_8b_sharegpt_tight"]


def test_the_launchers_overrides():
    assert Launcher("joblib", 2).hydra_overrides() == ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    assert Launcher("ray", 2).hydra_overrides() == ["hydra/launcher=ray", "hydra.launcher.ray.init.num_cpus=2"]
    joined = Launcher("ray", 2, ("hydra.launcher.ray.init.address=auto",)).hydra_overrides()
    assert joined == ["hydra/launcher=ray", "hydra.launcher.ray.init.address=auto"]  # the cluster's CPUs
    assert Launcher("basic").hydra_overrides() == ["hydra/launcher=basic"]
    with pytest.raises(ConfigError, match="--launcher"):
        Launcher("slurm")
    with pytest.raises(ConfigError, match="--jobs"):
        Launcher("joblib", 0)


def test_goodput_and_slo_scales_through_a_launcher_equal_the_in_process_ones(tmp_path):
    inproc = Evaluator(BASE, tmp_path / "inproc")
    launched = Evaluator(BASE, tmp_path / "launched", Launcher("joblib", 2))
    a, b = (e.goodput(4.0, 40.0, num_grid=3, num_bisect=1) for e in (inproc, launched))
    assert a == b and a.bound == "crossing" and len(a.points) == 4
    scales = [0.5, 1.0, 2.0]
    assert inproc.at_slo_scales(38.0, scales) == launched.at_slo_scales(38.0, scales)
    assert sorted(p.name for p in (tmp_path / "launched").iterdir()) == [
        "sweep1_workload_rate", "sweep2_workload_rate", "sweep3_slo_scale"]  # grid, bisection, scales


def test_slo_scale_multiplies_both_targets(tmp_path):
    cfg = cfg_for(*BASE)
    doubled = dataclasses.replace(cfg, slo=dataclasses.replace(cfg.slo, ttft_s=2 * cfg.slo.ttft_s,
                                                               tpot_s=2 * cfg.slo.tpot_s))
    assert attainment_at(cfg, 38.0, tmp_path / "a", 2.0) == attainment_at(doubled, 38.0, tmp_path / "b")
    assert attainment_at(cfg, 38.0, tmp_path / "c", 2.0) > attainment_at(cfg, 38.0, tmp_path / "d")


def test_slo_scale_must_be_positive():
    cfg = cfg_for(*BASE, "slo.scale=0")
    with pytest.raises(ConfigError, match="slo.scale"):
        cfg.slo.validate()


def test_a_failed_sweep_names_its_command(tmp_path):
    with pytest.raises(SweepError, match=r"the sweep of workload.rate over \[1.0\] failed.*engine=nosuch"):
        sweep_summaries(["engine=nosuch"], "workload.rate", [1.0], tmp_path / "s", Launcher("basic"))


def test_launcher_options_without_a_launcher_are_refused(capsys):
    from harness.goodput import main
    with pytest.raises(SystemExit) as exc:
        main(["rate", "--jobs", "2", "engine=unified"])
    assert exc.value.code == 2 and "--jobs and --launcher-override need --launcher" in capsys.readouterr().err
