"""Label-free monitors of a frozen safety classifier, scored against a collapse the benchmark knows.

The drift paper (000_b7270e02dd833497.txt, section 4) warns that a collapsed classifier stays
confident, so "standard unsupervised monitoring based on average confidence" will not catch it.
driftbench knows, at every checkpoint, what a team sees without labels and what really happened,
so it can score each monitor: how often it alarms on undrifted data, at which sigma it alarms,
and (for the accuracy estimators) how far its estimate is from the truth.

Pure numpy / scipy / scikit-learn: no torch, no Hydra, no files. Vocabulary:

* a ``View`` is what a team sees of some texts without labels: unit embeddings ``z`` (n, d) and
  the classifier's toxic-class probabilities ``p`` (n,);
* the ``Reference`` is an undrifted, held-out ``View`` with its labels (a team has labelled
  validation data when it deploys), plus the principal components of the training embeddings;
* a window is the ``View`` of the w texts a team sees in a day.

Every monitor in ``MONITORS`` maps (reference, window) to an ``Outcome``: a statistic that grows
with drift, its p-value where the statistic has a calibrated test, and an accuracy estimate for the
estimators. A monitor without a p-value alarms above the (1 - alpha) quantile of its statistic
over undrifted calibration windows (``null_threshold``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.stats import ks_2samp, mannwhitneyu
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

from driftbench.metrics import confidence, predict

# Where the reference window comes from: the validation split, or a share of the test split held
# out (undrifted) from the windows.
REFERENCES = ("val", "test")


@dataclass(frozen=True)
class View:
    """What a team sees of n texts without labels."""

    z: np.ndarray  # unit embeddings, (n, d)
    p: np.ndarray  # the classifier's toxic-class probability, (n,)

    def __post_init__(self) -> None:
        if self.z.ndim != 2 or self.p.shape != (self.z.shape[0],):
            raise ValueError(
                f"a view needs z (n, d) and p (n,), got {self.z.shape}, {self.p.shape}"
            )
        if self.z.shape[0] < 2:
            raise ValueError(f"a view needs at least 2 texts, got {self.z.shape[0]}")

    @cached_property
    def confidence(self) -> np.ndarray:
        return confidence(self.p)

    @cached_property
    def mean(self) -> np.ndarray:
        return self.z.mean(axis=0)


@dataclass(frozen=True)
class Settings:
    """The monitors' parameters (the ``monitor/`` config group holds their values)."""

    mmd_permutations: int
    c2st_holdout: float
    c2st_c: float


class Reference:
    """The undrifted reference: its view, its labels, and the top ``n_components`` principal
    components of the training embeddings (fitted there, never on the reference itself: the
    directions where one window's own variance is high would make the test alarm on about half
    of all undrifted windows)."""

    def __init__(self, view: View, y: np.ndarray, z_train: np.ndarray, n_components: int):
        y = np.asarray(y).astype(int)
        if y.shape != view.p.shape:
            raise ValueError(f"reference labels {y.shape} do not match its view {view.p.shape}")
        if z_train.ndim != 2 or z_train.shape[1] != view.z.shape[1]:
            raise ValueError(
                f"training embeddings {z_train.shape} do not match the reference's {view.z.shape}"
            )
        k_max = min(z_train.shape)
        if not 1 <= n_components <= k_max:
            raise ValueError(
                f"monitor.pca_components={n_components}; accepted: 1..{k_max} "
                f"(training embeddings {z_train.shape[0]} x {z_train.shape[1]})"
            )
        self.view, self.y = view, y
        self.pca_mean = z_train.mean(axis=0)
        _, _, vt = np.linalg.svd(z_train - self.pca_mean, full_matrices=False)
        self.components = vt[:n_components]

    def project(self, z: np.ndarray) -> np.ndarray:
        """Coordinates on the training embeddings' top principal components."""
        return (z - self.pca_mean) @ self.components.T

    @cached_property
    def pcs(self) -> np.ndarray:
        return self.project(self.view.z)

    @cached_property
    def correct(self) -> np.ndarray:
        return predict(self.view.p) == self.y

    @cached_property
    def accuracy(self) -> float:
        return float(self.correct.mean())

    @cached_property
    def atc_threshold(self) -> float:
        return atc_threshold(self.view.confidence, self.correct)

    @cached_property
    def calibrator(self) -> IsotonicRegression:
        """p -> P(y = 1 | p), isotonic, fitted on the reference (CBPE's calibration step)."""
        return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
            self.view.p, self.y
        )


@dataclass(frozen=True)
class Outcome:
    """One monitor on one window."""

    statistic: float  # grows with drift; the alarm compares it to a threshold
    p_value: float | None = None
    accuracy: float | None = None  # the estimators' estimate of the window's accuracy


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
    """``k(x, y) = exp(-||x - y||^2 / (2 h^2))``."""
    return np.exp(-sq_dists / (2.0 * bandwidth**2))


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


def c2st(x: np.ndarray, y: np.ndarray, holdout: float, c: float, rng) -> tuple[float, float]:
    """Classifier two-sample test (Lopez-Paz & Oquab, ICLR 2017): a standardised L2 logistic
    regression learns to tell y (label 1) from x (label 0) on a stratified share of the pooled
    rows and scores the held-out ``holdout`` share. Returns the held-out AUC and its one-sided
    Mann-Whitney p-value (AUC > 0.5), exact under the null: the held-out scores come from one
    model that never saw them. (Out-of-fold scores of k-fold CV, pooled, are not: the folds'
    models differ, the pooled AUC spreads wider than Mann-Whitney's null, and at the 5% level
    it alarmed on 8-11% of null trials, docs/monitors.md.)"""
    data = np.concatenate([x, y])
    label = np.r_[np.zeros(len(x)), np.ones(len(y))]
    fit, held = train_test_split(
        np.arange(len(data)),
        test_size=holdout,
        stratify=label,
        random_state=int(rng.integers(2**31)),
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))
    scores = model.fit(data[fit], label[fit]).decision_function(data[held])
    pos, neg = scores[label[held] == 1], scores[label[held] == 0]
    u = mannwhitneyu(pos, neg, alternative="greater")
    return float(u.statistic) / (len(pos) * len(neg)), float(u.pvalue)


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


# --- windows, and scoring a run's monitors ------------------------------------------------------


def draw_windows(n_pool: int, window: int, n_windows: int, rng) -> np.ndarray:
    """(n_windows, window) row indices into a pool of n_pool texts, each row without
    replacement (a window is w distinct texts) and sorted (two draws of one set of texts then
    give bit-identical statistics)."""
    if not 2 <= window <= n_pool:
        raise ValueError(f"a window of {window} texts needs a pool of at least that, got {n_pool}")
    return np.stack([np.sort(rng.choice(n_pool, window, replace=False)) for _ in range(n_windows)])


def run_windows(
    ref: Reference,
    windows: Sequence[View],
    names: Sequence[str],
    settings: Settings,
    rng: np.random.Generator,
) -> dict[str, list[Outcome]]:
    """Every named monitor on every window. On one BLAS/OpenMP thread: the matrices are a few
    hundred rows, and two threads spinning against each other on a shared 2-core machine made
    logistic-regression fits 3x and MMD 2x slower than one (SmolLM2 windows of 200)."""
    with threadpool_limits(1):
        return {n: [MONITORS[n].test(ref, w, settings, rng) for w in windows] for n in names}


def null_threshold(statistics: Sequence[float], alpha: float) -> float:
    """The (1 - alpha) quantile of a statistic over undrifted windows: the alarm level of a
    monitor without a p-value."""
    return float(np.quantile(np.asarray(statistics, dtype=np.float64), 1.0 - alpha))


def alarms(outcomes: Sequence[Outcome], alpha: float, threshold: float | None) -> np.ndarray:
    """Which windows alarm: p <= alpha where there is a p-value, else statistic > threshold
    (a statistic equal to it up to rounding, as on an undrifted checkpoint, does not)."""
    if threshold is None:
        return np.array([o.p_value <= alpha for o in outcomes])
    stat = np.array([o.statistic for o in outcomes])
    return (stat > threshold) & ~np.isclose(stat, threshold, rtol=1e-9, atol=1e-12)


def first_index(flags: Sequence[bool]) -> int | None:
    return next((i for i, f in enumerate(flags) if f), None)


def window_set_row(
    name: str,
    outcomes: Sequence[Outcome],
    *,
    windows: str,
    checkpoint: int | None,
    sigma: float,
    alpha: float,
    threshold: float | None,
    true_accuracy: np.ndarray | None = None,
) -> dict:
    """One row of monitors.csv: one monitor over one set of windows (the undrifted ones, or one
    checkpoint's)."""
    mon = MONITORS[name]
    stat = np.array([o.statistic for o in outcomes])
    row = {
        "windows": windows,
        "checkpoint": checkpoint,
        "sigma": sigma,
        "monitor": name,
        "alarm_rate": float(alarms(outcomes, alpha, threshold).mean()),
        "statistic_mean": float(stat.mean()),
        "p_value_median": (
            float(np.median([o.p_value for o in outcomes])) if mon.has_p_value else None
        ),
        "threshold": threshold,
        "accuracy_estimate_mean": None,
        "accuracy_true_mean": None,
        "accuracy_abs_error_mean": None,
    }
    if mon.estimates_accuracy and true_accuracy is not None:
        est = np.array([o.accuracy for o in outcomes])
        row.update(
            accuracy_estimate_mean=float(est.mean()),
            accuracy_true_mean=float(np.mean(true_accuracy)),
            accuracy_abs_error_mean=float(np.mean(np.abs(est - true_accuracy))),
        )
    return row


def scorecard(
    names: Sequence[str],
    calibration: dict[str, list[Outcome]],
    undrifted: dict[str, list[Outcome]],
    checkpoints: Sequence[dict[str, list[Outcome]]],
    sigmas: Sequence[float],
    roc_aucs: Sequence[float],
    roc_auc_undrifted: float,
    true_accuracy: Sequence[np.ndarray],
    *,
    alpha: float,
    power_level: float,
    auc_drop: float,
) -> tuple[dict, list[dict]]:
    """Score each monitor of a run: its false-alarm rate on undrifted windows (thresholds come
    from other, calibration windows), its detection power per checkpoint (the share of windows
    that alarm), the first sigma with power >= ``power_level`` against the first sigma with
    ROC-AUC <= the undrifted AUC - ``auc_drop`` (the collapse it should catch), and for the
    estimators |estimate - true accuracy| per checkpoint (mean over windows).

    ``checkpoints[c][name]``: the outcomes on checkpoint c's windows; ``true_accuracy[c]``: each
    of those windows' real accuracy. Returns (scores for metrics.json, rows for monitors.csv)."""
    sigmas = [float(s) for s in sigmas]
    collapse = first_index([a <= roc_auc_undrifted - auc_drop for a in roc_aucs])
    scores: dict = {
        "collapse": {
            "roc_auc_undrifted": roc_auc_undrifted,
            "auc_drop": auc_drop,
            "checkpoint": collapse,
            "sigma": None if collapse is None else sigmas[collapse],
        },
        "by_monitor": {},
    }
    rows = []
    for name in names:
        mon = MONITORS[name]
        threshold = (
            None
            if mon.has_p_value
            else null_threshold([o.statistic for o in calibration[name]], alpha)
        )
        common = {"alpha": alpha, "threshold": threshold}
        null_row = window_set_row(
            name, undrifted[name], windows="undrifted", checkpoint=None, sigma=0.0, **common
        )
        ckpt_rows = [
            window_set_row(
                name,
                checkpoints[c][name],
                windows="drifted",
                checkpoint=c,
                sigma=sigmas[c],
                true_accuracy=true_accuracy[c],
                **common,
            )
            for c in range(len(sigmas))
        ]
        rows += [null_row, *ckpt_rows]
        power = [r["alarm_rate"] for r in ckpt_rows]
        alarm = first_index([p >= power_level for p in power])
        entry = {
            "has_p_value": mon.has_p_value,
            "threshold": threshold,
            "false_alarm_rate": null_row["alarm_rate"],
            "n_undrifted_windows": len(undrifted[name]),
            "power": power,
            "statistic_mean": [r["statistic_mean"] for r in ckpt_rows],
            "alarm_checkpoint": alarm,
            "sigma_at_alarm": None if alarm is None else sigmas[alarm],
            "lead_checkpoints": None if alarm is None or collapse is None else collapse - alarm,
        }
        if mon.estimates_accuracy:
            err = [r["accuracy_abs_error_mean"] for r in ckpt_rows]
            entry.update(
                accuracy_estimate=[r["accuracy_estimate_mean"] for r in ckpt_rows],
                accuracy_true=[r["accuracy_true_mean"] for r in ckpt_rows],
                abs_error=err,
                abs_error_mean=float(np.mean(err)),
                abs_error_at_max=err[-1],
            )
        scores["by_monitor"][name] = entry
    return scores, rows
