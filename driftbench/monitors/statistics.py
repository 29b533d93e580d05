"""The two-sample tests and the label-free accuracy estimators, on plain arrays."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import ks_2samp, mannwhitneyu
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from driftbench.metrics import predict

# --- MMD: RBF kernel, median heuristic, permutation test with one kernel matrix -------------------


def pairwise_sq_dists(x: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of x, clipped at 0 (rounding)."""
    sq = np.einsum("ij,ij->i", x, x)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)


def median_bandwidth(sq_dists: np.ndarray) -> float:
    """The median heuristic: the median distance over distinct pairs of the pooled sample.
    It does not depend on which rows are X and which Y, so one kernel serves every permutation."""
    iu = np.triu_indices(sq_dists.shape[0], k=1)
    h = float(np.sqrt(np.median(sq_dists[iu])))
    return h if h > 0 else 1.0


def rbf_kernel(sq_dists: np.ndarray, bandwidth: float) -> np.ndarray:
    """``k(x, y) = exp(-||x - y||^2 / (2 h^2))`` (the sign moved into the divisor: the same
    numbers, one pass over the matrix fewer)."""
    out = sq_dists / (-2.0 * bandwidth**2)
    return np.exp(out, out=out)


def mmd2_unbiased(kernel: np.ndarray, m: int) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) of X = the first m rows against Y = the rest,
    from the pooled kernel matrix: within-sample means over i != j, minus twice the cross mean."""
    n = kernel.shape[0] - m
    if m < 2 or n < 2:
        raise ValueError(f"unbiased MMD^2 needs 2 samples on each side, got {m} and {n}")
    kxx, kyy, kxy = kernel[:m, :m], kernel[m:, m:], kernel[:m, m:]
    sxx = kxx.sum() - np.trace(kxx)
    syy = kyy.sum() - np.trace(kyy)
    return float(sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2.0 * kxy.sum() / (m * n))


def permutation_p_value(observed: float, permuted: np.ndarray) -> float:
    """``(1 + #{permuted >= observed}) / (1 + B)``: never 0, and exact-level under the null."""
    permuted = np.asarray(permuted)
    return float((1 + np.count_nonzero(permuted >= observed)) / (1 + permuted.size))


def mmd2_permuted(kernel: np.ndarray, m: int, assignments: np.ndarray) -> np.ndarray:
    """Unbiased MMD^2 for each row of ``assignments`` (B, N) in {0, 1} (1: the row is in X, m
    ones per row), all from one kernel matrix: with a its indicator and K0 the kernel with a zero
    diagonal, ``Sxx = a'K0a``, ``Sxy = a'K0 1 - Sxx``, ``Syy = 1'K0 1 - 2 a'K0 1 + Sxx``."""
    k0 = kernel - np.diag(np.diag(kernel))
    n_all = kernel.shape[0]
    n = n_all - m
    rows = k0.sum(axis=1)
    a = assignments.astype(np.float64)
    sxx = np.einsum("bi,ib->b", a, k0 @ a.T)
    ar = a @ rows
    syy = rows.sum() - 2.0 * ar + sxx
    sxy = ar - sxx
    return sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2.0 * sxy / (m * n)


def random_assignments(n_all: int, m: int, n_permutations: int, rng) -> np.ndarray:
    """B random splits of N pooled rows into m (X) and N - m (Y), as (B, N) indicators."""
    order = rng.permuted(np.tile(np.arange(n_all), (n_permutations, 1)), axis=1)
    a = np.zeros((n_permutations, n_all), dtype=bool)
    np.put_along_axis(a, order[:, :m], True, axis=1)
    return a


def mmd_test(x: np.ndarray, y: np.ndarray, n_permutations: int, rng) -> tuple[float, float]:
    """(unbiased MMD^2, permutation p-value) of x against y: RBF kernel, median-heuristic
    bandwidth of the pooled sample, one kernel matrix reused by all B permutations."""
    if n_permutations < 1:
        raise ValueError(f"monitor.mmd_permutations={n_permutations}; accepted: an integer >= 1")
    pooled = np.concatenate([x, y])
    sq = pairwise_sq_dists(pooled)
    kernel = rbf_kernel(sq, median_bandwidth(sq))
    observed = mmd2_unbiased(kernel, len(x))
    permuted = mmd2_permuted(
        kernel, len(x), random_assignments(len(pooled), len(x), n_permutations, rng)
    )
    return observed, permutation_p_value(observed, permuted)


# --- the other tests and the accuracy estimators ------------------------------------------------


def ks_bonferroni(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample KS per column, Bonferroni-corrected: (largest KS statistic, min(1, k min p))."""
    if a.ndim == 1:
        a, b = a[:, None], b[:, None]
    results = [ks_2samp(a[:, j], b[:, j]) for j in range(a.shape[1])]
    stat = max(float(r.statistic) for r in results)
    p_min = min(float(r.pvalue) for r in results)
    return stat, min(1.0, a.shape[1] * p_min)


def c2st_split(n_x: int, n_y: int, holdout: float, rng) -> tuple[np.ndarray, ...]:
    """C2ST's stratified split of x (n_x rows) and y (n_y rows): each holds out
    round(holdout * n) of its rows, at least one and at most n - 1, drawn without replacement.
    Returns sorted (held_x, fit_x, held_y, fit_y) row indices."""
    out = []
    for n in (n_x, n_y):
        n_held = min(max(round(holdout * n), 1), n - 1)
        order = rng.permutation(n)
        out += [np.sort(order[:n_held]), np.sort(order[n_held:])]
    return tuple(out)


def c2st(x: np.ndarray, y: np.ndarray, holdout: float, c: float, rng) -> tuple[float, float]:
    """Classifier two-sample test (Lopez-Paz & Oquab, ICLR 2017): a standardised L2 logistic
    regression learns to tell y (label 1) from x (label 0) on a stratified share of the pooled
    rows (``c2st_split``) and scores the held-out ``holdout`` share. Returns the held-out AUC
    and its one-sided Mann-Whitney p-value (AUC > 0.5), exact under the null: the held-out
    scores come from one model that never saw them. (Out-of-fold scores of k-fold CV, pooled,
    are not: the folds' models differ, the pooled AUC spreads wider than Mann-Whitney's null,
    and at the 5% level it alarmed on 8-11% of null trials, docs/monitors.md.)"""
    held_x, fit_x, held_y, fit_y = c2st_split(len(x), len(y), holdout, rng)
    fit = np.concatenate([x[fit_x], y[fit_y]])
    label = np.r_[np.zeros(len(fit_x)), np.ones(len(fit_y))]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))
    model.fit(fit, label)
    u = mannwhitneyu(
        model.decision_function(y[held_y]),
        model.decision_function(x[held_x]),
        alternative="greater",
    )
    return float(u.statistic) / (len(held_x) * len(held_y)), float(u.pvalue)


def atc_threshold(conf: np.ndarray, correct: np.ndarray) -> float:
    """ATC's threshold (Garg et al., ICLR 2022), as the paper's text defines it: the t for which
    the share of reference scores below t equals the reference error rate. With the scores
    sorted, s(1) <= ... <= s(n), and e errors: t = s(e+1) (t = inf when every prediction is
    wrong). The authors' released code takes s(e), one order statistic lower, so its estimate on
    the reference itself is accuracy + 1/n; here it is the accuracy exactly (without ties)."""
    conf, correct = np.asarray(conf, dtype=np.float64), np.asarray(correct, dtype=bool)
    errors = int(np.count_nonzero(~correct))
    if errors == conf.size:
        return math.inf
    return float(np.sort(conf)[errors])


def atc_estimate(threshold: float, conf: np.ndarray) -> float:
    """ATC's accuracy estimate: the share of scores at or above the threshold."""
    return float(np.mean(np.asarray(conf) >= threshold))


def doc_estimate(ref_accuracy: float, ref_confidence: float, confidence_mean: float) -> float:
    """DoC (Guillory et al., 2021): accuracy moves by the difference of mean confidences,
    ``acc_ref - (conf_ref - conf_window)``."""
    return ref_accuracy - (ref_confidence - confidence_mean)


def cbpe_estimate(calibrator: IsotonicRegression, p: np.ndarray) -> float:
    """CBPE as NannyML defines it: calibrate the scores on the reference, then the expected
    accuracy of the classifier's own predictions, ``mean(yhat q + (1 - yhat)(1 - q))`` with q the
    calibrated P(y = 1). (NannyML calibrates only where a cross-validated check says it helps;
    here the isotonic calibration is always applied.)"""
    q = calibrator.predict(p)
    yhat = predict(p)
    return float(np.mean(np.where(yhat == 1, q, 1.0 - q)))
