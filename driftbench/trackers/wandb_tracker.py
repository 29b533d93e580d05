"""Weights & Biases: one W&B run per run dir, offline by default (``logger.wandb.mode``): the
runs are written under ``<logger.wandb.dir>/wandb/offline-run-*`` and nothing leaves the
machine until ``wandb sync`` uploads them.

Per run: the resolved config as the W&B config; the series row by row at their step (the
figures as images at the last one); every scalar of ``metrics.json``, and the run's status,
config hash, result key, git commit, run dir and sweep dir (``run/...``), in the summary; the
task, status, config hash and git commit as tags; the run's files in ``driftbench/`` of the W&B
run's files; exit code 0 for a completed run, 1 for a failed one. A multirun is a W&B group
named after its sweep dir; the sweep report goes to one more run of the group, named ``report``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from driftbench.trackers.base import RunRecord, SweepRecord, Tracker

MODES = ("offline", "online")
FILES_SUBDIR = "driftbench"


class WandbTracker(Tracker):
    name = "wandb"
    extra = "wandb"
    module = "wandb"

    def __init__(self, settings: dict):
        super().__init__(settings)
        if settings.get("mode") not in MODES:
            raise ValueError(
                f"logger.wandb.mode={settings.get('mode')!r}; accepted: {', '.join(MODES)}"
            )

    def _init(self, **kwargs):
        import wandb

        folder = Path(self.settings["dir"])
        folder.mkdir(parents=True, exist_ok=True)
        return wandb.init(
            project=self.settings["project"],
            entity=self.settings.get("entity"),
            mode=self.settings["mode"],
            dir=str(folder),
            settings=wandb.Settings(
                console="off", silent=True, save_code=False, x_disable_stats=True
            ),
            **kwargs,
        )

    @staticmethod
    def _attach(wb_run, files: list[Path]) -> None:
        """Copies in ``driftbench/`` of the W&B run's files (what ``wandb sync`` uploads), apart
        from the files W&B writes there itself (its own ``config.yaml``)."""
        folder = Path(wb_run.dir) / FILES_SUBDIR
        folder.mkdir(parents=True, exist_ok=True)
        for path in files:
            shutil.copy2(path, folder / path.name)
            wb_run.save(str(folder / path.name), base_path=wb_run.dir, policy="now")

    def log_run(self, run: RunRecord) -> None:
        import wandb

        short = {"config_hash": 16, "git_commit": 12}
        tags = [run.tags.get("task", ""), run.status] + [
            f"{k}:{run.tags[k][:n]}" for k, n in short.items() if k in run.tags
        ]
        wb_run = self._init(
            name=run.name,
            group=run.sweep_dir.name if run.sweep_dir else None,
            job_type=run.tags.get("task"),
            config=run.config,
            tags=[t for t in tags if t],
        )
        try:
            rows = run.steps()
            last = max(rows, default=0)
            rows.setdefault(last, {}).update(
                {f"figures/{p.stem}": wandb.Image(str(p)) for p in run.figures}
            )
            for step, row in rows.items():
                if row:
                    wb_run.log(row, step=step)
            wb_run.summary.update(run.scalars)
            wb_run.summary.update({f"run/{k}": v for k, v in run.tags.items()})
            self._attach(wb_run, run.files)
        finally:
            wb_run.finish(exit_code=0 if run.completed else 1)

    def open_sweep(self, sweep: SweepRecord) -> None:
        """Nothing to set up: each job names its group after the sweep dir."""

    def close_sweep(self, sweep: SweepRecord) -> None:
        import wandb

        wb_run = self._init(name="report", group=sweep.name, job_type="sweep_report")
        try:
            images = {f"figures/{p.stem}": wandb.Image(str(p)) for p in sweep.figures}
            if images:
                wb_run.log(images, step=0)
            wb_run.summary.update({"run/sweep_dir": str(sweep.dir)})
            self._attach(wb_run, sweep.files)
        finally:
            wb_run.finish()
