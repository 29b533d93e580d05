"""The statistics of the rho audit, numpy and scipy only: rank AUC, Spearman rho, rho-eval's
confidence retention, and the paired CE discrimination the rho loss assumes."""

from __future__ import annotations

import warnings

import numpy as np

from driftbench.rho.encoding import SCORE_MAX_LENGTH

PAIRED_CE_DEFINITION = (
    f"mean next-token CE, {SCORE_MAX_LENGTH}-token truncation, 0 when undefined "
    "(rho-eval differentiable_ce_loss)"
)


def mann_whitney_auc(positives, negatives) -> float:
    """P(positive > negative) + P(tie) / 2 over all pairs; 0.5 when a class is empty.
    Equals scipy's Mann-Whitney U of the positives divided by n_pos x n_neg."""
    pos = np.asarray(positives, dtype=np.float64).reshape(-1, 1)
    neg = np.asarray(negatives, dtype=np.float64).reshape(1, -1)
    if pos.size == 0 or neg.size == 0:
        return 0.5
    wins = np.count_nonzero(pos > neg) + 0.5 * np.count_nonzero(pos == neg)
    return float(wins / (pos.size * neg.size))


def spearman_rho(a, b) -> float:
    """rho-eval's confidence rho: scipy's Spearman correlation, 0.0 under 3 probes, NaN when
    either side is constant (scipy's convention)."""
    from scipy import stats

    if len(a) < 3:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.spearmanr(a, b).statistic)


def paired_discrimination(ce_positive, ce_negative) -> dict:
    """What the contrastive loss ``relu(CE(pos) - CE(neg) + margin)`` assumes: per pair, the
    positive text should have the lower CE. Returns the fraction of pairs where it does
    (strictly), the mean gap CE(neg) - CE(pos) (> 0 is good) and the two-sided Wilcoxon
    signed-rank p-value of the gaps (zero gaps dropped, scipy's default)."""
    from scipy import stats

    pos = np.asarray(ce_positive, dtype=np.float64)
    neg = np.asarray(ce_negative, dtype=np.float64)
    if pos.shape != neg.shape or pos.ndim != 1:
        raise ValueError(
            f"ce_positive {pos.shape} and ce_negative {neg.shape} must be 1-D and equally long"
        )
    out = {
        "n_pairs": int(pos.size),
        "frac_positive_lower_ce": None,
        "mean_ce_gap": None,
        "wilcoxon_p": None,
        "mean_ce_positive": None,
        "mean_ce_negative": None,
        "ce_definition": PAIRED_CE_DEFINITION,
    }
    if pos.size == 0:
        return out
    gap = neg - pos
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(stats.wilcoxon(gap).pvalue)
    out.update(
        frac_positive_lower_ce=float(np.mean(pos < neg)),
        mean_ce_gap=float(gap.mean()),
        wilcoxon_p=p,
        mean_ce_positive=float(pos.mean()),
        mean_ce_negative=float(neg.mean()),
    )
    return out


def below_median(positives, negatives) -> tuple[int, float]:
    """rho-eval's confidence retention: how many negatives score below the positives' median,
    and that count over the number of negatives."""
    median = float(np.median(positives))
    count = sum(1 for c in negatives if c < median)
    return count, count / len(negatives)
