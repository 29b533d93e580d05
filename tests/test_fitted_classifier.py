"""``classifier=fitted``: a team's own classifier, fitted before the run on its model's
embeddings and saved with joblib (or skops), is what the run scores. It is loaded, checked and
frozen: never refitted (a mitigation that retrains refits a clone of it); a file the run cannot
use is refused in one line before any run dir; the file's bytes are part of the result key."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import LinearSVC
from test_launch import launch, one_error_line

from driftbench import drift as D
from driftbench.classifier import make_classifier
from driftbench.fit_cache import fit_key, fitted_classifier
from driftbench.launcher import prepare, run
from driftbench.tasks.drift_eval.task import embed_data, load_data

TINY = [
    "model=tiny_random",
    "data.n_samples=200",
    "schedule=list",
    "schedule.sigmas=[0,0.05]",
    "monitor=none",
]
TINY_WIDTH = 64  # conf/model/tiny_random.yaml's hidden_size


@dataclass
class Team:
    """The team's pipeline, the file it saved, and the run's own embeddings and split."""

    pipeline: Pipeline
    path: Path
    z: np.ndarray
    y: np.ndarray
    split: dict

    def overrides(self, *more: str) -> list[str]:
        return [*TINY, "classifier=fitted", f"classifier.path={self.path}", *more]


@pytest.fixture
def team(make_cfg, tmp_path) -> Team:
    """Pipeline(StandardScaler, LogisticRegression) fitted on the training split of the run's
    own embeddings of ``model=tiny_random`` (unit norm, as the run reads them), saved with
    joblib."""
    cfg = make_cfg(*TINY)
    data = load_data(cfg)
    z = D.normalize(embed_data(cfg, data)[0].astype(np.float64))
    tr = data.split["train"]
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    pipeline.fit(z[tr], data.labels[tr])
    path = tmp_path / "team.joblib"
    joblib.dump(pipeline, path)
    return Team(pipeline, path, z, data.labels, data.split)


def settings(path: Path, **changed) -> dict:
    return {"name": "fitted", "path": str(path), "trusted": [], **changed}


def only_metrics(tmp_path) -> dict:
    (path,) = sorted((tmp_path / "outputs").glob("**/metrics.json"))
    return json.loads(path.read_text())


def double(x):
    """A step skops does not trust by default (a function of this module)."""
    return 2 * x


# ── the run scores the team's classifier ────────────────────────────────────────────────────


def test_checkpoint_0_is_the_team_pipelines_own_roc_auc(team, make_cfg, tmp_path):
    run(make_cfg(*team.overrides()))
    m = only_metrics(tmp_path)
    te = team.split["test"]
    expected = roc_auc_score(team.y[te], team.pipeline.predict_proba(team.z[te])[:, 1])
    assert m["checkpoints"][0]["roc_auc"] == expected
    about = m["classifier"]
    assert about["name"] == "fitted" and about["estimator"] == "sklearn.pipeline.Pipeline"
    assert about["sha256"] == hashlib.sha256(team.path.read_bytes()).hexdigest()
    assert about["params"]["logisticregression__max_iter"] == 1000  # its params, not a choice
    assert about["refitted"] is False


def test_the_team_classifier_is_never_refitted(team):
    clf = make_classifier(settings(team.path), seed=0)
    coef = team.pipeline[-1].coef_.copy()
    before = clf.predict_proba(team.z)
    tr, va = team.split["train"], team.split["val"]
    shuffled = np.random.default_rng(0).permutation(team.y[tr])  # labels its fit must not read
    assert clf.fit(team.z[tr], shuffled, team.z[va], team.y[va]) is clf
    np.testing.assert_array_equal(clf.predict_proba(team.z), before)
    np.testing.assert_array_equal(clf.estimator[-1].coef_, coef)
    np.testing.assert_array_equal(before, team.pipeline.predict_proba(team.z)[:, 1])


def test_a_retraining_mitigation_refits_a_clone_and_leaves_the_file_alone(team, make_cfg, tmp_path):
    clf = make_classifier(settings(team.path), seed=0)
    te = team.split["test"][:30]
    again = clf.refit(team.z[te], team.y[te])
    expected = clone(team.pipeline).fit(team.z[te], team.y[te]).predict_proba(team.z)[:, 1]
    np.testing.assert_array_equal(again.predict_proba(team.z), expected)
    assert again.describe()["refitted"] and again.estimator is not clf.estimator
    np.testing.assert_array_equal(
        clf.predict_proba(team.z), team.pipeline.predict_proba(team.z)[:, 1]
    )
    data = team.path.read_bytes()
    run(make_cfg(*team.overrides("mitigation=retrain", "mitigation.m=20")))
    m = only_metrics(tmp_path)
    assert m["mitigation"]["name"] == "retrain" and len(m["checkpoints"]) == 2
    assert team.path.read_bytes() == data


def test_the_fit_cache_keeps_no_copy_and_its_key_holds_the_file(team, tmp_path):
    tr, va = team.split["train"], team.split["val"]
    args = (team.z[tr], team.y[tr], team.z[va], team.y[va])
    cache = tmp_path / "cache"
    _, fit = fitted_classifier(settings(team.path), 0, *args, cache_dir=cache)
    assert not fit.cache_hit and not (cache / "fits").exists()
    assert fit.key != fit_key(settings(team.path), 0, *args)  # the file's digest is in it
    other = make_pipeline(StandardScaler(), LogisticRegression(C=0.01)).fit(team.z[tr], team.y[tr])
    joblib.dump(other, team.path)
    _, refit = fitted_classifier(settings(team.path), 0, *args, cache_dir=cache)
    assert refit.key != fit.key


def test_changing_the_file_changes_the_result_key(team, make_cfg):
    key = prepare(make_cfg(*team.overrides())).result_key
    assert prepare(make_cfg(*team.overrides())).result_key == key
    tr = team.split["train"]
    other = make_pipeline(StandardScaler(), LogisticRegression(C=0.01)).fit(team.z[tr], team.y[tr])
    joblib.dump(other, team.path)
    assert prepare(make_cfg(*team.overrides())).result_key != key


def test_a_file_is_unpickled_once_per_content_and_anew_when_rewritten(team):
    """The checks, the result key and the fit each build the classifier: one load serves them
    while the file is unchanged; a rewritten file is loaded again."""
    first = make_classifier(settings(team.path), seed=0)
    assert make_classifier(settings(team.path), seed=1).estimator is first.estimator
    tr = team.split["train"]
    other = make_pipeline(StandardScaler(), LogisticRegression(C=0.01)).fit(team.z[tr], team.y[tr])
    joblib.dump(other, team.path)
    again = make_classifier(settings(team.path), seed=0)
    assert again.estimator is not first.estimator
    assert again.estimator[-1].C == 0.01 and first.estimator[-1].C == 1.0


# ── refused in one line, before any run dir ─────────────────────────────────────────────────


def test_a_pipeline_of_another_width_is_refused_before_any_run_dir(tmp_path):
    x = np.random.default_rng(0).standard_normal((40, 32))
    path = tmp_path / "narrow.joblib"
    joblib.dump(
        make_pipeline(StandardScaler(), LogisticRegression()).fit(x, np.arange(40) % 2), path
    )
    out = launch(tmp_path, *TINY, "classifier=fitted", f"classifier.path={path}", check=False)
    assert one_error_line(out) == (
        f"error: classifier.path={path} expects 32 features; the embeddings of tiny_random have "
        f"{TINY_WIDTH}; accepted: an estimator fitted on this model's embeddings"
    )
    assert not list(tmp_path.glob("**/meta.json"))


def test_the_width_is_checked_again_on_the_embeddings(team):
    clf = make_classifier(settings(team.path), seed=0)
    tr = team.split["train"]
    with pytest.raises(ValueError, match="expects 64 features; the run's embeddings have 32;"):
        clf.fit(team.z[tr][:, :32], team.y[tr])


@pytest.mark.parametrize(
    "name, estimator, classes, said",
    [
        ("missing.joblib", None, 2, "no such file; accepted: a fitted scikit-learn estimator"),
        ("svm.joblib", LinearSVC(), 2, "holds a LinearSVC, which has no predict_proba; accepted:"),
        ("three.joblib", LogisticRegression(), 3, "of the classes [0, 1, 2]; accepted: the binary"),
    ],
    ids=["missing", "no_predict_proba", "three_classes"],
)
def test_a_file_the_run_cannot_use_is_one_line(tmp_path, name, estimator, classes, said):
    path = tmp_path / name
    if estimator is not None:  # fitted on the tiny model's width, with labels 0 .. classes - 1
        x = np.random.default_rng(0).standard_normal((40, TINY_WIDTH))
        joblib.dump(estimator.fit(x, np.arange(40) % classes), path)
    out = launch(tmp_path, *TINY, "classifier=fitted", f"classifier.path={path}", check=False)
    line = one_error_line(out)
    assert f"classifier.path={path}" in line and said in line
    assert not list(tmp_path.glob("**/meta.json"))


def test_a_file_that_does_not_load_is_named(tmp_path):
    path = tmp_path / "broken.pkl"
    path.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"broken.pkl cannot be loaded \(.*\); accepted: a fitted"):
        make_classifier(settings(path), seed=0)


# ── skops ───────────────────────────────────────────────────────────────────────────────────


def test_a_skops_file_is_the_same_classifier_and_untrusted_types_are_named(team, tmp_path):
    sio = pytest.importorskip("skops.io")
    path = tmp_path / "team.skops"
    sio.dump(team.pipeline, path)
    clf = make_classifier(settings(path), seed=0)
    np.testing.assert_array_equal(
        clf.predict_proba(team.z), team.pipeline.predict_proba(team.z)[:, 1]
    )
    tr = team.split["train"]
    custom = make_pipeline(FunctionTransformer(double), LogisticRegression())
    sio.dump(custom.fit(team.z[tr], team.y[tr]), tmp_path / "custom.skops")
    name = f"{__name__}.double"
    with pytest.raises(ValueError, match=rf"does not trust by default: \['{name}'\]; accepted"):
        make_classifier(settings(tmp_path / "custom.skops"), seed=0)
    trusted = make_classifier(settings(tmp_path / "custom.skops", trusted=[name]), seed=0)
    assert trusted.n_features_in == TINY_WIDTH
