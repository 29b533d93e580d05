"""A sweep over drift types, sigma schedules or monitors fits each classifier once: the fit is
cached like the embeddings, keyed on what decides it, and a cached fit gives every number of a
fresh one."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from driftbench.launcher import run

ROOT = Path(__file__).resolve().parents[1]
TINY = ["debug=smoke"]  # model=tiny_random, 200 texts, sigma in {0, 0.02, 0.1}


@pytest.fixture
def cache_dir(tmp_path, shared_cache):
    """A cache dir of the test's own (so its fits start empty) that shares the session's
    models and embeddings."""

    def make(name: str) -> Path:
        d = tmp_path / name
        d.mkdir()
        for sub in ("models", "tokenizers", "embeddings"):
            (shared_cache / sub).mkdir(parents=True, exist_ok=True)
            (d / sub).symlink_to(shared_cache / sub)
        return d

    return make


def numbers(metrics: dict) -> dict:
    """metrics.json without wall times (``*_s``, ``timing``), which differ run to run."""
    if isinstance(metrics, dict):
        return {
            k: numbers(v)
            for k, v in metrics.items()
            if k != "timing" and not k.endswith("_s") and k != "wall_s"
        }
    if isinstance(metrics, list):
        return [numbers(v) for v in metrics]
    return metrics


def run_metrics(cfg) -> dict:
    out = run(cfg)
    assert out is not None
    return json.loads(json.dumps(out))


def fits(cache: Path) -> list[Path]:
    return sorted((cache / "fits").glob("*.pkl"))


def said_cached(caplog) -> list[bool]:
    return [
        "from the cache" in r.getMessage()
        for r in caplog.records
        if r.name == "driftbench.tasks.drift_eval.task" and r.getMessage().startswith("classifier ")
    ]


def test_a_cached_fit_gives_every_number_of_an_uncached_run(make_cfg, cache_dir):
    shared, fresh = cache_dir("shared"), cache_dir("fresh")
    run_metrics(make_cfg(*TINY, "drift=gaussian", cache_dir=shared))  # fits, caches
    cached = run_metrics(make_cfg(*TINY, "drift=directional", cache_dir=shared))
    uncached = run_metrics(
        make_cfg(*TINY, "drift=directional", "runtime.force=true", cache_dir=fresh)
    )
    assert len(fits(shared)) == 1 and len(fits(fresh)) == 1
    assert numbers(cached) == numbers(uncached)
    assert cached["classifier"]["fit_s"] > 0  # the time the fit took when it was made


def test_the_second_job_of_a_sweep_reads_the_first_jobs_fit(make_cfg, cache_dir, caplog):
    cache = cache_dir("c")
    with caplog.at_level(logging.INFO):
        for drift in ("gaussian", "directional", "subspace"):
            run(make_cfg(*TINY, f"drift={drift}", "monitor=none", cache_dir=cache))
    assert said_cached(caplog) == [False, True, True]
    assert len(fits(cache)) == 1


def test_a_mitigation_or_another_schedule_reads_the_same_fit(make_cfg, cache_dir, caplog):
    cache = cache_dir("c")
    with caplog.at_level(logging.INFO):
        run(make_cfg(*TINY, "monitor=none", cache_dir=cache))
        run(
            make_cfg(
                *TINY, "monitor=none", "mitigation=recalibrate", "mitigation.m=10", cache_dir=cache
            )
        )
        run(make_cfg(*TINY, "monitor=none", "schedule.sigmas=[0,0.05]", cache_dir=cache))
    assert said_cached(caplog) == [False, True, True]


@pytest.mark.parametrize(
    "change",
    [
        "classifier.max_iter=999",
        "classifier.c_grid=[0.01,1.0]",
        "classifier=logreg_raw",
        "seed=7",  # another split
        "data.n_samples=160",  # other texts
    ],
)
def test_a_changed_setting_that_decides_the_fit_misses(make_cfg, cache_dir, caplog, change):
    cache = cache_dir("c")
    with caplog.at_level(logging.INFO):
        run(make_cfg(*TINY, "monitor=none", cache_dir=cache))
        run(make_cfg(*TINY, "monitor=none", change, cache_dir=cache))
    assert said_cached(caplog) == [False, False]
    assert len(fits(cache)) == 2


def test_a_bad_fit_cache_entry_is_fitted_again(make_cfg, cache_dir, caplog):
    cache = cache_dir("c")
    first = run_metrics(make_cfg(*TINY, "monitor=none", cache_dir=cache))
    (entry,) = fits(cache)
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    caplog.clear()
    with caplog.at_level(logging.INFO):
        second = run_metrics(make_cfg(*TINY, "monitor=none", "runtime.force=true", cache_dir=cache))
    bad = [r.getMessage() for r in caplog.records if "classifier cache entry" in r.getMessage()]
    assert len(bad) == 1 and "unreadable" in bad[0] and "fitting again" in bad[0]
    assert said_cached(caplog) == [False]
    assert numbers(first) == numbers(second)
    assert fits(cache) == [entry] and entry.stat().st_size > 0  # healed on disk


def test_runtime_figures_false_draws_none_and_changes_no_number(make_cfg, tmp_path):
    outputs = tmp_path / "outputs"
    drawn = run_metrics(make_cfg(*TINY))
    skipped = run_metrics(make_cfg(*TINY, "runtime.figures=false", "runtime.force=true"))
    with_figures, without = sorted(p.parent for p in outputs.glob("runs/*/meta.json"))
    assert {p.name for p in with_figures.glob("*.png")} >= {
        "roc_auc_vs_sigma.png",
        "calibration.png",
        "monitors_vs_sigma.png",
    }
    assert list(without.glob("*.png")) == []
    assert json.loads((without / "meta.json").read_text())["status"] == "completed"
    assert numbers(drawn) == numbers(skipped)


def test_a_sweeps_jobs_draw_no_figures_by_default_and_the_sweep_gets_its_report(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "launch.py"),
            "-m",
            "debug=smoke",
            "drift=gaussian,directional",
            "monitor=none",
            f"runtime.output_root={tmp_path}",
            "runtime.progress=false",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    (sweep,) = (tmp_path / "multirun").iterdir()
    runs = sorted(p.parent for p in sweep.glob("*/meta.json"))
    assert len(runs) == 2 and [list(r.glob("*.png")) for r in runs] == [[], []]
    assert (sweep / "report.md").is_file() and (sweep / "report_drift_curves.png").is_file()


def test_a_job_on_cached_embeddings_without_figures_imports_no_torch_or_matplotlib(
    make_cfg, tmp_path, shared_cache
):
    run(make_cfg(*TINY, "monitor=none"))  # the embeddings are cached now
    out = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            str(ROOT / "launch.py"),
            *TINY,
            "monitor=none",
            "runtime.figures=false",
            "runtime.force=true",
            f"runtime.output_root={tmp_path / 'fresh'}",
            f"runtime.cache_dir={shared_cache}",
            "runtime.progress=false",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert "sklearn" in imported  # the import log is read right
    assert not {"torch", "transformers", "matplotlib"} & imported


def test_the_launcher_is_handed_the_config_the_sweep_plan_composed():
    """Each job of a sweep is composed once: the plan's config, handed to the launcher's call
    for the same overrides, is the config a fresh composition gives."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from driftbench.launcher import composed_once

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        master = compose("config", overrides=["seed=0"], return_hydra_config=True)
        loader = GlobalHydra.instance().config_loader()
        fresh = loader.load_sweep_config(master, ["drift=subspace", "seed=3"])
        once = composed_once(loader)
        assert composed_once(loader) is once  # installed once
        planned = once.plan(master, ["drift=subspace", "seed=3"])
        assert OmegaConf.to_yaml(planned) == OmegaConf.to_yaml(fresh)
        assert loader.load_sweep_config(master, ["drift=subspace", "seed=3"]) is planned
        again = loader.load_sweep_config(master, ["drift=subspace", "seed=3"])  # composed anew
        assert again is not planned and OmegaConf.to_yaml(again) == OmegaConf.to_yaml(fresh)


def test_a_job_composed_by_the_plan_writes_into_the_sweeps_own_dir(tmp_path):
    """The sweep dir's name holds the time (${now:}); a job composed by the plan, seconds
    before the launcher makes that dir, still resolves it to the same dir."""
    import time

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from driftbench.launcher import plan_sweep

    job = ["debug=smoke", f"runtime.output_root={tmp_path}"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        master = compose("config", overrides=job, return_hydra_config=True)
        assert plan_sweep(master) == (0, 1, [])
        sweep_dir = str(master.hydra.sweep.dir)  # the launcher makes the sweep dir
        launched = GlobalHydra.instance().config_loader().load_sweep_config(master, job)
        time.sleep(1.1)  # and the job runs later
        assert str(launched.hydra.sweep.dir) == sweep_dir
