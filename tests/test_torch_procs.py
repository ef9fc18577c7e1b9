"""The multi-process real runtime (engines/torch/procs.py, runtime.py): every design on
worker processes over shared weights and KV gives the same greedy tokens as one
in-process worker, also across share switches and preemptions; a dead worker fails the
run clearly and leaves no process or shared memory behind."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import harness.run as harness_run
from harness.goodput import compose

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["executor=torch", "model=tiny_llama", "hardware=cpu", "workload=synthetic", "executor.dtype=float32",
          "workload.num_requests=8", "workload.rate=inf", "workload.prompt_len=24", "workload.output_len=10",
          "check_integrity=true", "plots=false", "progress=false"]
BLOCK_BYTES = 16 * 4 * 2 * 2 * 64 * 4  # tokens x layers x (K, V) x KV heads x head dim x float32


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from engines.torch.make_model import make_checkpoint
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_llama", "tiny_llama", seed=0)


def run(checkpoint, tmp_path, name, *overrides):
    cfg = compose(COMMON + [f"model.checkpoint={checkpoint}", *overrides])
    result = harness_run.run(cfg, tmp_path / name)
    assert result.summary["num_finished"] == 8, result.summary
    return result


def outputs(result):
    return {r.id: r.token_ids[r.prompt_len:] for r in result.requests}


@pytest.fixture(scope="module")
def reference(checkpoint, tmp_path_factory):
    """One unified worker computing inside the driver."""
    return outputs(run(checkpoint, tmp_path_factory.mktemp("ref"), "ref", "executor.runtime=inprocess"))


@pytest.mark.parametrize("name,overrides", [
    ("unified", ["engine=unified"]),
    ("semipd_static_50_50", ["engine=semipd", "engine.semipd.controller=static",
                             "engine.semipd.prefill_share_pct=50", "engine.semipd.decode_share_pct=50"]),
    ("semipd_100_100", ["engine=semipd", "engine.semipd.controller=static"]),
    ("disagg", ["engine=disagg"]),
])
def test_designs_on_worker_processes_emit_the_same_tokens(checkpoint, tmp_path, reference, name, overrides):
    result = run(checkpoint, tmp_path, name, *overrides)
    assert outputs(result) == reference
    s = result.summary
    workers = {"prefill0", "decode0"} if name != "unified" else {"mixed0"}
    assert s["runtime"] == "processes" and s["num_worker_processes"] == len(workers)
    assert s["num_model_copies_loaded"] == (2 if name == "disagg" else 1)  # semi-PD: one copy, one pool
    assert s["omp_wait_policy"] == ("passive" if "semipd" in name else "default")
    assert set(s["memory_pss_bytes"]) == {"driver"} | workers | ({"kv-transfer"} if name == "disagg" else set())
    if name == "disagg":  # every request's KV moved once, whole blocks of every layer
        transfers = pd.read_csv(tmp_path / name / "kv_transfers.csv")
        assert sorted(transfers["request_id"]) == list(range(8))
        assert (transfers["num_bytes"] == 2 * BLOCK_BYTES).all()  # 24 prompt tokens + 1 = 2 blocks... of 16
        assert s["num_kv_transfers"] == 8 and s["kv_transfer_s_total"] > 0
    if name == "semipd_static_50_50" and os.cpu_count() >= 2:
        cores = s["worker_cores"]
        assert not set(cores["prefill0"]) & set(cores["decode0"])  # x + y <= 100: disjoint cores


@pytest.mark.parametrize("switch", ["inplace", "standby"])
def test_semipd_tokens_hold_across_preemption_and_share_switches(checkpoint, tmp_path, reference, switch):
    # A pool of 10 blocks for 8 requests of 3 blocks forces preemptions; an impossible TTFT
    # SLO with a 2-request window makes the controller move the shares again and again.
    result = run(checkpoint, tmp_path, "switching", "engine=semipd", "engine.semipd.controller=slo_code",
                 "engine.semipd.window_requests=2", "slo.ttft_s=0.000001", "engine.semipd.floor_pct=50",
                 "engine.semipd.step_pct=25", f"executor.share_switch={switch}",
                 f"executor.kv_cache_bytes={10 * BLOCK_BYTES}")
    assert outputs(result) == reference
    assert result.summary["num_preemptions"] > 0
    assert result.summary["num_share_switches"] > 0
    if os.cpu_count() >= 2:  # y 100 -> 50 takes the decode worker from 2 cores to 1
        assert result.summary["worker_cores"]["decode0"] == [os.cpu_count() - 1]
        if switch == "inplace":
            assert len(result.summary["share_rebind_s"]) >= 1 and result.summary["num_standby_handovers"] == 0
        else:
            assert result.summary["num_standby_handovers"] >= 1 and result.summary["share_rebind_s"] == []


def test_disagg_tokens_hold_when_the_decode_pool_preempts(checkpoint, tmp_path, reference):
    # 10 blocks per instance for 8 requests of 3 blocks: decodes run out of KV, the newest
    # is recomputed on the prefill instance and its KV transferred again.
    result = run(checkpoint, tmp_path, "disagg_small", "engine=disagg", f"executor.kv_cache_bytes={10 * BLOCK_BYTES}")
    assert outputs(result) == reference
    assert result.summary["num_preemptions"] > 0
    transfers = pd.read_csv(tmp_path / "disagg_small" / "kv_transfers.csv")
    assert len(transfers) == result.summary["num_kv_transfers"] > 8


def _children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _left_in_shm(before: set[str], pids: list[int]) -> set[str]:
    """/dev/shm entries that appeared since `before`, except torch segments of processes
    other than `pids` (torch names a segment torch_<creator pid>_...): a torch test in the
    other xdist worker may hold one for a moment (seen once in make test, 2026-12-07)."""
    ours = {str(p) for p in pids}
    return {n for n in set(os.listdir("/dev/shm")) - before
            if not (n.startswith("torch_") and n.split("_")[1] not in ours)}


def _serve_then(tmp_path, checkpoint, interrupt):
    """Start a semi-PD run, wait until it serves, call interrupt(proc, worker pids), and
    return (returncode, stderr, seconds from the interrupt to exit, worker pids + the driver's)."""
    cmd = [sys.executable, "bench.py", *COMMON, f"model.checkpoint={checkpoint}", "engine=semipd",
           "engine.semipd.controller=static", "workload.num_requests=400", "workload.rate=20",
           "workload.output_len=50", "check_integrity=false", f"hydra.run.dir={tmp_path}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, as a shell job
    try:
        deadline = time.monotonic() + 120
        workers = []
        while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            workers = [p for p in _children(proc.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
        assert len(workers) == 2, "the two workers did not start"
        log = tmp_path / "bench.log"  # the run logs its workload once the workers are ready
        while time.monotonic() < deadline and proc.poll() is None and not (
                log.exists() and "workload:" in log.read_text()):
            time.sleep(0.2)
        time.sleep(3)  # serving
        interrupt(proc, workers)
        start = time.monotonic()
        _, stderr = proc.communicate(timeout=60)
        return proc.returncode, stderr, time.monotonic() - start, workers + [proc.pid]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


@pytest.mark.xdist_group("bounded_exit")  # an exit bound: never beside a server (tests/test_serve.py)
def test_a_killed_worker_fails_the_run_naming_it_and_leaves_nothing_behind(checkpoint, tmp_path):
    shm_before = set(os.listdir("/dev/shm"))
    code, stderr, exit_s, pids = _serve_then(tmp_path, checkpoint,
                                             lambda proc, workers: os.kill(workers[0], signal.SIGKILL))
    assert exit_s < 15
    assert code == 1, stderr[-2000:]
    assert "Traceback" not in stderr and "killed by signal 9" in stderr
    assert "worker process prefill0" in stderr or "worker process decode0" in stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "WorkerDied" in summary["failure"] and summary["num_requests"] == 400
    assert not any(_alive(p) for p in pids)
    assert not _left_in_shm(shm_before, pids)


@pytest.mark.xdist_group("bounded_exit")  # an exit bound: never beside a server (tests/test_serve.py)
def test_ctrl_c_stops_the_run_keeps_results_and_reaps_every_worker(checkpoint, tmp_path):
    shm_before = set(os.listdir("/dev/shm"))
    # Ctrl-C in a terminal signals the whole foreground process group: driver and workers.
    code, stderr, exit_s, pids = _serve_then(tmp_path, checkpoint,
                                             lambda proc, workers: os.killpg(proc.pid, signal.SIGINT))
    # ~10 s alone; 28-30 s twice in the full 2-worker suite of 2026-12-06 (cause not found yet).
    assert exit_s < 45
    assert code == 130 and "interrupted; results so far" in stderr and "Traceback" not in stderr, stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "KeyboardInterrupt" in summary["failure"] and 0 < summary["num_finished"] < 400
    assert summary["num_finished"] + summary["num_rejected"] == 400  # the rest: unfinished, with a reason
    assert not any(_alive(p) for p in pids)
    assert not _left_in_shm(shm_before, pids)


def test_stress_both_semipd_workers_over_a_small_pool(checkpoint, tmp_path):
    """Both workers at full speed for thousands of steps over a pool of 12 blocks: the
    driver checks every pool's ownership after every event (check_integrity), and every
    request finishes or is rejected with a reason."""
    cfg = compose(COMMON + [f"model.checkpoint={checkpoint}", "engine=semipd", "engine.semipd.controller=slo_code",
                            "engine.semipd.window_requests=5", "slo.ttft_s=0.01", "engine.semipd.step_pct=25",
                            "engine.semipd.floor_pct=50", "workload.num_requests=500",
                            "workload.distribution=uniform", "workload.prompt_len_min=8", "workload.prompt_len_max=40",
                            "workload.output_len_min=4", "workload.output_len_max=24",
                            f"executor.kv_cache_bytes={12 * BLOCK_BYTES}"])
    result = harness_run.run(cfg, tmp_path / "stress")
    s = result.summary
    assert len(result.steps) >= 2000, len(result.steps)
    assert {st.worker for st in result.steps} == {"prefill0", "decode0"}
    # Every request fits the pool alone (<= 64 tokens = 4 of 12 blocks): all must finish,
    # none stall (a stalled one would be rejected as "unfinished at end of run").
    assert s["num_finished"] == 500 and s["num_unfinished"] == 0
    assert s["num_preemptions"] > 0 and s["kv_pools"]["kv0"]["peak_used_blocks"] == 12
