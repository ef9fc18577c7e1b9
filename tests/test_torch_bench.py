"""The real executor through the harness: bench.py with executor=torch on a tiny model."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from engines.torch.make_model import make_checkpoint
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_llama", "tiny_llama", seed=0)


def bench(tmp_path, *args):
    cmd = [sys.executable, "bench.py", "executor=torch", "model=tiny_llama", "hardware=cpu",
           "workload=synthetic", "progress=false", "plots=false", f"hydra.run.dir={tmp_path}", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_real_run_writes_the_contract_with_plausible_latencies(tmp_path, checkpoint):
    res = bench(tmp_path, f"model.checkpoint={checkpoint}", "workload.num_requests=12", "workload.rate=20",
                "workload.prompt_len=40", "workload.output_len=12", "executor.num_threads=2")
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["executor"] == "torch" and summary["device"] == "cpu"
    assert summary["attention"] in ("paged+kernel", "paged")  # auto: the kernel where it builds
    assert summary["num_finished"] == 12 and summary["num_rejected"] == 0
    req = pd.read_csv(tmp_path / "requests.csv")
    steps = pd.read_csv(tmp_path / "steps.csv")
    assert (tmp_path / "token_times.csv").exists()
    # every token comes out of some step: a request's TTFT covers at least one step, and
    # its TPOT at least the fastest decode step
    assert (req["ttft_s"] >= steps["duration_s"].min() - 1e-6).all()
    decode = steps[steps["num_prefill_tokens"] == 0]
    assert (req["tpot_s"] >= decode["duration_s"].min() - 1e-6).all()
    # steps do not overlap (one worker) and fit inside the run
    ends = steps["start_s"] + steps["duration_s"]
    assert (steps["start_s"].iloc[1:].to_numpy() >= ends.iloc[:-1].to_numpy() - 1e-6).all()
    assert ends.max() <= summary["duration_s"] + req["arrival_s"].min() + 1e-3
    assert steps["num_decode_tokens"].sum() + 12 == req["output_len"].sum()  # each decode step yields one token


@pytest.mark.parametrize("attention,name", [("torch", "paged"), ("padded", "padded")])
def test_attention_path_is_chosen_and_recorded(tmp_path, checkpoint, attention, name):
    res = bench(tmp_path, f"model.checkpoint={checkpoint}", "workload.num_requests=3", "workload.rate=inf",
                "workload.prompt_len=20", "workload.output_len=3", f"executor.attention={attention}")
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["attention"] == name and summary["num_finished"] == 3


def test_prompt_longer_than_the_models_context_is_rejected(tmp_path, checkpoint):
    res = bench(tmp_path, f"model.checkpoint={checkpoint}", "workload.num_requests=2", "workload.rate=inf",
                "workload.prompt_len=2100", "workload.output_len=4")
    # Nothing could be served: the results are written, then the CLI fails with the reason.
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert "error: no request was served: all 2 were rejected" in res.stderr and "context of 2048" in res.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["num_rejected"] == 2
    assert "context of 2048" in next(iter(summary["rejected_reasons"]))


@pytest.mark.parametrize("args,expect", [
    (["model=llama3_8b", "model.checkpoint=/nonexistent/ckpt"], "/nonexistent/ckpt"),
    (["engine=cluster_1p3d4s"], "mixed clusters are simulated only"),
    (["executor.dtype=int3"], "executor.dtype must be one of"),
])
def test_bad_real_runs_fail_clearly(tmp_path, checkpoint, args, expect):
    extra = [] if any(a.startswith("model.checkpoint") for a in args) else [f"model.checkpoint={checkpoint}"]
    res = bench(tmp_path, *args, *extra, "workload.num_requests=2")
    assert res.returncode != 0 and expect in res.stderr and "Traceback" not in res.stderr
