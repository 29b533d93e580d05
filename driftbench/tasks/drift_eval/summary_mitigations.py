"""The sweep report's part on classifiers and mitigations (drift_eval runs): per group of runs that
differ in seed alone, ROC-AUC and silent-failure rate at every checkpoint, what the mitigation
changes against the frozen classifier on the same texts, and what it costs at checkpoint 0; a
figure with one panel per classifier. numpy and matplotlib only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from driftbench.checkpoints import knob_of
from driftbench.fileio import save_figure
from driftbench.intervals import bonferroni_level, difference_cell, tested
from driftbench.plots import pyplot

COMPARED = "classifier", "mitigation"  # config groups whose choices this part compares
METRICS = [  # (checkpoint key, title, cell format, unit of a change)
    ("roc_auc", "ROC-AUC", "{:.3f}", ""),
    ("silent_failure_rate_pct", "silent-failure rate (% of errors)", "{:.0f}", " pt"),
]


def _mitigation(run: dict) -> dict:
    return run["metrics"].get("mitigation") or {"name": "none"}


def applies(groups: list) -> bool:
    """Sweeps that compare classifiers or mitigations, or run a mitigation."""
    if not groups:
        return False
    axes = groups[0].values
    return any(k.split(".")[0] in COMPARED for k in axes) or any(
        _mitigation(r)["name"] != "none" for g in groups for r in g.runs
    )


def _mean(values: list) -> float:
    xs = np.array([np.nan if v is None else v for v in values], dtype=float)
    return float(np.nanmean(xs)) if np.isfinite(xs).any() else float("nan")


def per_checkpoint(group, key: str) -> np.ndarray:
    """The group's ``key`` at each checkpoint, mean over its seeds (runs of another length are
    left out)."""
    k = len(group.runs[0]["metrics"]["checkpoints"])
    runs = [r for r in group.runs if len(r["metrics"]["checkpoints"]) == k]
    return np.array([_mean([r["metrics"]["checkpoints"][c][key] for r in runs]) for c in range(k)])


def _changes(group, where: str, key: str) -> list[float]:
    """The mitigation's change against none (``change_at_max`` or ``cost_at_0``) in each of the
    group's runs, measured within the run on the same texts, so paired by replicate; runs made
    before mitigations were measured are left out."""
    values = [(_mitigation(r).get(where) or {}).get(key) for r in group.runs]
    return [v for v in values if v is not None]


CHANGES = ("change_at_max", "cost_at_0")


def _fmt(fmt: str, v: float) -> str:
    return fmt.format(v) if np.isfinite(v) else "–"


def _signed(fmt: str) -> str:
    return fmt.replace("{:", "{:+")


def tables(groups: list) -> list[str]:
    """One table per metric of METRICS: a row per group (every varying axis a column), the mean
    over seeds at each checkpoint (headed by sigma where every group shares the schedule), the
    change against no mitigation at the last checkpoint and at checkpoint 0 (its cost, where
    nothing has drifted), both on the same texts, and the labelled texts it read per checkpoint."""
    if not applies(groups):
        return []
    schedules = {
        (knob.symbol, tuple(values))
        for knob, values in (knob_of(g.runs[0]["metrics"]) for g in groups)
    }
    symbol, values = next(iter(schedules))
    k = max(len(g.runs[0]["metrics"]["checkpoints"]) for g in groups)
    heads = (
        [f"{symbol}={s:.3g}" for s in values]
        if len(schedules) == 1
        else [f"ckpt {c}" for c in range(k)]
    )
    at_max = f"{symbol} max" if len(schedules) == 1 else "the last checkpoint"
    axes = list(groups[0].columns())
    out = []
    for key, title, fmt, unit in METRICS:
        m = sum(tested(_changes(g, where, key)) for g in groups for where in CHANGES)
        corrected = bonferroni_level(m)
        cols = [
            *axes,
            "n",
            *heads,
            f"change vs none at {at_max}{unit and ' (' + unit.strip() + ')'}",
            "cost at checkpoint 0",
            "labels per checkpoint",
        ]
        lines = [
            f"**{title} per checkpoint, mean over the n runs (seeds × data seeds).** A "
            "mitigation that reads labelled texts is scored on the others; its change against "
            "none (the frozen classifier) is on the same texts, so paired by run: mean [95% "
            "t-interval over the runs]; † where that interval excludes 0, ‡ where it still "
            f"does at the Bonferroni level over the {m} changes and costs this table tests "
            f"({corrected:.5f}).",
            "",
            "| " + " | ".join(cols) + " |",
            "|" + "---|" * len(cols),
        ]
        for g in groups:
            values = list(per_checkpoint(g, key)) + [float("nan")] * k
            labels = {_mitigation(r).get("labels_per_checkpoint", 0) for r in g.runs}
            cells = [
                *g.columns().values(),
                str(len(g.runs)),
                *(_fmt(fmt, v) for v in values[: len(heads)]),
                *(
                    difference_cell(_changes(g, where, key), _signed(fmt), corrected)
                    for where in CHANGES
                ),
                ", ".join(str(n) for n in sorted(labels)),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        out.append("\n".join(lines) + "\n")
    return out


def _facet(groups: list, axis: str) -> tuple[str | None, list]:
    """``axis`` (e.g. ``classifier.name``) and its values where the sweep varies it, else
    (None, [None]): one row or column of panels per value."""
    if axis not in groups[0].values:
        return None, [None]
    return axis, list(dict.fromkeys(g.values.get(axis) for g in groups))


def figure(groups: list, out: Path) -> list[str]:
    """ROC-AUC and SFR against each drift's own knob: a column of panels per classifier, a pair
    of rows per drift (a σ schedule and an α ladder never share an axis), a line per mitigation
    (and any other varying axis) in one colour across every panel; none dashed black."""
    if not applies(groups):
        return []
    plt = pyplot()
    col_key, cols = _facet(groups, "classifier.name")
    row_key, drifts = _facet(groups, "drift.name")
    labels = list(dict.fromkeys(g.label(skip=("classifier", "drift")) for g in groups))
    n_rows = len(METRICS) * len(drifts)
    fig, axs = plt.subplots(
        n_rows, len(cols), figsize=(3.6 * len(cols), 2.8 * n_rows), squeeze=False, sharey="row"
    )
    for g in groups:
        col, block = cols.index(g.values.get(col_key)), drifts.index(g.values.get(row_key))
        knob, knobs = knob_of(g.runs[0]["metrics"])
        label = g.label(skip=("classifier", "drift"))
        frozen = g.values.get("mitigation.name", "none") == "none"
        style = (
            {"color": "black", "ls": "--"} if frozen else {"color": f"C{labels.index(label) % 10}"}
        )
        for m, (key, title, _, _) in enumerate(METRICS):
            ax = axs[block * len(METRICS) + m, col]
            ys = per_checkpoint(g, key)
            ax.plot(knobs[: len(ys)], ys, marker="o", ms=2.5, label=label, **style)
            where = ", ".join(str(v) for v in (g.values.get(col_key), g.values.get(row_key)) if v)
            ax.set_title(title + (f"\n{where}" if where else ""), fontsize=8)
            ax.set_xlabel(knob.symbol, fontsize=8)
            ax.tick_params(labelsize=7)
            if key == "roc_auc":
                ax.axhline(0.5, color="grey", ls=":", lw=0.8)
    handles, names = axs[0, 0].get_legend_handles_labels()
    fig.tight_layout()
    fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=7)
    save_figure(fig, out / "report_mitigations.png")
    plt.close(fig)
    return ["report_mitigations.png"]
