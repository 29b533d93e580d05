"""How the sweep report summarises rho_sft runs: headline numbers per run, the seed's tables
(change per behaviour per condition, each condition against sft_only) in rho-eval's audit rho and
in its confidence gap, the dose-response and margin figures, and the safety stress-test tables.
numpy, scipy, statsmodels and matplotlib only (no torch), so a report runs anywhere the run dirs
are."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from driftbench.fileio import save_figure
from driftbench.intervals import interval_cell, replicate_interval
from driftbench.plots import pyplot
from driftbench.tasks.rho_sft import summary_stats as stats


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


# Config axes a table shows as its own columns (condition | λρ | γ, from metrics.json): every
# other varying axis (model, data, ...) gets a column after them.
CONDITION_AXES = ("sft.condition", "sft.lambda_rho", "sft.margin")
# The untouched model's stress test depends on none of the training config.
TRAINING_AXES = ("sft",)


def _rho_key(m: dict) -> tuple:
    """What a run trained with: (condition, lambda_rho, margin_gamma); sft_only's lambda is 0."""
    return m["condition"], m["lambda_rho"], m["margin_gamma"]


def _ordered(groups: list) -> list:
    """Groups (report.RunGroup: runs that differ in seed alone) by condition, λρ, γ, then by
    their other axis values."""
    return sorted(
        groups,
        key=lambda g: (str(_rho_key(g.runs[0]["metrics"])), str(g.key(skip=CONDITION_AXES))),
    )


def _condition_cells(g) -> list[str]:
    cond, lam, gam = _rho_key(g.runs[0]["metrics"])
    return [cond, f"{lam:g}", f"{gam:g}", *g.columns(skip=CONDITION_AXES).values()]


def _values(runs: list[dict], b: str, measure: str) -> np.ndarray:
    ms = [r["metrics"] for r in runs]
    v = [rho_measure(m["behaviors"][b], measure) for m in ms if b in m["behaviors"]]
    return np.array([x for x in v if x is not None], dtype=float)


def _measured_behaviors(groups: list, measure: str) -> list[str]:
    return sorted(
        {
            b
            for g in groups
            for r in g.runs
            for b, d in r["metrics"]["behaviors"].items()
            if rho_measure(d, measure) is not None
        }
    )


def reference(g, groups: list):
    """The sft_only group ``g`` is compared with: the one alike in every axis but the condition
    (and λρ, which sft_only forces to 0), the same λρ in the config first; None if there is none."""
    alike = [
        o
        for o in groups
        if o.runs[0]["metrics"]["condition"] == "sft_only"
        and o.key(skip=("sft.condition", "sft.lambda_rho"))
        == g.key(skip=("sft.condition", "sft.lambda_rho"))
    ]
    same = [o for o in alike if o.key(skip=("sft.condition",)) == g.key(skip=("sft.condition",))]
    return (same or alike or [None])[0]


def rho_tables(groups: list, measure: str = "delta_rho") -> str:
    """The seed's tables for one of RHO_MEASURES: its change per behaviour per group of runs
    that differ in seed alone (mean +- std over seeds), and each group against its sft_only
    group (``reference``): Cohen's d and Welch's t-test p-value (``stats.compare``)."""
    symbol, definition = RHO_MEASURES[measure]
    behaviors = _measured_behaviors(groups, measure)
    if not behaviors:
        return ""
    groups = _ordered(groups)
    axes = ["condition", "λρ", "γ", *groups[0].columns(skip=CONDITION_AXES)]
    head = "| " + " | ".join(axes) + " | n | " + " | ".join(f"{symbol} {b}" for b in behaviors)
    lines = [
        f"### {symbol} per condition (mean ± std over seeds)",
        "",
        f"{symbol}: {definition}.",
        "",
        head + " |",
        "|" + "---|" * (len(axes) + 1 + len(behaviors)),
    ]
    for g in groups:
        cells = []
        for b in behaviors:
            v = _values(g.runs, b, measure)
            cells.append(
                f"{v.mean():+.4f} ± {v.std(ddof=1) if len(v) > 1 else 0:.4f}" if len(v) else "–"
            )
        lines.append("| " + " | ".join([*_condition_cells(g), str(len(g.runs)), *cells]) + " |")
    compared = [(g, ref) for g in groups if (ref := reference(g, groups)) not in (None, g)]
    if compared:
        lines += [
            "",
            f"### {symbol} against sft_only (Cohen's d, Welch t-test p)",
            "",
            "| " + " | ".join(axes + behaviors) + " |",
            "|" + "---|" * (len(axes) + len(behaviors)),
        ]
        for g, ref in compared:
            cells = []
            for b in behaviors:  # – where undefined: a side with < 2 runs, or no spread at all
                r = stats.compare(_values(g.runs, b, measure), _values(ref.runs, b, measure))
                cells.append(f"d={stats.fmt(r['d'], '.2f')}, p={stats.fmt(r['p'], '.3g')}")
            lines.append("| " + " | ".join([*_condition_cells(g), *cells]) + " |")
    return "\n".join(lines) + "\n"


def margin_twin(g, groups: list):
    """The γ = 0 group alike ``g`` in every other axis, for ``g`` with γ > 0; else None."""
    if g.runs[0]["metrics"]["margin_gamma"] <= 0:
        return None
    twins = [
        o
        for o in groups
        if o.runs[0]["metrics"]["margin_gamma"] == 0
        and o.key(skip=("sft.margin",)) == g.key(skip=("sft.margin",))
    ]
    return twins[0] if twins else None


def planned(groups: list, measure: str) -> tuple[list[str], list[tuple], list[dict]]:
    """The sweep's planned comparisons in ``measure``: (behaviours, rows as
    ``stats.comparison_table`` takes them, the trained groups' values per behaviour). Each
    group against its sft_only group and each γ > 0 against its γ = 0 twin; nothing where no
    group has two seeds."""
    behaviors = _measured_behaviors(groups, measure)
    if not behaviors or not any(len(g.runs) > 1 for g in groups):
        return behaviors, [], []
    groups = _ordered(groups)
    pairs = [(g, r, "sft_only") for g in groups if (r := reference(g, groups)) not in (None, g)]
    pairs += [(g, r, "γ = 0") for g in groups if (r := margin_twin(g, groups)) is not None]

    def samples(g) -> dict[str, np.ndarray]:
        return {b: _values(g.runs, b, measure) for b in behaviors}

    rows = [
        (_condition_cells(g), against, {b: (samples(g)[b], samples(r)[b]) for b in behaviors})
        for g, r, against in pairs
    ]
    trained = [samples(g) for g in groups if g.runs[0]["metrics"]["condition"] != "baseline"]
    return behaviors, rows, trained


def _axes(groups: list) -> list[str]:
    return ["arm", "λρ", "γ", *_ordered(groups)[0].columns(skip=CONDITION_AXES)]


def study_tables(groups: list, measure: str = "delta_rho") -> str:
    """What the sweep can conclude (``summary_stats``): each planned comparison (``planned``:
    difference, d, Welch p, δ*), then the power statement from the run-to-run spread of the
    trained groups."""
    behaviors, rows, trained = planned(groups, measure)
    if not trained:
        return ""
    symbol = RHO_MEASURES[measure][0]
    lines = stats.comparison_table(symbol, behaviors, _axes(groups), rows) if rows else []
    return "\n".join(lines + stats.power_table(behaviors, trained, rows)) + "\n"


def holm_table(groups: list) -> str:
    """Every planned comparison of both measures (``planned``) as one family: Holm–Bonferroni
    adjusted p beside Welch's, whether it survives Holm at α, and Cohen's d with its 95%
    interval (``stats.d_interval``)."""
    tests = [
        (RHO_MEASURES[m][0], cells, against, b, a, ref)
        for m in RHO_MEASURES
        for behaviors, rows, _ in [planned(groups, m)]
        for cells, against, samples in rows
        for b in behaviors
        for a, ref in [samples[b]]
        if len(a) and len(ref)
    ]
    if not tests:
        return ""
    return "\n".join(stats.holm_lines(_axes(groups), tests)) + "\n"


def build_rho_figures(groups: list) -> dict:
    """{file name: matplotlib Figure}: each of RHO_MEASURES per behaviour against lambda_rho
    (dose-response, with the fitted slope) and against gamma (margin sweep): mean +- std over
    seeds. One line per behaviour and series (groups alike in every axis but the one drawn:
    model, condition, ... apart), where some series has two values of that axis."""
    plt = pyplot()

    built = {}
    for measure, (symbol, _) in RHO_MEASURES.items():
        behaviors = _measured_behaviors(groups, measure)
        for axis, config_key, suffix, label in (
            ("lambda_rho", "sft.lambda_rho", "dose_response", "λρ"),
            ("margin_gamma", "sft.margin", "margin", "margin γ"),
        ):
            series: dict[tuple, list] = {}
            for g in groups:
                series.setdefault(g.key(skip=(config_key,)), []).append(g)
            series = {
                k: sorted(members, key=lambda g: g.runs[0]["metrics"][axis])
                for k, members in series.items()
                if len({g.runs[0]["metrics"][axis] for g in members}) > 1
            }
            if not series or not behaviors:
                continue
            fig, ax = plt.subplots(figsize=(6, 4))
            for s, members in enumerate(series.values()):
                name = "" if len(series) == 1 else f", {members[0].label(skip=(config_key,))}"
                for i, b in enumerate(behaviors):
                    keep = [
                        (g.runs[0]["metrics"][axis], v)
                        for g in members
                        if len(v := _values(g.runs, b, measure))
                    ]
                    if not keep:
                        continue
                    kx = [x for x, _ in keep]
                    mean = np.array([v.mean() for _, v in keep])
                    std = np.array([v.std() for _, v in keep])
                    allx = np.concatenate([[x] * len(v) for x, v in keep])
                    ally = np.concatenate([v for _, v in keep])
                    slope = np.polyfit(allx, ally, 1)[0] if len(set(kx)) > 1 else float("nan")
                    style = ("-", "--", ":", "-.")[s % 4]
                    ax.plot(
                        kx,
                        mean,
                        "o" + style,
                        color=f"C{i % 10}",
                        label=f"{b}{name} (slope {slope:+.3g})",
                    )
                    ax.fill_between(kx, mean - std, mean + std, color=f"C{i % 10}", alpha=0.2)
            ax.axhline(0, color="grey", lw=0.8, ls=":")
            ax.set_xlabel(label)
            ax.set_ylabel(f"{symbol} (after − before)")
            ax.legend(fontsize=7)
            built[f"{_RHO_FIGURE_PREFIX[measure]}_{suffix}.png"] = fig
    return built


def rho_figures(groups: list, out: Path) -> list[str]:
    """``build_rho_figures``, saved in ``out``."""
    plt = pyplot()
    written = []
    for fname, fig in build_rho_figures(groups).items():
        save_figure(fig, out / fname)
        plt.close(fig)
        written.append(fname)
    return written


def _refused(rates: dict) -> tuple[int, int]:
    """(refused, asked) of one side of a stress test; older metrics store only the rate."""
    n = int(rates["n"])
    k = rates.get("n_refused")
    return (int(k) if k is not None else round(rates["refusal_rate"] * n)), n


def stress_tables(groups: list) -> str:
    """The seed's safety stress-test tables: refusals on the harmful (jailbreak) prompts and on
    the benign controls, before training (the untouched model: one column per setting of the
    non-training axes, e.g. per model) and after it per group of runs that differ in seed alone,
    counts summed over seeds; then the harmful prompts per category."""
    stressed = [
        (g, [r for r in g.runs if (r["metrics"].get("stress_test") or {}).get("after")])
        for g in _ordered(groups)
    ]
    stressed = [(g, runs) for g, runs in stressed if runs]
    if not stressed:
        return ""
    untouched = sorted({g.key(skip=TRAINING_AXES) for g, _ in stressed}, key=str)
    columns: list[tuple[str, list[dict]]] = []
    for key in untouched:
        members = [(g, runs) for g, runs in stressed if g.key(skip=TRAINING_AXES) == key]
        other = members[0][0].label(skip=TRAINING_AXES)
        before = members[0][1][0]["metrics"]["stress_test"]["before"]
        columns.append(
            ("before training" + (f" ({other})" if len(untouched) > 1 else ""), [before])
        )
        for g, runs in members:
            cond, lam, gam = _condition_cells(g)[:3]
            extra = "".join(f", {n}={v}" for n, v in g.columns(skip=CONDITION_AXES).items())
            name = f"{cond} (λρ {lam}, γ {gam}{extra})"
            columns.append((name, [r["metrics"]["stress_test"]["after"] for r in runs]))

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
    for name, tests in columns:
        lines.append(
            f"| {name} | {len(tests)} | {cell([t['harmful'] for t in tests], True)} | "
            f"{cell([t['benign'] for t in tests], True)} |"
        )
    cats = sorted({c for _, tests in columns for t in tests for c in t["harmful"]["by_category"]})
    lines += [
        "",
        "### Harmful prompts refused, per category",
        "",
        "| category | " + " | ".join(name for name, _ in columns) + " |",
        "|" + "---|" * (1 + len(columns)),
    ]
    for c in cats:
        cells = [
            cell(
                [t["harmful"]["by_category"][c] for t in tests if c in t["harmful"]["by_category"]],
                False,
            )
            for _, tests in columns
        ]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def at_steps(m: dict) -> dict[int, dict]:
    """One run's audits by optimizer step: those along the way (``sft.audit_at_steps``) and
    the final one at its last step, each behaviour's change from before training (``delta``);
    empty for a run audited at the end alone."""
    along = m.get("audits_at_steps")
    if not along:
        return {}
    out = {int(k): v for k, v in along.items()}
    out[int(m["training"]["steps"])] = m["behaviors"]
    return dict(sorted(out.items()))


def step_values(g, step: int, b: str, measure: str) -> list[float]:
    """``measure`` of behaviour ``b`` after ``step`` optimizer steps, one value per seed."""
    return [
        v
        for r in g.runs
        if step in (by_step := at_steps(r["metrics"])) and b in by_step[step]
        if (v := rho_measure(by_step[step][b], measure)) is not None
    ]


def _stepped(groups: list) -> list:
    return [g for g in _ordered(groups) if any(at_steps(r["metrics"]) for r in g.runs)]


def steps_table(groups: list) -> str:
    """The dose-response over training steps, per measure: each behaviour's change from before
    training after each audited optimizer step (the last: the final audit), mean [95%
    t-interval over seeds] per group, where runs audited along the way."""
    stepped = _stepped(groups)
    if not stepped:
        return ""
    lines = []
    for measure, (symbol, definition) in RHO_MEASURES.items():
        behaviors = _measured_behaviors(stepped, measure)
        if not behaviors:
            continue
        axes = [*_axes(stepped), "step", "n"]
        lines += [
            f"### {symbol} along training (mean [95% t-interval over seeds])",
            "",
            f"{symbol}: {definition}, after each audited optimizer step (the last: the final "
            "audit).",
            "",
            "| " + " | ".join([*axes, *behaviors]) + " |",
            "|" + "---|" * (len(axes) + len(behaviors)),
        ]
        for g in stepped:
            for k in sorted({k for r in g.runs for k in at_steps(r["metrics"])}):
                vals = [step_values(g, k, b, measure) for b in behaviors]
                cells = [interval_cell(replicate_interval(v), "{:+.4f}") for v in vals]
                n = str(max(len(v) for v in vals))
                lines.append("| " + " | ".join([*_condition_cells(g), str(k), n, *cells]) + " |")
        lines.append("")
    return "\n".join(lines)


def build_steps_figure(groups: list):
    """``report_rho_steps.png``: Δρ per behaviour (a panel each) against optimizer steps, one
    line per group, mean with its 95% t-interval over seeds; None where no run audited along
    the way."""
    stepped = _stepped(groups)
    behaviors = _measured_behaviors(stepped, "delta_rho")
    if not stepped or not behaviors:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(behaviors), figsize=(4 * len(behaviors), 3.5), squeeze=False)
    for ax, b in zip(axes[0], behaviors, strict=True):
        for k, g in enumerate(stepped):
            steps = sorted({s for r in g.runs for s in at_steps(r["metrics"])})
            iv = np.array([replicate_interval(step_values(g, s, b, "delta_rho")) for s in steps])
            ax.plot(steps, iv[:, 0], "o-", color=f"C{k % 10}", label=_condition_cells(g)[0])
            ax.fill_between(steps, iv[:, 1], iv[:, 2], color=f"C{k % 10}", alpha=0.2)
        ax.axhline(0, color="grey", lw=0.8, ls=":")
        ax.set_title(b, fontsize=9)
        ax.set_xlabel("optimizer step")
    axes[0][0].set_ylabel("Δρ (after − before)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _saved(fig, out: Path, name: str) -> list[str]:
    """A report figure (None: the sweep has nothing to draw) saved as ``out/name``."""
    if fig is None:
        return []
    save_figure(fig, out / name)
    pyplot().close(fig)
    return [name]


def steps_figure(groups: list, out: Path) -> list[str]:
    """``build_steps_figure``, saved in ``out``."""
    return _saved(build_steps_figure(groups), out, "report_rho_steps.png")


def tables(groups: list) -> list[str]:
    return [
        *(rho_tables(groups, m) for m in RHO_MEASURES),
        *(study_tables(groups, m) for m in RHO_MEASURES),
        holm_table(groups),
        steps_table(groups),
        stress_tables(groups),
    ]


def build_condition_figure(groups: list):
    """The matplotlib Figure of ``report_conditions.png``, where a sweep compares conditions
    (else None): per measure a panel, per behaviour one bar per condition group (mean over seeds,
    each seed a dot)."""
    groups = _ordered(groups)
    if len({_rho_key(g.runs[0]["metrics"]) for g in groups}) < 2:
        return None
    plt = pyplot()

    fig, axes = plt.subplots(1, len(RHO_MEASURES), figsize=(6 * len(RHO_MEASURES), 4))
    width = 0.8 / len(groups)
    for ax, (measure, (symbol, _)) in zip(axes, RHO_MEASURES.items(), strict=True):
        behaviors = _measured_behaviors(groups, measure)
        for k, g in enumerate(groups):
            cond, lam, gam = _condition_cells(g)[:3]
            x = np.arange(len(behaviors)) + (k - (len(groups) - 1) / 2) * width
            vals = [_values(g.runs, b, measure) for b in behaviors]
            means = [v.mean() if len(v) else np.nan for v in vals]
            ax.bar(x, means, width, color=f"C{k % 10}", label=f"{cond} (λρ {lam}, γ {gam})")
            for xi, v in zip(x, vals, strict=True):
                ax.plot([xi] * len(v), v, "k.", ms=3)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(np.arange(len(behaviors)), behaviors)
        ax.set_ylabel(f"{symbol} (after − before)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def condition_figure(groups: list, out: Path) -> list[str]:
    """``build_condition_figure``, saved in ``out`` as ``report_conditions.png``."""
    return _saved(build_condition_figure(groups), out, "report_conditions.png")


def figures(groups: list, out: Path) -> list[str]:
    return condition_figure(groups, out) + rho_figures(groups, out) + steps_figure(groups, out)
