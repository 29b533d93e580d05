"""Resume reuses a run only when everything that decides its result is unchanged: the config the
task reads, the bytes of its input files, and the task's results version."""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from driftbench.data import resolve_data_path
from driftbench.launcher import run
from driftbench.provenance import git_commit
from driftbench.report import report
from driftbench.runs import effective_status

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model=tiny_random", "data.n_samples=200", "schedule=list", "schedule.sigmas=[0,0.1]"]


def metas(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.glob("**/meta.json"))]


@pytest.fixture
def own_data(tmp_path) -> Path:
    """The Davidson tweets as a plain CSV of the test's own, so it can be replaced in place."""
    src = resolve_data_path("davidson2017_hate_offensive_tweets.csv")
    dst = tmp_path / "tweets.csv"
    if src.suffix == ".gz":
        dst.write_bytes(gzip.decompress(src.read_bytes()))
    else:
        shutil.copy(src, dst)
    return dst


def test_replacing_the_data_file_under_the_same_path_reruns(make_cfg, tmp_path, own_data):
    run(make_cfg(*TINY, f"data.path={own_data}"))
    run(make_cfg(*TINY, f"data.path={own_data}"))  # same bytes: reused
    assert len(metas(tmp_path / "outputs")) == 1

    rows = pd.read_csv(own_data)
    rows.iloc[::-1].to_csv(own_data, index=False)  # same rows, another order: other bytes
    run(make_cfg(*TINY, f"data.path={own_data}"))
    found = metas(tmp_path / "outputs")
    assert len(found) == 2
    assert found[0]["inputs"]["data"] != found[1]["inputs"]["data"]


def test_a_group_the_task_does_not_read_never_reruns_it(make_cfg, tmp_path):
    run(make_cfg(*TINY))
    run(make_cfg(*TINY, "sft.lambda_rho=0.9", "sft.optim.lr=0.5", "task.tau=0.8"))
    assert len(metas(tmp_path / "outputs")) == 1
    run(make_cfg(*TINY, "classifier.max_iter=999"))  # a group it reads
    assert len(metas(tmp_path / "outputs")) == 2


def test_the_task_is_handed_only_the_groups_it_reads(make_cfg, tmp_path):
    from driftbench.launcher import prepare

    job = prepare(make_cfg(*TINY))
    assert set(job.cfg) == {"seed", "runtime", *job.task.CONFIG_GROUPS}
    with pytest.raises(Exception, match="sft"):
        job.cfg.sft  # noqa: B018  (a task that reads an undeclared group fails loudly)


def test_a_new_results_version_reruns(make_cfg, tmp_path, monkeypatch):
    from driftbench.tasks.drift_eval import task as drift_eval

    run(make_cfg(*TINY))
    monkeypatch.setattr(drift_eval, "RESULTS_VERSION", drift_eval.RESULTS_VERSION + 1)
    run(make_cfg(*TINY))
    versions = sorted(m["results_version"] for m in metas(tmp_path / "outputs"))
    assert versions == [drift_eval.RESULTS_VERSION - 1, drift_eval.RESULTS_VERSION]


def test_a_run_reused_from_another_commit_says_so_in_one_warning(make_cfg, tmp_path, caplog):
    here = git_commit()
    if here is None:
        pytest.skip("not a git checkout")
    run(make_cfg(*TINY))
    (meta_path,) = (tmp_path / "outputs").glob("**/meta.json")
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "git_commit": "0" * 40}))
    with caplog.at_level(logging.WARNING):
        run(make_cfg(*TINY))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    said = [w for w in warnings if "000000000000" in w]
    assert len(said) == 1 and here[:12] in said[0]
    assert len(metas(tmp_path / "outputs")) == 1


# --- a reused run is a verified one ---------------------------------------------------------


def rerun_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "not reusing" in r.getMessage()]


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda d: (d / "metrics.json").write_text('{"schema_version": 2'), "metrics.json does"),
        (lambda d: (d / "checkpoints.csv").unlink(), "its checkpoints.csv is missing"),
        (lambda d: (d / "config.yaml").write_text("seed: 43\n"), "its config.yaml does not"),
    ],
    ids=["metrics.json cut short", "a file missing", "a file edited"],
)
def test_a_completed_run_whose_files_changed_is_rerun_with_one_warning(
    make_cfg, tmp_path, caplog, damage, why
):
    first = run(make_cfg(*TINY))
    (done,) = [p.parent for p in (tmp_path / "outputs").glob("**/meta.json")]
    damage(done)
    with caplog.at_level(logging.WARNING):
        again = run(make_cfg(*TINY))
    (said,) = rerun_warnings(caplog)
    assert str(done) in said and why in said and said.endswith("; rerunning")
    assert len(metas(tmp_path / "outputs")) == 2  # a new run dir beside the damaged one
    assert again["checkpoints"] == first["checkpoints"]
    (new,) = [p.parent for p in (tmp_path / "outputs").glob("**/meta.json") if p.parent != done]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        reused = run(make_cfg(*TINY))  # the new run, read back from its metrics.json
    assert reused == json.loads((new / "metrics.json").read_text())
    assert len(metas(tmp_path / "outputs")) == 2
    assert len(rerun_warnings(caplog)) == 1  # the damaged run, passed over again


def test_a_run_from_before_file_digests_is_rerun(make_cfg, tmp_path, caplog):
    run(make_cfg(*TINY))
    (meta_path,) = (tmp_path / "outputs").glob("**/meta.json")
    meta = json.loads(meta_path.read_text())
    del meta["files"]
    meta_path.write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING):
        run(make_cfg(*TINY))
    (said,) = rerun_warnings(caplog)
    assert "records no digests of its files" in said
    assert len(metas(tmp_path / "outputs")) == 2


def test_the_report_leaves_out_a_run_whose_metrics_were_cut_short(tmp_path, caplog):
    out = tmp_path / "outputs"
    subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "-m", *TINY, "seed=1,2"]
        + [f"runtime.output_root={out}", "runtime.progress=false"],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (sweep,) = (out / "multirun").iterdir()
    cut = sorted(sweep.glob("*/metrics.json"))[0]
    cut.write_text(cut.read_text()[:20])
    with caplog.at_level(logging.WARNING):
        result = report([sweep])
    said = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(said) == 1 and str(cut.parent) in said[0]
    assert "metrics.json does not match the digest recorded" in said[0]
    assert result["n_runs"] == 1
    assert "metrics.json does not match" in (sweep / "report.md").read_text()


# --- a killed run is not "running" forever ---------------------------------------------------


def test_status_of_a_run_whose_process_is_gone_is_died():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    here = {"status": "running", "host": socket.gethostname(), "heartbeat": now}
    assert effective_status({**here, "pid": gone.pid, "stale_after_s": 600}) == "died"
    assert effective_status({**here, "pid": os.getpid(), "stale_after_s": 600}) == "running"
    assert effective_status({**here, "pid": gone.pid, "status": "completed"}) == "completed"


def test_status_of_a_run_on_another_host_goes_by_its_heartbeat():
    def meta(age_s):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - age_s))
        return {"status": "running", "host": "elsewhere", "pid": 1, "heartbeat": stamp}

    assert effective_status({**meta(30), "stale_after_s": 600}) == "running"
    assert effective_status({**meta(900), "stale_after_s": 600}) == "died"


def test_a_run_killed_with_sigkill_is_died_and_resume_reruns_it(tmp_path):
    args = [
        sys.executable,
        str(ROOT / "launch.py"),
        f"runtime.output_root={tmp_path / 'outputs'}",
        "runtime.progress=false",
        *TINY,
    ]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not list((tmp_path / "outputs").glob("**/meta.json")) and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (killed,) = metas(tmp_path / "outputs")
    assert killed["status"] == "running" and killed["pid"] == proc.pid  # as the job left it
    assert effective_status(killed) == "died"

    out = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    statuses = sorted(effective_status(m) for m in metas(tmp_path / "outputs"))
    assert statuses == ["completed", "died"]


def test_a_running_job_keeps_its_heartbeat_fresh(tmp_path, monkeypatch):
    from driftbench import runs

    monkeypatch.setattr(runs, "HEARTBEAT_S", 0.05)
    d = tmp_path / "run"
    d.mkdir()
    with runs.Run(d, {"task": {"name": "x"}}, "", {}, stale_after_s=600) as r:
        first = r.meta["heartbeat"]
        time.sleep(1.2)
        written = json.loads((d / "meta.json").read_text())
        assert written["status"] == "running" and written["heartbeat"] > first
    assert json.loads((d / "meta.json").read_text())["status"] == "completed"
