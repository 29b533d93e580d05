"""The synthetic twin of a real model update: for each synthetic drift of
``driftbench.drift``, the sigma whose realized mean angle on the same test embeddings equals the
update's, and what that sigma does to the frozen classifier.

The angle is a smooth, increasing function of sigma once the random draws are fixed (common
random numbers: the same ``draws`` noise matrices, directions or rotations at every sigma), so
a bisection finds sigma to any precision; the classifier's numbers at that sigma are averaged
over the same draws. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from driftbench import drift as D
from driftbench import metrics as M


def twin_drifts() -> tuple[str, ...]:
    """Every synthetic drift, in registry order: each is a twin of every real update."""
    return tuple(D.DRIFTS)


def twin_draws(kind: str, z0: np.ndarray, draws: int, seed: int) -> list[Callable]:
    """The ``draws`` drifts of ``kind`` a run's twins use, each a function of sigma alone, on
    the drift's own random stream."""
    drift = D.DRIFTS[kind]
    return drift.twin_draws(z0, draws, np.random.default_rng([seed, 6, drift.twin_stream]))


def mean_angle(z0: np.ndarray, drifted: list[Callable], sigma: float) -> float:
    return float(np.mean([D.realized_angle_deg(z0, f(sigma)).mean() for f in drifted]))


def match_sigma(
    z0: np.ndarray, drifted: list[Callable], target_deg: float, ceiling: float, rel_tol=1e-3
) -> float | None:
    """The sigma in [0, ceiling] whose mean angle is ``target_deg`` to a relative ``rel_tol``
    (bisection; a fine re-quantization turns embeddings by hundredths of a degree), or None
    when the drift cannot reach that angle."""
    tol_deg = max(rel_tol * target_deg, 1e-7)
    if target_deg <= 1e-9:  # the original model: its angle is rounding
        return 0.0
    lo, hi = 0.0, min(0.01, ceiling)
    while mean_angle(z0, drifted, hi) < target_deg:
        if hi >= ceiling:
            return None
        lo, hi = hi, min(hi * 2, ceiling)
    for _ in range(100):
        mid = (lo + hi) / 2
        angle = mean_angle(z0, drifted, mid)
        if abs(angle - target_deg) < tol_deg:
            return mid
        lo, hi = (mid, hi) if angle < target_deg else (lo, mid)
    return None  # the angle is not monotone in sigma here, or not resolvable


def _scored(z0, zd, y, p0, predict_proba, tau: float, n_bins: int) -> dict:
    """One draw's numbers: the classifier's on ``zd`` and what changed from ``z0``."""
    p = predict_proba(zd)
    return {
        **M.checkpoint_metrics(y, p, tau, n_bins),
        **M.flip_rates(y, p0, p),
        "coherent_share": M.coherent_share(z0, zd),
    }


def synthetic_twin(
    z0: np.ndarray,
    y: np.ndarray,
    predict_proba: Callable[[np.ndarray], np.ndarray],
    target_deg: float,
    kind: str,
    *,
    draws: int,
    seed: int,
    tau: float,
    n_bins: int,
    drifted: list[Callable] | None = None,
) -> dict:
    """sigma of equal mean angle for drift ``kind``, and the classifier's ROC-AUC, silent
    failure rate, mean confidence and ECE there, with the kind of change it is (flips against
    the classifier on ``z0``, the coherent share of the move: ``metrics.CHANGE_METRICS``),
    averaged over ``draws`` draws. ``drifted``:
    the draws of ``twin_draws`` for these arguments, when the caller reuses them across
    checkpoints (a rotation's QR costs more than the search)."""
    drifted = drifted or twin_draws(kind, z0, draws, seed)
    sigma = match_sigma(z0, drifted, target_deg, D.DRIFTS[kind].twin_ceiling)
    out = {"drift": kind, "sigma": sigma, "draws": draws}
    if sigma is None:
        return {**out, "angle_deg": None}
    p0 = predict_proba(z0)
    per = [_scored(z0, f(sigma), y, p0, predict_proba, tau, n_bins) for f in drifted]
    keys = ("roc_auc", "silent_failure_rate_pct", "mean_confidence", "ece", *M.CHANGE_METRICS)
    return {
        **out,
        "angle_deg": mean_angle(z0, drifted, sigma),
        **{k: float(np.mean([p[k] for p in per])) for k in keys},
        **{f"{k}_std": float(np.std([p[k] for p in per])) for k in keys},
    }
