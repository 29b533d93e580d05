"""How the sweep report summarises drift_eval runs: headline numbers per run, the failure-cliff
table and the drift curves. numpy and matplotlib only (no torch), so a report runs anywhere the
run dirs are."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from driftbench.runs import save_figure

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


def headline(run: dict) -> dict:
    """One run's numbers for report.csv and the report's table."""
    return {name: _get(run["metrics"], path) for name, path in DRIFT_HEADLINE}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, list) else v
    return out


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


def cliff_table(runs: list[dict]) -> str:
    """Failure-cliff sigma (first sigma with AUC < 0.55) per drift type and model, over seeds."""
    cells = defaultdict(list)
    for r in runs:
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


def tables(runs: list[dict], axes: list[str]) -> list[str]:
    return [cliff_table(runs)]


def figures(runs: list[dict], axes: list[str], out: Path) -> list[str]:
    return drift_figures(runs, axes, out)
