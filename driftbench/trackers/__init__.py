"""Experiment trackers: ``logger=`` in the config picks which ones mirror every run and sweep;
``conf/logger/`` lists the same names (``none``, the default, picks none; ``all`` picks every
one; ``logger=[mlflow,tensorboard]`` any few).

The run dir stays the source of truth: a tracker is handed the run dir once the run has
completed or failed, reads what the run wrote (``base.read_run``) and mirrors it. A tracker
that fails (an unwritable store, a server that is down) says so in one warning line and the run
goes on as if it had not been asked. A run that resume reuses is not run, so not logged again.

Each tracker is one sibling module behind the interface of :class:`base.Tracker`, imported
only when chosen, and each needs its optional extra (``pip install -e '.[mlflow]'``): a
missing one stops the run before any work, naming the extra. ``launcher.prepare`` resolves the
trackers once per job; ``SweepTrackers`` (a Hydra callback, see ``conf/config.yaml``) sets up
a multirun's group before its first job and attaches the sweep report after the last.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from driftbench.trackers.base import SweepRecord, Tracker, read_run, read_sweep
from driftbench.trackers.mlflow_tracker import MlflowTracker
from driftbench.trackers.tensorboard_tracker import TensorboardTracker
from driftbench.trackers.wandb_tracker import WandbTracker

log = logging.getLogger("driftbench")

TRACKERS: dict[str, type[Tracker]] = {
    "mlflow": MlflowTracker,
    "tensorboard": TensorboardTracker,
    "wandb": WandbTracker,
}


def resolve_trackers(logger) -> list[Tracker]:
    """The trackers the ``logger`` config node enables (one key per tracker, its settings;
    null or absent: off). Raises ValueError naming a tracker whose extra is not installed."""
    if isinstance(logger, DictConfig):
        logger = OmegaConf.to_container(logger, resolve=True)
    trackers = []
    for name, settings in (logger or {}).items():
        if settings is None:
            continue
        if name not in TRACKERS:
            raise ValueError(f"logger.{name}: no such tracker; accepted: {', '.join(TRACKERS)}")
        cls = TRACKERS[name]
        if importlib.util.find_spec(cls.module) is None:
            raise ValueError(
                f"logger={name} needs the {cls.extra} extra: pip install -e '.[{cls.extra}]'"
            )
        trackers.append(cls(dict(settings)))
    return trackers


def _one_line(e: Exception) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 240 else text[:237] + "..."


def _safely(tracker: Tracker, what: str, call, *args) -> None:
    try:
        call(*args)
    except Exception as e:  # a tracker never fails the run it mirrors
        log.warning(
            "logger=%s could not log %s: %s: %s (the run dir is complete as always)",
            tracker.name,
            what,
            type(e).__name__,
            _one_line(e),
        )


def log_run(trackers: list[Tracker], run_dir: Path) -> None:
    """Mirror a finished run dir (completed or failed) into each tracker."""
    if not trackers:
        return
    try:
        record = read_run(run_dir)
    except Exception as e:  # e.g. a run that could not write its config.yaml
        names = ",".join(t.name for t in trackers)
        log.warning("logger=%s could not read run dir %s: %s", names, run_dir, _one_line(e))
        return
    for tracker in trackers:
        _safely(tracker, f"run {run_dir}", tracker.log_run, record)


class SweepTrackers(Callback):
    """Hydra callback (see conf/config.yaml): a multirun's group in each tracker, set up before
    the first job, and the sweep report attached to it after the last job. Listed before
    ``sweep_report``: Hydra ends callbacks in reverse order, so the report is written first."""

    def _trackers(self, config) -> list[Tracker]:
        try:
            return resolve_trackers(config.get("logger"))
        except ValueError:
            return []  # SweepPlan has already refused the sweep with this message

    def on_multirun_start(self, config, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        sweep = SweepRecord(sweep_dir, sweep_dir.name)
        for tracker in self._trackers(config):
            _safely(tracker, f"sweep {sweep_dir}", tracker.open_sweep, sweep)

    def on_multirun_end(self, config, **kwargs) -> None:
        trackers = self._trackers(config)
        if not trackers:
            return
        sweep = read_sweep(Path(str(config.hydra.sweep.dir)))
        for tracker in trackers:
            _safely(tracker, f"sweep {sweep.dir}", tracker.close_sweep, sweep)
