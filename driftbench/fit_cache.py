"""Fitted classifiers and their on-disk cache (``<cache_dir>/fits/<key>.pkl``), beside the
embeddings' (``driftbench.embed``).

A drift run fits its classifier on checkpoint-0 embeddings only, so every run of a sweep that
differs in drift type, sigma schedule or monitors alone fits the very same classifier: the
78 jobs of ``drift=gaussian,directional,subspace seed=0..25`` need 26 fits. The key is what
decides a fit: the bytes of the training and validation embeddings and labels (so the model,
texts, split and normalisation all count), the ``classifier/`` group's settings, the seed, the
source of ``driftbench/classifier/`` and the versions of the libraries that fit it. A hit is
the same fitted object as a fresh fit (it is pickled), so every number a run writes is the one
an uncached run writes. The mitigation does not enter the key: it reads the frozen classifier
and never changes it. ``classifier=fitted`` (a team's own estimator, loaded from a file) is not
cached: loading it is its fit; its key holds the file's sha256 all the same.

Entries are pickles: like any cache dir of fitted models, ``runtime.cache_dir`` must be one
you trust. Writes are atomic, so concurrent jobs of a sweep can share the folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from driftbench.classifier import CLASSIFIERS, Classifier, make_classifier
from driftbench.digests import arrays_sha256, cache_key

FIT_CACHE_VERSION = 1
LIBRARIES = ("scikit-learn", "scipy", "numpy", "threadpoolctl")
# what unpickling a truncated, overwritten or stale entry raises
UNREADABLE = (
    OSError,
    EOFError,
    pickle.UnpicklingError,
    AttributeError,
    ImportError,
    IndexError,
    KeyError,
    TypeError,
    ValueError,
)

log = logging.getLogger(__name__)


@dataclass
class Fit:
    """How a run got its classifier: ``fit_s`` is the fit's own wall time (on a hit, the time
    it took when it was made), ``cache_hit`` whether it came from the cache."""

    key: str
    fit_s: float
    cache_hit: bool


def _code_digest(_memo: dict = {}) -> str:  # noqa: B006 - process-wide memo
    """sha256 of driftbench/classifier/*.py and the fitting libraries' versions: a change to
    either is a new fit."""
    if not _memo:
        h = hashlib.sha256()
        for p in sorted((Path(__file__).parent / "classifier").glob("*.py")):
            h.update(p.name.encode() + p.read_bytes())
        for lib in LIBRARIES:
            h.update(f"{lib}=={version(lib)}".encode())
        _memo["digest"] = h.hexdigest()
    return _memo["digest"]


def fit_key(
    settings: dict, seed: int, z_train, y_train, z_val, y_val, inputs: dict | None = None
) -> str:
    """``inputs``: the digests of the files the classifier reads (``Classifier.inputs``: the
    file of ``classifier=fitted``); none for a family the run fits, whose keys stay as they were."""
    parts = {
        "version": FIT_CACHE_VERSION,
        "classifier": settings,
        "seed": int(seed),
        "data_sha256": arrays_sha256(z_train, y_train, z_val, y_val),
        "code_sha256": _code_digest(),
    }
    if inputs:
        parts["inputs"] = inputs
    return cache_key(parts)


class FitCache:
    """``<cache_dir>/fits/<key>.pkl``: the fitted classifier and its fit time."""

    def __init__(self, cache_dir: str | Path):
        self.root = Path(os.path.expanduser(str(cache_dir))) / "fits"

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pkl"

    def load(self, key: str, name: str) -> tuple[Classifier, float] | None:
        """The entry, or None when there is none or it cannot be trusted (it does not unpickle,
        or holds no fitted classifier of the family ``name`` asks for): a bad entry is logged
        in one line and removed, and the caller fits again."""
        p = self.path(key)
        if not p.exists():
            return None
        try:
            with open(p, "rb") as f:
                entry = pickle.load(f)
            clf, fit_s = entry["classifier"], float(entry["fit_s"])
        except UNREADABLE as e:
            problem = f"unreadable: {type(e).__name__}"
        else:
            if type(clf) is CLASSIFIERS.get(name) and hasattr(clf, "selection"):
                return clf, fit_s
            problem = f"holds a {type(clf).__name__}, expected a fitted {name}"
        log.warning("classifier cache entry %s is bad (%s): removed, fitting again", p, problem)
        p.unlink(missing_ok=True)
        return None

    def save(self, key: str, clf: Classifier, fit_s: float) -> None:
        from driftbench.fileio import atomic_write_bytes

        entry = {"classifier": clf, "fit_s": fit_s}
        atomic_write_bytes(self.path(key), lambda f: pickle.dump(entry, f, protocol=5))


def fitted_classifier(
    settings: dict,
    seed: int,
    z_train,
    y_train,
    z_val,
    y_val,
    *,
    cache_dir: str | Path,
    refit_of: Classifier | None = None,
) -> tuple[Classifier, Fit]:
    """The ``classifier/`` group's choice (``settings``: the group's config, ``name`` included)
    fitted on train with its hyper-parameter chosen on validation, from the cache or fitted now
    and then cached. Every call returns its own object, so a run can never change another's.

    ``refit_of``: the run's frozen classifier, refitted instead (``Classifier.refit`` with the
    validation split): for a family the run fits, the very same fit as a fresh one of
    ``settings`` (and the same entry); for ``fitted``, a clone of the team's estimator fitted
    here, where a fresh one would only be the file checked again. A family that is not
    ``CACHED`` (``fitted``: loading is its fit) is fitted every time, under a key that holds
    its file's digest."""
    settings = dict(settings)
    fresh = make_classifier(settings, seed)
    key = fit_key(settings, seed, z_train, y_train, z_val, y_val, fresh.inputs())
    cache = FitCache(cache_dir) if fresh.CACHED else None
    hit = None if cache is None else cache.load(key, settings["name"])
    if hit is not None:
        return hit[0], Fit(key, hit[1], True)
    t = time.perf_counter()
    if refit_of is None:
        clf = fresh.fit(z_train, y_train, z_val, y_val)
    else:
        clf = refit_of.refit(z_train, y_train, z_val, y_val)
    fit_s = time.perf_counter() - t
    if cache is not None:
        cache.save(key, clf, fit_s)
    return clf, Fit(key, fit_s, False)
