"""The registry: a monitor name -> ``Monitor`` (reference, window) -> ``Outcome``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from driftbench.metrics import predict
from driftbench.monitors.batched import c2st_windows, ks_windows, mmd_windows
from driftbench.monitors.statistics import (
    atc_estimate,
    c2st,
    cbpe_estimate,
    doc_estimate,
    ks_bonferroni,
    mmd_test,
    random_assignments,
)
from driftbench.monitors.views import Outcome, Reference, Settings, View, Windows

# --- the registry -------------------------------------------------------------------------------

TestFn = Callable[[Reference, View, Settings, np.random.Generator], Outcome]
BatchFn = Callable[[Reference, Windows, Settings, np.random.Generator], list[Outcome]]


@dataclass(frozen=True)
class Monitor:
    """A monitor: ``test(reference, window, settings, rng) -> Outcome`` defines it on one
    window; ``batch(reference, windows, settings, rng)`` computes it on all the windows of one
    pool at once, doing once what does not depend on the window (tests hold the two equal).
    ``has_p_value``: it alarms at p <= alpha; otherwise above the null threshold of its
    statistic."""

    test: TestFn
    batch: BatchFn
    has_p_value: bool
    estimates_accuracy: bool
    what: str


def _outcomes(statistics, p_values=None, accuracies=None) -> list[Outcome]:
    n = len(statistics)
    p_values = [None] * n if p_values is None else [float(v) for v in p_values]
    accuracies = [None] * n if accuracies is None else [float(v) for v in accuracies]
    return [
        Outcome(float(s), p, a) for s, p, a in zip(statistics, p_values, accuracies, strict=True)
    ]


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


# --- the same, on every window of a pool at once ------------------------------------------------


def _confidence_drop_all(ref: Reference, wins: Windows, s: Settings, rng) -> list[Outcome]:
    return _outcomes(ref.view.confidence.mean() - wins.confidence_mean)


def _confidence_shift_all(ref: Reference, wins: Windows, s: Settings, rng) -> list[Outcome]:
    return _outcomes(np.abs(ref.view.confidence.mean() - wins.confidence_mean))


def _positive_rate_shift_all(ref: Reference, wins: Windows, s: Settings, rng) -> list[Outcome]:
    rate = predict(wins.pool.p)[wins.idx].mean(axis=1)
    return _outcomes(np.abs(rate - np.mean(predict(ref.view.p))))


def _bbsd_ks_all(ref: Reference, wins: Windows, s: Settings, rng) -> list[Outcome]:
    return _outcomes(*ks_windows(ref.view.p, wins.pool.p, wins.idx))


def _mmd_all(ref: Reference, wins: Windows, s: Settings, rng) -> list[Outcome]:
    """One draw of the B permutations serves every window: each window's test is still an
    exact permutation test (the draw does not depend on the data)."""
    if s.mmd_permutations < 1:
        raise ValueError(
            f"monitor.mmd_permutations={s.mmd_permutations}; accepted: an integer >= 1"
        )
    m = len(ref.y)
    assignments = random_assignments(m + wins.size, m, s.mmd_permutations, rng)
    return _outcomes(*mmd_windows(ref.view.z, wins.pool.z, wins.idx, assignments))


def _pca_ks_all(ref: Reference, wins: Windows, s: Settings, rng) -> list[Outcome]:
    return _outcomes(*ks_windows(ref.pcs, ref.project(wins.pool.z), wins.idx))


def _c2st_all(ref: Reference, wins: Windows, s: Settings, rng) -> list[Outcome]:
    return _outcomes(
        *c2st_windows(ref.view.z, wins.pool.z, wins.idx, s.c2st_holdout, s.c2st_c, rng)
    )


def _centroid_shift_all(ref: Reference, wins: Windows, s: Settings, rng) -> list[Outcome]:
    a, b = ref.view.mean, wins.mean
    return _outcomes(1.0 - b @ a / (np.linalg.norm(a) * np.linalg.norm(b, axis=1)))


def _mean_norm_shift_all(ref: Reference, wins: Windows, s: Settings, rng) -> list[Outcome]:
    return _outcomes(np.abs(np.linalg.norm(wins.mean, axis=1) - np.linalg.norm(ref.view.mean)))


def _estimator_all(estimate: Callable[[Reference, Windows], np.ndarray]) -> BatchFn:
    def batch(ref: Reference, wins: Windows, s: Settings, rng) -> list[Outcome]:
        acc = estimate(ref, wins)
        return _outcomes(ref.accuracy - acc, accuracies=acc)

    return batch


def _atc_all(ref: Reference, wins: Windows) -> np.ndarray:
    return (wins.pool.confidence[wins.idx] >= ref.atc_threshold).mean(axis=1)


def _doc_all(ref: Reference, wins: Windows) -> np.ndarray:
    return ref.accuracy - (float(ref.view.confidence.mean()) - wins.confidence_mean)


def _cbpe_all(ref: Reference, wins: Windows) -> np.ndarray:
    q = ref.calibrator.predict(wins.pool.p)
    expected = np.where(predict(wins.pool.p) == 1, q, 1.0 - q)
    return expected[wins.idx].mean(axis=1)


MONITORS: dict[str, Monitor] = {
    "confidence_drop": Monitor(
        _confidence_drop,
        _confidence_drop_all,
        False,
        False,
        "mean confidence falls (what the paper calls standard)",
    ),
    "confidence_shift": Monitor(
        _confidence_shift, _confidence_shift_all, False, False, "mean confidence moves either way"
    ),
    "positive_rate_shift": Monitor(
        _positive_rate_shift,
        _positive_rate_shift_all,
        False,
        False,
        "share predicted toxic moves either way",
    ),
    "bbsd_ks": Monitor(
        _bbsd_ks, _bbsd_ks_all, True, False, "KS test on the classifier's scores (BBSD)"
    ),
    "mmd": Monitor(
        _mmd, _mmd_all, True, False, "MMD^2, RBF kernel, permutation test on embeddings"
    ),
    "pca_ks": Monitor(_pca_ks, _pca_ks_all, True, False, "KS per top training PC, Bonferroni"),
    "c2st": Monitor(
        _c2st, _c2st_all, True, False, "classifier two-sample test: held-out logistic AUC"
    ),
    "centroid_shift": Monitor(
        _centroid_shift, _centroid_shift_all, False, False, "1 - cosine between the window means"
    ),
    "mean_norm_shift": Monitor(
        _mean_norm_shift,
        _mean_norm_shift_all,
        False,
        False,
        "norm of the window mean moves either way",
    ),
    "atc": Monitor(
        _estimator(_atc),
        _estimator_all(_atc_all),
        False,
        True,
        "ATC accuracy estimate (its drop alarms)",
    ),
    "doc": Monitor(
        _estimator(_doc),
        _estimator_all(_doc_all),
        False,
        True,
        "DoC accuracy estimate (its drop alarms)",
    ),
    "cbpe": Monitor(
        _estimator(_cbpe),
        _estimator_all(_cbpe_all),
        False,
        True,
        "CBPE accuracy estimate (its drop alarms)",
    ),
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
