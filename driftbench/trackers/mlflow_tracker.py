"""MLflow: one MLflow run per run dir, in the experiment ``logger.mlflow.experiment`` of the
store ``logger.mlflow.tracking_uri`` (by default ``sqlite:///outputs/mlflow.db``, artifacts in
``outputs/mlartifacts``; any tracking URI by override, e.g. a server ``http://host:5000``).

Per run: the flattened config as parameters; task, status, config hash, result key, git commit,
run dir and sweep dir as ``driftbench.*`` tags (the commit also as MLflow's own source tag);
every scalar of ``metrics.json`` at step 0 and every series at its step; the run's files as
artifacts; the run's status (FINISHED or FAILED) and its start and end time. A multirun is one
parent run, named after its sweep dir and made before the first job, whose children are the
jobs; the sweep report's files are its artifacts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from datetime import datetime
from pathlib import Path

from driftbench.trackers.base import RunRecord, SweepRecord, Tracker

# Each MLflow call to a server that is down retries with a growing backoff, minutes in all by
# default; a tracker that cannot log gives up within seconds and says so (the environment
# variables, when set, win).
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
BATCH = 1000  # MLflow's largest log_batch (metrics); params go 100 at a time
SWEEP_ROLE = "sweep"


def _ms(stamp: str | None) -> int | None:
    try:
        return int(datetime.fromisoformat(stamp).timestamp() * 1000)
    except (TypeError, ValueError):
        return None


@contextlib.contextmanager
def _quiet():
    """urllib3 logs every retry of a request as a warning: the tracker's one warning says it
    all."""
    pool = logging.getLogger("urllib3.connectionpool")
    level = pool.level
    pool.setLevel(logging.ERROR)
    try:
        yield
    finally:
        pool.setLevel(level)


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class MlflowTracker(Tracker):
    name = "mlflow"
    extra = "mlflow"
    module = "mlflow"

    def _client(self):
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        from mlflow import MlflowClient

        for name in ("mlflow", "alembic"):  # store creation and migrations log at INFO
            logging.getLogger(name).setLevel(logging.WARNING)

        uri = str(self.settings["tracking_uri"])
        if uri.startswith("sqlite:///"):  # SQLite makes the file, not its folder
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return MlflowClient(tracking_uri=uri)

    def _experiment_id(self, client) -> str:
        name = str(self.settings["experiment"])
        if (found := client.get_experiment_by_name(name)) is not None:
            return found.experiment_id
        location = self.settings.get("artifact_location")
        if location and "://" not in str(location):
            location = Path(location).resolve().as_uri()
        try:
            return client.create_experiment(name, artifact_location=location)
        except Exception:  # made meanwhile by a job beside this one
            if (found := client.get_experiment_by_name(name)) is not None:
                return found.experiment_id
            raise

    def _sweep_run(self, client, experiment_id: str, sweep_dir: Path) -> str | None:
        """The parent run of a sweep dir, made by ``open_sweep``."""
        runs = client.search_runs(
            [experiment_id],
            filter_string=(
                f"tags.`driftbench.sweep_dir` = {_quote(str(sweep_dir))} "
                f"and tags.`driftbench.role` = {_quote(SWEEP_ROLE)}"
            ),
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def _log(self, client, run_id: str, params: dict, scalars: dict, series: dict) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in scalars.items()]
        metrics += [Metric(k, v, now, step) for k, points in series.items() for step, v in points]
        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            client.log_batch(run_id, params=items[i : i + 100])
        for i in range(0, len(metrics), BATCH):
            client.log_batch(run_id, metrics=metrics[i : i + BATCH])

    @_quiet()
    def log_run(self, run: RunRecord) -> None:
        client = self._client()
        experiment_id = self._experiment_id(client)
        tags = {f"driftbench.{k}": v for k, v in run.tags.items()}
        if commit := run.tags.get("git_commit"):
            tags["mlflow.source.git.commit"] = commit
        if run.sweep_dir and (parent := self._sweep_run(client, experiment_id, run.sweep_dir)):
            tags["mlflow.parentRunId"] = parent
        created = client.create_run(
            experiment_id, run_name=run.name, tags=tags, start_time=_ms(run.start_time)
        )
        run_id = created.info.run_id
        try:
            self._log(client, run_id, run.params, run.scalars, run.series)
            for path in run.files:
                client.log_artifact(run_id, str(path))
        except Exception:
            with contextlib.suppress(Exception):  # logged in part: not the run's own status
                client.set_terminated(run_id, "KILLED")
            raise
        status = "FINISHED" if run.completed else "FAILED"
        client.set_terminated(run_id, status, end_time=_ms(run.end_time))

    @_quiet()
    def open_sweep(self, sweep: SweepRecord) -> None:
        """The sweep's parent run, before any job (this also makes a new store and the
        experiment once, rather than in parallel jobs)."""
        client = self._client()
        experiment_id = self._experiment_id(client)
        tags = {"driftbench.role": SWEEP_ROLE, "driftbench.sweep_dir": str(sweep.dir)}
        client.create_run(experiment_id, run_name=sweep.name, tags=tags)

    @_quiet()
    def close_sweep(self, sweep: SweepRecord) -> None:
        client = self._client()
        experiment_id = self._experiment_id(client)
        run_id = self._sweep_run(client, experiment_id, sweep.dir)
        if run_id is None:  # its start was not logged (the store was down then)
            tags = {"driftbench.role": SWEEP_ROLE, "driftbench.sweep_dir": str(sweep.dir)}
            run_id = client.create_run(experiment_id, run_name=sweep.name, tags=tags).info.run_id
        for path in sweep.files:
            client.log_artifact(run_id, str(path))
        client.set_terminated(run_id, "FINISHED")
