"""Task registry: ``task=<name>`` in the config picks the package ``driftbench/tasks/<name>/``
(its ``task`` module; ``conf/task/`` lists the same names). What the launcher uses of it is the
contract ``driftbench.tasks.contract.Task``: ``validate(cfg)`` (cheap, before any heavy work),
``run(cfg, run_dir) -> metrics``, ``inputs(cfg)``, ``CONFIG_GROUPS`` and ``RESULTS_VERSION``
(what its result key reads), and ``FIGURES_IN_SWEEPS``: whether a sweep's jobs draw the task's
per-run figures when ``runtime.figures`` is null (not where they are a large share of a job).
No task imports another's modules (tests/test_layout.py)."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from driftbench.tasks.contract import Task

TASKS = {
    "drift_eval": "driftbench.tasks.drift_eval.task",
    "rho_sft": "driftbench.tasks.rho_sft.task",
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"task={name!r}; accepted: {', '.join(TASKS)}")
    return import_module(TASKS[name])


# Each task's sweep summary, beside the task: ``headline(run)``, ``tables(...)``,
# ``figures(...)`` (see driftbench/report.py). No torch there: a report runs on run dirs alone.
SUMMARIES = {
    "drift_eval": "driftbench.tasks.drift_eval.summary",
    "rho_sft": "driftbench.tasks.rho_sft.summary",
}


def get_summary(name: str):
    if name not in SUMMARIES:
        raise ValueError(f"task={name!r} has no sweep summary; accepted: {', '.join(SUMMARIES)}")
    return import_module(SUMMARIES[name])
