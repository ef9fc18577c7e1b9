"""paper/progress.py: the suite's runs done of its total from the multiruns' progress.jsonl
files (a bar on a terminal), a line per finished item, failed runs named as they appear."""
import json
import subprocess
import sys
import time

from harness.callbacks import PROGRESS_FILE
from paper.progress import PhaseProgress
from paper.suite import sweep_runs
from tests.test_bench import ROOT
from tests.test_sweep_progress import run_on_terminal


def record(job: int, status: str, *overrides: str) -> str:
    return json.dumps({"job": job, "status": status, "seconds": 1.5, "overrides": list(overrides)}) + "\n"


def test_counts_only_new_runs_and_names_failures_as_they_appear(tmp_path, capsys):
    a, b = tmp_path / "figA", tmp_path / "figB"
    a.mkdir()
    (a / PROGRESS_FILE).write_text(record(0, "completed", "old=1"))  # an earlier suite's (--keep)
    with PhaseProgress("paper runs", 3, "run", 2, [a, b]) as progress:
        with open(a / PROGRESS_FILE, "a") as f:
            f.write(record(0, "completed", "engine=unified") + record(1, "failed", "engine=semipd"))
        b.mkdir()
        (b / PROGRESS_FILE).write_text(record(0, "completed", "x=1") + '{"job": 1, "sta')  # being written
        time.sleep(1.5)  # the watcher polls every 0.5 s
        progress.finished("figA: 1.0 s")
        seen = progress._seen
        assert seen[a / PROGRESS_FILE][-1].startswith('{"job": 1') and len(seen[b / PROGRESS_FILE]) == 1
    out, err = capsys.readouterr()
    assert "[1/2] figA: 1.0 s" in out
    assert "run failed after 1.5 s: figA engine=semipd" in err and "engine=unified" not in err


def test_the_suite_on_a_terminal_shows_runs_done_of_total(tmp_path):
    cmd = [sys.executable, "-m", "paper.suite", "--only", "fig3", "--out", str(tmp_path)]
    returncode, text = run_on_terminal(cmd, 180)
    n = sweep_runs("fig3_kv_usage", "full")
    assert returncode == 0, text[-3000:]
    assert "paper runs: 100%" in text and f"{n}/{n}" in text and "[1/1] fig3_kv_usage: " in text, text[-3000:]


def test_the_suite_off_a_terminal_prints_lines_and_no_bar(tmp_path):
    res = subprocess.run([sys.executable, "-m", "paper.suite", "--only", "fig3", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "[1/1] fig3_kv_usage: " in res.stdout and "paper runs" not in res.stdout + res.stderr
