"""The sweep report's part on real model updates (drift_eval runs with ``drift=quantize``,
``adapter``, ``interpolate`` or ``swap``): per group of runs that differ in seed alone, each
checkpoint's relative weight error, realized angle, ROC-AUC, silent-failure rate and mean
confidence beside those of its synthetic twins (the sigma of each synthetic drift that turns the
embeddings by the same mean angle); and a figure of ROC-AUC, real against twins. numpy and
matplotlib only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from driftbench.runs import save_figure

TWINS = ("gaussian", "directional", "subspace")


def _updates(groups: list) -> list:
    return [g for g in groups if all("update" in r["metrics"] for r in g.runs)]


def _mean(values: list) -> float:
    xs = np.array([np.nan if v is None else v for v in values], dtype=float)
    return float(np.nanmean(xs)) if np.isfinite(xs).any() else float("nan")


def _f(fmt: str, v: float) -> str:
    return fmt.format(v) if np.isfinite(v) else "–"


def per_checkpoint(group) -> list[dict]:
    """Per checkpoint, the mean over seeds of the update's numbers and of its twins'."""
    k = len(group.runs[0]["metrics"]["checkpoints"])
    runs = [r for r in group.runs if len(r["metrics"]["checkpoints"]) == k]
    out = []
    for c in range(k):
        rows = [r["metrics"]["checkpoints"][c] for r in runs]

        def m(key, rows=rows):
            return _mean([row.get(key) for row in rows])

        out.append(
            {
                "label": rows[0]["update"],
                "weight_error": m("relative_weight_error"),
                "angle": m("realized_angle_deg"),
                "auc": m("roc_auc"),
                "sfr": m("silent_failure_rate_pct"),
                "conf": m("mean_confidence"),
                "auc_unmapped": m("roc_auc_unmapped"),
                **{f"{t}_sigma": m(f"twin_{t}_sigma") for t in TWINS},
                **{f"{t}_auc": m(f"twin_{t}_roc_auc") for t in TWINS},
                **{f"{t}_sfr": m(f"twin_{t}_silent_failure_rate_pct") for t in TWINS},
            }
        )
    return out


def tables(groups: list) -> list[str]:
    """One table per group of update runs: a row per checkpoint."""
    out = []
    for g in _updates(groups):
        cols = [
            "checkpoint",
            "weight error",
            "angle (°)",
            "ROC-AUC",
            "SFR (%)",
            "conf.",
            *(f"{t} twin: σ / AUC / SFR" for t in TWINS),
        ]
        unmapped = any(np.isfinite(r["auc_unmapped"]) for r in per_checkpoint(g))
        cols += ["AUC without the map"] if unmapped else []
        lines = [
            f"**Real update, {g.label()}** (n = {len(g.runs)}, mean over seeds): the update "
            "beside each synthetic drift at the same mean angle (its twin, mean of "
            f"{g.runs[0]['metrics']['update']['checkpoints'][-1]['twins']['gaussian']['draws']}"
            " draws).",
            "",
            "| " + " | ".join(cols) + " |",
            "|" + "---|" * len(cols),
        ]
        for r in per_checkpoint(g):
            cells = [
                r["label"],
                _f("{:.4f}", r["weight_error"]),
                _f("{:.2f}", r["angle"]),
                _f("{:.3f}", r["auc"]),
                _f("{:.1f}", r["sfr"]),
                _f("{:.3f}", r["conf"]),
                *(
                    " / ".join(
                        (
                            _f("{:.4g}", r[f"{t}_sigma"]),
                            _f("{:.3f}", r[f"{t}_auc"]),
                            _f("{:.1f}", r[f"{t}_sfr"]),
                        )
                    )
                    for t in TWINS
                ),
            ]
            cells += [_f("{:.3f}", r["auc_unmapped"])] if unmapped else []
            lines.append("| " + " | ".join(cells) + " |")
        out.append("\n".join(lines) + "\n")
    return out


def figure(groups: list, out: Path) -> list[str]:
    """ROC-AUC per checkpoint, the real update (solid) against its twins (dashed), one panel
    per group."""
    chosen = _updates(groups)
    if not chosen:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(chosen), figsize=(4.6 * len(chosen), 3.8), squeeze=False)
    for ax, g in zip(axes[0], chosen, strict=True):
        rows = per_checkpoint(g)
        x = np.arange(len(rows))
        ax.plot(x, [r["auc"] for r in rows], "ko-", lw=2, label="real update")
        for t, style in zip(TWINS, ("s--", "^--", "v--"), strict=True):
            ax.plot(x, [r[f"{t}_auc"] for r in rows], style, label=f"{t} twin")
        ax.set_xticks(x)
        ax.set_xticklabels([f"{r['label']}\n{r['angle']:.1f}°" for r in rows], fontsize=7)
        ax.set_title(g.label(), fontsize=8)
        ax.set_ylabel("ROC-AUC")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "report_updates.png")
    plt.close(fig)
    return ["report_updates.png"]
