"""Figures of one drift run (the paper's figures 1-3, plus what sigma means as an angle). None is
drawn in a run with ``runtime.figures=false`` (``fileio.figures_on``)."""

from __future__ import annotations

from pathlib import Path

from driftbench.checkpoints import Knob
from driftbench.fileio import figures_on, save_figure


def pyplot():
    """pyplot on the Agg backend, imported with the first figure: a run or report that draws
    none (runtime.figures=false, a drift sweep's jobs) never pays for the import (about half a
    second). Every figure of the project gets pyplot here."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _angle_axis(ax, rows: list[dict], knob: Knob) -> None:
    """Top axis: the realized mean angle (degrees) at each knob tick."""
    top = ax.twiny()
    top.set_xlim(ax.get_xlim())
    picks = rows[:: max(1, len(rows) // 6)]
    top.set_xticks([r[knob.name] for r in picks])
    top.set_xticklabels([f"{r['realized_angle_deg']:.0f}°" for r in picks], fontsize=8)
    top.set_xlabel("realized mean angle between z0 and zc", fontsize=8)


def drift_figures(
    run_dir: Path,
    rows: list[dict],
    reliability: list[list[dict]],
    cal: list[int],
    title: str,
    knob: Knob,
) -> list[str]:
    """x: the checkpoints' knob (sigma for synthetic drift; an update's own axis)."""
    if not figures_on():
        return []
    plt = pyplot()
    written = [
        _score_figure(plt, run_dir, rows, title, knob),
        _silent_failure_figure(plt, run_dir, rows, title, knob),
        _calibration_figure(plt, run_dir, rows, reliability, cal, title, knob),
    ]
    if "mean_abs_delta_logit" not in rows[0]:  # a classifier without a linear form
        return written
    written.append(_amplification_figure(plt, run_dir, rows, title, knob))
    return written


def _band(ax, sig: list, rows: list[dict], key: str, color: str, scale: float = 1.0) -> None:
    """A metric's bootstrap interval as a band, where the run has one (``<key>_ci_low``)."""
    if f"{key}_ci_low" not in rows[0]:
        return
    lo, hi = ([scale * _num(r[f"{key}_ci_{side}"]) for r in rows] for side in ("low", "high"))
    ax.fill_between(sig, lo, hi, color=color, alpha=0.15, lw=0)


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def _score_figure(plt, run_dir: Path, rows: list[dict], title: str, knob: Knob) -> str:
    """ROC-AUC (with its 95% interval as a band) and balanced accuracy against the knob."""
    sig = [r[knob.name] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(sig, [r["roc_auc"] for r in rows], "o-", c="C0", label="ROC-AUC (band: 95% interval)")
    _band(ax, sig, rows, "roc_auc", "C0")
    ax.plot(sig, [r["balanced_accuracy"] for r in rows], "s--", label="balanced accuracy")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":", label="chance")
    ax.set_xlabel(knob.label)
    ax.set_ylabel("score on drifted test set")
    ax.set_ylim(0.4, 1.0)
    ax.legend(loc="lower left", fontsize=8)
    _angle_axis(ax, rows, knob)
    ax.set_title(title, fontsize=9, pad=28)
    save_figure(fig, run_dir / "roc_auc_vs_sigma.png")
    plt.close(fig)
    return "roc_auc_vs_sigma.png"


def _silent_failure_figure(plt, run_dir: Path, rows: list[dict], title: str, knob: Knob) -> str:
    """Silent-failure and confident-error rates, mean confidence and accuracy against the knob."""
    sig = [r[knob.name] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    sfr = [r["silent_failure_rate_pct"] for r in rows]
    ax.plot(
        sig,
        [s if s is not None else float("nan") for s in sfr],
        "o-",
        c="C3",
        label="silent-failure rate (% of errors, conf ≥ τ; band: 95% interval)",
    )
    _band(ax, sig, rows, "silent_failure_rate_pct", "C3")
    ax.plot(
        sig,
        [100 * r["high_confidence_error_rate"] for r in rows],
        "^:",
        c="C1",
        label="confident errors (% of all samples)",
    )
    ax.set_xlabel(knob.label)
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax2 = ax.twinx()
    ax2.plot(sig, [r["mean_confidence"] for r in rows], "s--", c="C0", label="mean confidence")
    ax2.plot(sig, [r["accuracy"] for r in rows], "d-.", c="C2", label="accuracy")
    ax2.set_ylim(0.4, 1.0)
    ax2.set_ylabel("mean confidence / accuracy")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    # below the axes: inside, the twin axis' lines would be drawn over it and it hides points
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    ax.set_title(title, fontsize=9)
    save_figure(fig, run_dir / "sfr_confidence_vs_sigma.png")
    plt.close(fig)
    return "sfr_confidence_vs_sigma.png"


def _calibration_figure(
    plt,
    run_dir: Path,
    rows: list[dict],
    reliability: list[list[dict]],
    cal: list[int],
    title: str,
    knob: Knob,
) -> str:
    """Reliability diagrams of the checkpoints ``cal``."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0.5, 1], [0.5, 1], color="grey", ls=":", label="perfect calibration")
    for c in cal:
        pts = [(b["confidence"], b["accuracy"]) for b in reliability[c] if b["count"]]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(
                xs,
                ys,
                "o-",
                label=f"ckpt {c}: {knob.symbol}={rows[c][knob.name]:.3f}, ECE={rows[c]['ece']:.3f}",
            )
    ax.set_xlabel("mean confidence in bin")
    ax.set_ylabel("accuracy in bin")
    ax.set_xlim(0.5, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.legend(fontsize=7)
    ax.set_title(f"calibration (5 bins over [0.5, 1])\n{title}", fontsize=9)
    save_figure(fig, run_dir / "calibration.png")
    plt.close(fig)
    return "calibration.png"


def _amplification_figure(plt, run_dir: Path, rows: list[dict], title: str, knob: Knob) -> str:
    """Where the drift goes: the angle, the standardised features and the logits (eq. 29)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    pos = [r for r in rows if r[knob.name] > 0]
    if pos:
        s = [r[knob.name] for r in pos]
        ax.semilogy(s, [r["realized_angle_deg"] for r in pos], "o-", label="realized angle (deg)")
        ax.semilogy(
            s,
            [r["mean_abs_delta_std_feature"] for r in pos],
            "s-",
            label="mean |Δ standardised feature|",
        )
        ax.semilogy(s, [r["mean_abs_delta_logit"] for r in pos], "^-", label="mean |Δ logit|")
        ax.semilogy(s, [r["mean_abs_logit"] for r in pos], "v:", label="mean |logit| (drifted)")
        ax.semilogy(s, [r["snr_eq29"] for r in pos], "x--", label="eq. 29 SNR (‖w‖)")
        ax.semilogy(s, [r["snr_effective"] for r in pos], "+--", label="SNR with ‖w/scale‖")
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel(knob.label)
    ax.set_title(f"where the drift goes\n{title}", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)  # off the lines
    save_figure(fig, run_dir / "amplification.png")
    plt.close(fig)
    return "amplification.png"


def mitigation_figure(
    run_dir: Path,
    rows: list[dict],
    unmitigated: list[dict],
    name: str,
    title: str,
    knob: Knob,
) -> list[str]:
    """ROC-AUC, silent-failure rate and ECE per checkpoint: the mitigation against the frozen
    classifier on the same texts."""
    if not figures_on():
        return []
    plt = pyplot()
    sig = [r[knob.name] for r in rows]
    panels = [("roc_auc", "ROC-AUC"), ("silent_failure_rate_pct", "SFR (%)"), ("ece", "ECE")]
    fig, axs = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4))
    for ax, (key, label) in zip(axs, panels, strict=True):
        for series, style, who in ((unmitigated, "s--", "none"), (rows, "o-", name)):
            ys = [float("nan") if r[key] is None else r[key] for r in series]
            ax.plot(sig, ys, style, ms=3, label=who)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel(knob.label)
    axs[0].legend(fontsize=8)
    fig.suptitle(f"mitigation {name} vs none\n{title}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, run_dir / "mitigation.png")
    plt.close(fig)
    return ["mitigation.png"]


def monitor_figure(
    run_dir: Path, rows: list[dict], scores: dict, title: str, knob: Knob
) -> list[str]:
    """Left: each monitor's detection power (share of windows that alarm) per checkpoint, over
    the ROC-AUC curve, with the collapse (the first checkpoint any criterion of
    ``monitor.collapse`` fires at) marked and the criteria that fire there named in the legend.
    Right: the
    accuracy estimators' estimates against the windows' true accuracy. x: checkpoints,
    labelled by sigma (a schedule of uneven steps stays readable)."""
    if not figures_on():
        return []
    plt = pyplot()
    x = list(range(len(rows)))
    by = scores["by_monitor"]
    fig, (ax, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.6), width_ratios=(3, 2))
    tab20 = plt.get_cmap("tab20").colors
    colors = tab20[0::2] + tab20[1::2]  # ten distinct colours first, then their light twins
    for i, (name, m) in enumerate(by.items()):
        style = "-" if m["has_p_value"] else "--"
        fa = m["false_alarm_rate"]
        label = f"{name} (false alarms {fa:.0%})"
        ax.plot(x, m["power"], style, marker="o", ms=3, color=colors[i % 20], label=label)
    ax.axhline(scores["power_level"], color="grey", lw=0.8, ls=":")
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("detection power (share of windows alarming)")
    auc = ax.twinx()
    auc.plot(x, [r["roc_auc"] for r in rows], color="black", lw=2.5, alpha=0.35, label="ROC-AUC")
    auc.set_ylabel("ROC-AUC (thick grey)")
    auc.set_ylim(0.4, 1.0)
    collapse = scores["collapse"]["checkpoint"]
    if collapse is not None:  # named in the legend: a label on the panel hides the curves
        criteria = ", ".join(scores["collapse"]["criteria"])
        ax.axvline(collapse, color="C3", lw=1, ls="-.", label=f"collapse ({criteria})")
    ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=3)
    estimators = [(i, n, m) for i, (n, m) in enumerate(by.items()) if "accuracy_estimate" in m]
    if estimators:
        true = estimators[0][2]["accuracy_true"]
        ax_acc.plot(x, true, color="black", lw=2, label="true (mean over the windows)")
    for i, name, m in estimators:
        label = f"{name} (mean |error| {m['abs_error_mean']:.3f})"
        est = m["accuracy_estimate"]
        ax_acc.plot(x, est, "--", marker="o", ms=3, color=colors[i % 20], label=label)
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0.4, 1.0)
    if estimators:  # no estimator among the run's monitors: an empty panel, no legend
        ax_acc.legend(fontsize=7, loc="lower left")
    ax_acc.set_title("label-free accuracy estimates (mean over windows)", fontsize=9)
    for a in (ax, ax_acc):
        a.set_xticks(x)
        a.set_xticklabels([f"{r[knob.name]:.3g}" for r in rows], fontsize=7, rotation=45)
        a.set_xlabel(f"{knob.label} (one tick per checkpoint)")
    ax.set_title(
        f"monitors on {scores['n_windows']} windows of {scores['window']} texts\n{title}",
        fontsize=9,
    )
    fig.tight_layout()
    save_figure(fig, run_dir / "monitors_vs_sigma.png")
    plt.close(fig)
    return ["monitors_vs_sigma.png"]
