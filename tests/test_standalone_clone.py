"""A clone stands on its own: with nothing beside it (no ../shared/), the shipped data serves
the drift study and the rho task's SFT data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lone_clone(tmp_path_factory) -> Path:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    dest = tmp_path_factory.mktemp("alone") / "driftbench"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    assert not (dest.parent / "shared").exists()
    return dest


def in_clone(clone: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DRIFTBENCH_DATA_DIR"}
    return subprocess.run(
        [sys.executable, *args], cwd=clone, env=env, capture_output=True, text=True, timeout=600
    )


def test_the_clone_runs_its_own_code_and_data(lone_clone):
    out = in_clone(
        lone_clone,
        "-c",
        "import driftbench.data as d; print(d.__file__); print(d.default_data_dir())",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    code, data_dir = out.stdout.split()
    assert Path(code).is_relative_to(lone_clone) and Path(data_dir) == lone_clone / "data"


def test_a_lone_clone_runs_the_drift_study_end_to_end(lone_clone, shared_cache):
    out = in_clone(
        lone_clone,
        "launch.py",
        "debug=smoke",
        f"runtime.cache_dir={shared_cache}",
        "runtime.progress=false",
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    (metrics,) = (lone_clone / "outputs").glob("runs/*/metrics.json")
    assert json.loads(metrics.read_text())["data"]["path"].startswith(str(lone_clone / "data"))


def test_a_lone_clone_loads_the_rho_tasks_sft_data(lone_clone):
    out = in_clone(
        lone_clone,
        "-c",
        "from driftbench.data import load_alpaca, resolve_data_path; "
        "p = resolve_data_path('alpaca_sample.jsonl.gz'); "
        "print(p); print(len(load_alpaca(p, 50)))",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    path, n = out.stdout.split()
    assert Path(path).is_relative_to(lone_clone / "data") and int(n) == 50
