"""``classifier=fitted``: a team's own classifier, already fitted on its model's embeddings,
loaded from a file and frozen. The run never fits it: its ``fit`` only checks it against the
run's training embeddings, so every number a run writes is the team's classifier's.

The file is a scikit-learn estimator or Pipeline saved with joblib (``.joblib``, ``.pkl``) or
skops (``.skops``). Loading a joblib or pickle file runs code the file names: load only files
you trust. skops loads only the types it trusts by default and those named in
``classifier.trusted``. Every check the file allows is made when the classifier is built (in
the task's ``validate``, before any model loads), each a sentence naming the bad value.

A mitigation that retrains (``retrain``, ``noise_augment``, the playbook's re-embedding)
refits a clone of the team's estimator (``sklearn.base.clone``: its class and hyper-parameters,
unfitted) on the texts it is given; nothing is chosen on validation, the team chose its
hyper-parameters. The loaded estimator itself is never changed.
"""

from __future__ import annotations

import copy
import functools
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import joblib
import numpy as np
from sklearn.base import clone
from sklearn.exceptions import InconsistentVersionWarning, NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from driftbench.digests import file_sha256

from .base import FIT_THREADS, Classifier

JOBLIB_SUFFIXES = (".joblib", ".pkl")
SKOPS_SUFFIX = ".skops"
ACCEPTED = (
    "a fitted scikit-learn estimator or Pipeline saved with joblib (.joblib, .pkl) or skops "
    "(.skops)"
)
# below this training ROC-AUC the file was most likely fitted on other embeddings of the same
# width (another layer or pooling, not unit-normalised): a warning, not a refusal
SUSPECT_TRAIN_AUC = 0.6


def resolve_file(path: str | None) -> Path:
    """``classifier.path`` as a file: ``~`` expanded, a relative path from the cwd."""
    if path is None or str(path) == "":
        raise ValueError(
            "classifier.path is not set: give the file of your fitted estimator, e.g. "
            "classifier=fitted classifier.path=/path/to/classifier.joblib"
        )
    file = Path(os.path.expanduser(str(path))).resolve()
    if not file.is_file():
        raise ValueError(f"classifier.path={path}: no such file; accepted: {ACCEPTED}")
    return file


def _skops_io(shown: str):
    try:
        import skops.io as sio
    except ImportError as e:
        raise ValueError(
            f"classifier.path={shown} is a skops file and skops is not installed; accepted: "
            "pip install skops, or the estimator saved with joblib (.joblib)"
        ) from e
    return sio


def _skops_loader(file: Path, shown: str, trusted: Sequence[str]):
    """skops' load, once every type the file holds beyond skops' defaults is named trusted."""
    sio = _skops_io(shown)
    try:
        untrusted = sio.get_untrusted_types(file=file)
    except Exception as e:  # a damaged archive: whatever it raises, named
        raise ValueError(_unloadable(shown, e)) from e
    missing = [t for t in untrusted if t not in trusted]
    if missing:
        raise ValueError(
            f"classifier.path={shown} holds types skops does not trust by default: {missing}; "
            "accepted: a file of trusted types, or these names in classifier.trusted once you "
            "trust them"
        )
    return lambda f: sio.load(f, trusted=list(untrusted))


def _unloadable(shown: str, e: Exception) -> str:
    said = (str(e).strip().splitlines() or [""])[0]
    return (
        f"classifier.path={shown} cannot be loaded ({type(e).__name__}: {said}); "
        f"accepted: {ACCEPTED}"
    )


def load_estimator(file: Path, shown: str, trusted: Sequence[str]) -> tuple[object, list[str]]:
    """The object saved in ``file`` and the warnings to report for it (a scikit-learn version
    other than the one that saved it). ``shown``: the path as the config gives it."""
    suffix = file.suffix.lower()
    if suffix == SKOPS_SUFFIX:
        load = _skops_loader(file, shown, trusted)
    elif suffix in JOBLIB_SUFFIXES:
        load = joblib.load
    else:
        raise ValueError(
            f"classifier.path={shown} is a {suffix or 'suffix-less'} file; accepted: {ACCEPTED}"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InconsistentVersionWarning)
        try:
            obj = load(file)
        except Exception as e:  # unpickling runs the file's code: any error
            raise ValueError(_unloadable(shown, e)) from e
    notes = []
    for w in caught:
        if issubclass(w.category, InconsistentVersionWarning):
            notes.append(f"classifier.path={shown}: {' '.join(str(w.message).split())}")
        else:  # not ours to judge: shown as loading showed it
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return obj, notes


@functools.lru_cache(maxsize=4)
def _load_once(file: Path, sha256: str, shown: str, trusted: tuple[str, ...]) -> tuple:
    """``load_estimator``, once per file content in a process: a run builds the classifier in
    its checks, for its result key and to fit, and unpickling a large pipeline three times
    costs seconds. Keyed by the file's sha256, so a file rewritten between runs loads anew. The
    estimator is shared, never changed (a refit fits a clone)."""
    obj, notes = load_estimator(file, shown, trusted)
    return obj, tuple(notes)


def check_estimator(obj, shown: str) -> int:
    """The width a fitted binary probabilistic classifier reads; a sentence naming what is
    wrong otherwise."""
    kind = type(obj).__name__
    if not callable(getattr(obj, "predict_proba", None)):
        raise ValueError(
            f"classifier.path={shown} holds a {kind}, which has no predict_proba; accepted: a "
            "probabilistic classifier (e.g. LogisticRegression, a Pipeline ending in one, or a "
            "margin classifier inside CalibratedClassifierCV)"
        )
    try:
        check_is_fitted(obj)
    except (NotFittedError, TypeError) as e:
        raise ValueError(
            f"classifier.path={shown} holds a {kind} that is not fitted "
            f"({' '.join(str(e).split())}); accepted: {ACCEPTED}"
        ) from e
    classes = np.asarray(getattr(obj, "classes_", [])).tolist()
    if classes != [0, 1]:
        raise ValueError(
            f"classifier.path={shown} holds a {kind} of the classes {classes}; accepted: the "
            "binary classes [0, 1] (1: toxic)"
        )
    width = getattr(obj, "n_features_in_", None)
    if width is None:
        raise ValueError(
            f"classifier.path={shown} holds a {kind} that does not say how many features it "
            "reads (no n_features_in_); accepted: an estimator fitted on an array of embeddings"
        )
    return int(width)


def _plain(v):
    """A hyper-parameter as a JSON value: an estimator by its class name, else its repr."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, np.generic):
        return v.item()
    if hasattr(v, "get_params") and not isinstance(v, type):
        return type(v).__name__
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return repr(v)


def plain_params(estimator) -> dict:
    """``get_params(deep=True)`` (a Pipeline's steps' own included) as JSON values."""
    get = getattr(estimator, "get_params", None)
    return {} if get is None else {k: _plain(v) for k, v in get(deep=True).items()}


class Fitted(Classifier):
    """The estimator saved in ``classifier.path``: ``predict_proba`` is its own (the column of
    class 1), ``fit`` checks it on the training embeddings and fits nothing, ``refit`` fits a
    clone, ``describe`` names its class, file, sha256 and hyper-parameters (what the other
    families report as the value chosen on validation)."""

    CACHED = False  # loading is the fit: the fit cache would keep a second copy of the file

    def __init__(self, *, path: str | None, trusted: Sequence[str], seed: int):
        self.file = resolve_file(path)
        self.shown, self.trusted = str(path), list(trusted)
        self.sha256 = file_sha256(self.file)
        loaded = _load_once(self.file, self.sha256, self.shown, tuple(self.trusted))
        self.estimator, self.load_notes = loaded[0], list(loaded[1])
        self.n_features_in = check_estimator(self.estimator, self.shown)
        self.seed, self.scaler, self.refitted = seed, None, False
        self.fit_notes: list[str] = []

    def inputs(self) -> dict:
        return {"classifier_file": self.sha256}

    def check_width(self, width: int, whose: str) -> None:
        if width != self.n_features_in:
            raise ValueError(
                f"classifier.path={self.shown} expects {self.n_features_in} features; {whose} "
                f"have {width}; accepted: an estimator fitted on this model's embeddings"
            )

    def fit(self, z_train, y_train, z_val=None, y_val=None) -> Fitted:
        """Nothing is fitted: the estimator is checked on the training embeddings (their width,
        probabilities in [0, 1]) and a training ROC-AUC near chance is reported as a warning."""
        self.check_width(z_train.shape[1], "the run's embeddings")
        p = self.predict_proba(z_train)
        if p.shape != (len(z_train),) or not np.all((p >= 0) & (p <= 1)):
            raise ValueError(
                f"classifier.path={self.shown}: predict_proba gives no probabilities on the "
                f"run's embeddings; accepted: {ACCEPTED}"
            )
        auc = float(roc_auc_score(y_train, p))
        if auc < SUSPECT_TRAIN_AUC:
            self.fit_notes.append(
                f"classifier.path={self.shown} ranks the run's training texts at ROC-AUC "
                f"{auc:.3f}: was it fitted on this model's unit-norm embeddings, with this "
                "embed.pooling and embed.layer?"
            )
        return self

    def predict_proba(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict_proba(z))[:, 1]  # classes_ is [0, 1]

    def refit(self, z: np.ndarray, y: np.ndarray, z_val=None, y_val=None) -> Fitted:
        """A clone of the team's estimator fitted on ``(z, y)`` (any width: a re-embedding by
        another model); the validation split is not read, there is nothing to choose."""
        try:
            fresh = clone(self.estimator)
        except TypeError as e:
            raise ValueError(
                f"classifier.path={self.shown}: sklearn.base.clone cannot copy its "
                f"{type(self.estimator).__name__} to refit it ({e}); accepted with "
                "classifier=fitted: a mitigation that does not refit"
            ) from e
        with threadpool_limits(limits=FIT_THREADS, user_api="blas"):
            fresh.fit(z, y)
        out = copy.copy(self)
        out.estimator, out.refitted, out.n_features_in = fresh, True, int(z.shape[1])
        out.load_notes, out.fit_notes = [], []
        return out

    def describe(self) -> dict:
        est = self.estimator
        how = "refitted (a clone)" if self.refitted else "loaded"
        return {
            "selected": f"{type(est).__name__} {how} from {self.file.name}",
            "estimator": f"{type(est).__module__}.{type(est).__qualname__}",
            "path": str(self.file),
            "sha256": self.sha256,
            "n_features_in": self.n_features_in,
            "refitted": self.refitted,
            "params": plain_params(est),
        }

    def warnings(self) -> list[str]:
        return [*self.load_notes, *self.fit_notes]
