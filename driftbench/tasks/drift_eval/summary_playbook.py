"""The upgrade playbook's part of a report (drift_eval runs with ``task.playbook.enabled``;
tasks/drift_eval/playbook.py, docs/playbook.md). Per update (a group of runs that differ in
seed or data seed alone, ``report.REPLICATES``): a table of every option with its cost, its
ROC-AUC, ECE and silent-failure rate, their recovery of what re-embedding achieves
(``metrics.recovery``) and the AUC gap to the original, each a mean with its 95% t-interval over
the runs (``intervals.replicate_interval``); and a figure: recovery against the paired texts N
(a line per adapter) and against the labels m (recalibrate, retrain), with re-embedding (1),
the frozen classifier (0) and the original as lines. A run draws the same figure from its own
numbers (``playbook.png``). numpy and matplotlib."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from driftbench.fileio import figures_on, save_figure
from driftbench.intervals import interval_cell, replicate_interval
from driftbench.plots import pyplot

METRICS = ("roc_auc", "ece", "silent_failure_rate_pct")
LABELS = {"roc_auc": "ROC-AUC", "ece": "ECE", "silent_failure_rate_pct": "SFR (%)"}
FORMATS = {"roc_auc": "{:.3f}", "ece": "{:.3f}", "silent_failure_rate_pct": "{:.1f}"}
COSTS = ("new_texts", "passes", "embed_s", "fit_s", "labels")
NUMBERS = (
    *METRICS,
    *(f"recovery_{k}" for k in METRICS),
    *(f"gap_{k}" for k in METRICS),
    *COSTS,
)
LABEL_OPTIONS = ("recalibrate", "retrain")


def summarise(runs_rows: list[list[dict]]) -> list[dict]:
    """Each option of the runs (``runs_rows``: one list of ``playbook.csv`` rows per run, an
    option matched on its name, kind and N or m), every number of ``NUMBERS`` as (mean, low,
    high) over the runs (no interval from one run), and ``runs``: how many had it."""
    by_key: dict[tuple, list[dict]] = {}
    for rows in runs_rows:
        for row in rows:
            by_key.setdefault((row["option"], row["kind"], row["n"]), []).append(row)
    return [
        {
            "option": option,
            "kind": kind,
            "n": n,
            "runs": len(rows),
            **{name: replicate_interval([r.get(name) for r in rows]) for name in NUMBERS},
        }
        for (option, kind, n), rows in by_key.items()
    ]


def curves(entries: list[dict]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(option, kind) of each line: the adapters' (against N), the label options' (against m)."""
    adapters = list(
        dict.fromkeys(("adapter", e["kind"]) for e in entries if e["option"] == "adapter")
    )
    labelled = list(
        dict.fromkeys((e["option"], "") for e in entries if e["option"] in LABEL_OPTIONS)
    )
    return adapters, labelled


def reference(entries: list[dict], option: str) -> dict:
    return next(e for e in entries if e["option"] == option)


def readable_ticks(ticks: set[int]) -> list[int]:
    """The N or m worth a tick label on a log axis: the largest (all) and each one far enough
    below the next kept for its label not to overlap (N = 1000 beside all = 1050 is not)."""
    kept: list[int] = []
    for t in sorted(ticks, reverse=True):
        if not kept or np.log10(kept[-1] / t) >= 0.12:
            kept.append(t)
    return sorted(kept)


def draw(ax, entries: list[dict], lines: list[tuple[str, str]], key: str) -> None:
    """One panel: each line's recovery of ``key`` against its N or m (its interval as a band),
    re-embedding at 1, the frozen classifier at 0 and the original's recovery as references."""
    rec, ticks, means = f"recovery_{key}", set(), [0.0, 1.0]
    for i, (option, kind) in enumerate(lines):
        pts = sorted(
            (e for e in entries if e["option"] == option and e["kind"] == kind),
            key=lambda e: e["n"],
        )
        x = [e["n"] for e in pts]
        ticks.update(x)
        mean, low, high = (np.array([e[rec][j] for e in pts], dtype=float) for j in range(3))
        ax.plot(x, mean, "o-", ms=3, color=f"C{i}", label=kind or option)
        means += list(mean)
        if np.isfinite(low).any():
            ax.fill_between(x, low, high, color=f"C{i}", alpha=0.15)
    ax.axhline(1.0, color="k", lw=1.2, label="re-embed + retrain")
    ax.axhline(0.0, color="grey", ls=":", lw=1, label="frozen")
    original = reference(entries, "original")[rec][0]
    if np.isfinite(original):
        ax.axhline(original, color="k", ls="--", lw=1, label="original")
        means.append(original)
    # the means and references in view; a band wider than that runs off the panel (the table
    # has its bounds), where it would otherwise flatten every line
    lo, hi = np.nanmin(means), np.nanmax(means)
    ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo))
    ax.set_xscale("log")
    shown = readable_ticks(ticks)
    ax.set_xticks(shown, [str(t) for t in shown])
    ax.minorticks_off()
    ax.grid(alpha=0.3)


def build_playbook_figure(entries: list[dict], title: str):
    """``summarise``'s entries as a Figure: a row per metric, recovery against N (adapters) on
    the left, against m (label options) on the right."""
    plt = pyplot()
    adapters, labelled = curves(entries)
    fig, axes = plt.subplots(len(METRICS), 2, figsize=(10, 2.9 * len(METRICS)), squeeze=False)
    for row, key in enumerate(METRICS):
        for col, (lines, x_label) in enumerate(
            ((adapters, "paired texts N"), (labelled, "fresh labels m"))
        ):
            ax = axes[row][col]
            draw(ax, entries, lines, key)
            ax.set_ylabel(f"{LABELS[key]} recovery")
            ax.set_xlabel(x_label)
    axes[0][0].legend(fontsize=7)
    axes[0][1].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def playbook_figure(path: Path, runs_rows: list[list[dict]], title: str) -> list[str]:
    """The playbook figure of one run or of a group's runs (their mean and interval), saved."""
    if not figures_on():
        return []
    fig = build_playbook_figure(summarise(runs_rows), title)
    save_figure(fig, path)
    pyplot().close(fig)
    return [path.name]


def other_axes(g) -> str:
    """The group's axes besides the update, which ``update`` names (drift.*, and the sft
    settings a trained LoRA update reads)."""
    label = g.label(skip=("drift", "sft"))
    return "" if label == "all" else f"{label}, "


def run_count(g) -> str:
    return f"{len(g.runs)} run{'' if len(g.runs) == 1 else 's'}"


def playbook_groups(groups: list) -> list:
    return [g for g in groups if g.runs and all("playbook" in r["metrics"] for r in g.runs)]


def cost_cells(e: dict) -> list[str]:
    """Texts M_c embeds (share of a re-embedding pass), seconds (embedding + fits), labels."""
    if e["option"] == "original":
        return ["–", "–", "–"]
    texts, share, embed_s, fit_s = (e[k][0] for k in ("new_texts", "passes", "embed_s", "fit_s"))
    embed = f"{embed_s:.1f}" if np.isfinite(embed_s) else "?"  # a rate never measured
    return [f"{texts:.0f} ({share:.2f})", f"{embed} + {fit_s:.1f}", f"{e['labels'][0]:.0f}"]


def row_cells(e: dict) -> list[str]:
    name = e["kind"] if e["option"] == "adapter" else e["option"]
    n = "" if e["n"] is None else str(e["n"])
    cells = [name, n, *cost_cells(e)]
    for k in METRICS:
        cells += [interval_cell(e[k], FORMATS[k]), interval_cell(e[f"recovery_{k}"], "{:.2f}")]
    return [*cells, interval_cell(e["gap_roc_auc"], "{:+.3f}")]


def gains(g) -> str:
    """What re-embedding changes against the frozen classifier, per metric (the recovery's
    denominator: where it is near 0, recovery is a ratio of noise)."""
    parts = []
    for k in METRICS:
        per_run = []
        for r in g.runs:
            ref = {o["option"]: o for o in r["metrics"]["playbook"]["options"]}
            a, b = ref["reembed_retrain"].get(k), ref["frozen"].get(k)
            per_run.append(None if a is None or b is None else a - b)
        parts.append(f"{LABELS[k]} {interval_cell(replicate_interval(per_run), '{:+.3f}')}")
    return ", ".join(parts)


def table(g) -> str:
    """One update's playbook: a row per option, mean [95% interval] over the group's runs."""
    first = g.runs[0]["metrics"]["playbook"]
    entries = summarise([r["metrics"]["playbook"]["options"] for r in g.runs])
    cols = ["option", "N or m", "new-model texts (passes)", "seconds (embed + fit)", "labels"]
    for k in METRICS:
        cols += [LABELS[k], "recovery"]
    cols.append("AUC − original")
    head = (
        f"**Upgrade playbook: {first['update']}** ({other_axes(g)}{run_count(g)}, "
        f"{first['n_train']} training texts). Mean [95% t-interval over the runs]; recovery = "
        "(option − frozen) / (re-embedded − frozen), not clipped; re-embedding changes "
        f"{gains(g)} against the frozen classifier."
    )
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(row_cells(e)) + " |" for e in entries]
    return "\n".join(lines) + "\n"


def tables(groups: list) -> list[str]:
    return [table(g) for g in playbook_groups(groups)]


def figure_name(update: str, taken: set[str]) -> str:
    stem = "report_playbook_" + re.sub(r"[^A-Za-z0-9_.-]+", "-", update).strip("-")
    name, k = f"{stem}.png", 2
    while name in taken:
        name, k = f"{stem}_{k}.png", k + 1
    taken.add(name)
    return name


def figures(groups: list, out: Path) -> list[str]:
    """One figure per update group (``build_playbook_figure``), named after the update."""
    drawn, taken = [], set()
    for g in playbook_groups(groups):
        update = g.runs[0]["metrics"]["playbook"]["update"]
        name = figure_name(update, taken)
        runs_rows = [r["metrics"]["playbook"]["options"] for r in g.runs]
        title = f"upgrade playbook: {update} ({other_axes(g)}{run_count(g)})"
        drawn += playbook_figure(out / name, runs_rows, title)
    return drawn
