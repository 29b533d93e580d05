"""Provenance of a run: its checkout's git commit and dirtiness, package versions, host."""

from __future__ import annotations

import platform
import socket
import subprocess
from importlib.metadata import PackageNotFoundError, version

import numpy as np

from driftbench.shipped import checkout


def _git(*args: str) -> str | None:
    root = checkout()
    if root is None:  # an installed wheel: no commit of its own
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit() -> str | None:
    """The checkout's HEAD commit, or None outside a git checkout (an installed wheel)."""
    return _git("rev-parse", "HEAD")


def _version(distribution: str) -> str | None:
    """An installed package's version without importing it (importing torch and transformers
    costs a job that never loads a model seconds of start-up)."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def environment() -> dict:
    from driftbench import __version__

    commit = git_commit()
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "driftbench": __version__,
        "git_commit": commit,
        "git_dirty": bool(dirty) if dirty is not None else None,
        "python": platform.python_version(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "sklearn": _version("scikit-learn"),
        "numpy": np.__version__,
        "host": socket.gethostname(),
    }
