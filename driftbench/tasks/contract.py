"""The task contract: what ``driftbench/launcher.py`` uses of a task module (``task=<name>``,
resolved once by ``driftbench.tasks.get_task``). A task is a module, not a class: the launcher
reads its constants and calls its functions, and nothing else, so a new task is a package
``driftbench/tasks/<name>/`` whose ``task`` module has these six names (and a sweep summary
beside it, ``driftbench.tasks.SUMMARIES``).

``contract_violations`` checks a module against :class:`Task` for real: every name present,
each constant of its declared type, each function callable with the contract's parameter names
(a ``runtime_checkable`` Protocol checks only that the names exist)."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from types import ModuleType
from typing import Protocol, runtime_checkable

from omegaconf import DictConfig


@runtime_checkable
class Task(Protocol):
    """One task module, as the launcher uses it for one job."""

    CONFIG_GROUPS: tuple[str, ...]
    """The config groups the task reads. The launcher hands the task these groups alone (with
    ``seed`` and ``runtime``) and keys its result on them, so a change to a group the task
    ignores never reruns it, and the task cannot read one it did not declare."""

    RESULTS_VERSION: int
    """Part of the result key; bumped with any change to the code that alters a number the task
    writes, so a complete run made by older code is not reused."""

    FIGURES_IN_SWEEPS: bool
    """Whether a sweep's jobs draw the task's per-run figures when ``runtime.figures`` is null:
    false where drawing them is a large share of a job (a single run always draws them)."""

    def validate(self, cfg: DictConfig) -> None:
        """Every check that needs more than one field (the schema checks each field first),
        cheap and before anything heavy is loaded: a sweep checks every job with it before its
        first job starts, and a bad value raises ValueError naming it and what is accepted."""

    def inputs(self, cfg: DictConfig) -> dict:
        """Digests of what the run reads besides its config (data files, probe files, model
        weights): part of the result key, so a changed input reruns the job."""

    def run(self, cfg: DictConfig, run_dir: Path) -> dict:
        """Do the job: write its files into ``run_dir`` and return its metrics (written to
        ``metrics.json``; their ``summary`` is logged in one line)."""


CONSTANTS = {  # each constant of the contract, and what a task may set it to, in words
    "CONFIG_GROUPS": "a tuple of config group names",
    "RESULTS_VERSION": "an int",
    "FIGURES_IN_SWEEPS": "a bool",
}
FUNCTIONS = ("validate", "inputs", "run")


def _holds(value, hint) -> bool:
    """Whether ``value`` is of the type ``hint`` (the shapes :class:`Task` declares)."""
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typing.get_origin(hint) is tuple:
        (item, _) = typing.get_args(hint)
        return isinstance(value, tuple) and all(isinstance(v, item) for v in value)
    return isinstance(value, hint)


def parameters(fn) -> list[str]:
    """The names of ``fn``'s parameters, ``self`` left out (a Protocol's method)."""
    return [p for p in inspect.signature(fn).parameters if p != "self"]


def contract_violations(module: ModuleType) -> list[str]:
    """One line per way ``module`` breaks the task contract (:class:`Task`); [] when it keeps
    it."""
    hints = typing.get_type_hints(Task)
    name = getattr(module, "__name__", repr(module))
    out = []
    for const in CONSTANTS:
        if not hasattr(module, const):
            out.append(f"{name} has no {const}")
        elif not _holds(getattr(module, const), hints[const]):
            out.append(f"{name}.{const}={getattr(module, const)!r}; accepted: {CONSTANTS[const]}")
    for fn in FUNCTIONS:
        wanted = parameters(getattr(Task, fn))
        if not callable(getattr(module, fn, None)):
            out.append(f"{name} has no function {fn}({', '.join(wanted)})")
        elif parameters(getattr(module, fn)) != wanted:
            got = ", ".join(parameters(getattr(module, fn)))
            out.append(f"{name}.{fn}({got}); accepted: {fn}({', '.join(wanted)})")
    return out
