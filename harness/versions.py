"""Versions of the code and libraries that produced a result (recorded in summary.json)."""
from __future__ import annotations

import functools
import subprocess
import sys
from importlib import metadata
from pathlib import Path

_PACKAGES = ("hydra-core", "numpy", "pandas", "tokenizers", "torch")


@functools.cache
def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "git_commit": _git_commit()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        res = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    commit = res.stdout.strip()
    if not commit:
        return "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                           capture_output=True, text=True, timeout=5).stdout.strip()
    return commit + ("-dirty" if dirty else "")
