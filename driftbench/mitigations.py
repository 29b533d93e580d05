"""What a team could do about a frozen classifier whose embeddings drift (``mitigation/`` group),
measured on the same checkpoints as doing nothing. numpy, scipy and scikit-learn only.

Every mitigation has one small interface: ``check(n_test, n_train)`` before any model loads,
``fit(clf, z_train, y_train, z_val, y_val)`` once, at checkpoint 0, and
``at_checkpoint(z_window, z_labelled, y_labelled)``, which returns the probability function
deployed at that checkpoint. ``labels`` says how many labelled texts of each checkpoint it reads
(0: none); the task draws them (``labelled_rows``) and scores every mitigation, and the
unmitigated classifier, on the other texts. A mitigation asks its classifier (``refit``,
``predict_proba``), never which family it is.

``anchors`` says how many training texts it needs embedded at checkpoint 0 and at the current
checkpoint (``adapter``, which maps the current embeddings back into checkpoint 0's space); the
task passes both as ``anchors=(z0, zc)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit

from driftbench import drift as drift_ops
from driftbench import metrics as M
from driftbench.adapters import ADAPTERS, make_adapter

Predict = Callable[[np.ndarray], np.ndarray]
P_CLIP = 1e-12  # probabilities of exactly 0 or 1 (a kNN vote) get a finite logit


class Mitigation:
    """``none``: the classifier fitted at checkpoint 0, frozen (the paper's deployment)."""

    labels = 0
    anchors = 0
    identity = True  # predicts what the frozen classifier predicts

    def __init__(self, *, seed: int):
        self.seed = seed
        self.warnings: list[str] = []

    def check(self, n_test: int, n_train: int) -> None:
        """Refuse settings that checkpoints of ``n_test`` test texts, or a training split of
        ``n_train`` texts, cannot serve."""

    def fit(self, clf, z_train, y_train, z_val, y_val) -> None:
        self.clf = clf

    def at_checkpoint(self, z_window, z_labelled, y_labelled, anchors=None) -> Predict:
        return self.clf.predict_proba

    def describe(self) -> dict:
        return {}


class NoiseAugment(Mitigation):
    """Train on embeddings plus Gaussian noise of ``sigma_train``, renormalised (eq. 5, the
    Gaussian drift operator): the classifier refitted on the noisy training texts, its
    hyper-parameter chosen again on the (undrifted) validation split, since noise regularises
    too. With ``sigma_train`` null it is chosen on validation: the largest value of
    ``sigma_grid`` whose validation ROC-AUC stays within ``val_auc_tolerance`` of the
    unaugmented classifier's (as much noise as costs at most that much on undrifted texts)."""

    identity = False

    def __init__(
        self,
        *,
        sigma_train: float | None,
        sigma_grid: Sequence[float],
        val_auc_tolerance: float,
        seed: int,
    ):
        super().__init__(seed=seed)
        if sigma_train is not None and not sigma_train >= 0:
            raise ValueError(f"mitigation.sigma_train={sigma_train}; accepted: a number >= 0")
        grid = sorted(float(s) for s in sigma_grid)
        if not grid or grid[0] < 0:
            raise ValueError(
                f"mitigation.sigma_grid={list(sigma_grid)}; accepted: numbers >= 0 (one at least)"
            )
        self.sigma_train, self.grid, self.tolerance = sigma_train, grid, val_auc_tolerance

    def fit(self, clf, z_train, y_train, z_val, y_val) -> None:
        super().fit(clf, z_train, y_train, z_val, y_val)
        rng = np.random.default_rng([self.seed, 5])
        noise = drift_ops.make_drift("gaussian", z_train.shape[1], rng)
        candidates = self.grid if self.sigma_train is None else [float(self.sigma_train)]
        fitted, self.val_auc = {}, {}
        for s in candidates:
            z_aug = z_train if s == 0 else noise(z_train, s)  # no noise: the very same texts
            fitted[s] = clf.refit(z_aug, y_train, z_val, y_val)
            self.val_auc[s] = M.roc_auc(y_val, fitted[s].predict_proba(z_val))
        self.val_auc_unaugmented = M.roc_auc(y_val, clf.predict_proba(z_val))
        if self.sigma_train is not None:
            self.chosen = float(self.sigma_train)
        else:
            floor = self.val_auc_unaugmented - self.tolerance
            within = [s for s in candidates if self.val_auc[s] >= floor]
            self.chosen = max(within) if within else candidates[0]
            if len(candidates) > 1 and self.chosen == candidates[-1]:
                self.warnings.append(
                    f"the selected sigma_train={self.chosen:g} is at the edge of "
                    f"mitigation.sigma_grid {candidates}: widen the grid"
                )
        self.model = fitted[self.chosen]

    def at_checkpoint(self, z_window, z_labelled, y_labelled, anchors=None) -> Predict:
        return self.model.predict_proba

    def describe(self) -> dict:
        return {
            "sigma_train": self.chosen,
            "chosen_on_validation": self.sigma_train is None,
            "val_auc_by_sigma_train": {str(k): v for k, v in self.val_auc.items()},
            "selected": self.model.describe()["selected"],
            "val_auc_unaugmented": self.val_auc_unaugmented,
        }


def match_moments(z, mean_window, std_window, mean_ref, std_ref) -> np.ndarray:
    """Each dimension moved from the window's mean and std to the reference's. A dimension
    constant on the window keeps its spread (std taken as 1, as scikit-learn's scaler does)."""
    std_window = np.where(std_window > 0, std_window, 1.0)
    return mean_ref + std_ref * (z - mean_window) / std_window


class StandardizeOnWindow(Mitigation):
    """``test_time_standardize``: re-estimate the standardisation's mean and std on the
    unlabelled current window (no labels needed): every dimension of the checkpoint's texts is
    moved to the training mean and std before the frozen classifier reads it. For a classifier
    that standardises with the training statistics this is exactly standardising with the
    window's; a classifier that does not (kNN) gets the same moment matching."""

    identity = False

    def fit(self, clf, z_train, y_train, z_val, y_val) -> None:
        super().fit(clf, z_train, y_train, z_val, y_val)
        self.mean, self.std = z_train.mean(axis=0), z_train.std(axis=0)

    def at_checkpoint(self, z_window, z_labelled, y_labelled, anchors=None) -> Predict:
        mean, std = z_window.mean(axis=0), z_window.std(axis=0)
        return lambda z: self.clf.predict_proba(match_moments(z, mean, std, self.mean, self.std))


def fit_temperature(p: np.ndarray, y: np.ndarray) -> float:
    """Temperature scaling: the T > 0 that minimises the log-loss of ``sigmoid(logit(p) / T)``
    on labelled texts (searched over log T in [-7, 7], T from 0.001 to 1100)."""
    z = logit(np.clip(p, P_CLIP, 1 - P_CLIP))
    y = np.asarray(y, dtype=float)

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, s) - y * s))  # -log p(y | s), stable

    return float(np.exp(minimize_scalar(nll, bounds=(-7.0, 7.0), method="bounded").x))


def temper(p: np.ndarray, t: float) -> np.ndarray:
    """``sigmoid(logit(p) / t)``: monotone in p, so every ranking (and ROC-AUC) is kept."""
    return expit(logit(np.clip(p, P_CLIP, 1 - P_CLIP)) / t)


class _Labelled(Mitigation):
    """A mitigation that reads ``m`` labelled texts of each checkpoint."""

    identity = False

    def __init__(self, *, m: int, seed: int):
        super().__init__(seed=seed)
        self.labels = int(m)

    def check(self, n_test: int, n_train: int) -> None:
        if not 4 <= self.labels <= n_test - 2:
            raise ValueError(
                f"mitigation.m={self.labels} labelled texts of a checkpoint of {n_test} "
                f"test texts; accepted: 4..{n_test - 2} (the others are scored)"
            )

    def describe(self) -> dict:
        return {"m": self.labels}


class Recalibrate(_Labelled):
    """Temperature scaling fitted on the ``m`` labelled texts of the current checkpoint: the
    ranking (ROC-AUC) stays the frozen classifier's, the confidence is refitted."""

    def fit(self, clf, z_train, y_train, z_val, y_val) -> None:
        super().fit(clf, z_train, y_train, z_val, y_val)
        self.temperatures: list[float] = []

    def at_checkpoint(self, z_window, z_labelled, y_labelled, anchors=None) -> Predict:
        t = fit_temperature(self.clf.predict_proba(z_labelled), y_labelled)
        self.temperatures.append(t)
        return lambda z: temper(self.clf.predict_proba(z), t)

    def describe(self) -> dict:
        return {**super().describe(), "temperature": self.temperatures}


class Retrain(_Labelled):
    """The upper bound: the classifier refitted (same family and hyper-parameter, its
    standardisation included; ``classifier=fitted``: a clone of the team's estimator) on the
    ``m`` labelled texts of the current checkpoint alone."""

    def at_checkpoint(self, z_window, z_labelled, y_labelled, anchors=None) -> Predict:
        return self.clf.refit(z_labelled, y_labelled).predict_proba


class Adapt(Mitigation):
    """``adapter``: a map from the current checkpoint's embeddings into checkpoint 0's space
    (``driftbench.adapters``: ``kind`` procrustes, lstsq, affine, low_rank of ``rank``, or
    mlp), fitted at every checkpoint on ``pairs`` training texts embedded at both, applied before
    the frozen classifier, the mapped rows back on the unit sphere. No labels: the pairs are
    texts the team already has, embedded by both models. kind=procrustes was ``realign`` (the
    same numbers)."""

    identity = False

    def __init__(self, *, kind: str, pairs: int, rank: int | None, seed: int):
        super().__init__(seed=seed)
        make_adapter(kind, rank=rank, seed=seed, key="mitigation.")  # its settings checked now
        least = ADAPTERS[kind].min_pairs
        if pairs < least:
            raise ValueError(
                f"mitigation.pairs={pairs} with mitigation.kind={kind}; accepted: at least {least}"
            )
        self.kind, self.rank, self.anchors = kind, rank, int(pairs)
        self.fitted: list[dict] = []

    def check(self, n_test: int, n_train: int) -> None:
        if self.anchors > n_train:
            raise ValueError(
                f"mitigation.pairs={self.anchors} is more than the {n_train} training texts; "
                f"accepted: {ADAPTERS[self.kind].min_pairs}..{n_train}"
            )

    def at_checkpoint(self, z_window, z_labelled, y_labelled, anchors=None) -> Predict:
        z0, zc = anchors
        adapter = make_adapter(self.kind, rank=self.rank, seed=self.seed).fit(zc, z0)
        self.fitted.append(adapter.describe())
        return lambda z: self.clf.predict_proba(adapter.apply(z))

    def describe(self) -> dict:
        return {"kind": self.kind, "pairs": self.anchors, "rank": self.rank, "fitted": self.fitted}


MITIGATIONS: dict[str, type[Mitigation]] = {
    "none": Mitigation,
    "noise_augment": NoiseAugment,
    "test_time_standardize": StandardizeOnWindow,
    "recalibrate": Recalibrate,
    "retrain": Retrain,
    "adapter": Adapt,
}


def make_mitigation(settings: dict, seed: int) -> Mitigation:
    """The ``mitigation/`` group's choice, its settings checked (before any model loads)."""
    settings = dict(settings)
    name = settings.pop("name")
    if name not in MITIGATIONS:
        raise ValueError(f"mitigation={name!r}; accepted: {', '.join(MITIGATIONS)}")
    return MITIGATIONS[name](**settings, seed=seed)


def labelled_rows(y: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """``m`` row indices of ``y``, both classes in proportion (one of each at least): the texts
    a team labels at every checkpoint. Sorted; empty for m = 0."""
    if m == 0:
        return np.array([], dtype=int)
    y = np.asarray(y).astype(int)
    n_pos = int(np.clip(round(m * y.mean()), 1, m - 1))
    pos = rng.permutation(np.flatnonzero(y == 1))[:n_pos]
    neg = rng.permutation(np.flatnonzero(y == 0))[: m - n_pos]
    return np.sort(np.concatenate([pos, neg]))


COMPARED = ("roc_auc", "silent_failure_rate_pct", "ece", "mean_confidence")


def compare(mitigated: list[dict], unmitigated: list[dict]) -> dict:
    """Per checkpoint, the frozen classifier's ``COMPARED`` metrics and the mitigation's change
    against them (mitigated - unmitigated, on the same texts: AUC up and SFR, ECE down is
    recovered), the change at the last checkpoint and at checkpoint 0, where nothing has drifted
    yet: what the mitigation costs."""
    change = [
        {"checkpoint": c, **{k: float(m[k]) - float(u[k]) for k in COMPARED}}
        for c, (m, u) in enumerate(zip(mitigated, unmitigated, strict=True))
    ]
    return {
        "unmitigated": [
            {"checkpoint": c, **{k: u[k] for k in COMPARED}} for c, u in enumerate(unmitigated)
        ],
        "change": change,
        "change_at_max": change[-1],
        "cost_at_0": change[0],
    }


def digest(summary: dict) -> str:
    """One log line: the AUC and SFR change against no mitigation, per checkpoint."""
    auc = " ".join(f"{c['roc_auc']:+.3f}" for c in summary["change"])
    sfr = " ".join(f"{c['silent_failure_rate_pct']:+.1f}" for c in summary["change"])
    return f"{summary['name']} vs none, per checkpoint: AUC {auc}; SFR (points) {sfr}"
