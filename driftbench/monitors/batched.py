"""The two-sample tests on k windows of one pool at once.

``statistics`` defines each test on one window; here the work that does not depend on the
window is done once per pool (a checkpoint's test texts): the sort of every KS column, the
distance matrix of reference + pool for MMD. What stays per window is cut to what the window
decides: a cumulative count for KS, a sub-block of the distances, its kernel and one
triangular matrix product over all permutations for MMD, and the classifier two-sample test's
own fit, by Newton's method on its Gram matrix instead of L-BFGS on its features. Tests check
each against the per-window definition (KS and MMD to 1e-12; C2ST to the solver's tolerance).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.linalg import blas, lapack
from scipy.special import expit
from scipy.stats import ks_2samp, mannwhitneyu

from driftbench.monitors.statistics import (
    c2st_split,
    ks_bonferroni,
    pairwise_sq_dists,
    rbf_kernel,
)

# --- KS: one sort per column, counts per window -------------------------------------------------

# scipy's ks_2samp is exact below this size: its p-value is then a function of (n1, n2, h),
# h = D * lcm(n1, n2) rounded, and so is its statistic, h / lcm.
KS_EXACT_MAX_N = 10_000
_KS_P: dict[tuple[int, int, int], float] = {}


def _ks_p_value(n1: int, n2: int, h: int, a: np.ndarray, b: np.ndarray) -> float:
    """scipy's two-sided p-value for KS numerator h, computed once per (n1, n2, h) on the
    first samples that reach it."""
    key = (n1, n2, h)
    if key not in _KS_P:
        r = ks_2samp(a, b)
        lcm = n1 // math.gcd(n1, n2) * n2
        if float(r.statistic) != h * 1.0 / lcm:
            raise RuntimeError(f"KS statistic {r.statistic} is not {h}/{lcm}")
        _KS_P[key] = float(r.pvalue)
    return _KS_P[key]


def ks_windows(a: np.ndarray, pool: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``ks_bonferroni(a, pool[idx[i]])`` for every window i, equal to it: (statistics (k,),
    p-values (k,)). Per column, reference and pool are sorted together once; a window's two
    ECDFs are then cumulative counts along that order, read at the last of each run of equal
    values (``searchsorted(side='right')``, as scipy does), in integers: the statistic's
    numerator h = max |c_a w - c_b m| / gcd(m, w) exactly."""
    a = a[:, None] if a.ndim == 1 else a
    pool = pool[:, None] if pool.ndim == 1 else pool
    (m, n_cols), (k, w) = a.shape, idx.shape
    if max(m, w) > KS_EXACT_MAX_N:  # scipy's asymptotic p-value reads D, not h
        out = [ks_bonferroni(a, pool[i]) for i in idx]
        return np.array([o[0] for o in out]), np.array([o[1] for o in out])
    g = math.gcd(m, w)
    member = np.zeros((k, len(pool)), dtype=np.int32)
    np.put_along_axis(member, idx, 1, axis=1)
    h = np.empty((k, n_cols), dtype=np.int64)
    for j in range(n_cols):
        values = np.concatenate([a[:, j], pool[:, j]])
        order = np.argsort(values, kind="stable")
        from_pool = order >= m
        count_a = np.cumsum(~from_pool)
        step = np.zeros((k, len(values)), dtype=np.int32)
        step[:, from_pool] = member[:, order[from_pool] - m]
        count_b = np.cumsum(step, axis=1)
        ordered = values[order]
        last = np.r_[ordered[1:] != ordered[:-1], True]
        h[:, j] = np.abs(count_a[last] * w - count_b[:, last] * m).max(axis=1) // g
    lcm = m // g * w
    p_of = {}
    for value in np.unique(h):
        i, j = (int(v[0]) for v in np.nonzero(h == value))
        p_of[int(value)] = _ks_p_value(m, w, int(value), a[:, j], pool[idx[i], j])
    p_min = np.array([min(p_of[int(v)] for v in row) for row in h])
    return h.max(axis=1) * 1.0 / lcm, np.minimum(1.0, n_cols * p_min)


# --- MMD: one distance matrix per pool, one triangular product per window -----------------------


def _median(values: np.ndarray) -> float:
    """``np.median``, from one partition: numpy's own partition at two ranks costs several
    times one at a single rank (the lower middle value is the largest below the upper)."""
    mid = len(values) // 2
    part = np.partition(values, mid)
    if len(values) % 2:
        return float(part[mid])
    return float((part[:mid].max() + part[mid]) / 2)


def mmd_windows(
    x: np.ndarray, pool: np.ndarray, idx: np.ndarray, assignments: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``mmd_test(x, pool[idx[i]])`` for every window i with the same B ``assignments`` (B, m+w)
    for all: (unbiased MMD^2 (k,), permutation p-values (k,)). The pairwise distances of
    reference + pool are computed once; per window, its sub-block gives the median-heuristic
    bandwidth and the kernel K0 (zero diagonal). Every split's within-X sum a'K0a is twice
    a'Ua, U the upper triangle: one triangular matrix product (BLAS trmm, half a full product's
    work) for the observed split and all B permutations together."""
    m, (k, w) = len(x), idx.shape
    n, n_y = m + w, w
    if assignments.ndim != 2 or assignments.shape[1] != n:
        raise ValueError(f"assignments {assignments.shape} do not split {m} + {w} rows")
    sq = pairwise_sq_dists(np.concatenate([x, pool]))
    observed = np.r_[np.ones(m), np.zeros(w)]
    a = np.asfortranarray(np.vstack([observed, assignments]).T, dtype=np.float64)  # (n, 1 + B)
    upper = np.flatnonzero(np.triu(np.ones((n, n), dtype=bool), k=1))  # distinct pairs
    stats, p_values = np.empty(k), np.empty(k)
    for i in range(k):
        rows = np.concatenate([np.arange(m), m + idx[i]])
        d = sq.take(rows, axis=0).take(rows, axis=1)
        h = float(np.sqrt(_median(d.take(upper))))  # median_bandwidth, one partition
        kernel = rbf_kernel(d, h if h > 0 else 1.0)
        np.fill_diagonal(kernel, 0.0)
        sxx = 2.0 * np.einsum("ib,ib->b", blas.dtrmm(1.0, kernel.T, a), a)
        row_sums = kernel.sum(axis=1)
        ar = row_sums @ a
        syy = row_sums.sum() - 2.0 * ar + sxx
        sxy = ar - sxx
        mmd2 = sxx / (m * (m - 1)) + syy / (n_y * (n_y - 1)) - 2.0 * sxy / (m * n_y)
        stats[i] = mmd2[0]
        p_values[i] = (1 + np.count_nonzero(mmd2[1:] >= mmd2[0])) / len(mmd2)
    return stats, p_values


# --- C2ST: scikit-learn's logistic objective, by Newton's method in the dual ------------------


def logistic_dual_fit(
    gram: np.ndarray, feats: np.ndarray, t: np.ndarray, c: float, tol: float = 1e-4
) -> tuple[np.ndarray, float]:
    """scikit-learn's ``LogisticRegression(C=c)`` on rows ``feats`` (n, d) with labels t:
    minimise ``c sum log-loss(eta) + |w|^2 / 2``, eta = feats w + b, intercept unpenalised.
    The minimiser is w = feats' alpha (the gradient lies in the rows' span; ``gram`` = feats
    feats'), so each Newton step is one n x n Cholesky solve (IRLS: (G + W^-1) alpha = z - b,
    1'alpha = 0) instead of a d x d one, with a line search that also tries 2, 4, 8 times the
    step (the first steps, from zero, fall short). The Cholesky solve runs in single precision
    (half the time; the iterate, objective and stopping test stay in double), which limits the
    fit to about 1e-6 relative, far below ``tol``. It stops where scikit-learn's lbfgs does:
    the largest component of the gradient of its objective (mean loss + |w|^2 / (2 c n)) at
    most ``tol``; or where double precision sees no further decrease. Returns (alpha, b)."""
    n = len(t)
    gram, single = gram.astype(np.float64), gram.astype(np.float32)
    alpha, b, eta = np.zeros(n), 0.0, np.zeros(n)
    quad = 0.0  # alpha' G alpha

    def objective(e: np.ndarray, q: float) -> float:
        return float(c * np.sum(np.logaddexp(0.0, e) - t * e) + 0.5 * q)

    current = objective(eta, quad)
    for _ in range(100):
        p = expit(eta)
        r = p - t
        grad_w = feats.T @ (r / n + alpha / (c * n))
        if max(float(np.abs(grad_w).max()), abs(float(r.sum())) / n) <= tol:
            break
        var = np.maximum(p * (1.0 - p), 1e-12)
        system = single.copy()
        system[np.diag_indices(n)] += 1.0 / (c * var)
        rhs = np.stack([eta - r / var, np.ones(n)], axis=1).astype(np.float32)
        _, sol, info = lapack.sposv(system, rhs, overwrite_a=True, overwrite_b=True)
        if info != 0:
            raise np.linalg.LinAlgError(f"C2ST's Newton system is not positive definite ({info})")
        sol = sol.astype(np.float64)
        b_new = sol[:, 0].sum() / sol[:, 1].sum()
        d_alpha, d_b = sol[:, 0] - b_new * sol[:, 1] - alpha, b_new - b
        g_d = gram @ d_alpha
        cross, curv = float(alpha @ g_d), float(d_alpha @ g_d)
        d_eta = g_d + d_b
        quads = {s: quad + 2.0 * s * cross + s * s * curv for s in (1.0, 2.0, 4.0, 8.0)}
        step, best = 1.0, objective(eta + d_eta, quads[1.0])
        while step < 8.0:
            longer = objective(eta + 2.0 * step * d_eta, quads[2.0 * step])
            if longer >= best:
                break
            step, best = 2.0 * step, longer
        while best > current and step > 1e-8:
            step /= 2.0
            best = objective(eta + step * d_eta, quad + 2.0 * step * cross + step * step * curv)
        if best > current:  # no decrease left that double precision can see
            break
        alpha, b, eta = alpha + step * d_alpha, b + step * d_b, eta + step * d_eta
        quad, current = quad + 2.0 * step * cross + step * step * curv, best
    return alpha, b


def c2st_windows(
    x: np.ndarray, pool: np.ndarray, idx: np.ndarray, holdout: float, c: float, rng
) -> tuple[np.ndarray, np.ndarray]:
    """``c2st(x, pool[idx[i]], ...)`` for every window i, on the same splits (drawn in the
    same order from ``rng``): (held-out AUC (k,), one-sided Mann-Whitney p (k,)). Each fit
    standardises its own rows (as ``StandardScaler``) and solves the same objective as
    ``LogisticRegression(C=c)`` to the same tolerance (``logistic_dual_fit``)."""
    m, (k, w) = len(x), idx.shape
    splits = [c2st_split(m, w, holdout, rng) for _ in range(k)]
    n_fit_x, n_fit_y = len(splits[0][1]), len(splits[0][3])
    t = np.r_[np.zeros(n_fit_x), np.ones(n_fit_y)]
    neg, pos = [], []
    for rows, (held_x, fit_x, held_y, fit_y) in zip(idx, splits, strict=True):
        fit = np.concatenate([x[fit_x], pool[rows[fit_y]]])
        mean = fit.mean(axis=0)
        feats = fit - mean
        scale = np.sqrt(np.mean(feats * feats, axis=0))  # StandardScaler's, zeros kept at 1
        scale[scale < 10 * np.finfo(np.float64).eps] = 1.0
        feats /= scale
        single = feats.astype(np.float32)  # the Gram in single precision: half the time
        alpha, b = logistic_dual_fit(single @ single.T, feats, t, c)
        coef = (feats.T @ alpha) / scale
        neg.append((x[held_x] - mean) @ coef + b)
        pos.append((pool[rows[held_y]] - mean) @ coef + b)
    u = mannwhitneyu(np.array(pos), np.array(neg), alternative="greater", axis=1)
    return u.statistic / (len(pos[0]) * len(neg[0])), u.pvalue
