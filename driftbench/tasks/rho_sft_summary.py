"""How the sweep report summarises rho_sft runs: headline numbers per run, the seed's tables
(change per behaviour per condition, each condition against sft_only) in rho-eval's audit rho and
in its confidence gap, the dose-response and margin figures, and the safety stress-test tables.
numpy, scipy and matplotlib only (no torch), so a report runs anywhere the run dirs are."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from driftbench.runs import save_figure


def headline(run: dict) -> dict:
    """One run's numbers for report.csv and the report's table."""
    m = run["metrics"]
    row = {
        "condition": m["condition"],
        "lambda_rho": m["lambda_rho"],
        "margin_gamma": m["margin_gamma"],
    }
    for b, d in m["behaviors"].items():
        row[f"delta_rho_{b}"] = d["delta_rho"]
        if (gap := rho_measure(d, "delta_mean_ce_gap")) is not None:
            row[f"delta_gap_{b}"] = gap
    row.update(
        final_sft_loss=m["training"]["final_sft_loss"],
        final_contrastive_loss=m["training"]["final_contrastive_loss"],
    )
    return row


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
    runs = [r for r in runs if (r["metrics"].get("stress_test") or {}).get("after")]
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


def tables(groups: list) -> list[str]:
    runs = [r for g in groups for r in g.runs]
    return [*(rho_tables(runs, m) for m in RHO_MEASURES), stress_tables(runs)]


def figures(groups: list, out: Path) -> list[str]:
    return rho_figures([r for g in groups for r in g.runs], out)
