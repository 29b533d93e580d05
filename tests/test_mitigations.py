"""Mitigations against hand computations and fresh fits; their wiring into drift_eval (scored
against the frozen classifier on the same texts); and their bad values, refused in one line
before any model loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit, logit

from driftbench import drift as D
from driftbench import metrics as M
from driftbench import mitigations as MIT
from driftbench.classifier import CLASSIFIERS, make_classifier
from driftbench.launcher import ConfigError, run
from driftbench.report import report
from tests.test_classifiers import data, settings

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model=tiny_random", "data.n_samples=200", "schedule=list", "schedule.sigmas=[0,0.05,0.2]"]

# classifier=fitted is loaded, not fitted: its mitigations refit a clone (test_fitted_classifier.py)
FITTED_BY_THE_RUN = sorted(n for n in CLASSIFIERS if n != "fitted")


def splits(seed: int = 0):
    """train, validation and test parts of the synthetic embeddings."""
    z, y = data(n=480, seed=seed)
    return (z[:240], y[:240]), (z[240:320], y[240:320]), (z[320:], y[320:])


def fitted(name: str, train, val):
    return make_classifier(settings(name), seed=0).fit(*train, *val)


def mitigated(mitigation, clf, train, val, z, labelled=None):
    mitigation.fit(clf, *train, *val)
    z_lab, y_lab = labelled if labelled is not None else (z[:0], np.array([], dtype=int))
    return mitigation.at_checkpoint(z, z_lab, y_lab)(z)


@pytest.mark.parametrize("name", FITTED_BY_THE_RUN)
def test_noise_augmentation_at_sigma_train_0_equals_no_mitigation_exactly(name):
    train, val, (z, _) = splits()
    clf = fitted(name, train, val)
    noise = MIT.NoiseAugment(sigma_train=0.0, sigma_grid=[0.0], val_auc_tolerance=0.01, seed=0)
    np.testing.assert_array_equal(mitigated(noise, clf, train, val, z), clf.predict_proba(z))


def test_noise_augmentation_chooses_the_most_noise_validation_allows():
    train, val, (z, _) = splits()
    clf = fitted("logreg", train, val)
    grid = [0.0, 0.05, 5.0]  # sigma 5 drowns the signal (an 89 degree turn)
    strict = MIT.NoiseAugment(sigma_train=None, sigma_grid=grid, val_auc_tolerance=0.02, seed=0)
    strict.fit(clf, *train, *val)
    assert strict.describe()["sigma_train"] == 0.05 and not strict.warnings
    assert strict.val_auc[5.0] < strict.val_auc_unaugmented - 0.02
    lax = MIT.NoiseAugment(sigma_train=None, sigma_grid=grid, val_auc_tolerance=1.0, seed=0)
    lax.fit(clf, *train, *val)
    assert lax.describe()["sigma_train"] == 5.0
    assert "at the edge of mitigation.sigma_grid" in lax.warnings[0]


def test_test_time_standardization_on_an_undrifted_window_changes_auc_less_than_its_noise():
    train, val, (z, y) = splits(seed=3)
    clf = fitted("logreg", train, val)
    auc = M.roc_auc(y, clf.predict_proba(z))
    p = mitigated(MIT.StandardizeOnWindow(seed=0), clf, train, val, z)
    rng = np.random.default_rng(0)
    boot = [M.roc_auc(y[i], clf.predict_proba(z)[i]) for i in rng.integers(0, len(y), (200, 160))]
    assert abs(M.roc_auc(y, p) - auc) < np.std(boot)  # the AUC's own sampling noise


def test_test_time_standardization_is_standardizing_with_the_windows_mean_and_std():
    train, val, (z, y) = splits()
    clf = fitted("logreg", train, val)
    shifted = z + 0.6 * np.eye(z.shape[1])[1]  # every text moved towards the toxic side
    p = mitigated(MIT.StandardizeOnWindow(seed=0), clf, train, val, shifted)
    by_hand = expit((shifted - shifted.mean(0)) / shifted.std(0) @ clf.w + clf.b)
    np.testing.assert_allclose(p, by_hand, atol=1e-12)
    acc_none, acc_tts = (np.mean(M.predict(q) == y) for q in (clf.predict_proba(shifted), p))
    assert acc_none < 0.6 and acc_tts > acc_none + 0.2  # the shift undone


def test_temperature_scaling_lowers_ece_on_a_miscalibrated_hand_example_keeping_auc():
    # confidence 0.95 on every text, right on 6 of 10: the calibrated confidence is 0.6
    p = np.array([0.95] * 5 + [0.05] * 5)
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0, 1, 1])
    t = MIT.fit_temperature(p, y)
    assert t == pytest.approx(logit(0.95) / logit(0.6), rel=1e-4)
    tempered = MIT.temper(p, t)
    np.testing.assert_allclose(tempered, [0.6] * 5 + [0.4] * 5, atol=1e-4)
    assert M.expected_calibration_error(y, p) == pytest.approx(0.35)
    assert M.expected_calibration_error(y, tempered) < 1e-3
    assert M.roc_auc(y, tempered) == M.roc_auc(y, p)


def test_recalibrate_fits_the_temperature_on_the_labelled_texts_only():
    train, val, (z, y) = splits()
    clf = fitted("logreg", train, val)
    zc = D.make_drift("gaussian", z.shape[1], np.random.default_rng(0))(z, 0.3)
    lab = MIT.labelled_rows(y, 50, np.random.default_rng(0))
    recal = MIT.Recalibrate(m=50, seed=0)
    p = mitigated(recal, clf, train, val, zc, (zc[lab], y[lab]))
    t = MIT.fit_temperature(clf.predict_proba(zc[lab]), y[lab])
    assert recal.describe()["temperature"] == [t]
    np.testing.assert_allclose(p, MIT.temper(clf.predict_proba(zc), t))
    assert M.roc_auc(y, p) == pytest.approx(M.roc_auc(y, clf.predict_proba(zc)), abs=1e-12)


@pytest.mark.parametrize("name", FITTED_BY_THE_RUN)
def test_retrain_with_all_labels_equals_a_fresh_fit(name):
    train, val, (z, y) = splits()
    clf = fitted(name, train, val)
    zc = D.make_drift("gaussian", z.shape[1], np.random.default_rng(0))(z, 0.1)
    p = mitigated(MIT.Retrain(m=len(y), seed=0), clf, train, val, zc, (zc, y))
    key = f"{clf.PARAM}_grid"
    fresh = make_classifier({**settings(name), key: [clf.selection.value]}, seed=0).fit(zc, y)
    np.testing.assert_array_equal(p, fresh.predict_proba(zc))


def test_labelled_rows_hold_m_texts_of_both_classes():
    y = np.repeat([0, 1], 50)
    rows = MIT.labelled_rows(y, 11, np.random.default_rng(0))
    assert rows.size == np.unique(rows).size == 11 and set(y[rows]) == {0, 1}
    assert MIT.labelled_rows(y, 0, np.random.default_rng(0)).size == 0


def test_a_drift_run_scores_the_mitigation_against_the_frozen_classifier_and_reports_it(
    make_cfg, tmp_path
):
    """knn (no linear form: no amplification terms) with recalibration on 10 labelled texts."""
    run(make_cfg(*TINY, "classifier=knn", "mitigation=recalibrate", "mitigation.m=10"))
    d = next(p.parent for p in (tmp_path / "outputs").glob("**/meta.json"))
    m = json.loads((d / "metrics.json").read_text())
    mit, rows = m["mitigation"], m["checkpoints"]
    assert mit["name"] == "recalibrate" and mit["labels_per_checkpoint"] == 10
    assert mit["n_scored"] == 40 - 10 and len(mit["temperature"]) == len(rows) == 3
    for row, before, change in zip(rows, mit["unmitigated"], mit["change"], strict=True):
        assert change["roc_auc"] == pytest.approx(row["roc_auc"] - before["roc_auc"])
        assert change["ece"] == pytest.approx(row["ece"] - before["ece"])
    # the cost: the change on the undrifted checkpoint (found by its sigma), every metric; a
    # temperature keeps the order of the scores, so it costs no AUC there (nor anywhere)
    (undrifted,) = [c for c, row in enumerate(rows) if row["sigma"] == 0.0]
    for key in MIT.COMPARED:
        want = rows[undrifted][key] - mit["unmitigated"][undrifted][key]
        assert mit["cost_at_0"][key] == pytest.approx(want, rel=1e-12, abs=1e-12), key
    assert mit["cost_at_0"]["roc_auc"] == 0.0
    assert all(c["roc_auc"] == pytest.approx(0.0, abs=1e-12) for c in mit["change"])
    assert "snr_eq29" not in rows[0] and m["classifier"]["selected"].startswith("k=")
    files = {p.name for p in d.iterdir()}
    assert "mitigation.png" in files and "amplification.png" not in files

    run(make_cfg(*TINY, "classifier=knn"))  # the frozen classifier alone: a sweep of two
    res = report([tmp_path / "outputs"], tmp_path / "rep")
    assert "report_mitigations.png" in res["figures"]
    md = (tmp_path / "rep" / "report.md").read_text()
    auc_table = md.split("**ROC-AUC per checkpoint")[1].split("**")[1]
    assert "| mitigation | n | σ=0 | σ=0.05 | σ=0.2 | change vs none at σ max |" in auc_table
    cells = {"none": [], "recalibrate": []}
    for line in auc_table.splitlines():
        parts = [c.strip() for c in line.strip("|").split("|")]
        if parts[0] in cells:
            cells[parts[0]] = parts
    recal = cells["recalibrate"]
    assert recal[2:5] == [f"{r['roc_auc']:.3f}" for r in rows]
    assert recal[5:] == [
        f"{mit['change_at_max']['roc_auc']:+.3f}",
        f"{mit['cost_at_0']['roc_auc']:+.3f}",
        "10",
    ]
    assert cells["none"][5:] == ["+0.000", "+0.000", "0"]


@pytest.mark.parametrize(
    "overrides, said",
    [
        (
            ["mitigation=noise_augment", "mitigation.sigma_train=-0.1"],
            "mitigation.sigma_train=-0.1; accepted: a number >= 0",
        ),
        (
            ["mitigation=retrain", "mitigation.m=500"],
            "mitigation.m=500 labelled texts of a checkpoint of 400 test texts; accepted: 4..398",
        ),
        (["mitigation=recalibrate", "mitigation.m=2"], "mitigation.m=2; accepted: an integer >= 4"),
        (["mitigation.name=pray"], "mitigation='pray'; accepted: none, noise_augment, "),
        (["classifier=knn", "classifier.k_grid=[5,2000]"], "accepted: k of at most the 1400"),
        (
            ["mitigation=adapter", "mitigation.kind=cca"],
            "mitigation.kind='cca'; accepted: procrustes, lstsq, affine, low_rank, mlp",
        ),
        (
            ["mitigation=adapter", "mitigation.kind=low_rank"],
            "mitigation.rank=None with mitigation.kind=low_rank; accepted: an integer >= 1",
        ),
        (
            ["mitigation=adapter", "mitigation.kind=low_rank", "mitigation.rank=0"],
            "mitigation.rank=0; accepted: an integer >= 1",
        ),
        (
            ["mitigation=adapter", "mitigation.rank=8"],
            "mitigation.rank=8 with mitigation.kind=procrustes; accepted: null (only low_rank",
        ),
        (
            ["mitigation=adapter", "mitigation.pairs=1"],
            "mitigation.pairs=1; accepted: an integer >= 2",
        ),
        (
            ["mitigation=adapter", "mitigation.kind=mlp", "mitigation.pairs=5"],
            "mitigation.pairs=5 with mitigation.kind=mlp; accepted: at least 10",
        ),
        (
            ["mitigation=adapter", "mitigation.pairs=2000"],
            "mitigation.pairs=2000 is more than the 1400 training texts; accepted: 2..1400",
        ),
    ],
)
def test_bad_values_stop_before_any_model_loads(make_cfg, tmp_path, overrides, said):
    with pytest.raises(ConfigError) as err:
        run(make_cfg("model=hf", "model.name_or_path=/no/such/model", *overrides))
    assert said in str(err.value) and "\n" not in str(err.value)
    assert not list((tmp_path / "outputs").glob("**/meta.json"))  # nothing was started


def test_an_unknown_choice_is_one_line_listing_the_choices(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "mitigation=pray", "classifier=knn"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 2 and "Traceback" not in out.stdout + out.stderr
    assert out.stderr.strip() == (
        "error: mitigation=pray: no such option; accepted: adapter, noise_augment, none, "
        "recalibrate, retrain, test_time_standardize"
    )


def adapted(z0_anchor, zc_anchor, clf, z, kind="procrustes", rank=None):
    """The frozen classifier behind the adapter fitted on the anchor pairs."""
    mitigation = MIT.Adapt(kind=kind, pairs=len(z0_anchor), rank=rank, seed=0)
    mitigation.fit(clf, None, None, None, None)
    return mitigation.at_checkpoint(z, z[:0], np.array([], dtype=int), (z0_anchor, zc_anchor))(z)


def test_the_procrustes_adapter_undoes_a_rotation_and_changes_nothing_undrifted():
    train, val, (z, _) = splits()
    clf = fitted("logreg", train, val)
    anchors = train[0][:100]
    q = D.random_orthogonal(z.shape[1], np.random.default_rng(3))
    np.testing.assert_allclose(
        adapted(anchors, anchors @ q.T, clf, z @ q.T), clf.predict_proba(z), atol=1e-8
    )
    np.testing.assert_allclose(adapted(anchors, anchors, clf, z), clf.predict_proba(z), atol=1e-10)


def test_the_procrustes_adapter_is_what_realign_was():
    """realign's numbers, kept: the map ``U V^T`` of the SVD of ``zc^T z0`` (with its 1e-10 ridge
    towards the identity), applied to the rows, back on the unit sphere, then the classifier."""
    train, val, (z, _) = splits()
    clf = fitted("logreg", train, val)
    anchors = train[0][:100]
    moved = D.make_drift("subspace", z.shape[1], np.random.default_rng(1))
    zc, zc_anchor = moved(z, 0.5), moved(anchors, 0.5)
    m = zc_anchor.T @ anchors
    u, _, vt = np.linalg.svd(m + 1e-10 * np.linalg.norm(m, 2) * np.eye(*m.shape))
    by_hand = zc @ (u @ vt)
    by_hand /= np.linalg.norm(by_hand, axis=1, keepdims=True)
    np.testing.assert_array_equal(adapted(anchors, zc_anchor, clf, zc), clf.predict_proba(by_hand))


def test_adapters_restore_the_ranking_under_subspace_drift_but_not_under_gaussian():
    """Subspace drift turns every embedding by (nearly) one linear map, which anchors drifted the
    same way recover; Gaussian noise is independent per text, which no map can undo."""
    train, val, (z, y) = splits()
    clf = fitted("logreg", train, val)
    anchors = train[0][:200]
    for name, helped in (("subspace", True), ("gaussian", False)):
        # two operators with the same rotation, each with noise of its own (as a run builds them)
        op = D.make_drift(name, z.shape[1], np.random.default_rng(1))
        moved = D.make_drift(name, z.shape[1], np.random.default_rng(1), np.random.default_rng(7))
        sigma = 0.5 if name == "subspace" else 0.3
        zc = op(z, sigma)
        frozen = M.roc_auc(y, clf.predict_proba(zc))
        for kind in ("procrustes", "affine"):
            fixed = M.roc_auc(y, adapted(anchors, moved(anchors, sigma), clf, zc, kind))
            if helped:
                undrifted = M.roc_auc(y, clf.predict_proba(z))
                assert fixed > frozen + 0.05 and fixed > undrifted - 0.03, (kind, frozen, fixed)
            else:
                assert abs(fixed - frozen) < 0.03, (kind, frozen, fixed)


def test_an_adapter_on_a_real_update_runs_and_costs_nothing_undrifted(make_cfg, tmp_path):
    run(
        make_cfg(
            "model=tiny_random",
            "data.n_samples=200",
            "monitor=none",
            "drift=quantize",
            "drift.levels=[Q4_0]",
            "mitigation=adapter",
            "mitigation.pairs=50",
        )
    )
    m = json.loads(next((tmp_path / "outputs").glob("**/metrics.json")).read_text())
    mit = m["mitigation"]
    assert (mit["name"], mit["kind"], mit["pairs"], mit["rank"]) == (
        "adapter",
        "procrustes",
        50,
        None,
    )
    assert [f["kind"] for f in mit["fitted"]] == ["procrustes"] * 2  # one map per checkpoint
    assert abs(mit["cost_at_0"]["roc_auc"]) < 1e-9
