"""The registry: a monitor name -> ``Monitor`` (reference, window) -> ``Outcome``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from driftbench.metrics import predict
from driftbench.monitors.statistics import (
    atc_estimate,
    c2st,
    cbpe_estimate,
    doc_estimate,
    ks_bonferroni,
    mmd_test,
)
from driftbench.monitors.views import Outcome, Reference, Settings, View

# --- the registry -------------------------------------------------------------------------------

TestFn = Callable[[Reference, View, Settings, np.random.Generator], Outcome]


@dataclass(frozen=True)
class Monitor:
    """A monitor: ``test(reference, window, settings, rng) -> Outcome``. ``has_p_value``: it
    alarms at p <= alpha; otherwise above the null threshold of its statistic."""

    test: TestFn
    has_p_value: bool
    estimates_accuracy: bool
    what: str


def _confidence_drop(ref: Reference, win: View, s: Settings, rng) -> Outcome:
    return Outcome(float(ref.view.confidence.mean() - win.confidence.mean()))


def _confidence_shift(ref: Reference, win: View, s: Settings, rng) -> Outcome:
    return Outcome(abs(float(ref.view.confidence.mean() - win.confidence.mean())))


def _positive_rate_shift(ref: Reference, win: View, s: Settings, rng) -> Outcome:
    return Outcome(abs(float(np.mean(predict(win.p)) - np.mean(predict(ref.view.p)))))


def _bbsd_ks(ref: Reference, win: View, s: Settings, rng) -> Outcome:
    return Outcome(*ks_bonferroni(ref.view.p, win.p))


def _mmd(ref: Reference, win: View, s: Settings, rng) -> Outcome:
    return Outcome(*mmd_test(ref.view.z, win.z, s.mmd_permutations, rng))


def _pca_ks(ref: Reference, win: View, s: Settings, rng) -> Outcome:
    return Outcome(*ks_bonferroni(ref.pcs, ref.project(win.z)))


def _c2st(ref: Reference, win: View, s: Settings, rng) -> Outcome:
    return Outcome(*c2st(ref.view.z, win.z, s.c2st_holdout, s.c2st_c, rng))


def _centroid_shift(ref: Reference, win: View, s: Settings, rng) -> Outcome:
    a, b = ref.view.mean, win.mean
    return Outcome(float(1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))


def _mean_norm_shift(ref: Reference, win: View, s: Settings, rng) -> Outcome:
    return Outcome(abs(float(np.linalg.norm(win.mean) - np.linalg.norm(ref.view.mean))))


def _estimator(estimate: Callable[[Reference, View], float]) -> TestFn:
    """An accuracy estimator doubles as a detector: its statistic is the drop it reports."""

    def test(ref: Reference, win: View, s: Settings, rng) -> Outcome:
        acc = estimate(ref, win)
        return Outcome(ref.accuracy - acc, accuracy=acc)

    return test


def _atc(ref: Reference, win: View) -> float:
    return atc_estimate(ref.atc_threshold, win.confidence)


def _doc(ref: Reference, win: View) -> float:
    return doc_estimate(
        ref.accuracy, float(ref.view.confidence.mean()), float(win.confidence.mean())
    )


def _cbpe(ref: Reference, win: View) -> float:
    return cbpe_estimate(ref.calibrator, win.p)


MONITORS: dict[str, Monitor] = {
    "confidence_drop": Monitor(
        _confidence_drop, False, False, "mean confidence falls (what the paper calls standard)"
    ),
    "confidence_shift": Monitor(
        _confidence_shift, False, False, "mean confidence moves either way"
    ),
    "positive_rate_shift": Monitor(
        _positive_rate_shift, False, False, "share predicted toxic moves either way"
    ),
    "bbsd_ks": Monitor(_bbsd_ks, True, False, "KS test on the classifier's scores (BBSD)"),
    "mmd": Monitor(_mmd, True, False, "MMD^2, RBF kernel, permutation test on embeddings"),
    "pca_ks": Monitor(_pca_ks, True, False, "KS per top training PC, Bonferroni"),
    "c2st": Monitor(_c2st, True, False, "classifier two-sample test: held-out logistic AUC"),
    "centroid_shift": Monitor(_centroid_shift, False, False, "1 - cosine between the window means"),
    "mean_norm_shift": Monitor(
        _mean_norm_shift, False, False, "norm of the window mean moves either way"
    ),
    "atc": Monitor(_estimator(_atc), False, True, "ATC accuracy estimate (its drop alarms)"),
    "doc": Monitor(_estimator(_doc), False, True, "DoC accuracy estimate (its drop alarms)"),
    "cbpe": Monitor(_estimator(_cbpe), False, True, "CBPE accuracy estimate (its drop alarms)"),
}


def check_names(names: Sequence[str]) -> list[str]:
    """The monitors a config names (null: every one), checked against the registry."""
    if names is None:
        return list(MONITORS)
    names = list(names)
    bad = [n for n in names if n not in MONITORS]
    if bad or len(set(names)) != len(names):
        raise ValueError(
            f"monitor.monitors={names}; accepted: distinct names among {', '.join(MONITORS)}"
        )
    return names
