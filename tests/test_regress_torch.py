"""The real-engine A/B gate: the baseline commit is checked out and run beside the candidate,
verdicts come from candidate/baseline pairs, a missing or broken baseline skips (does not fail),
a broken candidate fails, the planted slowdown reaches the candidate only, nothing is left behind.
The git mechanics run against a throw-away repository whose `torch_regress.py` is a fake that
prints fixed numbers; the real measurement is checked for the keys the gate reads."""
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch_ab  # noqa: E402
import torch_regress  # noqa: E402
from benchmarks.baseline_tree import baseline_tree, dirty_files, find_commit  # noqa: E402
from metrics.compare import Rule  # noqa: E402

RULES = [Rule("decode_step_s", "ratio", max_change=0.1, direction="lower_is_better"),
         Rule("output_throughput_tok_s", "ratio", max_change=0.1, direction="higher_is_better")]

# A stand-in for benchmarks/torch_regress.py with the same command line and output contract:
# decode step = DECODE_S x (1 + planted slowdown); FAKE_CRASH makes it exit 3.
FAKE = textwrap.dedent('''
    import argparse, json, os, subprocess, sys
    from pathlib import Path
    DECODE_S = {decode_s}
    ap = argparse.ArgumentParser(); ap.add_argument("--out"); ap.add_argument("--repeats", type=int)
    a = ap.parse_args()
    if {crash}:
        sys.exit(3)
    here = Path(__file__).resolve().parent.parent
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                            text=True).stdout.strip()
    slow = 1 + float(os.environ.get("TORCH_REGRESS_PLANT_SLOWDOWN", "0") or 0)
    out = Path(a.out) / "torch_tiny_llama_offline"; out.mkdir(parents=True)
    d = DECODE_S * slow
    (out / "summary.json").write_text(json.dumps({{"decode_step_s": d, "output_throughput_tok_s": 1 / d,
                                                  "versions": {{"git_commit": commit}}}}))
''')


def git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def commit_fake(repo: Path, decode_s: float, crash: bool = False) -> str:
    (repo / "benchmarks").mkdir(exist_ok=True)
    (repo / "benchmarks" / "torch_regress.py").write_text(FAKE.format(decode_s=decode_s, crash=crash))
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", f"decode {decode_s}")
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    return repo


def gate(repo: Path, commit: str, out: Path, pairs: int = 2):
    with baseline_tree(repo, commit) as tree:
        if tree.path is None:
            return torch_ab.GateResult("SKIPPED", tree.problem)
        base = torch_ab.Side("baseline", tree.path, commit=commit)
        return torch_ab.run_gate(base, torch_ab.Side("candidate", repo, plant=True), RULES, pairs, 1, out,
                                 say=lambda s: None)


def test_same_code_passes_and_the_worktree_is_removed(repo, tmp_path):
    commit = commit_fake(repo, 0.010)
    result = gate(repo, commit, tmp_path / "out")
    assert result.status == "PASS", result.reason
    assert {r["metric"]: r["ratio"] for r in result.rows} == {"decode_step_s": 1.0, "output_throughput_tok_s": 1.0}
    assert len(result.samples["baseline"]) == len(result.samples["candidate"]) == 2
    assert len(git(repo, "worktree", "list").splitlines()) == 1  # only the main tree is left


def test_a_slower_candidate_fails_and_names_the_metric(repo, tmp_path):
    base = commit_fake(repo, 0.010)
    commit_fake(repo, 0.013)  # the candidate (HEAD) is 30 % slower than the baseline commit
    result = gate(repo, base, tmp_path / "out")
    verdicts = {r["metric"]: r["verdict"] for r in result.rows}
    assert result.status == "FAIL" and verdicts == {"decode_step_s": "slower", "output_throughput_tok_s": "slower"}
    assert "decode_step_s" in result.reason
    assert {r["metric"]: round(r["ratio"], 6) for r in result.rows}["decode_step_s"] == 1.3


def test_the_planted_slowdown_reaches_the_candidate_only(repo, tmp_path, monkeypatch):
    commit = commit_fake(repo, 0.010)
    monkeypatch.setenv(torch_ab.PLANT_ENV, "0.3")
    result = gate(repo, commit, tmp_path / "out")
    assert result.status == "FAIL"
    assert [s["decode_step_s"] for s in result.samples["baseline"]] == [0.010, 0.010]
    assert [round(s["decode_step_s"], 9) for s in result.samples["candidate"]] == [0.013, 0.013]


def test_a_missing_commit_skips_with_the_reason(repo, tmp_path):
    commit_fake(repo, 0.010)
    result = gate(repo, "0123456789abcdef0123456789abcdef01234567", tmp_path / "out")
    assert result.status == "SKIPPED" and "not in this clone" in result.reason
    assert "no baseline_commit recorded" in find_commit(repo, "")


def test_a_baseline_that_does_not_run_skips_but_a_broken_candidate_fails(repo, tmp_path):
    broken = commit_fake(repo, 0.010, crash=True)
    commit_fake(repo, 0.010)
    result = gate(repo, broken, tmp_path / "a")
    assert result.status == "SKIPPED" and "exited 3" in result.reason
    good = git(repo, "rev-parse", "HEAD")
    commit_fake(repo, 0.010, crash=True)
    result = gate(repo, good, tmp_path / "b")
    assert result.status == "FAIL" and "candidate does not run" in result.reason


def test_a_baseline_running_other_code_is_caught(repo, tmp_path):
    commit = commit_fake(repo, 0.010)
    side = torch_ab.Side("baseline", repo, commit="deadbeefdeadbeef")
    with pytest.raises(torch_ab.SideFailed, match="not deadbeef"):
        torch_ab.measure(side, tmp_path / "m", 1)
    assert commit  # the repo's own commit is what ran


def test_accept_refuses_a_dirty_tree_and_load_checks_the_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch_ab, "dirty_files", lambda root: ["engines/scheduler.py"])
    assert torch_ab.accept_main(tmp_path / "torch.json") == 2
    assert "engines/scheduler.py" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(SystemExit, match="bad.json.*format"):
        torch_ab.load_baseline(bad)


def test_the_committed_baseline_names_a_commit_of_this_repository_and_gates_real_metrics():
    commit, rules = torch_ab.load_baseline()
    assert len(commit) == 40 and {r.metrics for r in rules} >= {"decode_step_s", "output_throughput_tok_s"}
    shallow = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=ROOT, capture_output=True,
                             text=True).stdout.strip() == "true"
    if not shallow:
        assert find_commit(ROOT, commit) == ""


def test_the_real_measurement_reports_every_gated_metric():
    values = torch_regress.measure(repeats=1)
    _, rules = torch_ab.load_baseline()
    for rule in rules:
        assert values[rule.metrics] > 0, rule.metrics
    assert values["decode_step_s"] < values["prefill_step_s"]  # 32 decodes vs a 4096-token prefill


def test_the_planted_slowdown_really_slows_the_steps():
    class Fixed:
        model = kv_cache = None

        def execute(self, plan, share=1.0):
            from engines.plan import StepResult
            return StepResult(0.05, (1,))

    slowed = torch_regress._Slowed(Fixed(), 0.3)
    t0 = time.perf_counter()
    result = slowed.execute(None)
    assert time.perf_counter() - t0 >= 0.015 - 1e-3  # slept 30 % of the step
    assert result.duration_s == pytest.approx(0.065) and result.sampled_token_ids == (1,)


def test_dirty_files_ignore_results(repo):
    commit_fake(repo, 0.010)
    (repo / "results").mkdir()
    (repo / "results" / "x.json").write_text("{}")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "r")
    (repo / "results" / "x.json").write_text("{1}")
    assert dirty_files(repo) == []
    (repo / "benchmarks" / "torch_regress.py").write_text("changed")
    assert dirty_files(repo) == ["benchmarks/torch_regress.py"]
