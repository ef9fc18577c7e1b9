"""hydra/launcher=ray (conf/hydra/launcher/ray.yaml, hydra_plugins/semipd_ray_launcher): the
ray.init options for a local instance and for joining a cluster, a clear error without the
`cluster` extra, and a multirun on a local Ray instance with 2 CPUs whose runs equal the same
runs under Hydra's basic launcher."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hydra_plugins.semipd_ray_launcher.ray_launcher import MISSING_EXTRA, RayLauncher, init_kwargs

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S = 300


def test_a_local_instance_gets_every_option_given_and_a_cluster_only_the_connection():
    local = {"address": None, "num_cpus": 2, "include_dashboard": False, "object_store_memory": 78643200,
             "namespace": None}
    assert init_kwargs(local) == {"num_cpus": 2, "include_dashboard": False, "object_store_memory": 78643200}
    cluster = dict(local, address="auto", namespace="study", runtime_env={"working_dir": "."})
    assert init_kwargs(cluster) == {"address": "auto", "namespace": "study", "runtime_env": {"working_dir": "."}}


def test_without_the_extra_it_says_what_to_install(monkeypatch):
    from omegaconf import OmegaConf
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    launcher = RayLauncher(OmegaConf.create({"init": {"address": None}, "remote": {}}))
    with pytest.raises(RuntimeError, match=r"pip install -e '\.\[cluster\]'"):
        launcher.launch([["workload.rate=1"]], 0)
    assert "cluster extra" in MISSING_EXTRA


def multirun(tmp_path: Path, name: str, *launcher: str) -> Path:
    out = tmp_path / name
    cmd = [sys.executable, "bench.py", "-m", "engine=unified,semipd", "workload.num_requests=20", "plots=false",
           "progress=false", f"hydra.sweep.dir={out}", "hydra.sweep.subdir=${hydra.job.num}", *launcher]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    return out


def test_a_multirun_on_a_local_ray_instance_equals_the_basic_launchers(tmp_path):
    pytest.importorskip("ray", reason="the cluster extra is not installed (pip install -e '.[cluster]')")
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="the cluster extra is not installed")
    ray_out = multirun(tmp_path, "ray", "hydra/launcher=ray", "hydra.launcher.ray.init.num_cpus=2")
    basic_out = multirun(tmp_path, "basic")
    for job in ("0", "1"):
        assert (ray_out / job / "requests.csv").read_bytes() == (basic_out / job / "requests.csv").read_bytes()
        engine = json.loads((ray_out / job / "summary.json").read_text())["engine"]
        assert engine == ("unified", "semipd")[int(job)]
    lines = [json.loads(line) for line in (ray_out / "progress.jsonl").read_text().splitlines()]
    assert sorted(r["job"] for r in lines) == [0, 1] and {r["status"] for r in lines} == {"completed"}


def test_the_goodput_cli_runs_its_sweeps_on_one_local_ray_instance(tmp_path):
    pytest.importorskip("ray", reason="the cluster extra is not installed (pip install -e '.[cluster]')")
    from harness.goodput import Evaluator
    overrides = ["engine=semipd", "workload.num_requests=300", "slo=llama3_8b_sharegpt_tight"]
    cmd = [sys.executable, "-m", "harness.goodput", "slo-scale", "--rate", "38", "--scales", "0.5,1",
           "--launcher", "ray", "--jobs", "2", "--out", str(tmp_path / "ray"), *overrides]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    printed = json.loads(res.stdout[res.stdout.index("{"):])["attainment_by_slo_scale"]
    expected = Evaluator(overrides, tmp_path / "inproc").at_slo_scales(38.0, [0.5, 1.0])
    assert [printed["0.5"], printed["1.0"]] == expected and expected[0] < expected[1]
    assert (tmp_path / "ray" / "sweep1_slo_scale" / "1" / "summary.json").is_file()
