"""How the sweep report summarises drift_eval runs: headline numbers per run, the failure-cliff
table and the drift curves, the collapse by criterion and the monitors against it; classifiers
and mitigations in summary_mitigations.py, real model updates in summary_updates.py. numpy,
matplotlib and the monitors' criteria only (no torch), so a report runs anywhere the run dirs
are."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from driftbench.checkpoints import knob_of
from driftbench.fileio import save_figure
from driftbench.intervals import interval_cell, overlap, replicate_interval
from driftbench.monitors.collapse import CRITERIA
from driftbench.plots import pyplot
from driftbench.tasks.drift_eval import summary_mitigations as mitigations
from driftbench.tasks.drift_eval import summary_playbook as playbook
from driftbench.tasks.drift_eval import summary_updates as updates

DRIFT_HEADLINE = [
    ("positive_rate_test", "data.positive_rate.test"),  # 0.5 balanced; a file's own rate
    ("roc_auc_at_0", "summary.roc_auc_at_0"),
    ("roc_auc_at_max", "summary.roc_auc_at_max"),
    ("roc_auc_drop", "summary.roc_auc_drop"),
    ("{k}_max", "summary.{k}_max"),  # k: the run's knob (sigma; an update's rung, alpha, ...)
    ("angle_deg_at_max", "summary.realized_angle_deg_at_max"),
    ("mean_conf_at_max", "summary.mean_confidence_at_max"),
    ("sfr_pct_at_max", "summary.silent_failure_rate_pct_at_max"),
    ("ece_at_max", "summary.ece_at_max"),
    ("failure_cliff_{k}", "summary.failure_cliff_{k}"),
    ("C", "classifier.c"),
    ("selected", "classifier.selected"),
    ("auc_change_at_max", "mitigation.change_at_max.roc_auc"),
    ("auc_cost_at_0", "mitigation.cost_at_0.roc_auc"),
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
    k = knob_of(run["metrics"])[0].name
    return {
        name.format(k=k): _get(run["metrics"], path.format(k=k)) for name, path in DRIFT_HEADLINE
    }


FACET = "classifier.degenerate_dims"  # one row of panels per value, where it varies
PANELS = [
    ("roc_auc", "ROC-AUC"),
    ("silent_failure_rate_pct", "silent-failure rate (%)"),
    ("ece", "ECE"),
    ("mean_confidence", "mean confidence"),
]
# Separability is measured on the training embeddings, before any drift, schedule or classifier:
# runs that differ only in those share it.
NOT_SEPARABILITY = ("drift", "schedule", "classifier")


def curves(groups: list) -> list[dict]:
    """Per group of runs (report.RunGroup: runs that differ in seed alone), each of PANELS
    against sigma at the group's own sigmas: mean and std over its seeds. ``facet``: the group's
    FACET value (None where it does not vary); ``label``: its other axis values."""
    out = []
    for g in groups:
        sigmas = knob_of(g.runs[0]["metrics"])[1]
        members = [r for r in g.runs if len(r["metrics"]["checkpoints"]) == len(sigmas)]
        mean, std = {}, {}
        for metric, _ in PANELS:
            ys = np.array(
                [
                    [
                        np.nan if c[metric] is None else c[metric]
                        for c in r["metrics"]["checkpoints"]
                    ]
                    for r in members
                ],
                dtype=float,
            )
            mean[metric], std[metric] = np.nanmean(ys, 0), np.nanstd(ys, 0)
        out.append(
            {
                "facet": g.values.get(FACET),
                "label": g.label(skip=(FACET,)),
                "sigmas": np.array(sigmas, dtype=float),
                "n": len(members),
                "mean": mean,
                "std": std,
            }
        )
    return out


def drift_figures(groups: list, out: Path) -> list[str]:
    """AUC, SFR, ECE and mean confidence vs sigma: one line per group of runs that differ only
    in seed (mean +- std band), each at its own sigmas; one row of panels per facet
    (classifier.degenerate_dims, if it varies). Then separability per embedding setting."""
    plt = pyplot()

    if not groups:
        return []
    lines = curves(groups)
    facet = FACET if FACET in groups[0].values else None
    facet_values = sorted({c["facet"] for c in lines}, key=str)
    fig, axs = plt.subplots(
        len(facet_values),
        len(PANELS),
        figsize=(4.2 * len(PANELS), 3.4 * len(facet_values)),
        squeeze=False,
    )
    for row, fv in enumerate(facet_values):
        for i, c in enumerate(x for x in lines if x["facet"] == fv):
            for col, (metric, title) in enumerate(PANELS):
                mean, std = c["mean"][metric], c["std"][metric]
                ax = axs[row, col]
                color = f"C{i % 10}"
                label = f"{c['label']} (n={c['n']})"
                ax.plot(c["sigmas"], mean, "o-", ms=3, color=color, label=label)
                if c["n"] > 1:
                    ax.fill_between(c["sigmas"], mean - std, mean + std, color=color, alpha=0.2)
                ax.set_title(
                    title + (f"  [{groups[0].names[facet]}={fv}]" if facet else ""), fontsize=9
                )
                ax.set_xlabel("σ")
        axs[row, 0].axhline(0.5, color="grey", ls=":", lw=0.8)
    fig.tight_layout()
    legend = {}  # one entry per group, below the panels: the labels name every varying axis
    for ax in axs[:, 0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.legend(
        legend.values(),
        legend.keys(),
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=2 if len(legend) > 4 else 1,
        fontsize=7,
    )
    save_figure(fig, out / "report_drift_curves.png")
    plt.close(fig)
    return ["report_drift_curves.png", *separability_figure(groups, out)]


def separability(groups: list) -> list[dict]:
    """Separability per embedding setting (the groups' axes less NOT_SEPARABILITY), each
    replicate (seed, data seed) counted once: ``label``, ``variant`` (base or instruct) and the
    mean of each measure."""
    merged: dict[tuple, dict] = {}
    for g in groups:
        key = g.key(skip=NOT_SEPARABILITY)
        entry = merged.setdefault(key, {"group": g, "by_seed": {}})
        for r in g.runs:
            replicate = (r["config"].get("seed"), (r["config"].get("data") or {}).get("seed"))
            entry["by_seed"].setdefault(replicate, r["metrics"])
    out = []
    for entry in merged.values():
        g, ms = entry["group"], list(entry["by_seed"].values())
        model = ms[0]["model"]
        other = g.label(skip=(*NOT_SEPARABILITY, "model.name"))
        label = f"{model['name']}\n({model.get('variant')})" + (
            "" if other == "all" else f"\n{other}"
        )
        seps = [m["separability"] for m in ms]
        out.append(
            {
                "label": label,
                "variant": model.get("variant"),
                "n": len(ms),
                **{k: float(np.mean([s[k] for s in seps])) for k in SEPARABILITY},
            }
        )
    return out


SEPARABILITY = ["silhouette", "fisher_ratio_per_dim", "class_overlap"]


def separability_figure(groups: list, out: Path) -> list[str]:
    import matplotlib.pyplot as plt

    bars = separability(groups)
    fig, axs = plt.subplots(1, len(SEPARABILITY), figsize=(4 * len(SEPARABILITY), 3.2))
    for ax, name in zip(axs, SEPARABILITY, strict=True):
        ax.bar(
            [b["label"] for b in bars],
            [b[name] for b in bars],
            color=["C0" if b["variant"] == "base" else "C3" for b in bars],
        )
        ax.set_title(name, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle("separability on training embeddings (base blue, instruct red)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out / "report_separability.png")
    plt.close(fig)
    return ["report_separability.png"]


def cliff_table(groups: list) -> str:
    """Failure-cliff sigma (first sigma with AUC < 0.55) per group of runs that differ in seed
    alone: model, drift type, degenerate_dims and every other axis that varies as columns."""
    if not groups:
        return ""
    fixed = ("model.name", "drift.name", FACET)
    extra = list(groups[0].columns(skip=fixed))
    lines = [
        "| model | drift | degenerate_dims | "
        + "".join(f"{c} | " for c in extra)
        + "n | ROC-AUC at σ max (mean ± std) | failure-cliff σ (AUC < 0.55), per seed |",
        "|" + "---|" * (6 + len(extra)),
    ]
    for g in groups:
        cfg = g.runs[0]["config"]
        auc = np.array([r["metrics"]["summary"]["roc_auc_at_max"] for r in g.runs], dtype=float)
        cliffs = [r["metrics"]["summary"]["failure_cliff_sigma"] for r in g.runs]
        shown = ", ".join("none" if v is None else f"{v:.3g}" for v in cliffs)
        cells = [
            cfg["model"]["name"],
            cfg["drift"]["name"],
            str(cfg["classifier"].get("degenerate_dims", "–")),
            *g.columns(skip=fixed).values(),
            str(len(g.runs)),
            f"{np.nanmean(auc):.3f} ± {np.nanstd(auc):.3f}",
            shown,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _sigmas(values: list) -> str:
    return ", ".join("none" if v is None else f"{v:.3g}" for v in values)


def monitored(g) -> list[dict]:
    """The runs of a group that scored monitors, in the order of their seeds (a "per seed"
    cell lists them so; the group holds them in the order their run dirs sort, which a resumed
    job changes). A run made before the collapse had criteria (results version 9) is refused:
    its collapse is ROC-AUC alone, and a table that mixed it with the others would call an ECE
    collapse nothing broken."""
    runs = [r for r in g.runs if "monitors" in r["metrics"]]
    runs.sort(key=lambda r: int(r["config"].get("seed") or 0))
    for r in runs:
        if "by_criterion" not in r["metrics"]["monitors"]["collapse"]:
            raise ValueError(
                f"run {r.get('dir', '?')}: its monitors' collapse is ROC-AUC alone (made before "
                "drift_eval's results version 9); rerun it"
            )
    return runs


def criterion_heads(groups: list) -> dict[str, str]:
    """The collapse criteria of the runs' monitors, in ``CRITERIA``'s order, each as a column
    head: with its threshold (``ECE + 0.05``) where every run shares it, else its name alone
    (the threshold is then an axis of the table)."""
    seen: dict[str, set] = {}
    for g in groups:
        for r in monitored(g):
            for name, b in r["metrics"]["monitors"]["collapse"]["by_criterion"].items():
                seen.setdefault(name, set()).add(b["threshold"])
    return {
        n: CRITERIA[n].describe(next(iter(seen[n]))) if len(seen[n]) == 1 else CRITERIA[n].label
        for n in CRITERIA
        if n in seen
    }


def collapse_cell(collapse: dict, knob: str) -> str:
    """One run's collapse: ``0.01 by ROC-AUC, ECE`` (the first knob any criterion fires at, and
    the criteria that fire there), or ``nothing broke`` where no criterion fires."""
    if collapse["checkpoint"] is None:
        return "nothing broke"
    return f"{collapse[knob]:.3g} by " + ", ".join(CRITERIA[n].label for n in collapse["criteria"])


def collapse_table(groups: list) -> str:
    """Where the frozen classifier breaks, per group of runs that differ in seed alone: per
    collapse criterion (``monitor.collapse``) the knob it first fires at, per seed ("off" where
    a run switched it off), and the collapse: the first of them, or "nothing broke" where no
    criterion fires. Runs without monitors are left out (they do not score the collapse)."""
    heads, rows, symbols = criterion_heads(groups), [], set()
    for g in groups:
        runs = monitored(g)
        if not runs:
            continue
        knob = knob_of(runs[0]["metrics"])[0]
        symbols.add(knob.symbol)
        per_run = [r["metrics"]["monitors"]["collapse"] for r in runs]
        cells = [
            _sigmas([c["by_criterion"][n][knob.name] for c in per_run])
            if all(n in c["by_criterion"] for c in per_run)
            else "off"
            for n in heads
        ]
        collapse = "; ".join(collapse_cell(c, knob.name) for c in per_run)
        rows.append([*g.columns().values(), str(len(runs)), *cells, collapse])
        header = list(g.columns())
    if not rows:
        return ""
    at = next(iter(symbols)) if len(symbols) == 1 else "knob (σ or an update's own)"
    cols = [
        *header,
        "n",
        *(f"{at} at {h}, per seed" for h in heads.values()),
        "collapse (first criterion), per seed",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def lead_cell(run: dict, name: str, criterion: str) -> str:
    """One run's lead of monitor ``name`` on ``criterion``, in checkpoints: ``+2`` (alarm two
    checkpoints ahead), ``0``, ``-1`` (one behind), ``missed`` (the criterion fires, the
    monitor never alarms), ``–`` (the criterion never fires), ``off`` (switched off)."""
    collapse = run["metrics"]["monitors"]["collapse"]["by_criterion"].get(criterion)
    if collapse is None:
        return "off"
    if collapse["checkpoint"] is None:
        return "–"
    lead = run["metrics"]["monitors"]["by_monitor"][name]["lead_by_criterion"][criterion]
    if lead is None:
        return "missed"
    return f"{lead:+d}" if lead else "0"


def monitor_rows(g, heads: dict[str, str]) -> list[list[str]]:
    """The rows of ``monitor_table`` for one group of runs that differ in seed alone."""
    runs = monitored(g)
    if not runs:
        return []
    knob = knob_of(runs[0]["metrics"])[0]
    rows = []
    for name in runs[0]["metrics"]["monitors"]["by_monitor"]:
        has = [r for r in runs if name in r["metrics"]["monitors"]["by_monitor"]]
        per = [r["metrics"]["monitors"]["by_monitor"][name] for r in has]
        errors = [m["abs_error_mean"] for m in per if "abs_error_mean" in m]
        rows.append(
            [
                *g.columns().values(),
                name,
                str(len(per)),
                f"{100 * np.mean([m['false_alarm_rate'] for m in per]):.0f}%",
                _sigmas([m[f"{knob.name}_at_alarm"] for m in per]),
                _sigmas([r["metrics"]["monitors"]["collapse"][knob.name] for r in has]),
                *(", ".join(lead_cell(r, name, c) for r in has) for c in heads),
                f"{np.mean(errors):.3f}" if errors else "",
            ]
        )
    return rows


def monitor_table(groups: list) -> str:
    """Label-free monitors (driftbench/monitors/) per group of runs that differ in seed alone
    and per monitor: the false-alarm rate on undrifted windows (mean over seeds), the first
    knob value where >= power_level of the windows alarm, the first where any collapse
    criterion fires (``collapse_table``), both per seed, the monitor's lead on each criterion
    per seed (``lead_cell``), and the accuracy estimators' mean |estimate - true accuracy| over
    checkpoints. Runs without monitors are left out."""
    heads = criterion_heads(groups)
    monitored_groups = [g for g in groups if monitored(g)]
    rows = [row for g in monitored_groups for row in monitor_rows(g, heads)]
    if not rows:
        return ""
    first = monitored(monitored_groups[-1])[0]["metrics"]
    symbols = {knob_of(monitored(g)[0]["metrics"])[0].symbol for g in monitored_groups}
    at = next(iter(symbols)) if len(symbols) == 1 else "knob (σ or an update's own)"
    level = f"{first['monitors']['power_level']:.0%}"
    cols = [
        *monitored_groups[-1].columns(),
        "monitor",
        "n",
        f"false alarms (α = {first['monitors']['alpha']:g})",
        f"{at} at alarm (≥ {level} of windows), per seed",
        f"{at} at collapse (first criterion), per seed",
        *(f"lead on {h} (checkpoints), per seed" for h in heads.values()),
        "accuracy estimate: mean abs error",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


# the numbers compared across settings, with their interval over the group's replicate runs
REPLICATED = [
    ("roc_auc_at_max", "ROC-AUC at max", "{:.3f}"),
    ("silent_failure_rate_pct_at_max", "SFR % at max", "{:.1f}"),
    ("ece_at_max", "ECE at max", "{:.3f}"),
]


def replicate_cells(groups: list, key: str, fmt: str) -> list[str]:
    """Per group, ``mean [low, high] ~B, D``: the 95% t-interval of the run summary's ``key``
    over the group's runs, and the groups (by letter) whose interval overlaps it: settings the
    replicates cannot tell apart on this number."""
    ivs = [replicate_interval([r["metrics"]["summary"].get(key) for r in g.runs]) for g in groups]
    cells = []
    for i, iv in enumerate(ivs):
        shown = interval_cell(iv, fmt)
        same = [chr(65 + j) for j, other in enumerate(ivs) if j != i and overlap(iv, other)]
        cells.append(shown + (f" ~{', '.join(same)}" if same else ""))
    return cells


def replicate_table(groups: list) -> str:
    """Each setting's headline numbers as mean and 95% interval over its replicate runs (runs
    that differ in ``seed`` or ``data.seed`` alone), and where two settings' intervals overlap
    (``~B``): the table a claim "A beats B" is checked against. Empty where no setting has two
    runs (one run has no interval across replicates)."""
    if not groups or max(len(g.runs) for g in groups) < 2:
        return ""
    extra = list(groups[0].columns())
    head = ["", *extra, "runs (seeds × data seeds)", *(title for _, title, _ in REPLICATED)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    cols = [replicate_cells(groups, key, fmt) for key, _, fmt in REPLICATED]
    for i, g in enumerate(groups):
        seeds = {r["config"].get("seed") for r in g.runs}
        data_seeds = {(r["config"].get("data") or {}).get("seed") for r in g.runs}
        runs = f"{len(g.runs)} ({len(seeds)} × {len(data_seeds)})"
        cells = [chr(65 + i), *g.columns().values(), runs, *(c[i] for c in cols)]
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        "**Across replicates.** Mean [95% t-interval over the runs]; `~B`: the setting's interval "
        "overlaps B's, so these runs do not tell the two apart on that number.\n\n"
    )
    return note + "\n".join(lines) + "\n"


def tables(groups: list) -> list[str]:
    return [
        replicate_table(groups),
        cliff_table(synthetic(groups)),
        collapse_table(groups),
        monitor_table(groups),
        *mitigations.tables(groups),
        *updates.tables(groups),
        *updates.separability_tables(groups),
        *playbook.tables(groups),
    ]


def synthetic(groups: list) -> list:
    """The groups of synthetic-drift runs: the sigma curves and the failure cliff are theirs (a
    real update's checkpoints are its own knobs, in its own table)."""
    real = updates.update_groups(groups)
    return [g for g in groups if g not in real]


def figures(groups: list, out: Path) -> list[str]:
    drawn = drift_figures(synthetic(groups), out) if synthetic(groups) else []
    drawn += mitigations.figure(groups, out) + updates.figure(groups, out)
    return drawn + playbook.figures(groups, out)
