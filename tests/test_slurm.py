"""Sweeps on a real single-node Slurm cluster (scripts/slurm_cluster.sh), and the launcher configs.

The cluster needs root and apt (or the Slurm packages already installed). Where it cannot start,
the Slurm tests skip; under CI they fail with the script's output instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import broken_model_folder, saved_tiny_model
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from test_launch import SWEEP_RUN_FILES, TINY

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = ROOT / "scripts" / "slurm_cluster.sh"
SLURM_DIR = Path(os.environ.get("SLURM_CI_DIR", "/tmp/driftbench_slurm"))
# the cluster advertises 8 CPUs and ~90% of the machine's memory: small asks run side by side
SMALL_JOBS = ["hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]


def cluster(action: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), action],
        env={**os.environ, "SLURM_CI_DIR": str(SLURM_DIR)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def exported(env_sh: Path) -> dict[str, str]:
    """The variables a file of `export NAME=value` lines sets (the script's env.sh)."""
    lines = env_sh.read_text().splitlines()
    return dict(line.removeprefix("export ").split("=", 1) for line in lines if "=" in line)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


@pytest.fixture(scope="session")
def slurm_env() -> dict:
    """The environment for sbatch, sacct and submitit, with the cluster up for the session.
    Its daemons are stopped at the end, whatever happened."""
    try:
        try:
            out = cluster("start", timeout=600)
            started, output = out.returncode == 0, out.stdout + out.stderr
        except (OSError, subprocess.TimeoutExpired) as e:
            started, output = False, str(e)
        if not started:
            reason = f"no Slurm cluster ({CLUSTER_SCRIPT.name} start failed):\n{output[-3000:]}"
            if in_ci():
                pytest.fail(reason)
            pytest.skip(reason)
        yield {**os.environ, **exported(SLURM_DIR / "env.sh")}
    finally:
        cluster("stop", timeout=120)


def sweep(tmp_path: Path, env: dict, cache: Path, *overrides: str, timeout: float = 150):
    """`python launch.py -m ...` in tmp_path, outputs under tmp_path/outputs. A sweep that hangs
    fails here with TimeoutExpired."""
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "launch.py"),
            "-m",
            f"runtime.output_root={tmp_path / 'outputs'}",
            f"runtime.cache_dir={cache}",
            "runtime.progress=false",
            *overrides,
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def only_sweep_dir(tmp_path: Path) -> Path:
    sweeps = list((tmp_path / "outputs" / "multirun").iterdir())
    assert len(sweeps) == 1, sweeps
    return sweeps[0]


def slurm_states(env: dict, sweep_dir: Path, n_jobs: int) -> list[str]:
    """Slurm accounting's final state of each job the sweep submitted, sorted; waits a few seconds
    for sacct to catch up. Job ids are read from submitit's folders (`<id>` or `<array id>_<i>`),
    one per job, each holding the job's pickled call."""
    task_ids = sorted(p.parent.name for p in (sweep_dir / ".submitit").glob("*/*_submitted.pkl"))
    assert len(task_ids) == n_jobs, task_ids
    for _ in range(40):
        out = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-o", "State", "-j", ",".join(task_ids)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        states = sorted(out.stdout.split())
        if len(states) == n_jobs and not {"PENDING", "RUNNING"} & set(states):
            return states
        time.sleep(0.5)
    return states


def test_slurm_sweep_puts_one_complete_run_dir_per_job_in_one_sweep_dir(
    slurm_env, shared_cache, tmp_path
):
    out = sweep(
        tmp_path,
        slurm_env,
        shared_cache,
        "hydra/launcher=slurm",
        *SMALL_JOBS,
        *TINY,
        "drift=gaussian,directional,subspace",
        "seed=0,1",
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # one sweep dir: the workers resolved ${now:...} and ${driftbench_uid:} as the submitter did
    sweep_dir = only_sweep_dir(tmp_path)
    run_dirs = sorted(p.parent for p in (tmp_path / "outputs").glob("**/meta.json"))
    assert len(run_dirs) == 6 and all(d.parent == sweep_dir for d in run_dirs)
    assert [d.name.split("-")[0] for d in run_dirs] == [f"{i:03d}" for i in range(6)]
    seen = set()
    for d in run_dirs:
        meta = json.loads((d / "meta.json").read_text())
        assert meta["status"] == "completed" and meta["multirun"], meta
        assert meta["sweep_dir"] == str(sweep_dir)
        assert SWEEP_RUN_FILES <= {p.name for p in d.iterdir()}
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        seen.add((cfg["drift"]["name"], cfg["seed"]))
    assert len(seen) == 6
    assert (sweep_dir / "multirun.yaml").exists()
    assert slurm_states(slurm_env, sweep_dir, 6) == ["COMPLETED"] * 6


def test_rho_sft_sweep_runs_through_slurm(slurm_env, shared_cache, tmp_path):
    """The second task through the same launcher: two conditions, each a complete run dir."""
    from test_rho_task import RHO_FILES, TINY_RHO

    out = sweep(
        tmp_path,
        slurm_env,
        shared_cache,
        "hydra/launcher=slurm",
        *SMALL_JOBS,
        *TINY_RHO,
        "task.stress_test.enabled=false",
        "sft/condition=sft_only,rho_guided",
        timeout=240,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    run_dirs = sorted(p.parent for p in sweep_dir.glob("*/meta.json"))
    assert len(run_dirs) == 2
    for d in run_dirs:
        assert json.loads((d / "meta.json").read_text())["status"] == "completed"
        stress = {"stress_before.json", "stress_after.json"}
        assert RHO_FILES - stress <= {p.name for p in d.iterdir()}
    assert slurm_states(slurm_env, sweep_dir, 2) == ["COMPLETED"] * 2


def test_a_failing_slurm_job_is_recorded_failed_and_the_others_complete(
    slurm_env, shared_cache, tmp_path, tiny_model
):
    good, broken = saved_tiny_model(tiny_model, tmp_path), broken_model_folder(tmp_path)
    out = sweep(
        tmp_path,
        slurm_env,
        shared_cache,
        "hydra/launcher=slurm",
        *SMALL_JOBS,
        "model=hf",
        f"model.name_or_path={good},{broken}",  # the broken one passes every check, fails loading
        "schedule=list",
        "schedule.sigmas=[0,0.05]",
        "data.n_samples=200",
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    metas = {d: json.loads((d / "meta.json").read_text()) for d in sweep_dir.glob("0*")}
    assert sorted(m["status"] for m in metas.values()) == ["completed", "failed"]
    for d, meta in metas.items():
        if meta["status"] == "failed":
            assert "model 'hf' failed to load" in meta["error"]
            assert not (d / "metrics.json").exists()
        else:
            assert SWEEP_RUN_FILES <= {p.name for p in d.iterdir()}
    # driftbench records the error and returns: to Slurm the job finished normally
    assert slurm_states(slurm_env, sweep_dir, 2) == ["COMPLETED", "COMPLETED"]


def test_submitit_local_runs_jobs_as_local_processes_even_where_srun_exists(shared_cache, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    out = sweep(tmp_path, env, shared_cache, "hydra/launcher=submitit_local", *TINY)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    assert list(sweep_dir.glob(".submitit/*/*_submitted.pkl"))  # it went through submitit...
    assert not list(sweep_dir.glob(".submitit/**/*_submission.sh"))  # ...but not to sbatch
    (meta_path,) = sweep_dir.glob("*/meta.json")
    assert json.loads(meta_path.read_text())["status"] == "completed"
    assert SWEEP_RUN_FILES <= {p.name for p in meta_path.parent.iterdir()}


def launcher_config(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    return cfg.hydra.launcher


@pytest.mark.parametrize(
    "choice, launcher",
    [
        ("slurm", "SlurmLauncher"),
        ("submitit_slurm", "SlurmLauncher"),
        ("submitit_local", "LocalLauncher"),
    ],
)
def test_each_launcher_choice_keeps_its_submitit_files_in_the_sweep_dir(choice, launcher):
    cfg = launcher_config(f"hydra/launcher={choice}")
    assert cfg._target_.rsplit(".", 1)[1] == launcher
    folder = OmegaConf.to_container(cfg, resolve=False)["submitit_folder"]
    assert folder.startswith("${hydra.sweep.dir}/")


def test_a_resources_preset_selects_slurm_and_the_command_line_still_wins():
    cfg = launcher_config("resources=gpu_a100", "hydra.launcher.timeout_min=5")
    assert cfg._target_.endswith("SlurmLauncher")
    assert cfg.gpus_per_node == 1 and cfg.timeout_min == 5
    small = launcher_config("resources=cpu_small")
    assert small._target_.endswith("SlurmLauncher") and small.gpus_per_node is None


def test_a_slurm_job_that_dies_without_a_result_does_not_cost_the_sweep_its_report(
    slurm_env, shared_cache, tmp_path
):
    # the batch script of array task 1 exits before driftbench starts: no run dir and no
    # result, what an out-of-memory kill or a node failure leaves. Only accounting (sacct:
    # FAILED) tells submitit the job is over; without it the sweep would hang (timeout here).
    die = "+hydra.launcher.setup=['if [ $SLURM_ARRAY_TASK_ID = 1 ]; then exit 3; fi']"
    out = sweep(
        tmp_path,
        slurm_env,
        shared_cache,
        "hydra/launcher=slurm",
        *SMALL_JOBS,
        *TINY,
        die,
        "drift=gaussian,directional",
    )
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert "died without a result: Slurm job" in log and "state FAILED" in log, log[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    metas = [json.loads(p.read_text()) for p in sweep_dir.glob("*/meta.json")]
    assert [m["status"] for m in metas] == ["completed"]
    report = (sweep_dir / "report.md").read_text()
    assert "gaussian" in report and "directional" not in report
    assert slurm_states(slurm_env, sweep_dir, 2) == ["COMPLETED", "FAILED"]
