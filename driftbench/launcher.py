"""One job: validate the config, skip it if a run with the same result key is complete, else
run its task inside a fresh run dir. Called by ``launch.py`` and the ``driftbench`` command
(``driftbench/cli.py``) for every job of a run or multirun, and by ``driftbench.api.run``;
``SweepPlan`` checks every job of a multirun before the first one starts."""

from __future__ import annotations

import copy
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from driftbench import schema
from driftbench.backends import check_backend, resolve_dtype
from driftbench.fileio import read_json
from driftbench.models import ModelSpec, check_device
from driftbench.provenance import git_commit
from driftbench.runs import Run, check_writable_dir, find_complete_runs, new_run_dir, result_key
from driftbench.tasks import get_task
from driftbench.trackers import Tracker, log_run, resolve_trackers

log = logging.getLogger("driftbench")


class ConfigError(ValueError):
    """Bad input found before any heavy work: the message names the value and what is accepted."""


@dataclass
class Job:
    """A validated job: its task, the config the task is handed (the groups it reads, ``seed``
    and ``runtime``), its result key with what went into it, and the trackers that mirror its
    run dir (``logger=``, never part of the key)."""

    task: ModuleType
    cfg: DictConfig
    key: dict
    trackers: list[Tracker] = field(default_factory=list)

    @property
    def result_key(self) -> str:
        return self.key["result_key"]


def prepare(cfg: DictConfig) -> Job:
    """Every check that needs no model (raises ValueError/FileNotFoundError naming the bad
    value), then the result key. The task is handed its own config groups only, so the key
    covers exactly what it reads: a change to a group it ignores never reruns it. Of
    ``runtime`` it reads the dtype alone, resolved here once (``auto`` becomes what this machine
    computes in): the key, the config the task is handed and the run's meta.json hold that."""
    task = get_task(cfg.task.name)
    schema.check(cfg)
    check_writable_dir("runtime.cache_dir", cfg.runtime.cache_dir)
    check_device(cfg.runtime.device)
    dtype = resolve_dtype(cfg.runtime.dtype, cfg.runtime.device, cfg.backend.name)
    task.validate(cfg)
    check_backend(
        cfg.backend.name,
        ModelSpec.from_dict(cfg.model),
        cfg.runtime.cache_dir,
    )
    trackers = resolve_trackers(cfg.get("logger"))
    check_writable_dir("runtime.output_root", cfg.runtime.output_root)  # made once all else holds
    full = OmegaConf.to_container(cfg, resolve=True)
    read = {k: full[k] for k in ("seed", *task.CONFIG_GROUPS)}
    inputs = task.inputs(cfg)
    key = {
        "result_key": result_key(read, inputs, task.RESULTS_VERSION, dtype),
        "inputs": inputs,
        "results_version": task.RESULTS_VERSION,
        "dtype": dtype,
    }
    view = typed_view(cfg, ("seed", *task.CONFIG_GROUPS, "runtime"))
    with read_write(view):
        view.runtime.dtype = dtype
    return Job(task, view, key, trackers)


def typed_view(cfg: DictConfig, keys: tuple[str, ...]) -> DictConfig:
    """The groups ``keys`` of the composed config, resolved and read-only, each node still typed
    by its schema (``driftbench/schema.py``): an int field reads as an int and a float field as a
    float even where the command line wrote ``1``, and ``OmegaConf.to_object`` of a group gives
    its schema object. Tasks read values as they are, with no casts."""
    resolved = copy.deepcopy(cfg)
    OmegaConf.resolve(resolved)
    view = OmegaConf.masked_copy(resolved, list(keys))
    OmegaConf.set_struct(view, True)
    OmegaConf.set_readonly(view, True)
    return view


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


def link_into_sweep(run_dir: Path, sweep_dir: Path, job_num: int, key: str) -> None:
    """A resumed sweep's dir lists every job: a skipped job appears as a relative symlink to the
    complete run it reuses (nothing is copied, nothing is written into the old run)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    link = sweep_dir / f"{int(job_num):03d}-{key[:8]}"
    if not link.exists() and not link.is_symlink():
        link.symlink_to(os.path.relpath(run_dir.resolve(), sweep_dir.resolve()))


def reuse(done: Path) -> dict | None:
    """The metrics of a complete run with this job's key, saying where they come from and, in
    one warning, when they were made at another git commit than this checkout's."""
    log.info(
        "skipping: a complete run with the same result key is in %s (runtime.force=true reruns)",
        done,
    )
    made_at = (read_json(done / "meta.json") or {}).get("git_commit")
    here = git_commit()
    if made_at and here and made_at != here:
        log.warning(
            "reused run %s was made at git commit %s; this checkout is at %s",
            done,
            made_at[:12],
            here[:12],
        )
    return read_json(done / "metrics.json")


def _sigterm_to_exception(signum, frame):
    raise SystemExit(f"killed by signal {signum}")


@dataclass(frozen=True)
class Result:
    """What one job gave: its run dir (for a reused run, the complete run with the same result
    key), its metrics (``metrics.json``), and whether it was reused. A multirun job that was
    refused or failed has no metrics (and a refused one no run dir)."""

    run_dir: Path | None
    metrics: dict | None
    reused: bool = False


def run(cfg: DictConfig) -> dict | None:
    """Run one job; its metrics. In a multirun a failing job is recorded as failed (meta.json)
    and returns None, so the other jobs of the sweep still run; a single run raises."""
    return execute(cfg).metrics


def execute(cfg: DictConfig) -> Result:
    """``run``, saying where the run is (``driftbench.api.run`` hands this to a notebook)."""
    job_info = _hydra_job()
    output_root = Path(cfg.runtime.output_root)
    try:
        job = prepare(cfg)
    except (ValueError, FileNotFoundError) as e:
        if not job_info["multirun"]:
            raise ConfigError(str(e)) from e
        # SweepPlan refused bad jobs before the sweep started; this is a launcher without it
        log.error("job %d: %s", job_info["job_num"], e)
        return Result(None, None)

    if not cfg.runtime.force:
        done = find_complete_runs(output_root, job.result_key)
        if done:
            if job_info["multirun"]:
                link_into_sweep(
                    done[-1], Path(job_info["sweep_dir"]), job_info["job_num"], job.result_key
                )
            return Result(done[-1], reuse(done[-1]), reused=True)

    run_dir = new_run_dir(output_root, job.result_key, job_info["sweep_dir"], job_info["job_num"])
    if hasattr(signal, "SIGTERM"):
        try:
            signal.signal(signal.SIGTERM, _sigterm_to_exception)  # Slurm cancel -> meta "failed"
        except ValueError:
            pass  # not the main thread
    job_meta = {k: job_info[k] for k in ("multirun", "sweep_dir", "job_num", "job_id", "overrides")}
    saved = OmegaConf.to_container(job.cfg)
    figures = cfg.runtime.get("figures")
    if figures is None:  # a single run draws its figures; a sweep's jobs as the task says
        figures = not job_info["multirun"] or job.task.FIGURES_IN_SWEEPS
    try:
        with Run(
            run_dir,
            saved,
            OmegaConf.to_yaml(job.cfg),
            job_meta,
            key=job.key,
            stale_after_s=cfg.runtime.stale_after_s,
            figures=bool(figures),
        ) as r:
            metrics = job.task.run(job.cfg, run_dir)
            r.write_metrics(metrics)
    except Exception:
        if not job_info["multirun"]:
            raise
        log.error("job %d failed; its run dir says why: %s", job_info["job_num"], run_dir)
        return Result(run_dir, None)
    finally:
        log_run(job.trackers, run_dir)  # the run dir is complete (or failed) by now
    summary = metrics.get("summary", {})
    log.info(
        "job %d done: %s | %s",
        job_info["job_num"],
        run_dir,
        "  ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in list(summary.items())[:6]
        ),
    )
    return Result(run_dir, metrics)


def sweep_jobs(config) -> list[list[str]]:
    """Each job's overrides, as Hydra's basic sweeper will expand the command line."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    args = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(args)
    return [list(j) for batch in BasicSweeper.split_arguments(parsed, None) for j in batch]


def sweep_refusal(config) -> str | None:
    """One line for a single run of a config that sweeps (``hydra.sweeper.params``, as an
    experiment preset's sweep does): a run without ``-m`` ignores the sweep and would run the
    preset's base values alone, as if they were the study. None when nothing is swept, or when
    the command sets every swept key itself (one job of the sweep, on purpose)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    if not params:
        return None
    parser = OverridesParser.create()
    given = {
        (o.key_or_group, o.package)
        for o in parser.parse_overrides(list(config.hydra.overrides.task))
    }
    swept = parser.parse_overrides([f"{k}={v}" for k, v in params.items()])
    unset = [o.get_key_element() for o in swept if (o.key_or_group, o.package) not in given]
    if not unset:
        return None
    preset = config.hydra.runtime.choices.get("experiment")
    what = f"experiment={preset}" if preset else "this config (hydra.sweeper.params)"
    keys = ", ".join(o.get_key_element() for o in swept)
    return (
        f"{what} is a sweep ({len(sweep_jobs(config))} jobs over {keys}); run it with -m, "
        f"or set {' and '.join(unset)} for one of its jobs"
    )


def plan_sweep(config) -> tuple[int, int, list[str]]:
    """(jobs already complete under the output root, jobs to run, one line per bad job),
    composing each job's config as the launcher will (``composed_once``)."""
    import copy

    from hydra.core.global_hydra import GlobalHydra

    loader = composed_once(GlobalHydra.instance().config_loader())
    # resolved now, so its ${now:} is cached on the master config, which every composed job
    # copies (as it would when the launcher composes it, after making the sweep dir)
    str(config.hydra.sweep.dir)
    root = Path(str(config.runtime.output_root))
    done, todo, bad = 0, 0, []
    for num, overrides in enumerate(sweep_jobs(config)):
        cfg = copy.deepcopy(loader.plan(config, overrides))
        with read_write(cfg), open_dict(cfg):
            del cfg["hydra"]  # what the task function is handed, as Hydra's run_job does
        try:
            job = prepare(cfg)
        except (ValueError, FileNotFoundError) as e:
            bad.append(f"job {num} ({' '.join(overrides)}): {e}")
            continue
        if not cfg.runtime.force and find_complete_runs(root, job.result_key, warn=False):
            done += 1
        else:
            todo += 1
    return done, todo, bad


class _ComposedOnce:
    """Hydra's config loader, wrapped so that each job of a sweep is composed once: the plan
    composes it (``plan``) with the loader's own ``load_sweep_config``, and the launcher's call
    for the same overrides gets that config (once; any other call composes as before).
    Composing a config takes about 0.15 s on a 2-core machine: a 78-job sweep saves ~12 s."""

    def __init__(self, loader):
        self.loader, self.compose = loader, loader.load_sweep_config
        self.planned: dict[tuple[str, ...], DictConfig] = {}
        loader.load_sweep_config = self.load_sweep_config

    def plan(self, master, overrides: list[str]) -> DictConfig:
        cfg = self.compose(master, list(overrides))
        self.planned[tuple(overrides)] = cfg
        return cfg

    def load_sweep_config(self, master, overrides) -> DictConfig:
        planned = self.planned.pop(tuple(overrides), None)
        return self.compose(master, list(overrides)) if planned is None else planned


def composed_once(loader) -> _ComposedOnce:
    """The loader's ``_ComposedOnce`` wrapper (installed on the first call)."""
    wrapper = getattr(loader.load_sweep_config, "__self__", None)
    return wrapper if isinstance(wrapper, _ComposedOnce) else _ComposedOnce(loader)


class SweepPlan(Callback):
    """Hydra callback (see conf/config.yaml): before a multirun's first job, every job's config
    is checked, so a bad value stops the sweep at once (one line per bad job, exit code 2) with
    no run dir made; then how many jobs are already complete (resume). Each job then starts
    with ``job i of n``. A single run (no ``-m``) of a sweep preset stops before any work, in
    one line (``sweep_refusal``)."""

    n_jobs: int | None = None

    def on_run_start(self, config, **kwargs) -> None:
        refusal = sweep_refusal(config)
        if refusal:  # on stderr, as launch.py says a composition error
            print(f"error: {refusal}", file=sys.stderr)
            sys.exit(2)

    def on_multirun_start(self, config, **kwargs) -> None:
        try:  # before Hydra makes the sweep dir under it; one line, not one per job
            check_writable_dir("runtime.cache_dir", config.runtime.cache_dir)
            check_writable_dir("runtime.output_root", config.runtime.output_root)
        except ValueError as e:
            log.error("error: %s", e)
            sys.exit(2)
        done, todo, bad = plan_sweep(config)
        if bad:
            for line in bad:
                log.error("error: %s", line)
            sys.exit(2)
        force = " (runtime.force=true: all rerun)" if config.runtime.force else ""
        log.info("resume: %d done, %d to run%s", done, todo, force)
        self.n_jobs = done + todo

    def on_job_start(self, config, **kwargs) -> None:
        if self.n_jobs is None:  # not a multirun (or a launcher that forgot its start)
            return
        num = int(config.hydra.job.num)  # the launcher logs its overrides as #num
        log.info("job %d of %d (#%d)", num + 1, self.n_jobs, num)
