"""Evaluation and separability metrics of the drift paper, B.4-B.6 (eq. 15-29).

Pure numpy/sklearn. ``p`` is always the predicted probability of the toxic class (y = 1);
the confidence of a prediction is ``max(p, 1 - p)`` (eq. 16, 21), so it lies in [0.5, 1].
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    roc_auc_score,
    silhouette_score,
)


def _check(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"y and p must be 1-d of one length, got {y.shape} and {p.shape}")
    if y.size == 0:
        raise ValueError("cannot score an empty set")
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError(f"labels must be 0/1, got {np.unique(y).tolist()}")
    return y, p


def confidence(p: np.ndarray) -> np.ndarray:
    """``max_y p(y|z)`` for a binary classifier."""
    return np.maximum(p, 1.0 - p)


def predict(p: np.ndarray) -> np.ndarray:
    return (p >= 0.5).astype(int)


def silent_failure_rate_pct(y: np.ndarray, p: np.ndarray, tau: float = 0.8) -> float:
    """eq. (18): ``|C n E| / |E| x 100``, the share of errors made with confidence >= tau.
    NaN when there is no error (the rate is undefined, not zero)."""
    y, p = _check(y, p)
    errors = predict(p) != y
    if not errors.any():
        return math.nan
    return float(100.0 * np.mean(confidence(p)[errors] >= tau))


def high_confidence_error_rate(y: np.ndarray, p: np.ndarray, tau: float = 0.8) -> float:
    """``|C n E| / N``: confident and wrong, over all samples (the paper's "38.4% of test
    samples")."""
    y, p = _check(y, p)
    return float(np.mean((predict(p) != y) & (confidence(p) >= tau)))


def reliability_table(y: np.ndarray, p: np.ndarray, n_bins: int = 5) -> list[dict]:
    """Bins of equal width over the confidence range [0.5, 1], the last one closed
    (the paper's [0.5,0.6) ... [0.9,1.0]), with count, accuracy (eq. 20) and confidence (eq. 21)."""
    y, p = _check(y, p)
    conf = confidence(p)
    correct = predict(p) == y
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
    rows = []
    for m in range(n_bins):
        in_bin = idx == m
        n = int(in_bin.sum())
        rows.append(
            {
                "bin_lo": float(edges[m]),
                "bin_hi": float(edges[m + 1]),
                "count": n,
                "accuracy": float(correct[in_bin].mean()) if n else math.nan,
                "confidence": float(conf[in_bin].mean()) if n else math.nan,
            }
        )
    return rows


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 5) -> float:
    """eq. (19): ``sum_m |B_m|/N |acc(B_m) - conf(B_m)|`` over the bins of ``reliability_table``."""
    rows = reliability_table(y, p, n_bins)
    n = sum(r["count"] for r in rows)
    return float(
        sum(r["count"] / n * abs(r["accuracy"] - r["confidence"]) for r in rows if r["count"])
    )


def accuracy_at_confidence(y: np.ndarray, p: np.ndarray, threshold: float = 0.9) -> float:
    """Accuracy among predictions with confidence >= threshold ("when it says 90%, ...")."""
    y, p = _check(y, p)
    sel = confidence(p) >= threshold
    return float(np.mean(predict(p)[sel] == y[sel])) if sel.any() else math.nan


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """eq. (15), with ties counted one half (the standard Mann-Whitney form sklearn computes)."""
    y, p = _check(y, p)
    return float(roc_auc_score(y, p))


def checkpoint_metrics(y: np.ndarray, p: np.ndarray, tau: float = 0.8, n_bins: int = 5) -> dict:
    """Every B.4 metric for one checkpoint's predictions."""
    y, p = _check(y, p)
    y_hat = predict(p)
    return {
        "roc_auc": roc_auc(y, p),
        "accuracy": float(accuracy_score(y, y_hat)),
        "balanced_accuracy": float(balanced_accuracy_score(y, y_hat)),
        "f1": float(f1_score(y, y_hat, zero_division=0.0)),
        "mean_confidence": float(confidence(p).mean()),
        "silent_failure_rate_pct": silent_failure_rate_pct(y, p, tau),
        "high_confidence_error_rate": high_confidence_error_rate(y, p, tau),
        "ece": expected_calibration_error(y, p, n_bins),
        "accuracy_at_conf_0.9": accuracy_at_confidence(y, p, 0.9),
    }


# what changed between checkpoint 0 and a checkpoint, text by text (``flip_rates``)
FLIP_METRICS = ("negative_flip_rate", "positive_flip_rate", "positive_rate_change")
# what kind of change a checkpoint is, against checkpoint 0 (``flip_rates``, ``coherent_share``)
CHANGE_METRICS = (*FLIP_METRICS, "coherent_share")
# no movement below this share of the embeddings' mean norm: rounding, not a change
STILL_RTOL = 1e-12


def flip_rates(y: np.ndarray, p_before: np.ndarray, p_after: np.ndarray) -> dict:
    """What a change did to each text's prediction, as shares of all texts: negative flips
    (right before, wrong after: the regressions of Yan et al. 2021, "Positive-Congruent
    Training"), positive flips (wrong before, right after) and the change in the share predicted
    positive (toxic), at the threshold of ``predict``. Accuracy moves by positive minus negative
    flips, so an unchanged accuracy can hide many flips both ways; a change in the positive rate
    says the errors lean one way (a shift), where flips with no change in it do not."""
    y, p_before = _check(y, p_before)
    _, p_after = _check(y, p_after)
    right_before, right_after = predict(p_before) == y, predict(p_after) == y
    return {
        "negative_flip_rate": float(np.mean(right_before & ~right_after)),
        "positive_flip_rate": float(np.mean(~right_before & right_after)),
        "positive_rate_change": float(np.mean(predict(p_after)) - np.mean(predict(p_before))),
    }


def coherent_share(z_before: np.ndarray, z_after: np.ndarray) -> float:
    """``||mean_i (z_after[i] - z_before[i])|| / mean_i ||z_after[i] - z_before[i]||``: how much
    of the texts' displacement is one common move. 1 when every text moves by the same vector (a
    shift, which a classifier's bias can absorb or not, but moves every text the same way); about
    1/sqrt(n) for n independent random moves, which cancel in the mean. NaN when nothing moved
    (mean displacement at most ``STILL_RTOL`` of the mean norm: float rounding of an unmoved
    checkpoint): a move that did not happen has no direction, and 0 would read as "pure noise"."""
    z_before, z_after = np.asarray(z_before, np.float64), np.asarray(z_after, np.float64)
    if z_before.shape != z_after.shape or z_before.ndim != 2 or len(z_before) == 0:
        raise ValueError(
            f"z_before and z_after must be (n, d) of one shape with n > 0, got {z_before.shape} "
            f"and {z_after.shape}"
        )
    moves = z_after - z_before
    mean_move = float(np.linalg.norm(moves, axis=1).mean())
    if mean_move <= STILL_RTOL * float(np.linalg.norm(z_before, axis=1).mean()):
        return math.nan
    return float(np.linalg.norm(moves.mean(axis=0)) / mean_move)


def recovery(fixed, frozen, reembedded) -> np.ndarray:
    """How much of what re-embedding the training set and retraining achieves a cheaper fix
    achieves: ``(fixed - frozen) / (reembedded - frozen)``, element-wise, for any metric (where
    lower is better, as for ECE and silent failures, both differences change sign together).
    1: as good as re-embedding; 0: no better than the frozen classifier; above 1: better than
    re-embedding, which an update that loses information allows (a map onto the old space keeps
    the old model's information, retraining on the new model cannot). Not clipped, so such a
    case shows. NaN where re-embedding changes nothing (a zero denominator) or a term is NaN:
    there is nothing to recover. The playbook's measure (docs/playbook.md; Drift-Adapter,
    Vejendla, EMNLP 2025, reports the same ratio for retrieval)."""
    fixed, frozen, reembedded = (
        np.asarray(x, dtype=np.float64) for x in (fixed, frozen, reembedded)
    )
    gain = reembedded - frozen
    out = np.full(np.broadcast(fixed, frozen, reembedded).shape, np.nan)
    np.divide(fixed - frozen, gain, out=out, where=gain != 0)
    return out


def snr_eq29(logits: np.ndarray, w_norm: float, sigma: float) -> float:
    """eq. (29) ``|f(z)|^2 / (||w||^2 sigma^2)``, the median over samples. Infinite at sigma = 0."""
    if sigma == 0:
        return math.inf
    return float(np.median(np.asarray(logits) ** 2) / (w_norm**2 * sigma**2))


def _two_classes(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(int)
    if z.ndim != 2 or z.shape[0] != y.shape[0]:
        raise ValueError(f"z must be (n, d) with n = len(y), got {z.shape} and {y.shape}")
    z0, z1 = z[y == 0], z[y == 1]
    if len(z0) == 0 or len(z1) == 0:
        raise ValueError("separability needs samples of both classes")
    return z0, z1


def fisher_ratio(z: np.ndarray, y: np.ndarray) -> float:
    """eq. (24): ``||mu1 - mu0||^2 / (mean(var0) + mean(var1))``. The numerator sums over d
    dimensions while the denominator averages, so the value grows with d; see
    ``fisher_ratio_per_dim`` for comparing models of different width."""
    z0, z1 = _two_classes(z, y)
    num = float(np.sum((z1.mean(0) - z0.mean(0)) ** 2))
    return num / float(z0.var(0).mean() + z1.var(0).mean())


def fisher_ratio_per_dim(z: np.ndarray, y: np.ndarray) -> float:
    """eq. (24) divided by d: comparable across embedding widths."""
    return fisher_ratio(z, y) / z.shape[1]


def class_overlap(z: np.ndarray, y: np.ndarray) -> float:
    """eq. (25): share of samples closer to the other class's centroid than to their own."""
    z0, z1 = _two_classes(z, y)
    y = np.asarray(y).astype(int)
    mu = np.stack([z0.mean(0), z1.mean(0)])
    d_own = np.linalg.norm(z - mu[y], axis=1)
    d_other = np.linalg.norm(z - mu[1 - y], axis=1)
    return float(np.mean(d_other < d_own))


def silhouette(z: np.ndarray, y: np.ndarray) -> float:
    """eq. (22)-(23), Euclidean distance, true classes as clusters."""
    _two_classes(z, y)
    return float(silhouette_score(z, np.asarray(y).astype(int), metric="euclidean"))


def separability(z: np.ndarray, y: np.ndarray) -> dict:
    """B.5 on training embeddings."""
    return {
        "silhouette": silhouette(z, y),
        "fisher_ratio": fisher_ratio(z, y),
        "fisher_ratio_per_dim": fisher_ratio_per_dim(z, y),
        "class_overlap": class_overlap(z, y),
        "dim": int(z.shape[1]),
    }
