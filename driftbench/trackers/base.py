"""What every tracker reads, and the one interface it implements.

A tracker mirrors a run dir, it never owns one: it is handed a run dir after the run has
completed or failed and reads what the run wrote there (``config.yaml``, ``meta.json``,
``metrics.json``, the CSV tables and the figures). ``read_run`` turns a run dir into one
``RunRecord`` that every tracker logs in its own way, so no tracker knows which task made it:

- parameters: ``config.yaml`` flattened (``model.name``); lists as JSON, null as ``null``;
- tags: task, status, config hash, result key, git commit, run dir, sweep dir;
- scalars: every number of ``metrics.json`` outside a list, keyed by its path
  (``summary/roc_auc_at_0``, ``behaviors/refusal/rho_after``);
- series: every CSV of the run dir that has a ``step`` or ``checkpoint`` column, each other
  numeric column at that step (``checkpoints/roc_auc`` at checkpoint k, ``loss_curve/sft_loss``
  at SFT step k); a row's text cells name its series (``monitors/drifted/ks_pca/alarm_rate``);
- files: every YAML, JSON, CSV, log and PNG file of the run dir (config, meta, metrics, audits,
  tables, figures; not a folder such as a LoRA adapter).
"""

from __future__ import annotations

import csv
import json
import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from driftbench.fileio import read_json

STEP_COLUMNS = ("step", "checkpoint")  # the first one a CSV has is its x axis
FILE_TYPES = (".yaml", ".json", ".csv", ".log", ".png", ".html")  # what a tracker attaches
REPORT_FILES = ("report.md", "report.csv", "report.html")


def metric_name(path: str) -> str:
    """A metric name every tracker accepts (MLflow's is the strictest)."""
    return re.sub(r"[^A-Za-z0-9_\-. /:]", "_", path)


def flat_params(cfg: dict, prefix: str = "") -> dict:
    """``{'model': {'name': 'x'}}`` -> ``{'model.name': 'x'}``; a list or null as its JSON text,
    so every value is a string, a number or a bool."""
    out: dict = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flat_params(v, key + "."))
        elif isinstance(v, (list, dict)) or v is None:
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def flat_scalars(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Every finite number of a nested dict that is not inside a list, keyed ``a/b/c``."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_scalars(v, key + "/"))
        elif (x := _number(v)) is not None:
            out[metric_name(key)] = x
    return out


def _cell(text: str) -> float | None:
    try:
        x = float(text)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def csv_series(path: Path) -> dict[str, list[tuple[int, float]]]:
    """``<stem>/<column>`` -> [(step, value)] for a CSV with a step column, else {}. A table in
    long form names each row by its text cells: ``monitors.csv`` (one row per monitor and
    checkpoint) gives ``monitors/drifted/ks_pca/alarm_rate``; a row without a step is left out."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    columns = list(rows[0]) if rows else []
    step_col = next((c for c in STEP_COLUMNS if c in columns), None)
    if step_col is None:
        return {}
    labels = [
        c
        for c in columns
        if c != step_col and any((r[c] or "") and _cell(r[c]) is None for r in rows)
    ]
    series: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        step = _cell(row[step_col] or "")
        if step is None:
            continue
        name = "/".join([path.stem, *(row[c] for c in labels if row[c])])
        for col in columns:
            if col not in labels and col != step_col and (x := _cell(row[col] or "")) is not None:
                series.setdefault(metric_name(f"{name}/{col}"), []).append((int(step), x))
    return series


@dataclass
class RunRecord:
    """One run dir as every tracker logs it (see the module docstring)."""

    dir: Path
    name: str
    status: str  # completed | failed
    error: str | None
    config: dict
    params: dict
    tags: dict[str, str]
    scalars: dict[str, float]
    series: dict[str, list[tuple[int, float]]]
    files: list[Path]
    figures: list[Path]
    sweep_dir: Path | None
    start_time: str | None
    end_time: str | None

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    def steps(self) -> dict[int, dict[str, float]]:
        """The series as rows: step -> {name: value}, in step order."""
        rows: dict[int, dict[str, float]] = {}
        for name, points in self.series.items():
            for step, value in points:
                rows.setdefault(step, {})[name] = value
        return dict(sorted(rows.items()))


def read_run(run_dir: Path) -> RunRecord:
    """Everything a tracker logs, read from a finished run dir."""
    run_dir = Path(run_dir)
    meta = read_json(run_dir / "meta.json") or {}
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    metrics = read_json(run_dir / "metrics.json") or {}
    metrics = {k: v for k, v in metrics.items() if k != "schema_version"}
    series: dict[str, list[tuple[int, float]]] = {}
    tables = sorted(run_dir.glob("*.csv"))
    for path in tables:
        series.update(csv_series(path))
    figures = sorted(run_dir.glob("*.png"))
    files = [p for p in sorted(run_dir.iterdir()) if p.is_file() and p.suffix in FILE_TYPES]
    status = str(meta.get("status") or "failed")
    sweep = meta.get("sweep_dir")
    tags = {
        "task": meta.get("task"),
        "status": status,
        "config_hash": meta.get("config_hash"),
        "result_key": meta.get("result_key"),
        "git_commit": meta.get("git_commit"),
        "run_dir": str(run_dir.resolve()),
        "sweep_dir": str(Path(sweep).resolve()) if sweep else None,
    }
    return RunRecord(
        dir=run_dir,
        name=run_dir.name,
        status=status,
        error=meta.get("error"),
        config=config,
        params=flat_params(config),
        tags={k: str(v) for k, v in tags.items() if v is not None},
        scalars=flat_scalars(metrics),
        series=series,
        files=files,
        figures=figures,
        sweep_dir=Path(sweep).resolve() if sweep else None,
        start_time=meta.get("start_time"),
        end_time=meta.get("end_time"),
    )


@dataclass
class SweepRecord:
    """A multirun's sweep dir: its name groups the runs; its report files are attached."""

    dir: Path
    name: str
    files: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


def read_sweep(sweep_dir: Path) -> SweepRecord:
    sweep_dir = Path(sweep_dir).resolve()
    figures = sorted(sweep_dir.glob("*.png"))
    files = [sweep_dir / f for f in REPORT_FILES if (sweep_dir / f).is_file()] + figures
    return SweepRecord(sweep_dir, sweep_dir.name, files, figures)


class Tracker(ABC):
    """One entry of ``driftbench.trackers.TRACKERS``; ``conf/logger/<name>.yaml`` holds its
    settings. ``extra``: the optional dependency that installs ``module``."""

    name: str
    extra: str
    module: str

    def __init__(self, settings: dict):
        self.settings = settings

    @abstractmethod
    def log_run(self, run: RunRecord) -> None:
        """Mirror one finished run (completed or failed)."""

    @abstractmethod
    def open_sweep(self, sweep: SweepRecord) -> None:
        """Before a multirun's first job (in the launching process): set up the group."""

    @abstractmethod
    def close_sweep(self, sweep: SweepRecord) -> None:
        """After a multirun's last job and its report: attach the report to the group."""
