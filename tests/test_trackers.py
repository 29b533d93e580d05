"""Experiment trackers mirror run dirs: a tiny run and a 2-job multirun with ``logger=all``, read
back with each tracker's own reader (MlflowClient; TensorBoard's EventAccumulator; the W&B
offline run's records, parsed with W&B's own protobuf schema): the parameters are the resolved
config, every checkpoint's AUC is there at its step, the figures are attached, a sweep is one
group with its report. A tracker that fails leaves a complete run dir and one warning."""

from __future__ import annotations

import json
import logging
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import broken_model_folder
from hydra import compose, initialize_config_dir

from driftbench.launcher import ConfigError, prepare, run
from driftbench.trackers import TRACKERS, log_run, resolve_trackers

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")
TINY = ["model=tiny_random", "data.n_samples=200", "schedule=list", "schedule.sigmas=[0,0.02,0.1]"]
RUN_FILES = {
    "config.yaml",
    "meta.json",
    "metrics.json",
    "run.log",
    "checkpoints.csv",
    "report.html",
}


def compose_cfg(root: Path, cache: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(
            config_name="config",
            overrides=[
                f"runtime.output_root={root}",
                f"runtime.cache_dir={cache}",
                "runtime.progress=false",
                *overrides,
            ],
        )


# ── what a run dir holds, as the tests expect to read it back ─────────────────────────────────


def flat_config(d: dict, prefix: str = "") -> dict:
    """config.yaml as dotted keys, the way an override names them."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flat_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def as_text(v) -> str:
    return json.dumps(v) if isinstance(v, (list, dict)) or v is None else str(v)


def expected(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "config": yaml.safe_load((run_dir / "config.yaml").read_text()),
        "auc": {c["checkpoint"]: c["roc_auc"] for c in metrics["checkpoints"]},
        "figures": {p.name for p in run_dir.glob("*.png")},
        "meta": json.loads((run_dir / "meta.json").read_text()),
    }


# ── each tracker's own reader ─────────────────────────────────────────────────────────────────


def mlflow_runs(root: Path, sweep_dir: Path | None = None) -> dict:
    """run name -> (run, client) in the default store under ``root``: the runs of a sweep dir
    (its parent run included), or those of no sweep."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    experiment = client.get_experiment_by_name("driftbench")
    return {
        r.info.run_name: (r, client)
        for r in client.search_runs([experiment.experiment_id])
        if r.data.tags.get("driftbench.sweep_dir") == (str(sweep_dir) if sweep_dir else None)
    }


def tensorboard_events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def tensorboard_session(events) -> tuple[dict, str]:
    """The HParams plugin's parameters (as Python values) and status of one run."""
    from google.protobuf.json_format import MessageToDict
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    end = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_end_info"])
    params = {k: MessageToDict(v) for k, v in start.session_start_info.hparams.items()}
    return params, api_pb2.Status.Name(end.session_end_info.status)


def wandb_records(path: Path) -> list:
    """The records of a ``run-<id>.wandb`` file: W&B's LevelDB-style log (a 7-byte file header,
    32 KiB blocks of chunks with a 7-byte header each), every record a W&B protobuf Record."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, pending, out = 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the rest of a block is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 2):  # full, first
            pending = chunk
        elif kind in (3, 4):  # middle, last
            pending += chunk
        if kind in (1, 4):
            out.append(wandb_internal_pb2.Record.FromString(pending))
    return out


def wandb_runs(root: Path, group: str = "") -> dict:
    """display name -> what the offline run holds, for the runs of one group ("": none)."""
    found = {}
    for folder in sorted((root / "wandb").glob("offline-run-*")):
        run = {
            "history": {},
            "summary": {},
            "files": {p.name for p in (folder / "files" / "driftbench").iterdir()},
        }
        for record in wandb_records(next(folder.glob("run-*.wandb"))):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                config = {u.key: json.loads(u.value_json) for u in record.run.config.update}
                run.update(
                    name=record.run.display_name,
                    group=record.run.run_group,
                    tags=list(record.run.tags),
                    config={k: v for k, v in config.items() if k != "_wandb"},
                )
            elif kind == "history":
                row = {
                    "/".join(item.nested_key) or item.key: json.loads(item.value_json)
                    for item in record.history.item
                }
                run["history"].setdefault(row["_step"], {}).update(row)
            elif kind == "summary":
                for u in record.summary.update:
                    run["summary"]["/".join(u.nested_key) or u.key] = json.loads(u.value_json)
            elif kind == "exit":
                run["exit_code"] = record.exit.exit_code
        if run["group"] == group:
            found[run["name"]] = run
    return found


# ── the runs ──────────────────────────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> Path:
    """One output root for the run and the sweep below: one MLflow store made once."""
    return tmp_path_factory.mktemp("trackers") / "outputs"


@pytest.fixture(scope="module")
def single(outputs, shared_cache):
    """One tiny drift run with every tracker, then the same command again (reused by resume)."""
    root = outputs
    cfg = compose_cfg(root, shared_cache, *TINY, "logger=all")
    run(cfg)
    run(cfg)  # a complete run with this key exists: reused, not logged again
    (run_dir,) = [p.parent for p in root.glob("runs/*/meta.json")]
    return root, run_dir


@pytest.fixture(scope="module")
def sweep(outputs):
    """``python launch.py -m ... seed=0,1 logger=all runtime.figures=true``, as typed (each
    job's figures drawn, as a sweep's jobs do not by default, so the trackers get them)."""
    root = outputs
    subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "-m", f"runtime.output_root={root}"]
        + ["runtime.progress=false", *TINY, "seed=0,1", "logger=all", "runtime.figures=true"],
        cwd=root.parent,
        check=True,
        capture_output=True,
        timeout=600,
    )
    (sweep_dir,) = list((root / "multirun").iterdir())
    return root, sweep_dir, sorted(p.parent for p in sweep_dir.glob("*/meta.json"))


# ── MLflow ───────────────────────────────────────────────────────────────────────────────────


def check_mlflow_run(found, run_dir: Path) -> None:
    want = expected(run_dir)
    run_, client = found
    assert run_.data.params == {k: as_text(v) for k, v in flat_config(want["config"]).items()}
    history = client.get_metric_history(run_.info.run_id, "checkpoints/roc_auc")
    assert {m.step: m.value for m in history} == pytest.approx(want["auc"])
    assert run_.data.tags["driftbench.config_hash"] == want["meta"]["config_hash"]
    assert run_.data.tags.get("mlflow.source.git.commit") == want["meta"]["git_commit"]
    files = {a.path for a in client.list_artifacts(run_.info.run_id)}
    assert want["figures"] | RUN_FILES <= files and want["figures"]
    assert run_.info.status == "FINISHED"


def test_mlflow_logs_a_run_once_with_its_config_checkpoints_figures_and_status(single):
    root, run_dir = single
    runs = mlflow_runs(root)
    assert list(runs) == [run_dir.name]  # the reused second run is not logged again
    check_mlflow_run(runs[run_dir.name], run_dir)


def test_mlflow_groups_a_sweep_under_one_parent_run_holding_the_report(sweep):
    root, sweep_dir, run_dirs = sweep
    runs = mlflow_runs(root, sweep_dir)
    assert set(runs) == {sweep_dir.name} | {d.name for d in run_dirs} and len(run_dirs) == 2
    parent, client = runs[sweep_dir.name]
    for d in run_dirs:
        assert runs[d.name][0].data.tags["mlflow.parentRunId"] == parent.info.run_id
        check_mlflow_run(runs[d.name], d)
    report = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report.md", "report.csv", "report.html", "report_drift_curves.png"} <= report
    assert parent.info.status == "FINISHED"


# ── TensorBoard ──────────────────────────────────────────────────────────────────────────────


def check_tensorboard_run(run_dir: Path) -> None:
    want = expected(run_dir)
    events = tensorboard_events(run_dir / "tensorboard")
    auc = {e.step: e.value for e in events.Scalars("checkpoints/roc_auc")}
    assert auc == pytest.approx(want["auc"], rel=1e-6)  # stored as float32
    params, status = tensorboard_session(events)
    typed = {  # HParams holds a bool, a number (float64) or a string
        k: v if isinstance(v, (bool, int, float)) else as_text(v)
        for k, v in flat_config(want["config"]).items()
    }
    assert params == typed and status == "STATUS_SUCCESS"
    for name in want["figures"]:
        (image,) = events.Images(f"figures/{Path(name).stem}")
        assert image.encoded_image_string == (run_dir / name).read_bytes()


def test_tensorboard_writes_each_run_dir_its_events(single):
    check_tensorboard_run(single[1])
    assert not list(single[1].glob(".tensorboard*"))  # the temp folder was renamed into place


def test_tensorboard_makes_the_sweep_dir_a_folder_of_its_runs_and_report(sweep):
    _, sweep_dir, run_dirs = sweep
    for d in run_dirs:
        check_tensorboard_run(d)
    events = tensorboard_events(sweep_dir / "tensorboard")
    assert "figures/report_drift_curves" in events.Tags()["images"]
    (text,) = events.Tensors("report/text_summary")
    assert "| drift_eval |" in text.tensor_proto.string_val[0].decode()


# ── Weights & Biases (offline) ───────────────────────────────────────────────────────────────


def check_wandb_run(found: dict, run_dir: Path, group: str) -> None:
    want = expected(run_dir)
    assert found["config"] == want["config"] and found["group"] == group
    assert {s: row["checkpoints/roc_auc"] for s, row in found["history"].items()} == want["auc"]
    last = found["history"][max(want["auc"])]
    images = {f"figures/{Path(n).stem}/_type": "image-file" for n in want["figures"]}
    assert images.items() <= last.items()
    assert want["figures"] | RUN_FILES <= found["files"]
    assert found["summary"]["run/config_hash"] == want["meta"]["config_hash"]
    assert found["summary"].get("run/git_commit") == want["meta"]["git_commit"]  # None: no git
    assert found["exit_code"] == 0 and "drift_eval" in found["tags"]


def test_wandb_writes_one_offline_run_per_run(single):
    root, run_dir = single
    runs = wandb_runs(root)
    assert list(runs) == [run_dir.name]
    check_wandb_run(runs[run_dir.name], run_dir, group="")


def test_wandb_groups_a_sweep_and_adds_its_report_run(sweep):
    root, sweep_dir, run_dirs = sweep
    runs = wandb_runs(root, sweep_dir.name)
    assert set(runs) == {d.name for d in run_dirs} | {"report"}
    for d in run_dirs:
        check_wandb_run(runs[d.name], d, group=sweep_dir.name)
    report = runs["report"]
    assert (
        report["group"] == sweep_dir.name
        and {"report.md", "report.csv", "report.html"} <= report["files"]
    )


# ── what every tracker reads, reliability, configuration ─────────────────────────────────────


def rho_like_run(run_dir: Path) -> Path:
    """A hand-made rho_sft run dir: a loss curve per SFT step, rho and the confidence gap per
    behaviour before and after, the stress test's rates."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("seed: 1\ntask:\n  name: rho_sft\n")
    (run_dir / "meta.json").write_text(json.dumps({"status": "completed", "task": "rho_sft"}))
    (run_dir / "loss_curve.csv").write_text(
        "step,sft_loss,contrastive_loss,active_hinge_fraction\n1,2.5,0.4,0.75\n2,2.25,0.3,0.5\n"
    )
    (run_dir / "monitors.csv").write_text(  # long form: a row per monitor and checkpoint
        "checkpoint,monitor,alarm_rate\n,ks,0.0\n0,ks,0.125\n0,mmd,0.25\n1,ks,0.5\n1,mmd,0.75\n"
    )
    metrics = {
        "behaviors": {"refusal": {"rho_before": 0.5, "rho_after": 0.75}},
        "audit_after": {"refusal": {"metadata": {"confidence_gap": 0.125}, "details": [{"x": 1}]}},
        "stress_test": {"after": {"harmful": {"refusal_rate": 0.25}}},
        "sigmas": [0.0, 0.1],
        "note": "text",
    }
    (run_dir / "metrics.json").write_text(json.dumps({"schema_version": 1, **metrics}))
    return run_dir


def test_rho_runs_log_their_loss_curve_per_step_and_audit_and_stress_numbers(tmp_path):
    run_dir = rho_like_run(tmp_path / "runs" / "2026-01-01_00-00-00-abcdef12")
    settings = {"subdir": "tensorboard"}
    log_run([TRACKERS["tensorboard"](settings)], run_dir)
    events = tensorboard_events(run_dir / "tensorboard")
    hinge = {e.step: e.value for e in events.Scalars("loss_curve/active_hinge_fraction")}
    assert hinge == {1: 0.75, 2: 0.5}
    assert {e.step: e.value for e in events.Scalars("loss_curve/sft_loss")} == {1: 2.5, 2: 2.25}
    ks = {e.step: e.value for e in events.Scalars("monitors/ks/alarm_rate")}
    assert ks == {0: 0.125, 1: 0.5}  # one series per monitor; the row without a step left out
    scalars = set(events.Tags()["scalars"])
    assert {
        "behaviors/refusal/rho_before",
        "behaviors/refusal/rho_after",
        "audit_after/refusal/metadata/confidence_gap",
        "stress_test/after/harmful/refusal_rate",
    } <= scalars
    assert not any(
        s.startswith(("sigmas", "note", "schema_version", "loss_curve/step")) for s in scalars
    )
    assert tensorboard_session(events)[0] == {"seed": 1, "task.name": "rho_sft"}


@pytest.mark.parametrize(
    "overrides",
    [
        [
            "logger=all",  # every store unwritable: a file where its folder should be
            "logger.mlflow.tracking_uri=sqlite:///{root}/a_file/mlflow.db",
            "logger.wandb.dir={root}/a_file/wandb",
            "logger.tensorboard.subdir=no_such_folder/tensorboard",
        ],
        ["logger=mlflow", "logger.mlflow.tracking_uri=http://127.0.0.1:9"],  # nothing listens
    ],
    ids=["unwritable", "mlflow-server-down"],
)
def test_a_failing_tracker_leaves_a_complete_run_dir_and_one_warning(
    tmp_path, shared_cache, caplog, overrides
):
    root = tmp_path / "outputs"
    root.mkdir()
    (root / "a_file").write_text("a file where the store's folder should be")
    cfg = compose_cfg(root, shared_cache, *TINY, *(o.format(root=root) for o in overrides))
    trackers = [t.name for t in resolve_trackers(cfg.logger)]
    with caplog.at_level(logging.WARNING):
        metrics = run(cfg)
    (run_dir,) = [p.parent for p in root.glob("runs/*/meta.json")]
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "completed"
    assert json.loads((run_dir / "metrics.json").read_text())["summary"] == metrics["summary"]
    assert {p.name for p in run_dir.iterdir()} >= RUN_FILES
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    for name in trackers:  # one line per tracker, naming it; nothing else (no retry chatter)
        mine = [w for w in warnings if w.startswith(f"logger={name} could not log run")]
        assert len(mine) == 1 and "\n" not in mine[0], warnings
    others = [r.getMessage() for r in caplog.records if not r.name.startswith("driftbench")]
    assert not [w for w in others if "Retry" in w or "logger=" in w], others


def test_a_failed_run_is_logged_as_failed(tmp_path, shared_cache):
    root = tmp_path / "outputs"
    broken = f"model.name_or_path={broken_model_folder(tmp_path)}"
    cfg = compose_cfg(root, shared_cache, "model=hf", broken, "logger=tensorboard")
    with pytest.raises(RuntimeError, match="model 'hf' failed to load"):
        run(cfg)  # passes every check, fails loading the model
    (run_dir,) = [p.parent for p in root.glob("runs/*/meta.json")]
    events = tensorboard_events(run_dir / "tensorboard")
    assert tensorboard_session(events)[1] == "STATUS_FAILURE"
    (text,) = events.Tensors("run/text_summary")
    assert "model 'hf' failed to load" in text.tensor_proto.string_val[0].decode()


def test_the_logger_never_changes_the_result_key(tmp_path, shared_cache):
    keys = {
        prepare(compose_cfg(tmp_path, shared_cache, *TINY, f"logger={choice}")).result_key
        for choice in ("none", "all", "[mlflow,wandb]")
    }
    assert len(keys) == 1


def test_a_missing_extra_stops_the_run_naming_it(tmp_path, shared_cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # Python's way to make a package unimportable
    cfg = compose_cfg(tmp_path / "outputs", shared_cache, *TINY, "logger=wandb")
    said = r"^logger=wandb needs the wandb extra: pip install -e '\.\[wandb\]'$"
    with pytest.raises(ConfigError, match=said):
        run(cfg)
    assert not (tmp_path / "outputs").exists()  # before any run dir


def test_a_bad_wandb_mode_names_the_accepted_ones():
    settings = {"project": "p", "entity": None, "mode": "cloud", "dir": "."}
    with pytest.raises(ValueError, match=r"logger.wandb.mode='cloud'; accepted: offline, online"):
        resolve_trackers({"wandb": settings})


def test_the_logger_group_lists_the_registry():
    options = {p.stem for p in (ROOT / "conf" / "logger").glob("*.yaml")}
    assert options - {"none", "all"} == set(TRACKERS)
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["logger=all"])
    assert [t.name for t in resolve_trackers(cfg.logger)] == list(TRACKERS)
