"""The statistics of a rho_sft study (Welch's test, Cohen's d, the smallest detectable effect)
against scipy by hand, the report's study tables, and experiment=rho_cpu_study end to end on
the tiny model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import nct, norm, t, ttest_ind
from statsmodels.stats.power import TTestIndPower
from test_launch import launch
from test_report import config, rho_run

from driftbench.tasks.rho_sft.summary_stats import (
    compare,
    detectable_d,
    detectable_difference,
    pooled_sd,
    power_two_sided,
    welch_df,
)

# statsmodels' solve_power stops its root search at about 1e-7 of d* (n <= 10 here): the power
# there is 0.8 to within this
SOLVER_POWER_TOL = 1e-6


def power_by_hand(delta: float, se: float, df: float) -> float:
    """Two-sided power of a t-test at 0.05 written out with scipy's noncentral t."""
    crit = t.ppf(0.975, df)
    return nct.sf(crit, df, delta / se) + nct.cdf(-crit, df, delta / se)  # moderate nc only


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_detectable_d_has_80_percent_power_by_hand_and_not_less(n):
    d = detectable_d(n, n)
    se = math.sqrt(2 / n)
    assert power_by_hand(d, se, 2 * n - 2) == pytest.approx(0.8, abs=SOLVER_POWER_TOL)
    assert power_by_hand(0.99 * d, se, 2 * n - 2) < 0.8 < power_by_hand(1.01 * d, se, 2 * n - 2)


def test_detectable_d_with_three_seeds_and_in_the_normal_limit():
    assert detectable_d(3, 3) == pytest.approx(3.0709, abs=1e-4)  # G*Power: 3.07
    z = norm.ppf(0.975) + norm.ppf(0.8)  # large n: d* -> (z_{1-a/2} + z_{power}) sqrt(2/n)
    assert detectable_d(5000, 5000) == pytest.approx(z * math.sqrt(2 / 5000), rel=1e-3)
    # unequal arms: the power at d* by hand, with the pooled df n_a + n_b - 2
    d = detectable_d(2, 5)
    assert power_by_hand(d, math.sqrt(1 / 2 + 1 / 5), 5) == pytest.approx(0.8, abs=1e-6)


@pytest.mark.parametrize("n_a, n_b", [(2, 2), (3, 3), (5, 8), (10, 4)])
def test_the_hand_welch_power_is_statsmodels_t_test_power_at_equal_spread(n_a, n_b):
    """Welch's power is computed by hand (statsmodels has none); with equal n and equal spread
    its df is 2n - 2 and it is Student's, which statsmodels computes. With unequal n the hand
    function at the pooled df is statsmodels' power too."""
    model = TTestIndPower()
    for d in (0.5, 2.0, 4.0):
        want = model.power(effect_size=d, nobs1=n_a, alpha=0.05, ratio=n_b / n_a)
        se = math.sqrt(1 / n_a + 1 / n_b)
        assert power_two_sided(d, se, n_a + n_b - 2) == pytest.approx(want, rel=1e-9)
    if n_a == n_b:
        assert welch_df(0.03**2, n_a, 0.03**2, n_b) == pytest.approx(2 * n_a - 2)
        want = 0.03 * model.solve_power(nobs1=n_a, alpha=0.05, power=0.8, ratio=1.0)
        assert detectable_difference(0.03, n_a, 0.03, n_b) == pytest.approx(want, rel=1e-6)


def test_detectable_difference_is_welchs_with_the_satterthwaite_df():
    sa, na, sb, nb = 0.02, 3, 0.05, 4
    delta = detectable_difference(sa, na, sb, nb)
    se = math.sqrt(sa**2 / na + sb**2 / nb)
    df = (sa**2 / na + sb**2 / nb) ** 2 / ((sa**2 / na) ** 2 / 2 + (sb**2 / nb) ** 2 / 3)
    assert welch_df(sa**2, na, sb**2, nb) == pytest.approx(df)
    assert power_by_hand(delta, se, df) == pytest.approx(0.8, abs=1e-9)
    # equal spread and seeds: Welch's df is 2n - 2 and delta* is d* standard deviations
    assert detectable_difference(0.03, 3, 0.03, 3) == pytest.approx(0.03 * detectable_d(3, 3))
    assert math.isnan(detectable_difference(0.0, 3, 0.0, 3))


@pytest.mark.parametrize("bad", [(1, 3), (3, 0)])
def test_one_seed_per_arm_is_refused_naming_the_counts(bad):
    with pytest.raises(ValueError, match=f"n_a={bad[0]}, n_b={bad[1]}; accepted: at least 2"):
        detectable_d(*bad)


def test_compare_matches_scipys_welch_test_and_the_pooled_cohens_d():
    a = np.array([0.10, 0.12, 0.08, 0.11])
    b = np.array([0.01, 0.02, 0.00])
    c = compare(a, b)
    res = ttest_ind(a, b, equal_var=False)
    assert c["p"] == pytest.approx(res.pvalue) and c["df"] == pytest.approx(res.df)
    pooled = math.sqrt((3 * a.var(ddof=1) + 2 * b.var(ddof=1)) / 5)
    assert c["diff"] == pytest.approx(a.mean() - b.mean())
    assert c["d"] == pytest.approx((a.mean() - b.mean()) / pooled)
    assert c["detectable"] == pytest.approx(
        detectable_difference(a.std(ddof=1), 4, b.std(ddof=1), 3)
    )
    # the untrained baseline (no spread) against a trained arm: Welch's df is n - 1
    zero = compare(np.zeros(3), b)
    assert zero["df"] == pytest.approx(2) and zero["p"] == pytest.approx(
        ttest_ind(np.zeros(3), b, equal_var=False).pvalue
    )
    assert math.isnan(compare(np.zeros(3), np.zeros(3))["p"])


def test_pooled_sd_weights_each_arm_by_its_df():
    a, b = np.array([1.0, 2.0, 4.0]), np.array([0.0, 1.0])
    sd, dof = pooled_sd([a, b, np.array([7.0])])
    assert dof == 3 and sd == pytest.approx(math.sqrt((2 * a.var(ddof=1) + b.var(ddof=1)) / 3))


def study_runs() -> list[dict]:
    """Three seeds of sft_only, rho_guided at gamma 0.1 and 0, and the untouched baseline."""
    values = {
        ("sft_only", 0.1): [0.01, 0.02, 0.00],
        ("rho_guided", 0.1): [0.10, 0.13, 0.08],
        ("rho_guided", 0.0): [0.02, 0.06, 0.01],
        ("baseline", 0.1): [0.0, 0.0, 0.0],
    }
    runs = []
    for (condition, gamma), deltas in values.items():
        for seed, v in enumerate(deltas):
            cfg = config("rho_sft", seed, sft__condition={"name": condition}, sft__margin=gamma)
            runs.append(rho_run(condition, {"bias": {"delta_rho": v}}, cfg=cfg))
    return runs, values


def test_the_report_compares_each_arm_and_the_margins_and_states_the_power():
    from driftbench.report import group_runs
    from driftbench.tasks.rho_sft.summary import study_tables

    runs, values = study_runs()
    md = study_tables(group_runs(runs))
    sft, rho, rho0 = (np.array(values[k]) for k in list(values)[:3])
    for arm, ref, against, cells in (
        (rho, sft, "sft_only", "| rho_guided | 0.2 | 0.1 | sft_only |"),
        (rho, rho0, "γ = 0", "| rho_guided | 0.2 | 0.1 | γ = 0 |"),
        (np.zeros(3), sft, "sft_only", "| baseline | 0.2 | 0.1 | sft_only |"),
    ):
        p = ttest_ind(arm, ref, equal_var=False).pvalue
        row = next(line for line in md.splitlines() if line.startswith(cells))
        assert f"{arm.mean() - ref.mean():+.4f}" in row and f"p={p:.3g}" in row, against
    # rho_guided at gamma 0 has no sft_only at its margin to be compared with
    assert "| rho_guided | 0.2 | 0 | sft_only |" not in md
    # the power statement: 3 seeds, the spread pooled over the three trained arms (not baseline)
    assert "with 3 seeds per arm" in md and "d* = 3.07" in md and "df = 4" in md
    sd, dof = pooled_sd([sft, rho, rho0])
    rho_vs_sft = abs(rho.mean() - sft.mean())
    assert f"| bias | {sd:.4f} | {dof} | {detectable_d(3, 3) * sd:.4f} | {rho_vs_sft:.4f} |" in md


def test_arms_without_any_spread_get_no_d_or_p():
    """rho's audit is coarse: two arms can give the same Δρ in every seed. Welch's test is then
    undefined (scipy gives p = 0 for different means): both tables say –, not p = 0."""
    from driftbench.report import group_runs
    from driftbench.tasks.rho_sft.summary import rho_tables

    runs = []
    for condition, delta in (("sft_only", 0.0), ("rho_guided", 0.0025)):
        for seed in range(3):
            cfg = config("rho_sft", seed, sft__condition={"name": condition})
            runs.append(rho_run(condition, {"toxicity": {"delta_rho": delta}}, cfg=cfg))
    md = rho_tables(group_runs(runs))
    row = next(line for line in md.splitlines() if line.startswith("| rho_guided") and "d=" in line)
    assert row.endswith("| d=–, p=– |")
    assert "p=0 " not in md and "d=nan" not in md


def test_a_sweep_over_conditions_gets_a_figure_of_them(tmp_path):
    """report_conditions.png: a Δρ panel with, per condition group, a bar at its mean over seeds
    and a dot per seed; a Δgap panel, empty here (no run has a gap)."""
    from driftbench.plots import pyplot
    from driftbench.report import group_runs
    from driftbench.tasks.rho_sft.summary import build_condition_figure, condition_figure

    runs, values = study_runs()
    fig = build_condition_figure(group_runs(runs))
    try:
        rho, gap = fig.axes[:2]
        assert rho.get_ylabel() == "Δρ (after − before)"
        assert gap.get_ylabel() == "Δgap (after − before)"
        assert all(len(c.patches) == 0 for c in gap.containers)
        assert [t.get_text() for t in rho.get_xticklabels()] == ["bias"]
        bars = {c.get_label(): c.patches[0] for c in rho.containers}
        assert set(bars) == {f"{cond} (λρ 0.2, γ {gamma:g})" for cond, gamma in values}
        for (cond, gamma), seeds in values.items():
            bar = bars[f"{cond} (λρ 0.2, γ {gamma:g})"]
            assert bar.get_height() == pytest.approx(np.mean(seeds), abs=1e-15)
            centre = bar.get_x() + bar.get_width() / 2
            (dots,) = [d for d in rho.get_lines() if np.allclose(d.get_xdata(), centre)]
            np.testing.assert_array_equal(dots.get_ydata(), seeds)
    finally:
        pyplot().close(fig)
    assert condition_figure(group_runs(runs), tmp_path) == ["report_conditions.png"]
    assert (tmp_path / "report_conditions.png").stat().st_size > 0
    one = [r for r in runs if r["config"]["sft"]["condition"]["name"] == "sft_only"]
    assert build_condition_figure(group_runs(one)) is None
    assert condition_figure(group_runs(one), tmp_path / "none") == []


def test_the_report_of_one_seed_has_no_study_table():
    from driftbench.report import group_runs
    from driftbench.tasks.rho_sft.summary import study_tables

    runs, _ = study_runs()
    assert study_tables(group_runs([r for r in runs if r["config"]["seed"] == 0])) == ""


def test_the_cpu_study_preset_runs_end_to_end_on_the_tiny_model(tmp_path):
    """experiment=rho_cpu_study's own axes (six arms x seeds) with two seeds, on the tiny model,
    a tiny probe subset and one short training step; the report holds the comparisons and the
    power statement."""
    launch(
        tmp_path,
        "-m",
        "experiment=rho_cpu_study",
        "model=tiny_random",
        "task.n_probes=3",
        "task.audit_behaviors=[factual,toxicity]",
        "task.stress_test.enabled=false",
        "sft.data.n_examples=2",  # one micro-batch of short texts: one optimizer step
        "sft.optim.grad_accum=1",
        "sft.max_length=32",
        "hydra.sweeper.params.seed='1,2'",
    )
    metas = [
        json.loads(p.read_text()) for p in (tmp_path / "outputs").glob("multirun/*/*/meta.json")
    ]
    assert len(metas) == 12 and all(m["status"] == "completed" for m in metas)
    metrics = [
        json.loads(p.read_text()) for p in (tmp_path / "outputs").glob("multirun/*/*/metrics.json")
    ]
    arms = {(m["condition"], m["margin_gamma"]) for m in metrics}
    assert arms == {
        ("baseline", 0.1),
        ("sft_only", 0.1),
        ("rho_guided", 0.1),
        ("rho_guided", 0.0),
        ("contrastive_only", 0.1),
        ("shuffled_pairs", 0.1),
    }
    # the untouched model is audited once for the whole sweep
    assert sum(not m["before_cache"]["rho_audit"]["hit"] for m in metrics) <= 1
    md = next((tmp_path / "outputs" / "multirun").glob("*/report.md")).read_text()
    assert "| rho_guided | 0.5 | 0.1 | γ = 0 |" in md
    assert "| contrastive_only | 0.5 | 0.1 | sft_only |" in md
    assert "with 2 seeds per arm" in md and "d* = 5.65" in md


def test_holm_is_statsmodels_holm_and_leaves_undefined_tests_out():
    from statsmodels.stats.multitest import multipletests

    from driftbench.tasks.rho_sft.summary_stats import holm

    rng = np.random.default_rng(0)
    for m in (1, 2, 5, 40):
        p = list(rng.uniform(0, 0.2, m) ** 2)
        np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1], rtol=1e-12)
    # by hand: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.06 (kept
    # non-decreasing); NaN is no test (m = 4, not 5)
    got = holm([0.01, 0.04, float("nan"), 0.03, 0.005])
    assert got[:2] == pytest.approx([0.03, 0.06]) and math.isnan(got[2])
    assert got[3:] == pytest.approx([0.06, 0.02])


@pytest.mark.parametrize("d, n_a, n_b", [(8.3, 3, 3), (0.5, 20, 20), (-1.2, 4, 7), (0.0, 3, 3)])
def test_d_interval_puts_the_observed_t_at_the_noncentral_t_quantiles(d, n_a, n_b):
    """The bounds by hand: the noncentral t of each bound's noncentrality puts the observed t
    at its 97.5% (lower bound) and 2.5% (upper bound) quantile."""
    from driftbench.tasks.rho_sft.summary_stats import d_interval

    lo, hi = d_interval(d, n_a, n_b)
    scale = math.sqrt(n_a * n_b / (n_a + n_b))
    df = n_a + n_b - 2
    assert lo < d < hi
    assert nct.cdf(d * scale, df, lo * scale) == pytest.approx(0.975, abs=1e-8)
    assert nct.cdf(d * scale, df, hi * scale) == pytest.approx(0.025, abs=1e-8)


def test_d_interval_tends_to_the_large_sample_formula():
    """At 2,000 + 2,000 runs the interval is the standard approximation's (Hedges and Olkin):
    d ± 1.96 √((n_a + n_b)/(n_a n_b) + d²/(2(n_a + n_b))); at 3 + 3 the exact one is wider
    (at d = 3: [0.38, 5.50] against [0.67, 5.33])."""
    from driftbench.tasks.rho_sft.summary_stats import d_interval

    def approx(d, n):
        se = math.sqrt(2 / n + d**2 / (4 * n))
        return d - norm.ppf(0.975) * se, d + norm.ppf(0.975) * se

    assert d_interval(0.4, 2000, 2000) == pytest.approx(approx(0.4, 2000), abs=2e-3)
    lo, hi = d_interval(3.0, 3, 3)
    a_lo, a_hi = approx(3.0, 3)
    assert hi - lo > 1.05 * (a_hi - a_lo) and lo < a_lo and hi > a_hi


def test_the_holm_table_holds_every_planned_comparison_of_both_measures():
    """One family over Δρ and Δgap: Holm's p of each row is statsmodels' over every defined
    Welch p; d's interval beside d."""
    from statsmodels.stats.multitest import multipletests

    from driftbench.report import group_runs
    from driftbench.tasks.rho_sft.summary import holm_table, planned
    from driftbench.tasks.rho_sft.summary_stats import d_interval

    runs, values = study_runs()
    for r in runs:  # a gap as well, the second measure of the family: rho_guided's far apart
        m = r["metrics"]
        b, far = m["behaviors"]["bias"], m["condition"] == "rho_guided" and m["margin_gamma"] > 0
        b["delta_mean_ce_gap"] = b["delta_rho"] + far + 0.001 * r["config"]["seed"]
    md = holm_table(group_runs(runs))
    rows = [line for line in md.splitlines() if line.startswith("| ") and "Δ" in line]
    assert len(rows) == 6  # 3 comparisons x 2 measures x 1 behaviour
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows]
    p = [  # Welch's p of each row, from the values (the table shows 3 digits)
        ttest_ind(a, ref, equal_var=False).pvalue
        for m in ("delta_rho", "delta_mean_ce_gap")
        for _, _, samples in planned(group_runs(runs), m)[1]
        for a, ref in [samples["bias"]]
    ]
    holm = multipletests(p, method="holm")[1]
    assert "Holm–Bonferroni over their 6 tests" in md and any(h <= 0.05 for h in holm)
    for c, raw, h in zip(cells, p, holm, strict=True):
        assert c[-3:] == [f"{raw:.3g}", f"{h:.3g}", "✓" if h <= 0.05 else ""]
    rho, sft = np.array(values[("rho_guided", 0.1)]), np.array(values[("sft_only", 0.1)])
    row = next(r for r in rows if r.startswith("| rho_guided | 0.2 | 0.1 | sft_only | Δρ |"))
    lo, hi = d_interval(compare(rho, sft)["d"], 3, 3)
    assert f"[{lo:.2f}, {hi:.2f}]" in row


def test_the_steps_table_shows_each_audited_step_with_its_t_interval(tmp_path):
    """Runs audited along the way: per group and step the mean [95% t-interval] over seeds of
    Δρ at that step, the final audit at the last step; and the figure."""
    from driftbench.intervals import replicate_interval
    from driftbench.report import group_runs
    from driftbench.tasks.rho_sft.summary import build_steps_figure, steps_figure, steps_table

    runs = []
    for seed, (v12, v40, end) in enumerate(
        [(0.01, 0.02, 0.05), (0.0, 0.03, 0.04), (0.02, 0.0, 0.06)]
    ):
        runs.append(
            rho_run(
                "rho_guided",
                {"bias": {"delta_rho": end}},
                cfg=config("rho_sft", seed, sft__condition={"name": "rho_guided"}),
                audits_at_steps={
                    "12": {"bias": {"delta_rho": v12}},
                    "40": {"bias": {"delta_rho": v40}},
                },
            )
        )
        runs[-1]["metrics"]["training"]["steps"] = 125
    md = steps_table(group_runs(runs))
    for step, vals in (
        ("12", [0.01, 0.0, 0.02]),
        ("40", [0.02, 0.03, 0.0]),
        ("125", [0.05, 0.04, 0.06]),
    ):
        mean, lo, hi = replicate_interval(vals)
        assert f"| rho_guided | 0.2 | 0.1 | {step} | 3 | {mean:+.4f} [{lo:+.4f}, {hi:+.4f}] |" in md
    fig = build_steps_figure(group_runs(runs))
    (ax,) = fig.axes
    np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), [12, 40, 125])
    assert steps_figure(group_runs(runs), tmp_path) == ["report_rho_steps.png"]
    assert steps_table(group_runs(study_runs()[0])) == ""  # no run audited along the way
