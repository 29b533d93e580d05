"""One job: validate the config, skip it if an identical run is complete, else run its task
inside a fresh run dir. Called by ``launch.py`` for every job of a run or multirun."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from driftbench.backends import check_backend
from driftbench.models import ModelSpec
from driftbench.runs import Run, config_hash, find_complete_runs, new_run_dir, read_json
from driftbench.tasks import get_task

log = logging.getLogger("driftbench")


class ConfigError(ValueError):
    """Bad input found before any heavy work: the message names the value and what is accepted."""


def _hydra_job() -> dict:
    """Sweep dir and job number when running under a Hydra multirun, else single-run info."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ImportError, ValueError):
        return {"multirun": False, "sweep_dir": None, "job_num": 0, "job_id": None, "overrides": []}
    multirun = hc.mode == RunMode.MULTIRUN
    return {
        "multirun": multirun,
        "sweep_dir": str(hc.sweep.dir) if multirun else None,
        "job_num": int(hc.job.num) if multirun else 0,
        "job_id": str(hc.job.id) if multirun else None,  # submitit: the .submitit/<id>/ log folder
        "overrides": list(hc.overrides.task),
    }


def link_into_sweep(run_dir: Path, sweep_dir: Path, job_num: int, cfg_hash: str) -> None:
    """A resumed sweep's dir lists every job: a skipped job appears as a relative symlink to the
    complete run it reuses (nothing is copied, nothing is written into the old run)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    link = sweep_dir / f"{int(job_num):03d}-{cfg_hash[:8]}"
    if not link.exists() and not link.is_symlink():
        link.symlink_to(os.path.relpath(run_dir.resolve(), sweep_dir.resolve()))


def _sigterm_to_exception(signum, frame):
    raise SystemExit(f"killed by signal {signum}")


def run(cfg: DictConfig) -> dict | None:
    """Run one job. In a multirun a failing job is recorded as failed (meta.json) and returns
    None, so the other jobs of the sweep still run; a single run raises."""
    job = _hydra_job()
    container = OmegaConf.to_container(cfg, resolve=True)
    cfg_hash = config_hash(container)
    output_root = Path(cfg.runtime.output_root)

    try:
        task = get_task(cfg.task.name)
        task.validate(cfg)
        check_backend(
            cfg.backend.name,
            ModelSpec.from_dict(OmegaConf.to_container(cfg.model, resolve=True)),
            cfg.runtime.cache_dir,
        )
    except (ValueError, FileNotFoundError) as e:
        if not job["multirun"]:
            raise ConfigError(str(e)) from e
        task, error = None, e
    else:
        error = None

    if error is None and not cfg.runtime.force:
        done = find_complete_runs(output_root, cfg_hash)
        if done:
            log.info(
                "skipping: identical config already complete in %s (runtime.force=true reruns)",
                done[-1],
            )
            if job["multirun"]:
                link_into_sweep(done[-1], Path(job["sweep_dir"]), job["job_num"], cfg_hash)
            return read_json(done[-1] / "metrics.json")

    run_dir = new_run_dir(output_root, cfg_hash, job["sweep_dir"], job["job_num"])
    if hasattr(signal, "SIGTERM"):
        try:
            signal.signal(signal.SIGTERM, _sigterm_to_exception)  # Slurm cancel -> meta "failed"
        except ValueError:
            pass  # not the main thread
    job_meta = {k: job[k] for k in ("multirun", "sweep_dir", "job_num", "job_id", "overrides")}
    try:
        with Run(run_dir, container, OmegaConf.to_yaml(cfg, resolve=True), job_meta) as r:
            if error is not None:
                raise ConfigError(str(error))
            metrics = task.run(cfg, run_dir)
            r.write_metrics(metrics)
    except Exception:
        if not job["multirun"]:
            raise
        log.error("job %d failed; its run dir says why: %s", job["job_num"], run_dir)
        return None
    summary = metrics.get("summary", {})
    log.info(
        "job %d done: %s | %s",
        job["job_num"],
        run_dir,
        "  ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in list(summary.items())[:6]
        ),
    )
    return metrics
