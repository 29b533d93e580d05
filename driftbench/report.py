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

import numpy as np
import yaml
from hydra.experimental.callback import Callback

from driftbench.runs import atomic_write_csv, atomic_write_text, read_json, save_figure

log = logging.getLogger(__name__)

DRIFT_HEADLINE = [
    ("roc_auc_at_0", "summary.roc_auc_at_0"),
    ("roc_auc_at_max", "summary.roc_auc_at_max"),
    ("roc_auc_drop", "summary.roc_auc_drop"),
    ("sigma_max", "summary.sigma_max"),
    ("angle_deg_at_max", "summary.realized_angle_deg_at_max"),
    ("mean_conf_at_max", "summary.mean_confidence_at_max"),
    ("sfr_pct_at_max", "summary.silent_failure_rate_pct_at_max"),
    ("ece_at_max", "summary.ece_at_max"),
    ("failure_cliff_sigma", "summary.failure_cliff_sigma"),
    ("C", "classifier.c"),
    ("degenerate_dims", "classifier.degenerate_dims.count"),
    ("silhouette", "separability.silhouette"),
    ("fisher_ratio", "separability.fisher_ratio"),
    ("fisher_per_dim", "separability.fisher_ratio_per_dim"),
]


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


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
        if meta.get("status") != "completed":
            skipped.append(
                (str(d), f"status {meta.get('status')}: {meta.get('error') or ''}".strip())
            )
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


def table(runs: list[dict], axes: list[str]) -> list[dict]:
    rows = []
    for r in runs:
        flat = _flatten(r["config"])
        row = {"run_dir": str(r["dir"]), "task": r["meta"].get("task")}
        row.update({a: flat.get(a) for a in axes})
        if r["meta"].get("task") == "drift_eval":
            row.update({name: _get(r["metrics"], path) for name, path in DRIFT_HEADLINE})
        elif r["meta"].get("task") == "rho_sft":
            m = r["metrics"]
            row.update(
                condition=m["condition"], lambda_rho=m["lambda_rho"], margin_gamma=m["margin_gamma"]
            )
            for b, d in m["behaviors"].items():
                row[f"delta_rho_{b}"] = d["delta_rho"]
                if (gap := rho_measure(d, "delta_mean_ce_gap")) is not None:
                    row[f"delta_gap_{b}"] = gap
            row.update(
                final_sft_loss=m["training"]["final_sft_loss"],
                final_contrastive_loss=m["training"]["final_contrastive_loss"],
            )
        rows.append(row)
    return rows


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return "" if v is None else str(v)


def markdown(rows: list[dict], skipped: list[tuple[str, str]]) -> str:
    if not rows:
        return "No complete runs.\n"
    cols = [c for c in rows[0] if c != "run_dir"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    if skipped:
        lines += ["", f"Skipped {len(skipped)} run(s):", ""]
        lines += [f"- `{d}`: {why}" for d, why in skipped]
    return "\n".join(lines) + "\n"


def _group(runs: list[dict], axes: list[str], drop: tuple[str, ...]) -> dict[tuple, list[dict]]:
    keys = [a for a in axes if a not in drop]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        flat = _flatten(r["config"])
        groups[tuple((k, flat.get(k)) for k in keys)].append(r)
    return groups


def _label(key: tuple) -> str:
    return (
        ", ".join(f"{k.split('.')[0] if k.endswith('.name') else k}={v}" for k, v in key) or "all"
    )


def drift_figures(runs: list[dict], axes: list[str], out: Path) -> list[str]:
    """AUC, SFR, ECE and mean confidence vs sigma: one line per group of runs that differ only
    in seed (mean +- std band); one row of panels per facet (classifier.degenerate_dims, if it
    varies)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in runs if r["meta"].get("task") == "drift_eval"]
    if not runs:
        return []
    facet = "classifier.degenerate_dims" if "classifier.degenerate_dims" in axes else None
    facet_values = sorted({_flatten(r["config"]).get(facet) for r in runs}) if facet else [None]
    panels = [
        ("roc_auc", "ROC-AUC"),
        ("silent_failure_rate_pct", "silent-failure rate (%)"),
        ("ece", "ECE"),
        ("mean_confidence", "mean confidence"),
    ]
    fig, axs = plt.subplots(
        len(facet_values),
        len(panels),
        figsize=(4.2 * len(panels), 3.4 * len(facet_values)),
        squeeze=False,
    )
    for row, fv in enumerate(facet_values):
        sub = [r for r in runs if not facet or _flatten(r["config"]).get(facet) == fv]
        groups = _group(sub, axes, drop=("seed", "schedule.sigmas") + ((facet,) if facet else ()))
        for i, (key, members) in enumerate(sorted(groups.items(), key=lambda kv: str(kv[0]))):
            sig = np.array(members[0]["metrics"]["sigmas"])
            for col, (metric, title) in enumerate(panels):
                ys = np.array(
                    [
                        [
                            np.nan if c[metric] is None else c[metric]
                            for c in m["metrics"]["checkpoints"]
                        ]
                        for m in members
                        if len(m["metrics"]["checkpoints"]) == len(sig)
                    ],
                    dtype=float,
                )
                mean, std = np.nanmean(ys, 0), np.nanstd(ys, 0)
                ax = axs[row, col]
                ax.plot(
                    sig, mean, "o-", ms=3, color=f"C{i % 10}", label=f"{_label(key)} (n={len(ys)})"
                )
                if len(ys) > 1:
                    ax.fill_between(sig, mean - std, mean + std, color=f"C{i % 10}", alpha=0.2)
                ax.set_title(
                    title + (f"  [{facet.split('.')[-1]}={fv}]" if facet else ""), fontsize=9
                )
                ax.set_xlabel("σ")
        axs[row, 0].axhline(0.5, color="grey", ls=":", lw=0.8)
    axs[0, 0].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    save_figure(fig, out / "report_drift_curves.png")
    plt.close(fig)
    written = ["report_drift_curves.png"]

    by_model = defaultdict(list)
    for r in runs:
        key = (r["metrics"]["model"]["name"], r["metrics"]["model"].get("variant"))
        by_model[key].append(r["metrics"]["separability"])
    if by_model:
        names = ["silhouette", "fisher_ratio_per_dim", "class_overlap"]
        fig, axs = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2))
        labels = [f"{m}\n({v})" for m, v in by_model]
        for ax, name in zip(axs, names, strict=True):
            vals = [np.mean([s[name] for s in seps]) for seps in by_model.values()]
            ax.bar(labels, vals, color=["C0" if v == "base" else "C3" for _, v in by_model])
            ax.set_title(name, fontsize=9)
            ax.tick_params(axis="x", labelsize=7)
        fig.suptitle("separability on training embeddings (base blue, instruct red)", fontsize=9)
        fig.tight_layout()
        save_figure(fig, out / "report_separability.png")
        plt.close(fig)
        written.append("report_separability.png")
    return written


def _rho_runs(runs: list[dict]) -> list[dict]:
    return [r for r in runs if r["meta"].get("task") == "rho_sft"]


# What a rho_sft sweep is summarised by: rho-eval's audit rho, and the confidence gap that
# rho-eval's own SFT experiments report by default (experiments/rho_guided_sft_mlx.py:
# mlx_quick_rho = mean log-prob of the positive minus the negative text over a behaviour's
# contrast pairs; its "--full-audit" switches to the audit). The seed's tables are in the gap's
# units (e.g. a toxicity delta of +1.061, beyond any AUC's range), so the report gives both.
RHO_MEASURES = {
    "delta_rho": ("Δρ", "rho-eval's audit rho, after − before"),
    "delta_mean_ce_gap": (
        "Δgap",
        "confidence gap (mean log-prob positive − negative over contrast pairs, rho-eval's "
        "mlx_quick_rho, the unit of the seed's tables), after − before",
    ),
}
_RHO_FIGURE_PREFIX = {"delta_rho": "report_rho", "delta_mean_ce_gap": "report_gap"}


def rho_measure(behavior: dict, measure: str) -> float | None:
    """One behaviour's change in ``measure``; None where the run has no such number (the gap
    exists only for behaviours with contrast pairs). Metrics written before the gap's delta was
    stored give it from their before/after gaps."""
    if measure == "delta_mean_ce_gap" and measure not in behavior:
        before, after = behavior.get("mean_ce_gap_before"), behavior.get("mean_ce_gap_after")
        return None if before is None or after is None else after - before
    return behavior.get(measure)


def _rho_key(m: dict) -> tuple:
    """A run's condition group: (condition, lambda_rho, margin_gamma); seeds are its members."""
    return m["condition"], m["lambda_rho"], m["margin_gamma"]


def _values(ms: list[dict], b: str, measure: str) -> np.ndarray:
    v = [rho_measure(m["behaviors"][b], measure) for m in ms if b in m["behaviors"]]
    return np.array([x for x in v if x is not None], dtype=float)


def _measured_behaviors(runs: list[dict], measure: str) -> list[str]:
    return sorted(
        {
            b
            for r in runs
            for b, d in r["metrics"]["behaviors"].items()
            if rho_measure(d, measure) is not None
        }
    )


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    """Mean difference over the pooled standard deviation (NaN with fewer than 2 per group)."""
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    pooled = np.sqrt(
        ((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2)
    )
    return float((a.mean() - b.mean()) / pooled) if pooled > 0 else float("nan")


def rho_tables(runs: list[dict], measure: str = "delta_rho") -> str:
    """The seed's tables for one of RHO_MEASURES: its change per behaviour per condition (mean
    +- std over seeds), and each condition against sft_only: Cohen's d and Welch's t-test
    p-value (scipy)."""
    from scipy.stats import ttest_ind

    symbol, definition = RHO_MEASURES[measure]
    runs = _rho_runs(runs)
    behaviors = _measured_behaviors(runs, measure)
    if not behaviors:
        return ""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        m = r["metrics"]
        groups[_rho_key(m)].append(m)
    head = "| condition | λρ | γ | n | " + " | ".join(f"{symbol} {b}" for b in behaviors) + " |"
    lines = [
        f"### {symbol} per condition (mean ± std over seeds)",
        "",
        f"{symbol}: {definition}.",
        "",
        head,
        "|" + "---|" * (4 + len(behaviors)),
    ]
    for (cond, lam, gam), ms in sorted(groups.items(), key=lambda kv: str(kv[0])):
        cells = []
        for b in behaviors:
            v = _values(ms, b, measure)
            cells.append(
                f"{v.mean():+.4f} ± {v.std(ddof=1) if len(v) > 1 else 0:.4f}" if len(v) else "–"
            )
        lines.append(f"| {cond} | {lam:g} | {gam:g} | {len(ms)} | " + " | ".join(cells) + " |")
    ref = [k for k in groups if k[0] == "sft_only"]
    if ref:
        lines += [
            "",
            f"### {symbol} against sft_only (Cohen's d, Welch t-test p)",
            "",
            "| condition | λρ | γ | " + " | ".join(behaviors) + " |",
            "|" + "---|" * (3 + len(behaviors)),
        ]
        base = groups[ref[0]]
        for key, ms in sorted(groups.items(), key=lambda kv: str(kv[0])):
            if key == ref[0]:
                continue
            cells = []
            for b in behaviors:
                a, c = _values(ms, b, measure), _values(base, b, measure)
                p = (
                    ttest_ind(a, c, equal_var=False).pvalue
                    if len(a) > 1 and len(c) > 1
                    else float("nan")
                )
                cells.append(f"d={cohens_d(a, c):.2f}, p={p:.3g}")
            lines.append(f"| {key[0]} | {key[1]:g} | {key[2]:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rho_figures(runs: list[dict], out: Path) -> list[str]:
    """Each of RHO_MEASURES per behaviour against lambda_rho (dose-response, with the fitted
    slope) and against gamma (margin sweep): mean +- std over seeds, where those axes vary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = _rho_runs(runs)
    written = []
    for measure, (symbol, _) in RHO_MEASURES.items():
        behaviors = _measured_behaviors(runs, measure)
        for axis, suffix, label in (
            ("lambda_rho", "dose_response", "λρ"),
            ("margin_gamma", "margin", "margin γ"),
        ):
            xs = sorted({r["metrics"][axis] for r in runs})
            if len(xs) < 2 or not behaviors:
                continue
            fig, ax = plt.subplots(figsize=(6, 4))
            for i, b in enumerate(behaviors):
                per_x = [
                    _values([r["metrics"] for r in runs if r["metrics"][axis] == x], b, measure)
                    for x in xs
                ]
                keep = [(x, v) for x, v in zip(xs, per_x, strict=True) if len(v)]
                if not keep:
                    continue
                kx = [x for x, _ in keep]
                mean = np.array([v.mean() for _, v in keep])
                std = np.array([v.std() for _, v in keep])
                allx = np.concatenate([[x] * len(v) for x, v in keep])
                ally = np.concatenate([v for _, v in keep])
                slope = np.polyfit(allx, ally, 1)[0] if len(kx) > 1 else float("nan")
                ax.plot(kx, mean, "o-", color=f"C{i}", label=f"{b} (slope {slope:+.3g})")
                ax.fill_between(kx, mean - std, mean + std, color=f"C{i}", alpha=0.2)
            ax.axhline(0, color="grey", lw=0.8, ls=":")
            ax.set_xlabel(label)
            ax.set_ylabel(f"{symbol} (after − before)")
            ax.legend(fontsize=7)
            fname = f"{_RHO_FIGURE_PREFIX[measure]}_{suffix}.png"
            save_figure(fig, out / fname)
            plt.close(fig)
            written.append(fname)
    return written


def _refused(rates: dict) -> tuple[int, int]:
    """(refused, asked) of one side of a stress test; older metrics store only the rate."""
    n = int(rates["n"])
    k = rates.get("n_refused")
    return (int(k) if k is not None else round(rates["refusal_rate"] * n)), n


def stress_tables(runs: list[dict]) -> str:
    """The seed's safety stress-test tables: refusals on the harmful (jailbreak) prompts and on
    the benign controls, before training (the untouched model, shared by every run) and after
    it per condition, counts summed over seeds; then the harmful prompts per category."""
    runs = [r for r in _rho_runs(runs) if (r["metrics"].get("stress_test") or {}).get("after")]
    if not runs:
        return ""
    columns: dict[str, list[dict]] = {
        "before training": [runs[0]["metrics"]["stress_test"]["before"]]
    }
    for r in sorted(runs, key=lambda r: str(_rho_key(r["metrics"]))):
        cond, lam, gam = _rho_key(r["metrics"])
        columns.setdefault(f"{cond} (λρ {lam:g}, γ {gam:g})", []).append(
            r["metrics"]["stress_test"]["after"]
        )

    def cell(parts: list[dict], pct: bool) -> str:
        k = sum(_refused(p)[0] for p in parts)
        n = sum(_refused(p)[1] for p in parts)
        if n == 0:
            return "–"
        return f"{k / n:.0%} ({k}/{n})" if pct else f"{k}/{n}"

    lines = [
        "### Safety stress test: refusals (summed over seeds)",
        "",
        "| model | runs | harmful refused (want high) | benign refused (want low) |",
        "|---|---|---|---|",
    ]
    for name, tests in columns.items():
        lines.append(
            f"| {name} | {len(tests)} | {cell([t['harmful'] for t in tests], True)} | "
            f"{cell([t['benign'] for t in tests], True)} |"
        )
    cats = sorted(
        {c for tests in columns.values() for t in tests for c in t["harmful"]["by_category"]}
    )
    lines += [
        "",
        "### Harmful prompts refused, per category",
        "",
        "| category | " + " | ".join(columns) + " |",
        "|" + "---|" * (1 + len(columns)),
    ]
    for c in cats:
        cells = [
            cell(
                [t["harmful"]["by_category"][c] for t in tests if c in t["harmful"]["by_category"]],
                False,
            )
            for tests in columns.values()
        ]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cliff_table(runs: list[dict]) -> str:
    """Failure-cliff sigma (first sigma with AUC < 0.55) per drift type and model, over seeds."""
    cells = defaultdict(list)
    for r in runs:
        if r["meta"].get("task") != "drift_eval":
            continue
        cfg = r["config"]
        key = (cfg["model"]["name"], cfg["drift"]["name"], cfg["classifier"].get("degenerate_dims"))
        cells[key].append(r["metrics"]["summary"]["failure_cliff_sigma"])
    if not cells:
        return ""
    lines = [
        "| model | drift | degenerate_dims | failure-cliff σ (AUC < 0.55), per seed |",
        "|---|---|---|---|",
    ]
    for (model, drift, dd), vals in sorted(cells.items()):
        shown = ", ".join("none" if v is None else f"{v:.3g}" for v in vals)
        lines.append(f"| {model} | {drift} | {dd} | {shown} |")
    return "\n".join(lines) + "\n"


def report(paths: list[Path], out: Path | None = None) -> dict:
    runs, skipped = collect(paths)
    out = out or (paths[0] if len(paths) == 1 and paths[0].is_dir() else Path("report"))
    out.mkdir(parents=True, exist_ok=True)
    axes = varying_keys(runs) if len(runs) > 1 else []
    rows = table(runs, axes)
    atomic_write_csv(out / "report.csv", rows) if rows else None
    md = markdown(rows, skipped)
    tables = (cliff_table(runs), *(rho_tables(runs, m) for m in RHO_MEASURES), stress_tables(runs))
    extra = [t for t in tables if t]
    atomic_write_text(out / "report.md", "\n".join([md, *extra]))
    figures = drift_figures(runs, axes, out) + rho_figures(runs, out)
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


def resume_counts(config) -> tuple[int, int]:
    """(jobs of this multirun whose identical config is complete under the output root, the rest),
    composing each job's config as Hydra's basic sweeper will."""
    from hydra import compose
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from driftbench.runs import config_hash, find_complete_runs

    params = config.hydra.sweeper.get("params") or {}
    args = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(args)
    jobs = [j for batch in BasicSweeper.split_arguments(parsed, None) for j in batch]
    root = Path(str(config.runtime.output_root))
    done = 0
    for overrides in jobs:
        cfg = compose(config.hydra.job.config_name, overrides=list(overrides))
        if not cfg.runtime.force and find_complete_runs(
            root, config_hash(OmegaConf.to_container(cfg, resolve=True))
        ):
            done += 1
    return done, len(jobs) - done


class SweepReport(Callback):
    """Hydra callback (see conf/config.yaml). At the start of a multirun: how many of its jobs
    are already complete (resume). At the end: the report in the sweep dir, so a finished sweep
    already holds its table and figures."""

    def on_multirun_start(self, config, **kwargs) -> None:
        try:
            done, todo = resume_counts(config)
        except Exception as e:  # counting is advice; the jobs themselves decide
            log.warning("could not count completed jobs (%s)", e)
            return
        force = " (runtime.force=true: all rerun)" if config.runtime.force else ""
        log.info("resume: %d done, %d to run%s", done, todo, force)

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
