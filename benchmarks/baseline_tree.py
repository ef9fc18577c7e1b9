"""The baseline code for an A/B measurement: a commit checked out into a temporary git
worktree (read-only use; removed again on exit, also on failure and Ctrl-C).

    with baseline_tree(ROOT, sha) as tree:   # tree.path is the checkout, or tree.problem says why not
        ...
"""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

GIT_TIMEOUT_S = 120  # a fetch of one commit into a shallow clone; everything else is local


@dataclass(frozen=True)
class BaselineTree:
    commit: str
    path: Path | None     # None: the commit could not be checked out
    problem: str = ""     # why not, for the report


def git(root: Path, *args: str, timeout_s: float = GIT_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=timeout_s)


def head_commit(root: Path) -> str:
    return git(root, "rev-parse", "HEAD").stdout.strip()


def dirty_files(root: Path, ignore_prefixes: tuple[str, ...] = ("results/",)) -> list[str]:
    """Tracked files that differ from HEAD, except those under `ignore_prefixes`."""
    out = git(root, "status", "--porcelain", "--untracked-files=no").stdout
    paths = [line[3:].strip() for line in out.splitlines() if line.strip()]
    return [p for p in paths if not p.startswith(ignore_prefixes)]


def _has_commit(root: Path, commit: str) -> bool:
    return git(root, "cat-file", "-e", f"{commit}^{{commit}}").returncode == 0


def find_commit(root: Path, commit: str) -> str:
    """'' if `commit` is here (fetching it once into a shallow clone), else why not."""
    if not commit:
        return "no baseline_commit recorded (run `make baseline` on a clean, committed tree)"
    try:
        if _has_commit(root, commit):
            return ""
        if git(root, "rev-parse", "--is-shallow-repository").stdout.strip() == "true":
            git(root, "fetch", "--quiet", "origin", commit)
            if _has_commit(root, commit):
                return ""
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"git failed while looking for commit {commit}: {err}"
    return f"commit {commit} is not in this clone (history rewritten, or a shallow clone without it)"


@contextlib.contextmanager
def baseline_tree(root: Path, commit: str) -> Iterator[BaselineTree]:
    problem = find_commit(root, commit)
    if problem:
        yield BaselineTree(commit, None, problem)
        return
    tmp = Path(tempfile.mkdtemp(prefix="semipd-baseline-"))
    path = tmp / "tree"
    try:
        git(root, "worktree", "prune")  # forget checkouts a killed run could not remove
        res = git(root, "worktree", "add", "--detach", "--quiet", str(path), commit)
        if res.returncode != 0:
            yield BaselineTree(commit, None, f"git worktree add {commit} failed: {res.stderr.strip()}")
        else:
            yield BaselineTree(commit, path)
    finally:
        if path.exists():
            git(root, "worktree", "remove", "--force", str(path))
        shutil.rmtree(tmp, ignore_errors=True)
        git(root, "worktree", "prune")
