"""Label-free monitors against hand computations, under the null and on a strong shift; their
scoring; and the drift_eval wiring (monitors.csv, metrics.json, figure, report table)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import ROOT
from scipy.special import expit
from scipy.stats import betabinom, binom, ks_2samp
from threadpoolctl import threadpool_limits

from driftbench import monitors as MON

D = 6
MU = 2.0 * np.eye(D)[0]  # embeddings sit around a common direction, as LLM embeddings do
W = 6.0 * np.eye(D)[1] - 0.5 * np.eye(D)[2]  # the classifier's weights
SETTINGS = MON.Settings(mmd_permutations=99, c2st_holdout=0.5, c2st_c=1.0)
ALPHA = 0.05
TRIALS = 200


def sample(rng, n: int, spread: float = 1.0, shift: float = 0.0):
    """Unit embeddings, the classifier's probabilities, and labels drawn from them (so the
    classifier is calibrated where there is no shift)."""
    z = MU + shift * np.eye(D)[2] + spread * rng.standard_normal((n, D))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    p = expit(z @ W)
    return z, p, (rng.random(n) < p).astype(int)


def reference(rng, n: int = 40, n_components: int = 3) -> MON.Reference:
    z, p, y = sample(rng, n)
    return MON.Reference(MON.View(z, p), y, sample(rng, 200)[0], n_components)


def window(rng, n: int = 40, **shift) -> MON.View:
    z, p, _ = sample(rng, n, **shift)
    return MON.View(z, p)


def binomial_band(n: int, level: float = ALPHA) -> tuple[float, float]:
    """The central 99% range of the alarm share of n independent trials at rate ``level``."""
    return binom.ppf(0.005, n, level) / n, binom.ppf(0.995, n, level) / n


def threshold_band(n_calibration: int, n: int, level: float = ALPHA) -> tuple[float, float]:
    """The central 99% range of the alarm share of n null trials above the (1 - level)
    quantile of n_calibration others: the threshold is itself random. It lies between the
    order statistics k and k + 1 of the calibration draws (numpy's interpolation), and the
    number of new draws above the k-th is beta-binomial (n, n_calibration - k + 1, k),
    whatever the statistic's distribution."""
    k = int(np.floor((1 - level) * (n_calibration - 1))) + 1
    lo = betabinom.ppf(0.005, n, n_calibration - k, k + 1)
    return lo / n, betabinom.ppf(0.995, n, n_calibration - k + 1, k) / n


# --- hand computations ---------------------------------------------------------------------------


def test_mmd2_unbiased_matches_hand_computation_on_four_points():
    # X = {0, 1}, Y = {2, 4}; pairwise distances 1, 2, 4, 1, 3, 2 -> median 2 -> k = exp(-d^2/8)
    x, y = np.array([[0.0], [1.0]]), np.array([[2.0], [4.0]])
    sq = MON.pairwise_sq_dists(np.concatenate([x, y]))
    h = MON.median_bandwidth(sq)
    assert h == pytest.approx(2.0)

    def k(a, b):
        return math.exp(-((a - b) ** 2) / 8)

    # within X: k(0,1) twice over 2 x 1 ordered pairs; within Y: k(2,4) likewise; cross: 4 pairs
    expected = k(0, 1) + k(2, 4) - 2 / 4 * (k(0, 2) + k(0, 4) + k(1, 2) + k(1, 4))
    assert MON.mmd2_unbiased(MON.rbf_kernel(sq, h), 2) == pytest.approx(expected)


def test_mmd_permutations_from_one_kernel_equal_recomputing_each():
    rng = np.random.default_rng(0)
    pooled = rng.standard_normal((12, 3))
    sq = MON.pairwise_sq_dists(pooled)
    kernel = MON.rbf_kernel(sq, MON.median_bandwidth(sq))
    a = MON.random_assignments(12, 5, 20, rng)
    assert (a.sum(axis=1) == 5).all()
    direct = []
    for row in a:
        order = np.r_[np.flatnonzero(row), np.flatnonzero(~row)]
        direct.append(MON.mmd2_unbiased(kernel[np.ix_(order, order)], 5))
    assert MON.mmd2_permuted(kernel, 5, a) == pytest.approx(direct)


def test_permutation_p_value_is_never_zero():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((30, 4)), rng.standard_normal((30, 4)) + 10.0
    stat, p = MON.mmd_test(x, y, 99, rng)
    assert stat > 0 and p == pytest.approx(1 / 100)
    assert MON.permutation_p_value(5.0, np.zeros(9)) == pytest.approx(0.1)
    assert MON.permutation_p_value(5.0, np.full(9, 5.0)) == 1.0  # ties count against


def test_atc_is_exact_where_its_threshold_is_known():
    # 2 errors among 5 reference predictions: t is the 3rd smallest score (the paper's text)
    conf = np.array([0.95, 0.6, 0.8, 0.7, 0.9])
    correct = np.array([True, False, False, True, True])
    t = MON.atc_threshold(conf, correct)
    assert t == 0.8
    assert MON.atc_estimate(t, conf) == pytest.approx(correct.mean())  # exact on the reference
    assert MON.atc_estimate(t, np.array([0.55, 0.8, 0.85, 0.99])) == pytest.approx(3 / 4)
    assert MON.atc_threshold(conf, np.zeros(5, bool)) == math.inf
    assert MON.atc_threshold(conf, np.ones(5, bool)) == 0.6


def test_doc_matches_hand_computation():
    # accuracy 0.80 at mean confidence 0.90; the window's confidence is 0.85 -> 0.80 - 0.05
    assert MON.doc_estimate(0.80, 0.90, 0.85) == pytest.approx(0.75)
    ref = MON.Reference(
        MON.View(np.eye(4), np.array([0.9, 0.8, 0.3, 0.6])),
        np.array([1, 0, 0, 1]),  # correct, wrong, correct, correct: accuracy 0.75
        np.eye(4),
        1,
    )
    win = MON.View(np.eye(4)[:2], np.array([0.5, 0.5]))  # confidence 0.5
    out = MON.MONITORS["doc"].test(ref, win, SETTINGS, None)
    # reference confidence (0.9 + 0.8 + 0.7 + 0.6) / 4 = 0.75 -> 0.75 - (0.75 - 0.5)
    assert out.accuracy == pytest.approx(0.5) and out.statistic == pytest.approx(0.25)


def test_cbpe_matches_hand_computation():
    # isotonic calibration on the reference: p = 0.2 -> 1/2 toxic, p = 0.8 -> all toxic
    ref = MON.Reference(
        MON.View(np.eye(4), np.array([0.2, 0.2, 0.8, 0.8])), np.array([0, 1, 1, 1]), np.eye(4), 1
    )
    assert ref.calibrator.predict(np.array([0.2, 0.8])) == pytest.approx([0.5, 1.0])
    # window: predicted 0 with q = 0.5 (P correct 0.5), predicted 1 with q = 1, and p = 0.9
    # beyond the reference (clipped to q = 1): (0.5 + 1 + 1) / 3
    assert MON.cbpe_estimate(ref.calibrator, np.array([0.2, 0.8, 0.9])) == pytest.approx(2.5 / 3)


def test_centroid_and_norm_statistics_match_hand_computation():
    ref = MON.Reference(
        MON.View(np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([0.9, 0.1])),
        np.array([1, 0]),
        np.eye(2),
        1,
    )
    win = MON.View(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0.9, 0.1]))  # mean (.5, .5)
    out = MON.MONITORS["centroid_shift"].test(ref, win, SETTINGS, None)
    assert out.statistic == pytest.approx(1 - 1 / math.sqrt(2))
    out = MON.MONITORS["mean_norm_shift"].test(ref, win, SETTINGS, None)
    assert out.statistic == pytest.approx(1 - math.sqrt(0.5))


def test_ks_bonferroni_multiplies_the_smallest_p_value_by_k():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((50, 3)), rng.standard_normal((50, 3))
    b[:, 1] += 0.6
    from scipy.stats import ks_2samp

    ps = [ks_2samp(a[:, j], b[:, j]).pvalue for j in range(3)]
    assert MON.ks_bonferroni(a, b)[1] == pytest.approx(min(1.0, 3 * min(ps)))


# --- every window of a pool at once equals the per-window definitions ---------------------------


@pytest.mark.parametrize("m, w", [(37, 25), (25, 25)])  # scipy's two exact paths: n1 != n2, ==
def test_ks_windows_equal_scipy_ks_2samp_with_ties(m, w):
    rng = np.random.default_rng(30)
    a = np.round(rng.standard_normal((m, 3)), 1)  # ties within and across the samples
    pool = np.round(rng.standard_normal((60, 3)) + 0.3, 1)
    idx = MON.draw_windows(60, w, 8, rng)
    stat, p = MON.ks_windows(a, pool, idx)
    one_stat, one_p = MON.ks_windows(a[:, 0], pool[:, 0], idx)  # BBSD: one column
    for i, rows in enumerate(idx):
        per_column = [ks_2samp(a[:, j], pool[rows, j]) for j in range(3)]
        assert stat[i] == pytest.approx(max(r.statistic for r in per_column), abs=1e-12)
        assert p[i] == pytest.approx(min(1.0, 3 * min(r.pvalue for r in per_column)), abs=1e-12)
        assert one_stat[i] == pytest.approx(per_column[0].statistic, abs=1e-12)
        assert one_p[i] == pytest.approx(per_column[0].pvalue, abs=1e-12)


@pytest.mark.parametrize("w", [21, 22])  # an odd and an even number of pairs for the median
def test_mmd_windows_equal_mmd_test_per_window_with_the_same_permutations(w):
    rng = np.random.default_rng(31)
    x, pool = rng.standard_normal((30, 5)), rng.standard_normal((50, 5)) + 0.2
    idx = MON.draw_windows(50, w, 6, rng)
    assignments = MON.random_assignments(30 + w, 30, 99, rng)
    stat, p = MON.mmd_windows(x, pool, idx, assignments)
    for i, rows in enumerate(idx):
        sq = MON.pairwise_sq_dists(np.concatenate([x, pool[rows]]))
        kernel = MON.rbf_kernel(sq, MON.median_bandwidth(sq))
        observed = MON.mmd2_unbiased(kernel, 30)
        assert stat[i] == pytest.approx(observed, abs=1e-12)
        permuted = MON.mmd2_permuted(kernel, 30, assignments)
        assert p[i] == MON.permutation_p_value(observed, permuted)


def test_logistic_dual_fit_is_scikit_learns_logistic_regression():
    """The same objective: solved tightly, the same decision function; at scikit-learn's own
    tolerance, its stopping rule holds (gradient of mean loss + |w|^2 / (2Cn) at most 1e-4)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(33)
    feats = rng.standard_normal((60, 40))
    t = (feats[:, 0] + rng.standard_normal(60) > 0).astype(float)
    new = rng.standard_normal((25, 40))
    exact = LogisticRegression(C=0.5, tol=1e-12, max_iter=10_000).fit(feats, t)
    alpha, b = MON.logistic_dual_fit(feats @ feats.T, feats, t, 0.5, tol=1e-6)
    want = exact.decision_function(new)
    # relative to the largest decision value, so a value near 0 is held to the same absolute error
    np.testing.assert_allclose(
        new @ (feats.T @ alpha) + b, want, rtol=1e-5, atol=1e-5 * np.abs(want).max()
    )
    alpha, b = MON.logistic_dual_fit(feats @ feats.T, feats, t, 0.5)
    w = feats.T @ alpha
    r = expit(feats @ w + b) - t
    gradient = np.r_[feats.T @ r / 60 + w / (0.5 * 60), r.mean()]
    assert np.abs(gradient).max() <= 1e-4


def test_c2st_windows_match_scikit_learn_on_the_same_splits():
    rng = np.random.default_rng(34)
    x, _, _ = sample(rng, 60)
    pool = np.concatenate([sample(rng, 60)[0], sample(rng, 60, shift=0.4)[0]])
    idx = MON.draw_windows(120, 60, 6, rng)
    auc, p = MON.c2st_windows(x, pool, idx, 0.5, 1.0, np.random.default_rng(7))
    draws = np.random.default_rng(7)  # the same splits, window by window
    one = np.array([MON.c2st(x, pool[rows], 0.5, 1.0, draws) for rows in idx])
    np.testing.assert_allclose(auc, one[:, 0], atol=0.01)
    np.testing.assert_allclose(p, one[:, 1], atol=0.02)


@pytest.mark.parametrize("name", [n for n in MON.MONITORS if n not in ("mmd", "c2st")])
def test_batch_equals_the_per_window_definition(name):
    rng = np.random.default_rng(32)
    ref = reference(rng)
    z, p, _ = sample(rng, 90, spread=1.2)
    wins = MON.Windows(MON.View(z, p), MON.draw_windows(90, 40, 7, rng))
    mon = MON.MONITORS[name]
    for i, out in enumerate(mon.batch(ref, wins, SETTINGS, None)):
        one = mon.test(ref, wins.view(i), SETTINGS, None)
        assert out.statistic == pytest.approx(one.statistic, abs=1e-12)
        for got, want in ((out.p_value, one.p_value), (out.accuracy, one.accuracy)):
            assert (got is None) == (want is None) and (got is None or abs(got - want) < 1e-12)


def test_windows_are_distinct_rows_of_the_pool():
    pool = MON.View(np.eye(4), np.full(4, 0.5))
    assert len(MON.Windows(pool, np.array([[0, 1], [2, 3]]))) == 2
    with pytest.raises(ValueError, match="row indices repeat"):
        MON.Windows(pool, np.array([[0, 0]]))
    with pytest.raises(ValueError, match="index the pool's 4 texts"):
        MON.Windows(pool, np.array([[0, 4]]))
    with pytest.raises(ValueError, match="need one size, got sizes \\[2, 3\\]"):
        MON.Windows.of_views(
            [MON.View(np.eye(2), np.full(2, 0.5)), MON.View(np.eye(3), np.full(3, 0.5))]
        )


# --- under the null, and on a strong shift ------------------------------------------------------


@pytest.fixture(scope="module")
def null_trials():
    """Every monitor on 2 x 200 null trials (reference and window from one distribution): the
    first 200 set the thresholds of the monitors without a p-value, the next 200 are scored.
    The data and the tests' own draws (permutations, splits) come from separate streams, so
    the data do not depend on how many numbers a test draws."""
    data, draws = np.random.default_rng(20), np.random.default_rng(120)
    runs = []
    for _ in range(2 * TRIALS):
        ref = reference(data)
        wins = MON.Windows.of_views([window(data)])
        runs.append(MON.run_windows(ref, wins, list(MON.MONITORS), SETTINGS, draws))
    calib = {n: [r[n][0] for r in runs[:TRIALS]] for n in MON.MONITORS}
    scored = {n: [r[n][0] for r in runs[TRIALS:]] for n in MON.MONITORS}
    return calib, scored


@pytest.mark.parametrize("name", list(MON.MONITORS))
def test_false_alarm_rate_under_the_null_is_within_the_binomial_band(null_trials, name):
    calib, scored = null_trials
    if MON.MONITORS[name].has_p_value:
        threshold, (lo, hi) = None, binomial_band(TRIALS)
    else:
        threshold = MON.null_threshold([o.statistic for o in calib[name]], ALPHA)
        lo, hi = threshold_band(TRIALS, TRIALS)
    rate = MON.alarms(scored[name], ALPHA, threshold).mean()
    assert lo <= rate <= hi, f"{name}: {rate:.3f} outside [{lo:.3f}, {hi:.3f}]"


def test_c2st_auc_is_about_one_half_under_the_null(null_trials):
    aucs = np.array([o.statistic for o in null_trials[1]["c2st"]])
    assert abs(aucs.mean() - 0.5) < 0.02


def test_every_monitor_alarms_on_a_strong_shift(null_trials):
    """Windows squeezed towards a moved mean: logits near -0.3 (confidence and the estimated
    accuracies fall, all predicted non-toxic), the centroid turns, the mean's norm grows."""
    calib, _ = null_trials
    rng = np.random.default_rng(21)
    ref = reference(rng)
    shifted = [window(rng, spread=0.03, shift=1.5) for _ in range(20)]
    out = MON.run_windows(ref, MON.Windows.of_views(shifted), list(MON.MONITORS), SETTINGS, rng)
    for name, outcomes in out.items():
        threshold = (
            None
            if MON.MONITORS[name].has_p_value
            else MON.null_threshold([o.statistic for o in calib[name]], ALPHA)
        )
        assert MON.alarms(outcomes, ALPHA, threshold).mean() == 1.0, name


def test_components_fitted_on_the_reference_itself_alarm_far_above_the_level():
    """Why the KS test's components come from the training embeddings: fitted on the reference,
    they pick the directions where its own variance is high, and undrifted windows alarm where
    the spectrum is flat (isotropic, d > n). SmolLM2's top components are strong enough that a
    reference of 200 finds them (docs/monitors.md), but the training set is the safe choice."""
    rng = np.random.default_rng(22)
    d, n, k = 200, 100, 5
    own, train = [], []
    with threadpool_limits(1):  # small SVDs: one thread is faster on a shared machine
        for _ in range(100):
            ref, win, fit = (rng.standard_normal((n, d)) for _ in range(3))
            _, _, vt = np.linalg.svd(ref - ref.mean(0), full_matrices=False)
            own.append(MON.ks_bonferroni(ref @ vt[:k].T, win @ vt[:k].T)[1] <= ALPHA)
            _, _, vt = np.linalg.svd(fit - fit.mean(0), full_matrices=False)
            train.append(MON.ks_bonferroni(ref @ vt[:k].T, win @ vt[:k].T)[1] <= ALPHA)
    assert np.mean(own) > 0.5
    assert np.mean(train) <= binomial_band(100)[1]


# --- scoring a run ------------------------------------------------------------------------------


def outcomes(stats, p=None, acc=None):
    return [
        MON.Outcome(s, None if p is None else p[i], None if acc is None else acc[i])
        for i, s in enumerate(stats)
    ]


def test_scorecard_reads_false_alarms_power_alarm_and_collapse_sigma_and_errors():
    names = ["mmd", "confidence_drop", "doc"]
    calib = {
        "mmd": outcomes([0.0] * 4, p=[0.5] * 4),
        "confidence_drop": outcomes([0.0, 0.01, 0.02, 0.03]),
        "doc": outcomes([0.0, 0.0, 0.0, 0.1], acc=[0.8] * 4),
    }
    undrifted = {
        "mmd": outcomes([0.0] * 4, p=[0.5, 0.5, 0.5, 0.01]),  # one false alarm of four
        "confidence_drop": outcomes([0.0, 0.0, 0.0, 0.0]),
        "doc": outcomes([0.0] * 4, acc=[0.8] * 4),
    }
    ckpts = [
        {  # checkpoint 0: nothing fires
            "mmd": outcomes([0.0] * 4, p=[0.5] * 4),
            "confidence_drop": outcomes([0.0] * 4),
            "doc": outcomes([0.0] * 4, acc=[0.8] * 4),
        },
        {  # checkpoint 1: mmd fires in 3 of 4 (< 80%), confidence in all
            "mmd": outcomes([1.0] * 4, p=[0.01, 0.01, 0.01, 0.5]),
            "confidence_drop": outcomes([0.5] * 4),
            "doc": outcomes([0.0] * 4, acc=[0.8] * 4),
        },
        {  # checkpoint 2: mmd fires in all
            "mmd": outcomes([1.0] * 4, p=[0.01] * 4),
            "confidence_drop": outcomes([0.5] * 4),
            "doc": outcomes([0.0] * 4, acc=[0.8] * 4),
        },
    ]
    true_acc = [np.full(4, 0.8), np.full(4, 0.7), np.full(4, 0.5)]
    aucs = [{"roc_auc": a} for a in (0.9, 0.86, 0.84)]  # down by >= 0.05 first at sigma 0.02
    collapse = MON.collapse_points(
        aucs, {"roc_auc": 0.9}, {"roc_auc_drop": 0.05}, [0.0, 0.01, 0.02], "sigma"
    )
    scores, rows = MON.scorecard(
        names,
        calib,
        undrifted,
        ckpts,
        [0.0, 0.01, 0.02],
        collapse,
        true_acc,
        alpha=ALPHA,
        power_level=0.8,
        knob="sigma",
    )
    assert scores["collapse"]["sigma"] == 0.02 and scores["collapse"]["checkpoint"] == 2
    mmd, conf, doc = (scores["by_monitor"][n] for n in names)
    assert mmd["false_alarm_rate"] == 0.25 and mmd["threshold"] is None
    assert mmd["power"] == [0.0, 0.75, 1.0]
    assert mmd["sigma_at_alarm"] == 0.02 and mmd["lead_checkpoints"] == 0
    assert mmd["lead_by_criterion"] == {"roc_auc_drop": 0}
    assert conf["threshold"] == pytest.approx(np.quantile([0.0, 0.01, 0.02, 0.03], 0.95))
    assert conf["sigma_at_alarm"] == 0.01 and conf["lead_checkpoints"] == 1
    assert conf["false_alarm_rate"] == 0.0 and "abs_error" not in conf
    assert doc["sigma_at_alarm"] is None and doc["lead_checkpoints"] is None
    assert doc["abs_error"] == pytest.approx([0.0, 0.1, 0.3])
    assert doc["abs_error_mean"] == pytest.approx(0.4 / 3)
    assert doc["abs_error_at_max"] == pytest.approx(0.3)
    assert len(rows) == 3 * (1 + 3)
    assert {r["windows"] for r in rows} == {"undrifted", "drifted"}


# --- the collapse, by criterion ------------------------------------------------------------------

THRESHOLDS = {  # conf/monitor/all.yaml's
    "roc_auc_drop": 0.05,
    "balanced_accuracy_drop": 0.05,
    "ece_rise": 0.05,
    "silent_failure_rate_rise_pct": 10.0,
}
SIGMAS = [0.0, 0.01, 0.02, 0.05]


def metric_rows(auc, balanced_accuracy, ece, sfr_pct) -> list[dict]:
    """A run's checkpoints as the frozen classifier scores them, one metric per argument."""
    columns = zip(auc, balanced_accuracy, ece, sfr_pct, strict=True)
    return [
        {"roc_auc": a, "balanced_accuracy": b, "ece": e, "silent_failure_rate_pct": f}
        for a, b, e, f in columns
    ]


HOLDS = metric_rows([0.88] * 4, [0.80] * 4, [0.087] * 4, [47.5] * 4)
ECE_ALONE = metric_rows(
    [0.88, 0.88, 0.87, 0.87], [0.80] * 4, [0.087, 0.10, 0.14, 0.245], [47.5] * 4
)


def collapse_of(rows: list[dict]) -> dict:
    """The collapse of a run whose first checkpoint is the undrifted texts."""
    return MON.collapse_points(rows, rows[0], THRESHOLDS, SIGMAS[: len(rows)], "sigma")


def monitored_run(drift: str, seed: int, rows: list[dict], alarm: int | None) -> dict:
    """A run as the sweep report reads it: its collapse found in ``rows`` (the frozen
    classifier's metrics at ``SIGMAS``), MMD alarming at checkpoint ``alarm``, ATC never."""
    collapse = collapse_of(rows)
    by = {
        "mmd": {
            "false_alarm_rate": 0.05,
            "sigma_at_alarm": None if alarm is None else SIGMAS[alarm],
            "lead_by_criterion": MON.leads(alarm, collapse),
        },
        "atc": {
            "false_alarm_rate": 0.0,
            "sigma_at_alarm": None,
            "lead_by_criterion": MON.leads(None, collapse),
            "abs_error_mean": 0.1,
        },
    }
    monitors = {"alpha": 0.05, "power_level": 0.8, "collapse": collapse, "by_monitor": by}
    return {
        "config": {"drift": {"name": drift}, "seed": seed},
        "metrics": {"monitors": monitors},
    }


def test_a_collapse_fires_on_ece_alone():
    """ROC-AUC, balanced accuracy and SFR hold; ECE rises by 0.053 >= 0.05 at sigma 0.02. The
    collapse is ECE's, and neither the report nor the run's log says nothing broke."""
    from driftbench.checkpoints import SIGMA
    from driftbench.report import group_runs
    from driftbench.tasks.drift_eval.monitoring import monitor_digest
    from driftbench.tasks.drift_eval.summary import collapse_table

    collapse = collapse_of(ECE_ALONE)
    assert collapse["checkpoint"] == 2 and collapse["sigma"] == 0.02
    assert collapse["criteria"] == ["ece_rise"]
    ece = collapse["by_criterion"]["ece_rise"]
    assert ece["checkpoint"] == 2 and ece["value"] == 0.14 and ece["undrifted"] == 0.087
    for name in ("roc_auc_drop", "balanced_accuracy_drop", "silent_failure_rate_rise_pct"):
        assert collapse["by_criterion"][name]["checkpoint"] is None, name
    table = collapse_table(group_runs([monitored_run("directional", 1, ECE_ALONE, alarm=None)]))
    assert table.splitlines()[-1].endswith("| none | none | 0.02 | none | 0.02 by ECE |")
    assert "nothing broke" not in table
    digest = monitor_digest({"collapse": collapse, "by_monitor": {}}, SIGMA)
    assert digest.startswith("collapse at σ=0.02 by ece_rise") and "nothing broke" not in digest


def test_nothing_broke_only_where_no_criterion_fires():
    collapse = collapse_of(HOLDS)
    assert collapse["checkpoint"] is None and collapse["sigma"] is None
    assert collapse["criteria"] == []
    # the ECE-only run, judged by ROC-AUC alone (the definition before), would say nothing broke
    auc_only = MON.collapse_points(ECE_ALONE, ECE_ALONE[0], {"roc_auc_drop": 0.05}, SIGMAS, "sigma")
    assert auc_only["checkpoint"] is None and list(auc_only["by_criterion"]) == ["roc_auc_drop"]


def test_each_criterion_fires_at_its_threshold_in_its_own_direction():
    rows = metric_rows(
        [0.88, 0.84, 0.83, 0.83],  # AUC -0.05 at 0.02 (a rise would never fire)
        [0.80, 0.80, 0.76, 0.74],  # balanced accuracy -0.06 at 0.05
        [0.087, 0.05, 0.05, 0.05],  # ECE falls: better calibrated, not a collapse
        [47.5, 57.5, 60.0, 60.0],  # SFR +10 points at 0.01
    )
    by = collapse_of(rows)["by_criterion"]
    assert [by[n]["sigma"] for n in THRESHOLDS] == [0.02, 0.05, None, 0.01]
    assert collapse_of(rows)["criteria"] == ["silent_failure_rate_rise_pct"]
    nan_sfr = metric_rows([0.88] * 2, [1.0] * 2, [0.0] * 2, [float("nan"), 90.0])  # no error
    assert collapse_of(nan_sfr)["checkpoint"] is None  # an undefined SFR never fires


def test_lead_and_lag_against_each_criterion_by_hand():
    """SFR fires at checkpoint 1, ROC-AUC at 2, balanced accuracy at 3, ECE never. A monitor
    alarming at checkpoint 2 lags SFR by 1, is level with ROC-AUC, leads balanced accuracy by 1;
    against ECE there is nothing to lead. Its lead on the collapse (SFR, the first) is -1."""
    rows = metric_rows(
        [0.88, 0.86, 0.82, 0.80], [0.80, 0.79, 0.77, 0.74], [0.087] * 4, [47.5, 58.0, 60.0, 61.0]
    )
    collapse = collapse_of(rows)
    assert collapse["checkpoint"] == 1 and collapse["criteria"] == ["silent_failure_rate_rise_pct"]
    assert MON.leads(2, collapse) == {
        "roc_auc_drop": 0,
        "balanced_accuracy_drop": 1,
        "ece_rise": None,
        "silent_failure_rate_rise_pct": -1,
    }
    assert set(MON.leads(None, collapse).values()) == {None}  # never alarms: no lead anywhere
    # the scorecard reads the same off the windows: all 4 alarm from checkpoint 2 on
    null, fires = outcomes([0.0] * 4, p=[0.5] * 4), outcomes([1.0] * 4, p=[0.01] * 4)
    scores, _ = MON.scorecard(
        ["mmd"],
        {},
        {"mmd": null},
        [{"mmd": null}, {"mmd": null}, {"mmd": fires}, {"mmd": fires}],
        SIGMAS,
        collapse,
        [np.full(4, 0.8)] * 4,
        alpha=ALPHA,
        power_level=0.8,
        knob="sigma",
    )
    mmd = scores["by_monitor"]["mmd"]
    assert mmd["lead_checkpoints"] == -1 and mmd["lead_by_criterion"] == MON.leads(2, collapse)


def test_collapse_criteria_are_checked():
    assert MON.check_criteria({"ece_rise": 0.05, "roc_auc_drop": None}) == {"ece_rise": 0.05}
    with pytest.raises(ValueError, match="every criterion is null"):
        MON.check_criteria(dict.fromkeys(THRESHOLDS))
    with pytest.raises(ValueError, match="no criterion accuracy_drop; accepted: roc_auc_drop"):
        MON.check_criteria({"accuracy_drop": 0.05})


# --- the pools: thresholds from texts the scored windows never see -------------------------------


@pytest.mark.parametrize("share", [None, 0.25])  # the validation split, or a test share
def test_the_calibration_pool_is_disjoint_from_the_evaluation_pool(share):
    pools = MON.split_pools(400, 0.5, share, np.random.default_rng(0))
    cal, ev = pools.calibration, pools.evaluation
    assert np.intersect1d(cal, ev).size == 0  # no index in both
    held = [] if share is None else list(pools.reference)
    assert np.intersect1d(held, np.r_[cal, ev]).size == 0
    assert sorted([*held, *cal, *ev]) == list(range(400))  # every test text in one pool
    assert len(held) == (0 if share is None else 100)
    assert len(cal) == len(ev) == (400 - len(held)) // 2


def test_pools_too_small_for_a_window_are_refused():
    with pytest.raises(ValueError, match=r"calibration_share=0.5 leaves pools of .* of the 3 test"):
        MON.pool_sizes(3, 0.5, None)


def test_monitor_names_are_checked_against_the_registry():
    assert MON.check_names(None) == list(MON.MONITORS)
    assert MON.check_names(["mmd"]) == ["mmd"]
    with pytest.raises(ValueError, match=r"monitor.monitors=\['mmd', 'nope'\]; accepted: "):
        MON.check_names(["mmd", "nope"])


def test_windows_are_distinct_texts_of_the_pool():
    idx = MON.draw_windows(10, 4, 3, np.random.default_rng(0))
    assert idx.shape == (3, 4) and all(len(set(r)) == 4 for r in idx) and idx.max() < 10
    with pytest.raises(ValueError, match="a window of 11 texts"):
        MON.draw_windows(10, 11, 3, np.random.default_rng(0))


# --- wired into drift_eval ------------------------------------------------------------------------

TINY = ["model=tiny_random", "data.n_samples=200", "schedule=list", "schedule.sigmas=[0,0.05,0.3]"]


def test_a_drift_run_scores_every_monitor(make_cfg, tmp_path, caplog):
    from driftbench.launcher import run

    metrics = run(make_cfg(*TINY, "monitor.mmd_permutations=19"))
    d = next((tmp_path / "outputs").glob("**/meta.json")).parent
    assert {"monitors.csv", "monitors_vs_sigma.png"} <= {p.name for p in d.iterdir()}
    on_disk = json.loads((d / "metrics.json").read_text())["monitors"]
    assert on_disk == json.loads(json.dumps(metrics["monitors"]))
    assert set(on_disk["by_monitor"]) == set(MON.MONITORS)
    # 40 test texts, 20 in each pool: the default window of 100 is cut to 20, one window per
    # pool, and the log says so
    assert on_disk["pools"] == {"calibration": 20, "evaluation": 20}
    assert on_disk["window"] == 20 and on_disk["n_windows"] == on_disk["n_calibration_windows"] == 1
    assert "monitor.window=100 is more than the 20 texts of the smaller pool" in caplog.text
    for name, m in on_disk["by_monitor"].items():
        assert len(m["power"]) == 3 and 0 <= m["false_alarm_rate"] <= 1, name
        assert set(m["lead_by_criterion"]) == set(MON.CRITERIA), name
    # the collapse reads the frozen classifier on every test text: with no mitigation, the run's
    # own checkpoint rows (sigma 0: the undrifted texts renormalised, equal to 1e-12)
    rows = metrics["checkpoints"]
    want = MON.collapse_points(rows, rows[0], THRESHOLDS, metrics["sigmas"], "sigma")
    got = on_disk["collapse"]
    assert (got["checkpoint"], got["criteria"]) == (want["checkpoint"], want["criteria"])
    for name, b in want["by_criterion"].items():
        assert got["by_criterion"][name]["checkpoint"] == b["checkpoint"], name
        assert got["by_criterion"][name]["undrifted"] == pytest.approx(b["undrifted"], rel=1e-12)
    lines = (d / "monitors.csv").read_text().splitlines()
    assert len(lines) == 1 + len(MON.MONITORS) * (1 + 3)
    assert on_disk["timing"]["classifier_fit_s"] > 0
    assert on_disk["timing"]["monitors_undrifted_s"] > 0


def test_a_bad_monitor_name_is_refused_before_any_run_dir(make_cfg, tmp_path):
    from driftbench.launcher import ConfigError, run

    with pytest.raises(ConfigError, match=r"monitor.monitors=\['mmd', 'psi'\]; accepted: "):
        run(make_cfg(*TINY, "monitor.monitors=[mmd,psi]"))
    assert not (tmp_path / "outputs").exists()


def test_monitor_none_skips_monitoring(make_cfg, tmp_path):
    from driftbench.launcher import run

    metrics = run(make_cfg(*TINY, "monitor=none"))
    d = next((tmp_path / "outputs").glob("**/meta.json")).parent
    assert "monitors" not in metrics and not (d / "monitors.csv").exists()


def test_report_tabulates_the_collapse_and_each_monitors_lead_by_drift_type():
    from driftbench.report import group_runs
    from driftbench.tasks.drift_eval.summary import collapse_table, monitor_table

    runs = [
        # ECE up at 0.01, ROC-AUC down at 0.02, balanced accuracy at 0.05; MMD alarms at 0.01
        monitored_run(
            "gaussian",
            1,
            metric_rows(
                [0.88, 0.86, 0.82, 0.70],
                [0.80, 0.79, 0.78, 0.70],
                [0.087, 0.14, 0.2, 0.3],
                [47.5] * 4,
            ),
            alarm=1,
        ),
        monitored_run("gaussian", 2, ECE_ALONE, alarm=2),
        monitored_run("subspace", 1, HOLDS, alarm=None),
        {"config": {"drift": {"name": "directional"}, "seed": 1}, "metrics": {}},  # monitor=none
    ]
    lines = collapse_table(group_runs(runs)).splitlines()
    assert lines[0] == (
        "| drift | n | σ at ROC-AUC − 0.05, per seed | σ at balanced accuracy − 0.05, per seed "
        "| σ at ECE + 0.05, per seed | σ at SFR + 10 points, per seed "
        "| collapse (first criterion), per seed |"
    )
    assert lines[2:] == [
        "| gaussian | 2 | 0.02, none | 0.05, none | 0.01, 0.02 | none, none "
        "| 0.01 by ECE; 0.02 by ECE |",
        "| subspace | 1 | none | none | none | none | nothing broke |",
    ]
    lines = monitor_table(group_runs(runs)).splitlines()
    assert lines[0].startswith(
        "| drift | monitor | n | false alarms (α = 0.05) | σ at alarm (≥ 80% of windows), per "
        "seed | σ at collapse (first criterion), per seed | lead on ROC-AUC − 0.05 (checkpoints)"
    )
    # lead: the criterion's checkpoint less the alarm's; "missed": it fired, the monitor did not
    # alarm; "–": it never fired
    assert lines[2:] == [
        "| gaussian | mmd | 2 | 5% | 0.01, 0.02 | 0.01, 0.02 | +1, – | +2, – | 0, 0 | –, – |  |",
        "| gaussian | atc | 2 | 0% | none, none | 0.01, 0.02 | missed, – | missed, – "
        "| missed, missed | –, – | 0.100 |",
        "| subspace | mmd | 1 | 5% | none | none | – | – | – | – |  |",
        "| subspace | atc | 1 | 0% | none | none | – | – | – | – | 0.100 |",
    ]


def monitoring_of(workers: int, sigmas=(0.0, 0.1, 0.4), **monitor):
    """``Monitoring`` as a drift run drives it, every checkpoint queued: the classifier of conf/
    on synthetic unit embeddings, Gaussian drift at ``sigmas``; ``monitor``: overrides of
    conf/monitor/all.yaml."""
    from omegaconf import OmegaConf

    from driftbench import drift as drift_ops
    from driftbench.classifier import make_classifier
    from driftbench.tasks.drift_eval.monitoring import Monitoring

    rng = np.random.default_rng(36)
    y = rng.integers(0, 2, 300)
    z = drift_ops.normalize(rng.standard_normal((300, 12)) + 0.8 * y[:, None] * np.eye(12)[0])
    split = {"train": np.arange(150), "val": np.arange(150, 200), "test": np.arange(200, 300)}
    cfg = OmegaConf.create(
        {
            "monitor": OmegaConf.load(ROOT / "conf/monitor/all.yaml"),
            "task": OmegaConf.load(ROOT / "conf/task/drift_eval.yaml"),  # tau, ECE bins
        }
    )
    cfg.monitor.update(window=20, n_windows=6, mmd_permutations=19, pca_components=3, **monitor)
    settings = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/classifier/logreg.yaml"))
    settings.pop("defaults")
    clf = make_classifier(settings, 0).fit(z[:150], y[:150], z[150:200], y[150:200])
    monitoring = Monitoring(cfg, clf, z, y, split, seed=5, workers=workers)
    operator = drift_ops.make_drift("gaussian", 12, np.random.default_rng(1))
    for sigma in sigmas:
        zc = operator(z[200:], sigma)  # sigma = 0: the texts renormalised, equal to 1e-12
        monitoring.checkpoint(zc, clf.predict_proba(zc))
    return monitoring


def monitored(workers: int, sigmas=(0.0, 0.1, 0.4)) -> tuple[dict, list[dict]]:
    """The scorecard of ``monitoring_of``: (metrics.json's monitors, monitors.csv's rows)."""
    return monitoring_of(workers, sigmas).score(list(sigmas), 0.0, "sigma")


@pytest.mark.parametrize("reference", ["val", "test"])
def test_a_runs_thresholds_and_scored_windows_hold_no_text_in_common(reference):
    """The texts (test-split indices) the calibration windows hold and those the scored windows
    hold: none in both, and none in the reference where the test split gives it."""
    m = monitoring_of(1, sigmas=(0.0,), reference=reference)
    calibration_texts = m.pools.calibration[m.calibration_windows]
    scored_texts = m.pools.evaluation[m.windows]
    assert np.intersect1d(calibration_texts, scored_texts).size == 0
    assert np.intersect1d(m.pools.calibration, m.pools.evaluation).size == 0
    if reference == "test":
        used = np.r_[calibration_texts.ravel(), scored_texts.ravel()]
        assert np.intersect1d(m.pools.reference, used).size == 0
    m.close()


def test_monitors_on_two_worker_processes_score_what_one_thread_scores():
    one, two = monitored(1), monitored(2)
    assert one[1] == two[1]  # monitors.csv, row by row
    assert one[0]["by_monitor"] == two[0]["by_monitor"]
    assert two[0]["timing"]["monitor_workers"] == 2


def test_an_undrifted_checkpoint_reuses_the_undrifted_windows():
    scores, rows = monitored(2)
    undrifted = {r["monitor"]: r for r in rows if r["windows"] == "undrifted"}
    at_zero = {r["monitor"]: r for r in rows if r["checkpoint"] == 0}
    for name, row in at_zero.items():
        assert row["statistic_mean"] == undrifted[name]["statistic_mean"], name
        assert row["alarm_rate"] == undrifted[name]["alarm_rate"], name
    assert scores["timing"]["monitors_per_checkpoint_s"][0] == 0.0
    assert all(s > 0 for s in scores["timing"]["monitors_per_checkpoint_s"][1:])
