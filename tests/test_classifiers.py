"""Every ``classifier/`` choice the run fits against scikit-learn's own estimator on the same
data, the shared selection on validation (its rule and its warning at the grid's edge), refit, and
the drift terms only a linear classifier has. ``fitted`` (a team's own estimator, loaded from a
file) is tests/test_fitted_classifier.py's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.spatial.distance import cdist
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from driftbench import drift as D
from driftbench.classifier import CLASSIFIERS, make_classifier

CONF = Path(__file__).resolve().parents[1] / "conf" / "classifier"
FITTED_BY_THE_RUN = sorted(n for n in CLASSIFIERS if n != "fitted")


def settings(name: str, **changed) -> dict:
    """A classifier/ choice's settings as composed (a YAML that starts from another choice
    gets that one's values first), with ``changed`` on top."""
    own = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    base = [d for d in own.pop("defaults") if not str(d).startswith(("schema_", "_self_"))]
    out = settings(base[0]) if base else {}
    return {**out, **own, **changed}


def data(n: int = 240, d: int = 12, seed: int = 0):
    """Unit embeddings around a common direction, the classes apart along another one."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat([0, 1], n // 2))
    z = 0.3 * rng.standard_normal((n, d)) + np.eye(d)[0]
    z[:, 1] += 0.25 * (2 * y - 1)
    return D.normalize(z), y


def one_value(name: str) -> dict:
    """The choice with a one-value grid: the value its own grid holds in the middle."""
    s = settings(name)
    key = next(k for k in s if k.endswith("_grid"))
    return settings(name, **{key: [s[key][len(s[key]) // 2]]})


def test_every_choice_of_the_group_is_in_the_registry():
    assert {p.stem for p in CONF.glob("*.yaml")} == set(CLASSIFIERS)


def reference(name: str, s: dict, z_train, y_train):
    """scikit-learn's own estimator for the choice, fitted on the same (standardised) data;
    returns p(toxic) as a function of raw embeddings."""
    if name == "knn":
        m = KNeighborsClassifier(n_neighbors=s["k_grid"][0], metric="cosine").fit(z_train, y_train)
        return lambda z: m.predict_proba(z)[:, 1]
    scaler = StandardScaler().fit(z_train) if s["standardize"] else None
    x = scaler.transform(z_train) if scaler else z_train
    if name in ("logreg", "logreg_raw", "paper_c1"):
        m = LogisticRegression(C=s["c_grid"][0], class_weight="balanced", max_iter=s["max_iter"])
    elif name == "linear_svm":
        svm = LinearSVC(
            C=s["c_grid"][0], class_weight="balanced", max_iter=s["max_iter"], random_state=0
        )
        m = CalibratedClassifierCV(svm, method="sigmoid")  # 5 stratified folds, its default
    else:
        m = MLPClassifier(
            hidden_layer_sizes=tuple(s["hidden_layer_sizes"]),
            alpha=s["alpha_grid"][0],
            early_stopping=True,
            validation_fraction=s["validation_fraction"],
            max_iter=s["max_iter"],
            random_state=0,
        )
    m.fit(x, y_train)
    return lambda z: m.predict_proba(scaler.transform(z) if scaler else z)[:, 1]


@pytest.mark.parametrize("name", FITTED_BY_THE_RUN)
def test_probabilities_match_scikit_learns_own_estimator(name):
    z, y = data()
    s = one_value(name)
    clf = make_classifier(s, seed=0).fit(z[:180], y[:180])
    expected = reference(name, s, z[:180], y[:180])(z[180:])
    np.testing.assert_allclose(clf.predict_proba(z[180:]), expected, atol=1e-6)


def test_knn_probability_is_the_share_of_toxic_neighbours_by_cosine_distance():
    z, y = data()
    clf = make_classifier(settings("knn", k_grid=[7]), seed=0).fit(z[:180], y[:180])
    nearest = np.argsort(cdist(z[180:], z[:180], metric="cosine"), axis=1)[:, :7]
    np.testing.assert_allclose(clf.predict_proba(z[180:]), y[:180][nearest].mean(axis=1))


SELECTING = [n for n in FITTED_BY_THE_RUN if n != "paper_c1"]  # paper_c1: one C, no choice


@pytest.mark.parametrize("name", SELECTING)
def test_the_value_is_chosen_by_validation_auc_with_a_warning_at_the_grids_edge(name):
    z, y = data(seed=1)
    tr, va = slice(0, 160), slice(160, 240)
    s = settings(name)
    key = next(k for k in s if k.endswith("_grid"))
    grid = s[key][:2]  # two values: whichever wins is at an edge
    clf = make_classifier({**s, key: grid}, seed=0).fit(z[tr], y[tr], z[va], y[va])
    aucs = {}
    for v in grid:
        one = make_classifier({**s, key: [v]}, seed=0).fit(z[tr], y[tr])
        aucs[v] = roc_auc_score(y[va], one.predict_proba(z[va]))
    chosen = clf.selection
    assert chosen.val_auc == pytest.approx(aucs, abs=1e-9)
    assert aucs[chosen.value] == max(aucs.values())
    assert any(f"at the edge of classifier.{key}" in w for w in clf.warnings())
    assert clf.describe()["selected"].endswith(f"={chosen.value:g}")


@pytest.mark.parametrize("name", FITTED_BY_THE_RUN)
def test_refit_is_a_fresh_fit_at_the_chosen_value(name):
    z, y = data(seed=2)
    s = settings(name)
    key = next(k for k in s if k.endswith("_grid"))
    clf = make_classifier(s, seed=0).fit(z[:160], y[:160], z[160:200], y[160:200])
    fresh = make_classifier({**s, key: [clf.selection.value]}, seed=0).fit(z[200:], y[200:])
    np.testing.assert_array_equal(
        clf.refit(z[200:], y[200:]).predict_proba(z[:40]), fresh.predict_proba(z[:40])
    )


def test_refit_with_a_validation_split_chooses_again_from_the_whole_grid():
    z, y = data(seed=2)
    s = settings("mlp")
    clf = make_classifier(s, seed=0).fit(z[:120], y[:120], z[120:160], y[120:160])
    again = clf.refit(z[:160], y[:160], z[160:], y[160:])
    fresh = make_classifier(s, seed=0).fit(z[:160], y[:160], z[160:], y[160:])
    assert again.selection.val_auc == fresh.selection.val_auc
    assert len(again.selection.val_auc) == len(s["alpha_grid"])
    np.testing.assert_array_equal(again.predict_proba(z), fresh.predict_proba(z))


def test_only_the_logreg_family_reports_the_drift_terms_of_a_linear_model():
    z, y = data()
    zc = D.make_drift("gaussian", z.shape[1], np.random.default_rng(0))(z, 0.05)
    for name in FITTED_BY_THE_RUN:
        clf = make_classifier(one_value(name), seed=0).fit(z, y)
        terms = clf.amplification(z, zc, 0.05)
        if name in ("logreg", "logreg_raw", "paper_c1"):
            assert terms["mean_abs_delta_logit"] > 0 and terms["snr_effective"] > 0
        else:
            assert terms == {}


def test_logreg_raw_feeds_the_embeddings_unchanged():
    z, y = data()
    clf = make_classifier(one_value("logreg_raw"), seed=0).fit(z, y)
    np.testing.assert_array_equal(clf.standardize(z), z)
    assert clf.w_raw_norm == pytest.approx(np.linalg.norm(clf.w))  # no 1/std amplification


@pytest.mark.parametrize(
    "name, changed, said",
    [
        ("knn", {"select_by": "brier"}, "classifier.select_by='brier'; accepted: auc, log_loss"),
        ("mlp", {"degenerate_dims": "cut"}, "accepted: keep, drop, floor"),
        ("forest", {}, "classifier='forest'; accepted: logreg, paper_c1, logreg_raw"),
    ],
)
def test_bad_settings_are_named(name, changed, said):
    s = settings("knn" if name == "forest" else name, **changed)
    with pytest.raises(ValueError, match=said):
        make_classifier({**s, "name": name}, seed=0)


def test_knn_refuses_more_neighbours_than_training_texts():
    clf = make_classifier(settings("knn", k_grid=[5, 500]), seed=0)
    with pytest.raises(ValueError, match=r"k_grid=\[5, 500\]; accepted: k of at most the 400"):
        clf.check_train_size(400)
