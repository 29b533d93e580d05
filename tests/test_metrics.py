"""Metrics against hand-computed examples of the seed's formulas and against sklearn/scipy."""

import math

import numpy as np
import pytest
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_auc_score, silhouette_score

from driftbench import metrics as M

# Six predictions worked through by hand (p = P(toxic)):
#   conf = [.95, .85, .65, .70, .55, .62]; predicted = [1, 1, 1, 0, 1, 0]; wrong: #1 and #5
Y = np.array([1, 0, 1, 0, 1, 1])
P = np.array([0.95, 0.85, 0.65, 0.30, 0.55, 0.38])


def test_ece_matches_hand_computed_example():
    # bins [.5,.6) {.55 ok}: |1-.55|; [.6,.7) {.65 ok, .62 wrong}: 2 x |.5-.635|;
    # [.7,.8) {.70 ok}: .30; [.8,.9) {.85 wrong}: .85; [.9,1] {.95 ok}: .05
    expected = (0.45 + 2 * 0.135 + 0.30 + 0.85 + 0.05) / 6
    assert M.expected_calibration_error(Y, P, 5) == pytest.approx(expected)


def test_reliability_table_bins_are_the_papers():
    rows = M.reliability_table(Y, P, 5)
    assert [r["bin_lo"] for r in rows] == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9])
    assert [r["bin_hi"] for r in rows] == pytest.approx([0.6, 0.7, 0.8, 0.9, 1.0])
    assert [r["count"] for r in rows] == [1, 2, 1, 1, 1]
    assert rows[1]["accuracy"] == 0.5 and rows[1]["confidence"] == pytest.approx(0.635)


def test_confidence_one_falls_in_the_last_closed_bin():
    rows = M.reliability_table(np.array([1, 0]), np.array([1.0, 0.0]), 5)
    assert rows[-1]["count"] == 2


def test_silent_failure_rate_is_eq18():
    # errors: #1 (conf .85 >= .8) and #5 (conf .62 < .8) -> 1 of 2 errors is silent
    assert M.silent_failure_rate_pct(Y, P, 0.8) == pytest.approx(50.0)
    assert M.high_confidence_error_rate(Y, P, 0.8) == pytest.approx(1 / 6)


def test_silent_failure_rate_is_undefined_without_errors():
    assert math.isnan(M.silent_failure_rate_pct(np.array([1, 0]), np.array([0.9, 0.1])))


def test_accuracy_at_confidence_090():
    assert M.accuracy_at_confidence(Y, P, 0.9) == 1.0
    assert M.accuracy_at_confidence(Y, P, 0.8) == 0.5


def test_roc_auc_is_eq15_and_sklearn_and_mann_whitney():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = rng.random(300) * 0.5 + 0.3 * y
    pos, neg = p[y == 1], p[y == 0]
    eq15 = np.mean(pos[:, None] > neg[None, :])
    assert M.roc_auc(y, p) == pytest.approx(eq15)
    assert M.roc_auc(y, p) == pytest.approx(roc_auc_score(y, p))
    u = mannwhitneyu(pos, neg).statistic
    assert M.roc_auc(y, p) == pytest.approx(u / (len(pos) * len(neg)))


def test_checkpoint_metrics_agree_with_sklearn():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    m = M.checkpoint_metrics(Y, P)
    y_hat = (P >= 0.5).astype(int)
    assert m["accuracy"] == accuracy_score(Y, y_hat)
    assert m["balanced_accuracy"] == balanced_accuracy_score(Y, y_hat)
    assert m["f1"] == f1_score(Y, y_hat)
    assert m["mean_confidence"] == pytest.approx(np.mean([0.95, 0.85, 0.65, 0.70, 0.55, 0.62]))


def test_fisher_ratio_is_eq24_by_hand():
    z = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    y = np.array([0, 0, 1, 1])
    # ||mu1 - mu0||^2 = 4; per-class variances (1, 0) -> mean .5 each -> F = 4 / 1
    assert M.fisher_ratio(z, y) == pytest.approx(4.0)
    assert M.fisher_ratio_per_dim(z, y) == pytest.approx(2.0)


def test_fisher_ratio_grows_with_width_but_per_dim_does_not():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 500)

    def sample(d):
        return rng.standard_normal((1000, d)) + 0.3 * y[:, None]

    f64, f512 = M.fisher_ratio(sample(64), y), M.fisher_ratio(sample(512), y)
    assert f512 / f64 == pytest.approx(8.0, rel=0.15)
    assert M.fisher_ratio_per_dim(sample(512), y) == pytest.approx(
        M.fisher_ratio_per_dim(sample(64), y), rel=0.15
    )


def test_class_overlap_is_eq25_by_hand():
    z = np.array([[0, 0], [0, 0], [0, 3], [0, 4], [0, 4], [0, 1]], dtype=float)
    y = np.array([0, 0, 0, 1, 1, 1])
    # mu0 = (0,1), mu1 = (0,3): (0,3) of class 0 and (0,1) of class 1 sit on the other centroid
    assert M.class_overlap(z, y) == pytest.approx(2 / 6)


def test_silhouette_is_eq22_23_by_hand_and_sklearn():
    z = np.array([[0.0], [1.0], [4.0], [5.0]])
    y = np.array([0, 0, 1, 1])
    by_hand = np.mean([(4.5 - 1) / 4.5, (3.5 - 1) / 3.5, (3.5 - 1) / 3.5, (4.5 - 1) / 4.5])
    assert M.silhouette(z, y) == pytest.approx(by_hand)
    assert M.silhouette(z, y) == pytest.approx(silhouette_score(z, y))


def test_snr_is_eq29():
    # |f|^2 = [1, 4] -> median 2.5; ||w||^2 sigma^2 = 4 x .25 = 1
    assert M.snr_eq29(np.array([1.0, -2.0]), 2.0, 0.5) == pytest.approx(2.5)
    assert M.snr_eq29(np.array([1.0]), 2.0, 0.0) == math.inf


def test_bad_labels_are_refused():
    with pytest.raises(ValueError, match="labels must be 0/1"):
        M.roc_auc(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="empty"):
        M.checkpoint_metrics(np.array([]), np.array([]))
