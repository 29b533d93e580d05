"""Sweep report: every run dir under the given paths -> one table (CSV + Markdown) and figures.

    python -m driftbench.report outputs/multirun/2026-11-22_20-00-00-ab12cd [more dirs ...]

One row per complete run: the config values that vary across the runs as columns, then the
headline metrics. Works on partial sweeps: running, failed or half-written runs are listed as
skipped, with the reason. Curves are averaged over seeds (mean +- std band).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback

from driftbench.runs import atomic_write_csv, atomic_write_text, read_json
from driftbench.tasks import SUMMARIES, get_summary

log = logging.getLogger(__name__)


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
        if (status := run_status(d, meta)) != "completed":
            skipped.append((str(d), f"status {status}: {meta.get('error') or ''}".strip()))
            continue
        metrics = read_json(d / "metrics.json")
        if metrics is None:
            skipped.append((str(d), "metrics.json missing or unreadable"))
            continue
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        runs.append({"dir": d, "meta": meta, "config": cfg, "metrics": metrics})
    return runs, skipped


def varying_keys(runs: list[dict]) -> list[str]:
    """Config leaves (runtime excluded) whose value differs between runs: the sweep's axes."""
    flat = [_flatten({k: v for k, v in r["config"].items() if k != "runtime"}) for r in runs]
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


def run_status(run_dir: Path, meta: dict) -> str:
    """A run's status (completed, failed, running, ...): the one place the report reads it."""
    return str(meta.get("status"))


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
            tables += summary.tables(task_runs, axes)
            figures += summary.figures(task_runs, axes, out)
    atomic_write_text(out / "report.md", "\n".join([md, *(t for t in tables if t)]))
    for d, why in skipped:
        log.warning("skipped %s: %s", d, why)
    return {
        "n_runs": len(runs),
        "skipped": skipped,
        "axes": axes,
        "out": str(out),
        "figures": figures,
    }


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
        f"{res['out']}/report.md, report.csv, " + ", ".join(res["figures"])
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
            "sweep report: %d runs, %d skipped -> %s/report.md",
            res["n_runs"],
            len(res["skipped"]),
            sweep_dir,
        )
