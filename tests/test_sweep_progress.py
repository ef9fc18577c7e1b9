"""harness/callbacks.py SweepProgress: the sweep size from config and command line, a line
per finished run from the run's own process, a bar on a terminal only, failures as lines."""
import fcntl
import json
import os
import pickle
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness.callbacks import PROGRESS_FILE, SweepProgress, sweep_size

ROOT = Path(__file__).resolve().parent.parent


def config(params, task):
    return OmegaConf.create({"hydra": {"sweeper": {"params": params}, "overrides": {"task": task}}})


@pytest.mark.parametrize("params,task,size", [
    (None, ["engine=unified,semipd", "workload.rate=2,4,8", "plots=false"], 6),
    ({"engine": "unified,semipd", "workload.rate": "10,12"}, ["workload.num_requests=50"], 4),
    ({"engine": "unified,semipd", "workload.rate": "10,12"}, ["workload.rate=range(1,4)"], 6),  # the command line wins
    (None, ["model=glob(*)"], None),  # cannot be counted without the config loader
    (None, ["plots=false"], 1),
])
def test_the_sweep_size_multiplies_its_sweeps(params, task, size):
    assert sweep_size(config(params, task)) == size


def test_it_pickles_without_its_thread_for_launchers_in_other_processes():
    cb = SweepProgress()
    cb._thread = object()  # what the multirun's process holds while watching
    clone = pickle.loads(pickle.dumps(cb))
    assert clone._thread is None and not clone._stop.is_set()


def test_failed_runs_are_written_as_they_happen(tmp_path, capsys):
    path = tmp_path / PROGRESS_FILE
    path.write_text(json.dumps({"job": 0, "status": "completed", "seconds": 1.0, "overrides": ["a=1"]}) + "\n"
                    + json.dumps({"job": 1, "status": "failed", "seconds": 2.5, "overrides": ["a=2", "b=x"]}) + "\n"
                    + '{"job": 2, "sta')  # a line being written: not read yet
    cb = SweepProgress()
    cb._stop.set()  # one read, then return
    cb._watch(path, total=3)
    assert "sweep: run 1 failed after 2.5 s (a=2 b=x)" in capsys.readouterr().err


def sweep_args(tmp_path):
    return [sys.executable, "bench.py", "-m", "engine=unified,semipd", "workload.num_requests=300", "plots=false",
            f"results_dir={tmp_path}", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]


def run_on_terminal(cmd: list[str], timeout_s: float) -> tuple[int, str]:
    """Run `cmd` on a 120-column pseudo-terminal; its exit code and everything it wrote."""
    try:
        primary, secondary = pty.openpty()
    except OSError as err:  # a container without /dev/ptmx
        pytest.skip(f"no pseudo-terminal on this machine: {err}")
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=secondary, stderr=secondary, close_fds=True)
    os.close(secondary)
    out, deadline = b"", time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not select.select([primary], [], [], 1.0)[0]:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the terminal closed: the process has exited
                break
            if not chunk:
                break
            out += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        os.close(primary)
    return proc.returncode, out.decode(errors="replace")


def test_a_multirun_on_a_terminal_shows_runs_done_of_total(tmp_path):
    returncode, text = run_on_terminal(sweep_args(tmp_path), 120)
    assert returncode == 0, text[-3000:]
    assert "sweep: 100%" in text and "2/2" in text, text[-3000:]
    lines = [json.loads(x) for x in next((tmp_path / "multirun").iterdir()).joinpath(PROGRESS_FILE).read_text().splitlines()]
    assert sorted(x["job"] for x in lines) == [0, 1] and {x["status"] for x in lines} == {"completed"}


def test_a_multirun_off_a_terminal_shows_no_bar(tmp_path):
    res = subprocess.run(sweep_args(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "sweep:" not in res.stderr and "sweep:" not in res.stdout
    assert len(next((tmp_path / "multirun").iterdir()).joinpath(PROGRESS_FILE).read_text().splitlines()) == 2
