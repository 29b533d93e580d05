"""bench/audit.py's bfloat16 arm at tiny size (the tiny random model, 2 probes, one behaviour):
the JSON holds both arms and a ratio that is their timings' ratio, and where the CPU has no bf16
the arm is skipped and the JSON says why. Run as the script runs (a subprocess), so the bench's
thread settings stay out of the test process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# bench/audit.py as `python bench/audit.py` runs it; optionally with bf16 hardware hidden
RUN = """
import runpy, sys
sys.path.insert(0, {bench!r})
if {hide}:
    import driftbench.backends
    driftbench.backends.bf16_supported = lambda device="cpu": False
sys.argv = ["audit.py", *{argv!r}]
runpy.run_path({script!r}, run_name="__main__")
"""


def run_audit(tmp_path: Path, cache: Path, hide_bf16: bool) -> tuple[dict, str]:
    pytest.importorskip("rho_eval")
    out = tmp_path / "audit.json"
    argv = ["--model", "tiny_random", "--n-probes", "2", "--behaviors", "factual"]
    argv += ["--threads", "1", "--out", str(out)]
    code = RUN.format(
        bench=str(ROOT / "bench"), hide=hide_bf16, argv=argv, script=str(ROOT / "bench/audit.py")
    )
    env = {**os.environ, "DRIFTBENCH_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(out.read_text()), res.stdout + res.stderr


def test_audit_bf16_arm_beside_fp32(tmp_path, shared_cache):
    from driftbench.backends import bf16_supported

    if not bf16_supported("cpu"):
        pytest.skip("this CPU has no bfloat16 hardware: the arm is skipped (next test)")
    r, printed = run_audit(tmp_path, shared_cache, hide_bf16=False)
    row = r["per_behavior"]["factual"]
    fp32, bf16 = row["driftbench"], row["driftbench_bf16"]
    assert row["bf16_over_fp32_speed"] == pytest.approx(fp32["wall_s"] / bf16["wall_s"])
    assert bf16["probes_per_s"] == pytest.approx(row["n_probes"] / bf16["wall_s"])
    assert r["bf16_over_fp32_speed"] == pytest.approx(
        r["driftbench"]["wall_s"] / r["driftbench_bf16"]["wall_s"]
    )
    rho = r["rho_by_dtype"]["factual"]
    assert (rho["float32"], rho["bfloat16"]) == (fp32["rho"], bf16["rho"])
    assert rho["bf16_minus_fp32"] == pytest.approx(bf16["rho"] - fp32["rho"])
    entry = r["targets"]["bf16_over_fp32_speed"]
    assert entry["target"] == 2.0 and entry["measured"] == r["bf16_over_fp32_speed"]
    assert entry["met"] == (entry["measured"] >= 2.0)
    assert r["bf16_arm"]["ran"] and r["rho_identical"]
    assert "target 2x: " in printed


def test_audit_without_bf16_hardware_skips_the_arm(tmp_path, shared_cache):
    r, printed = run_audit(tmp_path, shared_cache, hide_bf16=True)
    assert r["bf16_arm"]["ran"] is False and "no bfloat16 hardware" in r["bf16_arm"]["reason"]
    assert r["targets"] == {} and "driftbench_bf16" not in r["per_behavior"]["factual"]
    assert printed.count("bf16 arm skipped") == 2  # the logged line and the printed target line
    assert r["rho_identical"]  # the fp32 audit and its check against rho-eval are unchanged
