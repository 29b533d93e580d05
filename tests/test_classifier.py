"""The paper's classifier (B.3, ``classifier=logreg``): standardisation, C selection, and the
degenerate-dimension artifact. The other families: tests/test_classifiers.py."""

import numpy as np
import pytest
from conftest import conf_value
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.preprocessing import StandardScaler

from driftbench import drift as D
from driftbench.classifier import degenerate_dimensions, fit_classifier, make_classifier

# The paper's settings, read from the config choice that holds them (no second copy here).
LOGREG = conf_value("classifier/logreg.yaml")
PAPER = {k: v for k, v in LOGREG.items() if k != "defaults"}


def fit(*data, **settings):
    """classifier=logreg as a drift run builds it, with ``settings`` changed."""
    return make_classifier({**PAPER, **settings}, seed=0).fit(*data)


def toy(n=600, d=40, seed=0, shift=0.25):
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    z = rng.standard_normal((n, d)) * 0.05
    z[:, 0] += shift * (2 * y - 1) * 0.05 * 4
    order = rng.permutation(n)  # both classes in every slice
    return D.normalize(z + 0.3)[order], y[order]


def test_standardisation_uses_train_mean_and_population_std():
    z, y = toy()
    clf = fit(z[:400], y[:400], z[400:], y[400:], c_grid=[1.0])
    sc = StandardScaler().fit(z[:400])
    np.testing.assert_allclose(clf.standardize(z[400:]), sc.transform(z[400:]))
    np.testing.assert_allclose(clf.scaler.scale, z[:400].std(axis=0))  # eq. (10): 1/N, not N-1


def test_probabilities_equal_sklearn_balanced_logreg():
    z, y = toy()
    clf = fit(z[:400], y[:400], z[400:], y[400:], c_grid=[1.0])
    sc = StandardScaler().fit(z[:400])
    ref = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000).fit(
        sc.transform(z[:400]), y[:400]
    )
    np.testing.assert_allclose(
        clf.predict_proba(z[400:]), ref.predict_proba(sc.transform(z[400:]))[:, 1], atol=1e-6
    )


def test_c_is_chosen_by_validation_auc():
    z, y = toy(seed=3)
    tr, va = np.r_[0:200, 300:500], np.r_[200:300, 500:600]
    grid = [1e-4, 1e-2, 1.0, 100.0]
    clf = fit(z[tr], y[tr], z[va], y[va], c_grid=grid)
    aucs = {}
    sc = StandardScaler().fit(z[tr])
    for c in grid:
        m = LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit(
            sc.transform(z[tr]), y[tr]
        )
        aucs[c] = roc_auc_score(y[va], m.decision_function(sc.transform(z[va])))
    chosen = clf.selection
    assert chosen.val_auc == pytest.approx(aucs)
    assert aucs[chosen.value] == max(aucs.values())
    assert chosen.at_grid_edge == (chosen.value in (grid[0], grid[-1]))


def test_c_can_be_chosen_by_validation_log_loss():
    z, y = toy(seed=3, shift=0.6)
    tr, va = np.r_[0:200, 300:500], np.r_[200:300, 500:600]
    grid = [1e-4, 1e-2, 1.0, 100.0]
    clf = fit(z[tr], y[tr], z[va], y[va], c_grid=grid, select_by="log_loss")
    sc = StandardScaler().fit(z[tr])
    losses = {}
    for c in grid:
        m = LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit(
            sc.transform(z[tr]), y[tr]
        )
        losses[c] = log_loss(y[va], m.predict_proba(sc.transform(z[va]))[:, 1])
    assert clf.selection.val_log_loss == pytest.approx(losses)
    assert clf.selection.value == min(losses, key=losses.get)
    assert clf.selection.select_by == "log_loss"


def test_degenerate_dimension_is_detected():
    z, y = toy()
    z[:, 5] = 1e-33 * np.random.default_rng(0).standard_normal(len(z))
    assert degenerate_dimensions(z, 1e-4).tolist() == [5]


def test_constant_dimension_makes_drift_collapse_under_keep_but_not_under_drop():
    """A dimension with train std ~1e-33 turns a drift of 0.005 into ~1e30 standard
    deviations: the frozen classifier goes to chance at once, with confidence 1."""
    rng = np.random.default_rng(0)
    n, d = 800, 48
    y = np.repeat([0, 1], n // 2)
    z = 0.05 * rng.standard_normal((n, d))
    z[:, :4] += 0.08 * (2 * y[:, None] - 1)
    z[:, 7] = 0.0
    z = D.normalize(z + 0.2)
    z[:, 7] = 1e-33 * rng.standard_normal(n)  # constant on train, as in all-MiniLM-L6-v2
    tr, te = np.r_[0:300, 400:700], np.r_[300:400, 700:800]
    op = D.make_drift("gaussian", d, np.random.default_rng(1))
    zc = op(z[te], 0.005)
    results = {}
    for mode in ("keep", "drop"):
        clf = fit(z[tr], y[tr], z[te], y[te], c_grid=[1.0], degenerate_dims=mode)
        assert clf.scaler.degenerate.tolist() == [7]
        auc0 = roc_auc_score(y[te], clf.predict_proba(z[te]))
        p = clf.predict_proba(zc)
        results[mode] = (auc0, roc_auc_score(y[te], p), np.maximum(p, 1 - p).mean())
    auc0, auc_drift, conf = results["keep"]
    assert auc0 > 0.9 and auc_drift < 0.65 and conf > 0.99
    auc0, auc_drift, _ = results["drop"]
    assert auc0 > 0.9 and auc_drift > auc0 - 0.05


def test_floor_raises_degenerate_std_to_the_median():
    z, y = toy()
    z[:, 5] = 1e-33
    z[::2, 5] = 2e-33
    clf = fit(z[:400], y[:400], z[400:], y[400:], c_grid=[1.0], degenerate_dims="floor")
    assert clf.scaler.scale[5] == pytest.approx(
        np.median(z[:400].std(axis=0)[np.arange(40) != 5]), rel=0.1
    )


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"degenerate_dims": "cut"}, "degenerate_dims='cut'"),
        ({"c_grid": [0.0, 1.0]}, "positive"),
        ({"select_by": "brier"}, "select_by='brier'; accepted: auc, log_loss"),
    ],
)
def test_bad_classifier_settings_are_named(kwargs, fragment):
    z, y = toy()
    with pytest.raises(ValueError, match=fragment):
        fit(z[:400], y[:400], z[400:], y[400:], **kwargs)


def test_fit_classifier_is_the_standardised_logreg_choice():
    z, y = toy()
    paper = {k: v for k, v in PAPER.items() if k not in ("name", "standardize")}
    clf = fit_classifier(z[:400], y[:400], z[400:], y[400:], **paper, seed=0)
    np.testing.assert_array_equal(
        clf.predict_proba(z[400:]), fit(z[:400], y[:400], z[400:], y[400:]).predict_proba(z[400:])
    )
