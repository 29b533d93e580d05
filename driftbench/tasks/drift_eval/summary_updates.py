"""The real-update parts of a report (drift_eval runs with ``drift=quantize``, ``adapter``,
``interpolate``, ``swap``, ``precision`` or ``tune``): per checkpoint, the frozen classifier on
the updated model's embeddings beside its synthetic twins (each synthetic drift at the same
mean angle), as one run's figure (``update_vs_twins.png``) and, per group of runs that differ
in seed alone, the sweep report's table and ``report_updates.png``, with what kind of change
each is (flips and the coherent share of ``driftbench.metrics``, whose names it reads); for an
update that measures it (``drift=tune``), the training separability per checkpoint beside the
held-out loss. numpy and matplotlib."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from driftbench.fileio import figures_on, save_figure
from driftbench.intervals import (
    bonferroni_level,
    difference_cell,
    interval_cell,
    replicate_interval,
    tested,
)
from driftbench.metrics import CHANGE_METRICS
from driftbench.plots import pyplot

PANELS = (
    ("roc_auc", "ROC-AUC"),
    ("silent_failure_rate_pct", "silent failure rate (%)"),
    ("mean_confidence", "mean confidence"),
)


def _num(v) -> float:
    return np.nan if v is None else float(v)


def _mean(values: list) -> float:
    xs = np.array([_num(v) for v in values], dtype=float)
    return float(np.nanmean(xs)) if np.isfinite(xs).any() else np.nan


MIN_SPAN = {"roc_auc": 0.05, "silent_failure_rate_pct": 10.0, "mean_confidence": 0.05}
SHOWN = (*(key for key, _ in PANELS), *CHANGE_METRICS)  # what a report averages over seeds
MARKERS = ("s--", "^--", "v--", "D--", "P--", "x--")  # one per twin drift, in turn


def _records(run: dict) -> list[dict]:
    return run["metrics"]["update"]["checkpoints"]


def twin_kinds(records: list[dict]) -> list[str]:
    """The synthetic drifts the runs' twins were made of, as the runs recorded them."""
    return list(records[0]["twins"]) if records else []


def update_groups(groups: list) -> list:
    return [g for g in groups if g.runs and all("update" in r["metrics"] for r in g.runs)]


GAPPED = ("roc_auc", "silent_failure_rate_pct")  # real − twin, paired by seed, with an interval


def _gap(recs: list[dict], t: str, key: str) -> list[float]:
    """The real update's number less its ``t`` twin's, per seed whose twin was reached."""
    return [
        _num(x["frozen"].get(key)) - _num(x["twins"][t].get(key))
        for x in recs
        if x["twins"][t].get("sigma") is not None
    ]


def _twin_summary(recs: list[dict], t: str) -> dict:
    """One twin kind at one checkpoint over the seeds: its means over the seeds that reached it
    (``reached``), and the real update's paired difference from it with a t-interval (``gap``)."""
    reached = [x["twins"][t] for x in recs if x["twins"][t].get("sigma") is not None]
    return {
        "sigma": _mean([x["sigma"] for x in reached]),
        **{key: _mean([x.get(key) for x in reached]) for key in SHOWN},
        "reached": len(reached),
        "gap": {key: _gap(recs, t, key) for key in GAPPED},
    }


def per_checkpoint(group) -> tuple[list[dict], int]:
    """The group's update records averaged over its seeds (twins over the seeds that reached
    them; ``gap``: the real update less each twin, per seed), with a t-interval over the seeds
    for the real update's ``GAPPED`` numbers (``frozen_iv``), and how many runs that is (runs
    of another length are left out). A run from before the flips were recorded has none: its
    ``CHANGE_METRICS`` are NaN."""
    k = len(_records(group.runs[0]))
    runs = [r for r in group.runs if len(_records(r)) == k]
    out = []
    for c in range(k):
        recs = [_records(r)[c] for r in runs]
        out.append(
            {
                "checkpoint": recs[0]["checkpoint"],
                "realized_angle_deg": _mean([x["realized_angle_deg"] for x in recs]),
                "relative_weight_error": _mean([x.get("relative_weight_error") for x in recs]),
                "frozen": {key: _mean([x["frozen"].get(key) for x in recs]) for key in SHOWN},
                "frozen_iv": {
                    key: replicate_interval([x["frozen"].get(key) for x in recs]) for key in GAPPED
                },
                "twins": {t: _twin_summary(recs, t) for t in twin_kinds(recs)},
            }
        )
    return out, len(runs)


def draw(ax, records: list[dict], key: str, label: str) -> None:
    """One panel: the real update (solid) against its twins (dashed), checkpoint by checkpoint,
    each labelled with its mean angle."""
    x = np.arange(len(records))
    ax.plot(x, [_num(r["frozen"][key]) for r in records], "ko-", lw=2, label="real update")
    for i, t in enumerate(twin_kinds(records)):
        style = MARKERS[i % len(MARKERS)]
        ax.plot(x, [_num(r["twins"][t].get(key)) for r in records], style, label=f"{t} twin")
    ax.set_xticks(x)
    ax.set_xticklabels(
        [f"{r['checkpoint']}\n{r['realized_angle_deg']:.1f}°" for r in records], fontsize=7
    )
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    low, high = ax.get_ylim()  # a span of at least MIN_SPAN: 0.002 of AUC must not fill a panel
    if high - low < MIN_SPAN.get(key, 0):
        mid = (low + high) / 2
        ax.set_ylim(mid - MIN_SPAN[key] / 2, mid + MIN_SPAN[key] / 2)


def build_update_figure(records: list[dict], title: str):
    """One run's update records (``metrics["update"]["checkpoints"]``) as a matplotlib Figure:
    a panel per ``PANELS`` metric (``draw``)."""
    plt = pyplot()

    fig, axes = plt.subplots(1, len(PANELS), figsize=(13, 3.8))
    for ax, (key, label) in zip(axes, PANELS, strict=True):
        draw(ax, records, key, label)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{title}: real update vs synthetic drift at the same mean angle", fontsize=9)
    fig.tight_layout()
    return fig


def update_figure(run_dir: Path, records: list[dict], title: str) -> list[str]:
    """One run's ``update_vs_twins.png`` (``build_update_figure``)."""
    if not figures_on():
        return []
    fig = build_update_figure(records, title)
    save_figure(fig, run_dir / "update_vs_twins.png")
    pyplot().close(fig)
    return ["update_vs_twins.png"]


def _f(fmt: str, v: float) -> str:
    return fmt.format(v) if np.isfinite(v) else "–"


def distinct_groups(groups: list) -> list:
    """The update groups, one per group of runs that differ in mitigation alone: the update's
    numbers are the frozen classifier's, which no mitigation touches, so such runs repeat them
    (a sweep of 5 classifiers x 6 mitigations reports 5 groups, not 30)."""
    seen: dict = {}
    for g in update_groups(groups):
        seen.setdefault(g.key(skip=("mitigation",)), g)
    return list(seen.values())


CHANGE_NOTE = (
    "What kind of change each is, against the original model on the same texts: *coherent*, "
    "the coherent share of the embedding change (norm of the mean move over the mean move's "
    "norm, in the space the classifier reads: 1 when every text moves by one vector, about "
    "1/√n for independent moves of n texts); *flips − / +*, the share of texts right before and "
    "wrong after (negative flips, Yan et al. 2021) and wrong before and right after; *Δ pos.*, "
    "the change in the share predicted toxic."
)


def row_cells(r: dict, kinds: list[str], corrected: float) -> list[str]:
    """One checkpoint's cells of the update table: the real update, then each twin, then the real
    update less each twin (``intervals.difference_cell``)."""
    frozen, ivs = r["frozen"], r["frozen_iv"]
    return [
        r["checkpoint"],
        _f("{:.4f}", r["relative_weight_error"]),
        _f("{:.2f}", r["realized_angle_deg"]),
        interval_cell(ivs["roc_auc"], "{:.3f}"),
        interval_cell(ivs["silent_failure_rate_pct"], "{:.1f}"),
        _f("{:.3f}", frozen["mean_confidence"]),
        _f("{:.2f}", frozen["coherent_share"]),
        f"{_f('{:.3f}', frozen['negative_flip_rate'])} / "
        f"{_f('{:.3f}', frozen['positive_flip_rate'])}",
        _f("{:+.3f}", frozen["positive_rate_change"]),
        *(
            " / ".join(
                (
                    _f("{:.4g}", r["twins"][t]["sigma"]),
                    _f("{:.3f}", r["twins"][t]["roc_auc"]),
                    _f("{:.1f}", r["twins"][t]["silent_failure_rate_pct"]),
                    _f("{:.2f}", r["twins"][t]["coherent_share"]),
                    _f("{:.3f}", r["twins"][t]["negative_flip_rate"]),
                )
            )
            for t in kinds
        ),
        *(
            difference_cell(r["twins"][t]["gap"]["roc_auc"], "{:+.3f}", corrected)
            + " / "
            + difference_cell(r["twins"][t]["gap"]["silent_failure_rate_pct"], "{:+.1f}", corrected)
            for t in kinds
        ),
    ]


def corrected_level(rows: list[dict], kinds: list[str], level: float = 0.95) -> float:
    """Bonferroni's level for the table's gaps: 1 − (1 − level) / m, m the gaps it tests
    (``tested``), so that a ‡ holds for the table as a whole, not for one cell."""
    m = sum(tested(r["twins"][t]["gap"][key]) for r in rows for t in kinds for key in GAPPED)
    return bonferroni_level(m, level)


GAP_NOTE = (
    "*real − twin*: the real update's ROC-AUC / SFR less its twin's, paired by seed, mean "
    "[95% t-interval over the seeds that reach the twin]; † where that interval excludes 0, "
    "‡ where it still does at the Bonferroni level over every gap in this table "
    "(1 − 0.05/{m}: {level:.5f}). ROC-AUC and SFR carry a 95% t-interval over the n seeds."
)


def tables(groups: list) -> list[str]:
    """One table for every update group: a row per group and checkpoint, the groups' axes
    (less the mitigation) in the first columns, the real update beside its twins."""
    chosen = distinct_groups(groups)
    if not chosen:
        return []
    axes = list(chosen[0].columns(skip=("mitigation",)))
    kinds = twin_kinds(_records(chosen[0].runs[0]))
    draws = _records(chosen[0].runs[0])[-1]["twins"][kinds[0]]["draws"]
    cols = [
        *axes,
        "n",
        "checkpoint",
        "weight error",
        "angle (°)",
        "ROC-AUC",
        "SFR (%)",
        "conf.",
        "coherent",
        "flips − / +",
        "Δ pos.",
        *(f"{t} twin: σ / AUC / SFR / coherent / flips −" for t in kinds),
        *(f"real − {t} twin: AUC / SFR" for t in kinds),
    ]
    summaries = [(g, *per_checkpoint(g)) for g in chosen]
    corrected = corrected_level([r for _, rows, _ in summaries for r in rows], kinds)
    m = round(0.05 / (1 - corrected))
    lines = [
        "**Real update** (mean over the n seeds): the frozen classifier on every test text, "
        f"beside each synthetic drift at the same mean angle (its twin, {draws} draws; a twin "
        "no draw reaches is –). " + CHANGE_NOTE + " " + GAP_NOTE.format(m=m, level=corrected),
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for g, records, n in summaries:
        lead = [*g.columns(skip=("mitigation",)).values(), str(n)]
        for r in records:
            lines.append("| " + " | ".join([*lead, *row_cells(r, kinds, corrected)]) + " |")
    return ["\n".join(lines) + "\n"]


SEPARABILITY = (  # the paper's B.5 measures (metrics.separability), as the runs name them
    ("separability_silhouette", "silhouette (eq. 22-23)", "{:.4f}"),
    ("separability_fisher_ratio", "Fisher ratio (eq. 24)", "{:.3f}"),
    ("separability_fisher_ratio_per_dim", "Fisher ratio / d", "{:.5f}"),
    ("separability_class_overlap", "class overlap (eq. 25)", "{:.3f}"),
)
SEPARABILITY_NOTE = (
    "**Separability along the update** (mean [95% t-interval over the n seeds]): per checkpoint, "
    "the toxicity classes on that checkpoint's embeddings of every training text, by the "
    "paper's measures (silhouette, Fisher ratio, class overlap: the share of texts nearer the "
    "other class's centroid), the same code as the run's separability of the model itself; "
    "*step*: the tune's optimizer step; *held-out loss*: the mean token cross-entropy of "
    "Alpaca texts the tune never trained on (one tune for every seed); *vs checkpoint 0*: "
    "the change from the model itself in % of its value, paired by seed (the paper: "
    "silhouette −19%, Fisher ratio −26% from a base to an instruct model)."
)


CHANGED = ("separability_silhouette", "separability_fisher_ratio")  # the paper's -19%, -26%


def _relative_change(recs: list[dict], first: list[dict], key: str) -> list[float]:
    """Per seed, the checkpoint's ``key`` less checkpoint 0's, in % of checkpoint 0's size."""
    return [
        100 * (_num(x.get(key)) - _num(y.get(key))) / abs(_num(y.get(key)))
        if _num(y.get(key))
        else np.nan
        for x, y in zip(recs, first, strict=True)
    ]


def _separability_cells(recs: list[dict], first: list[dict]) -> list[str]:
    """One checkpoint's cells (its records over the seeds; ``first``: checkpoint 0's)."""
    step = recs[0].get("optimizer_step")
    return [
        recs[0]["checkpoint"],
        "–" if step is None else f"{step} of {recs[0]['total_steps']}",
        _f("{:.4f}", _mean([x.get("heldout_loss") for x in recs])),
        *(
            interval_cell(replicate_interval([x.get(key) for x in recs]), fmt)
            for key, _, fmt in SEPARABILITY
        ),
        *(
            interval_cell(replicate_interval(_relative_change(recs, first, key)), "{:+.1f}")
            for key in CHANGED
        ),
    ]


def separability_tables(groups: list) -> list[str]:
    """For the update groups whose runs measured each checkpoint's training separability
    (``Update.training_separability``: ``drift=tune``): a row per group and checkpoint, with
    the change from checkpoint 0 paired by seed (the paper's claim is a relative one)."""
    chosen = [
        g for g in distinct_groups(groups) if "separability_silhouette" in _records(g.runs[0])[0]
    ]
    if not chosen:
        return []
    axes = list(chosen[0].columns(skip=("mitigation",)))
    cols = [
        *axes,
        "n",
        "checkpoint",
        "step",
        "held-out loss",
        *(h for _, h, _ in SEPARABILITY),
        "silhouette vs checkpoint 0 (%)",
        "Fisher ratio vs checkpoint 0 (%)",
    ]
    lines = [SEPARABILITY_NOTE, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for g in chosen:
        k = len(_records(g.runs[0]))
        runs = [r for r in g.runs if len(_records(r)) == k]
        lead = [*g.columns(skip=("mitigation",)).values(), str(len(runs))]
        first = [_records(r)[0] for r in runs]
        for c in range(k):
            cells = _separability_cells([_records(r)[c] for r in runs], first)
            lines.append("| " + " | ".join([*lead, *cells]) + " |")
    return ["\n".join(lines) + "\n"]


def figure(groups: list, out: Path) -> list[str]:
    """ROC-AUC per checkpoint, the real update against its twins, one panel per group (less
    the mitigation, ``distinct_groups``)."""
    chosen = distinct_groups(groups)
    if not chosen:
        return []
    plt = pyplot()

    fig, axes = plt.subplots(1, len(chosen), figsize=(4.6 * len(chosen), 3.8), squeeze=False)
    for ax, g in zip(axes[0], chosen, strict=True):
        draw(ax, per_checkpoint(g)[0], "roc_auc", "ROC-AUC")
        ax.set_title(g.label(skip=("mitigation",)), fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "report_updates.png")
    plt.close(fig)
    return ["report_updates.png"]
