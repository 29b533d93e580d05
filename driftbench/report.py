"""Sweep report: every run dir under the given paths -> one table (CSV + Markdown) and figures,
and report.html: the markdown and the figures in one self-contained page.

    python -m driftbench.report outputs/multirun/2026-11-22_20-00-00-ab12cd [more dirs ...]

One row per complete run: the config values that vary across the runs as columns, then the
headline metrics. Works on partial sweeps: running, failed or half-written runs are listed as
skipped, with the reason.

Runs are averaged only where they differ in ``seed`` or ``data.seed`` alone (``REPLICATES``): every
other config value that varies (model, data, drift, sigmas, classifier, condition, lambda_rho, ...)
keeps runs apart, as a column of a table or a line, facet or legend entry of a figure.
``group_runs`` forms those groups once, here; each task's summary (``tasks.SUMMARIES``:
``headline(run)``, ``tables(groups)``, ``figures(groups, out)``, beside the task) tabulates and
draws them, so a new task never edits this module.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback

from driftbench.fileio import atomic_write_csv, atomic_write_text, read_json
from driftbench.runs import effective_status, unverified, with_key_defaults
from driftbench.tasks import SUMMARIES, get_summary
from driftbench.webpage import RUN_PAGE, write_report_page

log = logging.getLogger(__name__)

NOT_AXES = ("runtime", "hydra")  # where and how a run executed: never an axis of the sweep
# draws of the same setting: the run seed (drift, fits) and the data seed (texts, split). Runs
# that differ in these alone are replicates, averaged with an interval, never axes.
REPLICATES = ("seed", "data.seed")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, list) else v
    return out


def _meta_files(path: Path) -> list[Path]:
    """meta.json of ``path`` itself and of every run below it, following the symlinks a resumed
    sweep uses for the jobs it reused."""
    found = [path / "meta.json"] if (path / "meta.json").exists() else []
    if path.is_dir():
        for child in sorted(path.iterdir()):
            if child.is_dir() and not child.name.startswith("."):
                found += _meta_files(child)
    return found


def collect(paths: list[Path]) -> tuple[list[dict], list[tuple[str, str]]]:
    """(complete runs, skipped (dir, reason)). A run is a dir holding meta.json."""
    runs, skipped = [], []
    dirs = sorted({m.parent.resolve() for p in paths for m in _meta_files(p)})
    for d in dirs:
        meta = read_json(d / "meta.json")
        if meta is None:
            skipped.append((str(d), "meta.json unreadable"))
            continue
        if (status := run_status(meta)) != "completed":
            error = f": {meta['error']}" if meta.get("error") else ""
            skipped.append((str(d), f"status {status}{error}"))
            continue
        if (why := unverified(d, meta, figures=False)) is not None:  # cut short, edited, gone
            skipped.append((str(d), why))
            continue
        metrics = read_json(d / "metrics.json")
        cfg = with_key_defaults(yaml.safe_load((d / "config.yaml").read_text()))
        runs.append({"dir": d, "meta": meta, "config": cfg, "metrics": metrics})
    return runs, skipped


def varying_keys(runs: list[dict]) -> list[str]:
    """Config leaves (runtime and hydra excluded) whose value differs between runs: the sweep's
    axes. A leaf that follows from a varying ``*.name`` (model.pooling from model.name) is left
    out: the name already tells the runs apart."""
    flat = [_flatten({k: v for k, v in r["config"].items() if k not in NOT_AXES}) for r in runs]
    keys = sorted({k for f in flat for k in f})
    axes = [k for k in keys if len({json.dumps(f.get(k)) for f in flat}) > 1]
    names = [k for k in axes if k.endswith(".name")]

    def determined(k: str) -> bool:  # e.g. model.pooling follows from model.name
        for n in names:
            seen: dict = {}
            if all(
                seen.setdefault(json.dumps(f.get(n)), json.dumps(f.get(k))) == json.dumps(f.get(k))
                for f in flat
            ):
                return True
        return False

    return [k for k in axes if k in names or not determined(k)]


def readable_names(keys: list[str]) -> dict[str, str]:
    """Short names for dotted config keys: ``model.name`` -> ``model``, ``schedule.sigmas`` ->
    ``sigmas``; the shortest dotted suffix that no other key shares."""
    bases = {k: k.removesuffix(".name") for k in keys}
    out = {}
    for k, base in bases.items():
        parts, others = base.split("."), [b for o, b in bases.items() if o != k]
        out[k] = base
        for n in range(1, len(parts) + 1):
            cand = ".".join(parts[-n:])
            if not any(b == cand or b.endswith("." + cand) for b in others):
                out[k] = cand
                break
    return out


def fmt_value(v) -> str:
    """A config value as a label shows it."""
    if isinstance(v, float):
        return f"{v:g}"
    return "none" if v is None else str(v)


def _skipped(key: str, skip: tuple[str, ...]) -> bool:
    return any(key == s or key.startswith(s + ".") for s in skip)


@dataclass
class RunGroup:
    """Runs of one task that differ in ``REPLICATES`` alone: the only runs the report averages.
    ``values``: the group's value of every config key that varies across the task's runs (the
    sweep's axes, dotted, replicate keys excluded); ``names``: their readable names. ``skip``
    arguments take keys or key prefixes (``"sft"`` skips every ``sft.*``)."""

    values: dict[str, Any]
    names: dict[str, str]
    runs: list[dict] = field(default_factory=list)

    def key(self, skip: tuple[str, ...] = ()) -> tuple:
        """The group's axis values, less ``skip``: equal keys mean runs alike but for those."""
        return tuple((k, v) for k, v in self.values.items() if not _skipped(k, skip))

    def columns(self, skip: tuple[str, ...] = ()) -> dict[str, str]:
        """Readable axis name -> formatted value, for a table row."""
        return {self.names[k]: fmt_value(v) for k, v in self.key(skip)}

    def label(self, skip: tuple[str, ...] = ()) -> str:
        """``model=minilm_l6, sigmas=[0.0, 0.1]``, for a legend; "all" where nothing varies."""
        return ", ".join(f"{n}={v}" for n, v in self.columns(skip).items()) or "all"

    @property
    def seeds(self) -> list:
        return [r["config"].get("seed") for r in self.runs]


def _natural(values) -> tuple:
    return tuple(
        (0, v, "") if isinstance(v, int | float) and not isinstance(v, bool) else (1, 0, str(v))
        for v in values
    )


def group_runs(runs: list[dict]) -> list[RunGroup]:
    """The runs (of one task) in groups that differ in ``REPLICATES`` alone, keyed by every other
    config value that varies across them; in the natural order of those values."""
    axes = [k for k in varying_keys(runs) if k not in REPLICATES]
    names = readable_names(axes)
    groups: dict[tuple, RunGroup] = {}
    for r in runs:
        flat = _flatten(r["config"])
        values = {a: flat.get(a) for a in axes}
        groups.setdefault(tuple(values.values()), RunGroup(values, names)).runs.append(r)
    return [groups[k] for k in sorted(groups, key=_natural)]


def run_status(meta: dict) -> str:
    """A run's status as it stands now (completed, failed, running, or died: a ``running`` run
    whose process is gone): the one place the report reads it."""
    return str(effective_status(meta))


def summary_of(task: str | None):
    """The task's summary module (driftbench/tasks/<task>_summary.py), None for a task without
    one: its runs get the config columns alone."""
    return get_summary(task) if task in SUMMARIES else None


def table(runs: list[dict], axes: list[str]) -> list[dict]:
    rows = []
    for r in runs:
        flat = _flatten(r["config"])
        task = r["meta"].get("task")
        row = {"run_dir": str(r["dir"]), "task": task}
        row.update({a: flat.get(a) for a in axes})
        if (summary := summary_of(task)) is not None:
            row.update(summary.headline(r))
        rows.append(row)
    return rows


def by_task(runs: list[dict]) -> dict[str, list[dict]]:
    """Runs per task name, in task-name order."""
    tasks: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        tasks[r["meta"].get("task")].append(r)
    return {t: tasks[t] for t in sorted(tasks, key=str)}


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return "" if v is None else str(v)


def markdown(rows: list[dict], skipped: list[tuple[str, str]]) -> str:
    if not rows:
        return "No complete runs.\n"
    cols = [c for c in dict.fromkeys(c for r in rows for c in r) if c != "run_dir"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    if skipped:
        lines += ["", f"Skipped {len(skipped)} run(s):", ""]
        lines += [f"- `{d}`: {why}" for d, why in skipped]
    return "\n".join(lines) + "\n"


def report(paths: list[Path], out: Path | None = None) -> dict:
    runs, skipped = collect(paths)
    out = out or (paths[0] if len(paths) == 1 and paths[0].is_dir() else Path("report"))
    out.mkdir(parents=True, exist_ok=True)
    axes = varying_keys(runs) if len(runs) > 1 else []
    rows = table(runs, axes)
    atomic_write_csv(out / "report.csv", rows) if rows else None
    md = markdown(rows, skipped)
    tables, figures = [], []
    for task, task_runs in by_task(runs).items():
        if (summary := summary_of(task)) is not None:
            groups = group_runs(task_runs)
            tables += summary.tables(groups)
            figures += summary.figures(groups, out)
    text = "\n".join([md, *(t for t in tables if t)])
    atomic_write_text(out / "report.md", text)
    page = write_page(out, text, figures)
    for d, why in skipped:
        log.warning("skipped %s: %s", d, why)
    return {
        "n_runs": len(runs),
        "skipped": skipped,
        "axes": axes,
        "out": str(out),
        "figures": figures,
        "page": page,
    }


def write_page(out: Path, text: str, figures: list[str]) -> str | None:
    """report.html beside report.md: that markdown and the figures, in one file. Not where
    ``out`` is a run dir (``python -m driftbench.report <run dir>``): the run's own page is
    there, one of the result files its meta.json records."""
    if (out / "meta.json").exists():
        log.info("%s is a run dir: its own %s is left as it is", out, RUN_PAGE)
        return None
    title = f"driftbench report: {out.resolve().name}"
    write_report_page(out / RUN_PAGE, title, text, [out / f for f in figures])
    return RUN_PAGE


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m driftbench.report", description=__doc__.splitlines()[0]
    )
    ap.add_argument("paths", nargs="+", type=Path, help="sweep dirs or run dirs")
    ap.add_argument(
        "--out", type=Path, default=None, help="where to write (default: the one sweep dir)"
    )
    args = ap.parse_args(argv)
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        ap.error(f"no such path: {', '.join(missing)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    res = report(args.paths, args.out)
    print(
        f"{res['n_runs']} runs, {len(res['skipped'])} skipped -> "
        f"{res['out']}/report.md, report.csv, "
        + ", ".join([*([res["page"]] if res["page"] else []), *res["figures"]])
    )


if __name__ == "__main__":
    main()


class SweepReport(Callback):
    """Hydra callback (see conf/config.yaml): at the end of a multirun, the report in the sweep
    dir, so a finished sweep already holds its table and figures. (The start of a multirun is
    ``driftbench.launcher.SweepPlan``'s.)"""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            res = report([sweep_dir], sweep_dir)
        except Exception as e:  # a report failure must not hide the sweep's own results
            log.error("sweep report failed (%s); run: python -m driftbench.report %s", e, sweep_dir)
            return
        log.info(
            "sweep report: %d runs, %d skipped -> %s/report.md, report.html",
            res["n_runs"],
            len(res["skipped"]),
            sweep_dir,
        )
