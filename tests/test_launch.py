"""End to end through the launcher: run dirs, multirun, resume, and every bad-input message."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import broken_model_folder, saved_tiny_model
from omegaconf import OmegaConf

from driftbench.intervals import INTERVAL_METRICS
from driftbench.launcher import ConfigError, run
from driftbench.metrics import FLIP_METRICS
from driftbench.runs import config_hash

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model=tiny_random", "data.n_samples=200", "schedule=list", "schedule.sigmas=[0,0.02,0.1]"]
RUN_FILES = {
    "config.yaml",
    "metrics.json",
    "meta.json",
    "checkpoints.csv",
    "report.html",  # the run's page: its numbers, tables and figures in one file
    "run.log",
    "roc_auc_vs_sigma.png",
    "sfr_confidence_vs_sigma.png",
    "calibration.png",
    "amplification.png",
}
# a drift_eval sweep's jobs draw no figures by default (runtime.figures=null)
SWEEP_RUN_FILES = {f for f in RUN_FILES if not f.endswith(".png")}


def only_run_dir(root: Path) -> Path:
    dirs = [p.parent for p in root.glob("**/meta.json")]
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_end_to_end_tiny_run_writes_a_complete_run_dir(make_cfg, tmp_path):
    cfg = make_cfg(*TINY)
    metrics = run(cfg)
    d = only_run_dir(tmp_path / "outputs")
    assert RUN_FILES <= {p.name for p in d.iterdir()}
    assert not list(d.glob(".*tmp*"))
    meta = json.loads((d / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["wall_s"] > 0 and meta["error"] is None
    for key in (
        "driftbench",
        "git_commit",
        "git_dirty",
        "torch",
        "transformers",
        "sklearn",
        "host",
        "start_time",
        "end_time",
        "seed",
    ):
        assert key in meta
    on_disk = json.loads((d / "metrics.json").read_text())
    assert on_disk["schema_version"] == 2 and on_disk["sigmas"] == [0.0, 0.02, 0.1]
    # every result file's sha256, recorded at completion (resume and the report check them)
    results = sorted(p.name for p in d.iterdir() if p.name not in ("meta.json", "run.log"))
    assert sorted(meta["files"]) == results
    for name, digest in meta["files"].items():
        assert digest == hashlib.sha256((d / name).read_bytes()).hexdigest()
    assert (
        len(on_disk["checkpoints"])
        == 3
        == len((d / "checkpoints.csv").read_text().splitlines()) - 1
    )
    for row in on_disk["checkpoints"]:  # each metric with its bootstrap interval
        for name in INTERVAL_METRICS:
            lo, hi = row[f"{name}_ci_low"], row[f"{name}_ci_high"]
            assert lo is None or lo <= hi
        for name in ("accuracy", "mean_confidence"):  # a mean sits inside its interval
            assert row[f"{name}_ci_low"] <= row[name] <= row[f"{name}_ci_high"]
    assert on_disk["checkpoints"][0]["realized_angle_deg"] == pytest.approx(0.0, abs=1e-9)
    # what kind of change each checkpoint is, against checkpoint 0: at sigma = 0 nothing flips
    # and nothing moved (the coherent share is undefined, null); then shares of the texts
    header = (d / "checkpoints.csv").read_text().splitlines()[0].split(",")
    assert {*FLIP_METRICS, "coherent_share"} <= set(header)
    start, *drifted = on_disk["checkpoints"]
    assert [start[k] for k in FLIP_METRICS] == [0.0, 0.0, 0.0]
    assert start["coherent_share"] is None
    for row in drifted:
        assert 0 <= row["negative_flip_rate"] <= 1 and 0 <= row["positive_flip_rate"] <= 1
        assert 0 < row["coherent_share"] <= 1
    assert (
        on_disk["checkpoints"][2]["realized_angle_deg"]
        > on_disk["checkpoints"][1]["realized_angle_deg"]
        > 0
    )
    assert metrics["summary"]["roc_auc_at_0"] == on_disk["checkpoints"][0]["roc_auc"]
    saved = yaml.safe_load((d / "config.yaml").read_text())
    assert saved["model"]["name"] == "tiny_random" and saved["seed"] == 42
    assert meta["config_hash"] == config_hash(saved)
    assert d.name.endswith(meta["result_key"][:8])
    assert "sft" not in saved and "runtime" in saved  # the groups drift_eval reads, and where


def test_run_files_and_caches_get_the_mode_a_plain_write_would(make_cfg, tmp_path):
    """Atomic writes go through tempfile (0600 files, 0700 folders); what is published must have
    the umask's mode instead, or a run's results are private to whoever ran it."""
    import os
    import stat

    from driftbench.models import build_folder_once

    old = os.umask(0o022)
    try:
        run(make_cfg(*TINY, cache_dir=tmp_path / "cache"))
        # a converted model folder (tiny_random is built in memory, so build one here)
        folder = build_folder_once(
            tmp_path / "model", lambda t: (t / "config.json").write_text("{}")
        )
    finally:
        os.umask(old)
    d = only_run_dir(tmp_path / "outputs")
    published = [*d.iterdir(), *(tmp_path / "cache" / "embeddings").iterdir(), folder]
    assert any(p.suffix == ".npy" for p in published) and any(p.suffix == ".png" for p in published)
    for p in published:
        want = 0o755 if p.is_dir() else 0o644
        assert stat.S_IMODE(p.stat().st_mode) == want, p


def test_a_task_is_handed_its_groups_typed_by_the_schema_and_read_only(make_cfg):
    """What the command line writes as ``1`` reaches a float field as 1.0, an int field as an
    int, a group converts to its schema object, and the task cannot write into its config or
    read a group it did not declare."""
    from omegaconf.errors import ConfigAttributeError, ReadonlyConfigError

    from driftbench.launcher import prepare
    from driftbench.schema import Monitor

    job = prepare(make_cfg(*TINY, "monitor.alpha=1e-1", "monitor.power_level=1", "seed=7"))
    assert job.cfg.monitor.power_level == 1.0 and type(job.cfg.monitor.power_level) is float
    assert type(job.cfg.data.n_samples) is int and type(job.cfg.seed) is int
    assert isinstance(OmegaConf.to_object(job.cfg.monitor), Monitor)
    with pytest.raises(ReadonlyConfigError):
        job.cfg.data.n_samples = 10
    with pytest.raises(ConfigAttributeError):
        _ = job.cfg.sft


def test_identical_config_is_skipped_unless_forced(make_cfg, tmp_path):
    run(make_cfg(*TINY))
    run(make_cfg(*TINY))
    assert len(list((tmp_path / "outputs").glob("**/meta.json"))) == 1
    run(make_cfg(*TINY, "runtime.force=true"))
    assert len(list((tmp_path / "outputs").glob("**/meta.json"))) == 2


def test_a_run_that_fails_midway_says_failed_and_leaves_no_metrics(make_cfg, tmp_path):
    folder = broken_model_folder(tmp_path)
    with pytest.raises(RuntimeError, match="model 'hf' failed to load"):
        run(make_cfg(*TINY[1:], "model=hf", f"model.name_or_path={folder}"))
    d = only_run_dir(tmp_path / "outputs")
    meta = json.loads((d / "meta.json").read_text())
    assert meta["status"] == "failed" and "model 'hf' failed to load" in meta["error"]
    assert not (d / "metrics.json").exists() and "files" not in meta
    assert "model 'hf' failed to load" in (d / "run.log").read_text()


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["schedule.sigma_min=-0.1"], "schedule.sigma_min=-0.1 is negative"),
        (
            ["schedule.sigma_max=0.01", "schedule.sigma_min=0.1"],
            "sigma_max=0.01 is below sigma_min=0.1",
        ),
        (["schedule.k=1"], "schedule.k=1 is too small"),
        (["drift.name=sideways"], "drift='sideways'; accepted: gaussian, directional, subspace"),
        (["embed.pooling=max"], "embed.pooling='max'; accepted: last_token, mean"),
        (["embed.batch_tokens=0"], "embed.batch_tokens=0; accepted: an integer >= 1"),
        (["data.path=/nonexistent/file.csv"], "data file '/nonexistent/file.csv' not found"),
        (["data=civil_comments"], "data.path is not set"),
        (["model=hf"], "model.name_or_path is not set"),
        (
            ["model=hf", "model.name_or_path=/no/such/model"],
            "model.name_or_path='/no/such/model' does not exist",
        ),
        (["classifier.degenerate_dims=cut"], "accepted: keep, drop, floor"),
        (["classifier.select_by=brier"], "select_by='brier'; accepted: auc, log_loss"),
        (["task.name=unknown"], "task='unknown'; accepted: drift_eval, rho_sft"),
        (["data.n_samples=10"], "data.n_samples=10 with data.split=[0.7, 0.1, 0.2] leaves a split"),
        (["schedule=list", "schedule.sigmas=[0,0.1,0.05]"], "schedule.sigmas must not decrease"),
        (["classifier.c_grid=[]"], "classifier.c_grid=[]; accepted: a non-empty list of positive"),
        (["classifier.c_grid=[0.1,-1]"], "classifier.c_grid=[0.1, -1.0]; accepted: a non-empty"),
        (["embed.layer=3"], "embed.layer=3; accepted for tiny_random (2 blocks): -3..2"),
        (["embed.layer=-4"], "embed.layer=-4; accepted for tiny_random (2 blocks): -3..2"),
        (["seed=-1"], "seed=-1; accepted: an integer >= 0"),
        (["runtime.device=tpu"], "runtime.device='tpu'; accepted: auto, cpu, cuda"),
        (["data.threshold=2"], "data.threshold=2.0; accepted: a score in (0, 1]"),
        (
            ["model=smollm2_135m_instruct", "model.name_or_path=/some/model"],
            "with model=smollm2_135m_instruct (a GGUF package preset",
        ),
    ],
)
def test_bad_input_stops_before_any_work_with_one_clear_message(
    make_cfg, tmp_path, overrides, fragment
):
    with pytest.raises(ConfigError) as err:
        run(make_cfg("model=tiny_random", *overrides))
    assert fragment in str(err.value)
    assert not list((tmp_path / "outputs").glob("**/meta.json"))  # nothing was started


def launch(tmp_path, *args, check=True):
    """launch.py with its outputs under ``tmp_path / "outputs"`` (``launch_at``); by default
    the command must succeed."""
    out = launch_at(tmp_path, f"runtime.output_root={tmp_path / 'outputs'}", *args)
    if check:
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def test_unknown_group_option_lists_the_choices(tmp_path):
    out = launch(tmp_path, "drift=sideways", check=False)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "error: drift=sideways: no such option; accepted: adapter, directional, gaussian, "
        "interpolate, precision, quantize, subspace, swap, tune"
    )


@pytest.mark.parametrize(
    "override, said",
    [
        ("data.n_samples=abc", "data.n_samples=abc; accepted: an integer"),
        ("schedule.k=2.5", "schedule.k=2.5; accepted: an integer"),
        ("embed.packed=maybe", "embed.packed=maybe; accepted: true or false"),
        ("data.threshold=null", "data.threshold=null; accepted: a value (this key cannot be null)"),
        ("model.hidden_sizee=64", "model.hidden_sizee: no such key; accepted: name, source, "),
        ("+classifier.cgrid=[1]", "classifier.cgrid: no such key; accepted: name, c_grid, "),
    ],
)
def test_a_value_of_the_wrong_type_or_an_unknown_key_is_one_line(tmp_path, override, said):
    out = launch(tmp_path, "model=tiny_random", override, check=False)
    assert out.returncode == 2 and "Traceback" not in out.stdout + out.stderr
    errors = [ln for ln in (out.stdout + out.stderr).splitlines() if "error:" in ln]
    assert len(errors) == 1 and said in errors[0]
    assert not list(tmp_path.glob("outputs/**/meta.json"))


def test_a_misspelt_preset_stops_at_once_listing_the_presets(tmp_path):
    out = launch(tmp_path, "experiment=rho_dose_respons", check=False)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "experiment=rho_dose_respons: no such option; accepted: " in out.stderr
    assert "rho_dose_response" in out.stderr and "paper_drift" in out.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "config, fragment",
    [
        (None, "has no config.json; accepted: a Hugging Face model folder"),
        ('{"model_type": "florp"}', "model_type 'florp' is not an architecture"),
        ('{"model_type": "llama"}', "holds no weights; accepted: a folder with"),
    ],
    ids=["empty folder", "unknown model_type", "no weights"],
)
def test_a_model_folder_that_cannot_load_stops_before_any_run_dir(
    make_cfg, tmp_path, config, fragment
):
    folder = tmp_path / "model"
    folder.mkdir()
    if config:
        (folder / "config.json").write_text(config)
    with pytest.raises(ConfigError, match=fragment):
        run(make_cfg("model=hf", f"model.name_or_path={folder}"))
    assert not (tmp_path / "outputs").exists()


def test_cli_bad_sigma_prints_one_line_and_exits_2(tmp_path):
    out = launch(tmp_path, "model=tiny_random", "schedule.sigma_min=-1", check=False)
    assert out.returncode == 2
    assert "error: schedule.sigma_min=-1.0 is negative" in out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr


def test_cli_data_that_cannot_give_the_sample_prints_one_message_and_exits_2(tmp_path):
    out = launch(tmp_path, "model=tiny_random", "data.n_samples=9000", check=False)
    text = out.stdout + out.stderr
    assert out.returncode == 2
    assert text.count("data.n_samples=9000 is more than the 8292 balanced rows available") == 1
    assert "Traceback" not in text
    assert not list(tmp_path.glob("outputs/**/meta.json"))  # found at the check: no run dir


def one_error_line(out: subprocess.CompletedProcess) -> str:
    """The one line a refused command prints: exit 2, no traceback."""
    text = out.stdout + out.stderr
    assert out.returncode == 2 and "Traceback" not in text, text[-3000:]
    errors = [ln for ln in text.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1, text[-3000:]
    return errors[0]


def launch_at(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """launch.py with the given overrides only (the output root included), from ``tmp_path``."""
    flags = [a for a in args if a.startswith("-")]
    overrides = [a for a in args if not a.startswith("-")]
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *flags, "runtime.progress=false", *overrides],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )


@pytest.mark.parametrize(
    "key, multirun",
    [("runtime.output_root", False), ("runtime.output_root", True), ("runtime.cache_dir", False)],
)
def test_a_place_that_is_a_file_is_one_line_naming_the_key(tmp_path, key, multirun):
    a_file = tmp_path / "taken"
    a_file.write_text("a file, not a folder\n")
    places = {"runtime.output_root": tmp_path / "outputs", "runtime.cache_dir": tmp_path / "c"}
    places[key] = a_file
    flags = ["-m", "seed=1,2"] if multirun else []
    out = launch_at(tmp_path, *flags, *TINY, *(f"{k}={v}" for k, v in places.items()))
    assert f"{key}={a_file} is a file; accepted: a directory" in one_error_line(out)
    assert not list(tmp_path.glob("**/meta.json"))


@pytest.mark.parametrize("where", ["/proc/driftbench_outputs", "{file}/outputs"])
def test_an_output_root_that_cannot_be_created_is_one_line(tmp_path, where):
    (tmp_path / "file").write_text("x\n")
    root = where.format(file=tmp_path / "file")
    out = launch_at(tmp_path, *TINY, f"runtime.output_root={root}")
    assert f"runtime.output_root={root} cannot be created or written (" in one_error_line(out)
    assert not list(tmp_path.glob("**/meta.json"))


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="this machine has a CUDA device"
)
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_a_cuda_device_on_a_machine_without_one_is_one_line(tmp_path, device):
    out = launch(tmp_path, *TINY, f"runtime.device={device}", check=False)
    assert f"runtime.device={device}: no such CUDA device here (torch " in one_error_line(out)
    assert not list(tmp_path.glob("outputs/**/meta.json"))


def test_a_device_that_is_no_device_is_one_line(tmp_path):
    out = launch(tmp_path, *TINY, "runtime.device=cuda:x", check=False)
    said = one_error_line(out)
    assert "runtime.device='cuda:x'; accepted: auto, cpu, cuda, cuda:<index>" in said


def test_an_inf_label_is_one_line_with_the_count_and_no_run_dir(tmp_path):
    data = tmp_path / "mine.csv"
    rows = [f"text {i},{i % 2}" for i in range(200)] + ["bad one,inf"]
    data.write_text("text,toxicity\n" + "\n".join(rows) + "\n")
    out = launch(tmp_path, *TINY, "data=civil_comments", f"data.path={data}", check=False)
    said = one_error_line(out)
    assert f"1 rows of {data} have a 'toxicity' that is not a finite number in [0, 1]" in said
    assert "(first: data row 201, 'inf')" in said
    assert not list(tmp_path.glob("outputs/**/meta.json"))


def test_multirun_gives_one_complete_run_dir_per_job(tmp_path):
    out = launch(tmp_path, "-m", *TINY, "drift=gaussian,directional,subspace", "seed=0,1")
    said = out.stdout + out.stderr
    assert all(f"job {i + 1} of 6 (#{i})" in said for i in range(6))  # each job says where it is
    sweeps = list((tmp_path / "outputs" / "multirun").iterdir())
    assert len(sweeps) == 1
    dirs = sorted(p.parent for p in sweeps[0].glob("*/meta.json"))
    assert len(dirs) == 6 and len({d.name for d in dirs}) == 6
    assert sorted(d.name.split("-")[0] for d in dirs) == [f"{i:03d}" for i in range(6)]
    seen = set()
    for d in dirs:
        meta = json.loads((d / "meta.json").read_text())
        assert meta["status"] == "completed" and meta["multirun"]
        files = {p.name for p in d.iterdir()}
        assert SWEEP_RUN_FILES <= files and not any(f.endswith(".png") for f in files)
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        seen.add((cfg["drift"]["name"], cfg["seed"]))
    assert len(seen) == 6
    assert (sweeps[0] / "multirun.yaml").exists()
    assert "| gaussian |" in (sweeps[0] / "report.md").read_text()  # written by the callback
    assert "<td>gaussian</td>" in (sweeps[0] / "report.html").read_text()  # and its page


def test_a_failing_job_does_not_stop_the_sweep(tmp_path, tiny_model):
    good = saved_tiny_model(tiny_model, tmp_path)
    broken = broken_model_folder(tmp_path)  # passes every check, fails loading
    names = f"model.name_or_path={good},{broken}"
    launch(tmp_path, "-m", *TINY[1:], "model=hf", names, "data.n_samples=200,300")
    metas = [
        json.loads(p.read_text()) for p in (tmp_path / "outputs").glob("multirun/*/*/meta.json")
    ]
    assert sorted(m["status"] for m in metas) == ["completed", "completed", "failed", "failed"]
    assert all("model 'hf' failed to load" in m["error"] for m in metas if m["status"] == "failed")


def test_a_bad_job_stops_the_sweep_before_any_job_runs(tmp_path):
    out = launch(
        tmp_path,
        "-m",
        *TINY[:2],
        "schedule=list",
        "schedule.sigmas=[0,0.05],[0,-0.05]",
        check=False,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 2 and "Traceback" not in text
    bad = [ln for ln in text.splitlines() if "error:" in ln]
    assert len(bad) == 1 and "job 1" in bad[0] and "schedule.sigmas must be finite" in bad[0]
    assert not list((tmp_path / "outputs").glob("**/meta.json"))  # no job started


def test_rerunning_a_sweep_skips_complete_jobs_and_reruns_missing_or_failed_ones(tmp_path):
    sweep_args = ["-m", *TINY, "drift=gaussian,directional,subspace"]
    launch(tmp_path, *sweep_args)
    first = next((tmp_path / "outputs" / "multirun").iterdir())
    runs = sorted(p.parent for p in first.glob("*/meta.json"))
    (runs[0] / "metrics.json").unlink()  # a job whose metrics were lost
    meta = json.loads((runs[1] / "meta.json").read_text())
    (runs[1] / "meta.json").write_text(json.dumps({**meta, "status": "failed"}))  # killed

    out = launch(tmp_path, *sweep_args)
    assert "resume: 1 done, 2 to run" in out.stdout + out.stderr
    second = next(p for p in (tmp_path / "outputs" / "multirun").iterdir() if p != first)
    entries = sorted(second.glob("0*"))
    assert len(entries) == 3 and sum(e.is_symlink() for e in entries) == 1
    reused = next(e for e in entries if e.is_symlink())
    assert reused.resolve() == runs[2].resolve()
    assert all(json.loads((e / "meta.json").read_text())["status"] == "completed" for e in entries)
    report_md = (second / "report.md").read_text()
    assert "Skipped" not in report_md and report_md.count("\n| drift_eval |") == 3

    out = launch(tmp_path, *sweep_args, "runtime.force=true")
    assert "resume: 0 done, 3 to run (runtime.force=true: all rerun)" in out.stdout + out.stderr


@pytest.mark.parametrize("k, expected", [(8, [0, 2, 4, 7]), (26, [0, 6, 13, 25]), (2, [0, 1])])
def test_calibration_figure_defaults_to_the_papers_checkpoints(k, expected):
    from driftbench.tasks.drift_eval.task import calibration_checkpoints

    cfg = OmegaConf.create({"task": {"calibration_checkpoints": None}})
    assert calibration_checkpoints(cfg, k) == expected  # figure 3: checkpoints 0, 2, 4, 7 of 8


@pytest.mark.parametrize(
    "smoke, task, files",
    [
        ("smoke", "drift_eval", RUN_FILES),
        ("smoke_rho_sft", "rho_sft", {"audit_after.json", "stress_after.json", "loss_curve.csv"}),
    ],
)
def test_debug_smoke_runs_its_task_end_to_end_from_the_cli(tmp_path, smoke, task, files):
    """`python launch.py debug=smoke` (README's first result) on the tiny model, as typed."""
    launch(tmp_path, f"debug={smoke}")
    d = only_run_dir(tmp_path / "outputs" / "runs")
    assert files | {"metrics.json", "meta.json", "config.yaml"} <= {p.name for p in d.iterdir()}
    meta = json.loads((d / "meta.json").read_text())
    assert meta["status"] == "completed" and meta["error"] is None
    assert json.loads((d / "metrics.json").read_text())["schema_version"] == 2
    saved = yaml.safe_load((d / "config.yaml").read_text())
    assert saved["task"]["name"] == task and saved["model"]["name"] == "tiny_random"
