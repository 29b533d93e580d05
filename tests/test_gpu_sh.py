"""``bench/gpu.sh`` on a machine without CUDA: one line, exit 0. Its summary
(``bench/gpu_summary.py``) on made-up results, as a GPU run would leave them: one line per
figure, a failing or timed-out step's line naming its log, and exit 1 then. Neither has run
on a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_sh_without_cuda_prints_one_line_and_exits_0():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: bench/gpu.sh would run the benchmarks")
    env = {**os.environ, "PYTHON": sys.executable}
    res = subprocess.run(
        ["bash", "bench/gpu.sh"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout + res.stderr == "no CUDA device: bench/gpu.sh skipped\n"


def test_gpu_sh_parses():
    subprocess.run(["bash", "-n", "bench/gpu.sh"], cwd=ROOT, check=True)


GPU = "NVIDIA H100 80GB HBM3"


def made_up(tmp_path: Path, rcs: dict[str, int], bf16: bool = True) -> tuple[Path, Path]:
    """A work dir and results dir as bench/gpu.sh leaves them, every step as ``rcs`` says."""
    work, results = tmp_path / "work", tmp_path / "results"
    work.mkdir()
    results.mkdir()
    rates = {"embed": "texts_per_s", "audit": "probes_per_s", "sft": "real_tokens_per_s"}
    for name, key in rates.items():
        r = {"gpu": GPU, "driftbench": {key: 100.0}, "rho_identical": True}
        r["speedup_real_tokens_per_s"] = 3.0
        if bf16:
            r.update(driftbench_bf16={key: 250.0}, bf16_over_fp32_speed=2.5)
        else:
            r["bf16_arm"] = {"ran": False, "reason": "cuda has no bfloat16 hardware"}
        (results / f"gpu_{name}.json").write_text(json.dumps(r))
    for name in ("smoke", "smoke_rho_sft"):
        run = work / name / "runs" / "2025-01-01_00-00-00-abcdef12"
        run.mkdir(parents=True)
        (run / "meta.json").write_text(json.dumps({"status": "completed", "wall_s": 7.5}))
    for name in ("embed", "audit", "sft", "smoke", "smoke_rho_sft"):
        (work / f"{name}.rc").write_text(f"{rcs.get(name, 0)} 42\n")
    return work, results


def summarise(work: Path, results: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "bench/gpu_summary.py", str(work), str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )


def test_one_line_per_figure_and_exit_0_when_every_step_ran(tmp_path):
    res = summarise(*made_up(tmp_path, {}))
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        f"embed on {GPU}: fp32 100.0 texts/s, bf16 250.0 texts/s, bf16/fp32 x2.50",
        f"audit on {GPU}: fp32 100.0 probes/s, bf16 250.0 probes/s, bf16/fp32 x2.50, "
        "rho identical to rho-eval: True",
        f"sft on {GPU}: fp32 100.0 tokens/s, bf16 250.0 tokens/s, bf16/fp32 x2.50, x3.00 rho-eval",
        "debug=smoke on cuda: completed in 7.5 s",
        "debug=smoke_rho_sft on cuda: completed in 7.5 s",
    ]


def test_a_failed_step_prints_its_line_and_the_summary_exits_1(tmp_path):
    work, results = made_up(tmp_path, {"audit": 124, "smoke": 1}, bf16=False)
    res = summarise(work, results)
    assert res.returncode == 1
    lines = res.stdout.splitlines()
    assert len(lines) == 5
    assert lines[0] == f"embed on {GPU}: fp32 100.0 texts/s, bf16 not run (cuda has no " + (
        "bfloat16 hardware)"
    )
    assert lines[1] == f"audit: FAILED (timed out after 42 s; log {work / 'audit.log'})"
    assert lines[3] == f"smoke: FAILED (exit status 1 after 42 s; log {work / 'smoke.log'})"
