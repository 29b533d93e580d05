"""Bootstrap intervals of a checkpoint's metrics over its test texts.

A checkpoint's numbers come from one sample of test texts; resampling those texts with
replacement says how far they could move on another sample of the same size. One matrix of
resamples (as counts of each text) serves every metric, each computed for all resamples at once
with the definitions of ``driftbench.metrics`` (eq. 15, 18-21 of the drift paper, and the
flips against checkpoint 0 of Yan et al. 2021), so the
interval of every metric costs a few matrix products per checkpoint. Percentile intervals, as
``scipy.stats.bootstrap(method="percentile")`` gives them. Pure numpy (the metric names from
``driftbench.metrics``).
"""

from __future__ import annotations

import numpy as np

from driftbench.metrics import FLIP_METRICS

# the metrics of driftbench.metrics.checkpoint_metrics that carry an interval (f1 does not), and
# the flips of driftbench.metrics.flip_rates: each a share of texts, resampled with them
INTERVAL_METRICS = (
    "roc_auc",
    "accuracy",
    "balanced_accuracy",
    "mean_confidence",
    "silent_failure_rate_pct",
    "high_confidence_error_rate",
    "ece",
    "accuracy_at_conf_0.9",
    *FLIP_METRICS,
)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den per resample; NaN where den is 0 (the metric is undefined there)."""
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def resample_counts(n: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n): how often each text is drawn in each resample of n texts drawn with
    replacement. A resample's metric is its texts' metric weighted by these counts, so every
    metric is a few matrix products, with no resampled copy of the data."""
    idx = rng.integers(0, n, size=(n_resamples, n))
    flat = (idx + n * np.arange(n_resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=n * n_resamples).reshape(n_resamples, n).astype(float)


def _roc_auc(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """eq. (15) per resample, ties counted one half: each positive's weight times the negative
    weight below its score (half the negative weight at its score), over the pairs' weight.
    Texts sorted by score once; a cumulative sum per resample does the rest."""
    order = np.argsort(p, kind="stable")
    values, first, group = np.unique(p[order], return_index=True, return_inverse=True)
    last = np.r_[first[1:], len(p)] - 1
    w_neg = w[:, order] * (y[order] == 0)
    cum = np.cumsum(w_neg, axis=1)
    before = np.where(first > 0, cum[:, first - 1], 0.0)  # negative weight below each score
    at = cum[:, last] - before  # and at it
    below = (before + 0.5 * at)[:, group]  # per text, in sorted order
    w_pos = w[:, order] * (y[order] == 1)
    u = (w_pos * below).sum(axis=1)
    return _ratio(u, w_pos.sum(axis=1) * w_neg.sum(axis=1))


def batched_metrics(
    y: np.ndarray,
    p: np.ndarray,
    counts: np.ndarray,
    tau: float,
    n_bins: int,
    *,
    p_before: np.ndarray,
) -> dict[str, np.ndarray]:
    """Every metric of ``INTERVAL_METRICS`` for each resample (a row of ``counts``: how often
    each text is in it), by the definitions of ``driftbench.metrics``; ``p_before``: the same
    texts' probabilities at checkpoint 0, which the flips compare against."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    conf = np.maximum(p, 1.0 - p)
    positive = (p >= 0.5).astype(float)
    correct = (positive.astype(int) == y).astype(float)
    positive_before = (np.asarray(p_before, dtype=np.float64) >= 0.5).astype(float)
    correct_before = (positive_before.astype(int) == y).astype(float)
    errors = 1.0 - correct
    confident = (conf >= tau).astype(float)
    sure = (conf >= 0.9).astype(float)
    n = counts.sum(axis=1)
    pos, neg = (y == 1).astype(float), (y == 0).astype(float)
    recall_pos = _ratio(counts @ (correct * pos), counts @ pos)
    recall_neg = _ratio(counts @ (correct * neg), counts @ neg)
    # eq. (19) on the bins of metrics.reliability_table (equal width over [0.5, 1], the last
    # one closed): sum over bins of |sum(correct) - sum(conf)| / N
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
    in_bin = (idx[:, None] == np.arange(n_bins)[None, :]).astype(float)  # (texts, bins)
    ece = np.abs(counts @ (correct[:, None] * in_bin) - counts @ (conf[:, None] * in_bin))
    return {
        "roc_auc": _roc_auc(y, p, counts),
        "accuracy": counts @ correct / n,
        "balanced_accuracy": (recall_pos + recall_neg) / 2,
        "mean_confidence": counts @ conf / n,
        "silent_failure_rate_pct": 100.0 * _ratio(counts @ (errors * confident), counts @ errors),
        "high_confidence_error_rate": counts @ (errors * confident) / n,
        "ece": ece.sum(axis=1) / n,
        "accuracy_at_conf_0.9": _ratio(counts @ (correct * sure), counts @ sure),
        "negative_flip_rate": counts @ (correct_before * errors) / n,
        "positive_flip_rate": counts @ ((1.0 - correct_before) * correct) / n,
        "positive_rate_change": counts @ (positive - positive_before) / n,
    }


def bootstrap_intervals(
    y: np.ndarray,
    p: np.ndarray,
    *,
    p_before: np.ndarray,
    tau: float,
    n_bins: int,
    n_resamples: int,
    level: float,
    rng: np.random.Generator,
) -> dict[str, tuple[float, float]]:
    """(low, high) percentile interval of each metric over resamples of the texts (``p``: their
    probabilities at this checkpoint, ``p_before``: at checkpoint 0, for the flips); a resample
    where a metric is undefined (no error for SFR, one class for ROC-AUC) is left out of that
    metric's interval, and an interval with no defined resample is (NaN, NaN)."""
    if not 0 < level < 1:
        raise ValueError(f"interval level={level}; accepted: 0 < level < 1")
    counts = resample_counts(len(y), n_resamples, rng)
    values = batched_metrics(y, p, counts, tau, n_bins, p_before=p_before)
    tails = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out = {}
    for name in INTERVAL_METRICS:
        v = values[name][np.isfinite(values[name])]
        lo, hi = np.percentile(v, tails) if v.size else (np.nan, np.nan)
        out[name] = (float(lo), float(hi))
    return out


def interval_columns(intervals: dict[str, tuple[float, float]]) -> dict[str, float]:
    """``{metric}_ci_low`` and ``{metric}_ci_high`` for a checkpoint's row."""
    return {
        f"{name}_ci_{side}": bound
        for name, (lo, hi) in intervals.items()
        for side, bound in (("low", lo), ("high", hi))
    }


# ── across replicates (runs that differ in seed or data.seed alone) ──────────────────────────


def replicate_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of one number over a group's replicate runs: Student's t interval of
    the mean (``scipy.stats.t.interval`` with the sample's standard error). With n runs it has
    n - 1 degrees of freedom, so three seeds give an interval about 2.5 standard errors wide on
    each side: a finding that needs more seeds says so by its width. NaN values (a run where the
    number is undefined) are left out; (mean, NaN, NaN) below two runs."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None], dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (float("nan"),) * 3
    mean = float(x.mean())
    if x.size < 2:
        return mean, float("nan"), float("nan")
    sem = float(x.std(ddof=1) / np.sqrt(x.size))
    if sem == 0:
        return mean, mean, mean
    low, high = stats.t.interval(level, x.size - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def interval_cell(iv: tuple[float, float, float], fmt: str) -> str:
    """A (mean, low, high) of ``replicate_interval`` as a report shows it: ``0.850 [0.830,
    0.870]``; the mean alone where there is no interval (one run), – where there is no mean."""
    mean, low, high = iv
    if not np.isfinite(mean):
        return "–"
    shown = fmt.format(mean)
    if np.isfinite(low) and np.isfinite(high):
        shown += f" [{fmt.format(low)}, {fmt.format(high)}]"
    return shown


def overlap(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool | None:
    """Whether two (mean, low, high) intervals overlap: if they do, the two settings are not told
    apart at this number of replicates. None where either has no interval."""
    if not all(np.isfinite([a[1], a[2], b[1], b[2]])):
        return None
    return bool(a[1] <= b[2] and b[1] <= a[2])


# ── paired differences over replicates (a setting less another on the same texts) ────────────


def tested(values: list[float]) -> bool:
    """Whether a difference over replicates is a test: two runs at least, and not identically 0
    (a setting against itself, e.g. the original model against its twin at σ = 0)."""
    x = np.asarray(values, dtype=float)
    return x.size >= 2 and not np.allclose(x, 0.0, rtol=0.0, atol=1e-12)


def bonferroni_level(m: int, level: float = 0.95) -> float:
    """1 − (1 − level) / m: the level at which each of a table's m tests is read, so that a ‡
    holds for the table as a whole, not for one cell."""
    return 1 - (1 - level) / max(m, 1)


def difference_cell(values: list[float], fmt: str, corrected: float) -> str:
    """A difference paired by replicate, mean [95% t-interval]; † where that interval excludes
    0, ‡ where the interval at the table's corrected level (``corrected``: ``bonferroni_level``
    over every difference the table tests) excludes 0 too; one run's difference alone, with no
    mark; – where there is none, or where it is identically 0 over the runs (no test)."""
    if not tested(values):
        return fmt.format(values[0]) if len(values) == 1 else "–"
    iv = replicate_interval(values)
    wide = replicate_interval(values, corrected)
    mark = ""
    if np.isfinite(iv[1]) and not iv[1] <= 0 <= iv[2]:
        mark = "‡" if not wide[1] <= 0 <= wide[2] else "†"
    return interval_cell(iv, fmt) + mark
