"""The safety classifier of 000_b7270e02dd833497.txt, B.3: standardise, then L2 logistic regression.

Trained once on checkpoint-0 embeddings and frozen. Adds what the paper leaves implicit and a
researcher needs to see: which dimensions are (nearly) constant on the training set, and whether
the validation-selected C sits on the edge of its grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.preprocessing import StandardScaler

DEGENERATE_DIMS = ("keep", "drop", "floor")
# How C is chosen on the validation split. AUC only ranks, so it is blind to a C that ranks well
# but is over- or under-confident; log-loss also scores the probabilities (and so calibration),
# which is what a silent-failure study reads.
SELECT_BY = ("auc", "log_loss")


def degenerate_dimensions(z_train: np.ndarray, rel_std: float) -> np.ndarray:
    """Indices of dimensions whose training std is below ``rel_std`` x the median std.

    Standardising (eq. 11) divides by that std, so any drift in such a coordinate is amplified
    by 1/std: with std ~ 1e-33 a drift of 0.005 becomes ~1e30 standard deviations."""
    std = z_train.std(axis=0)
    return np.flatnonzero(std < rel_std * np.median(std))


@dataclass
class SafetyClassifier:
    """Standardiser + logistic regression; ``keep`` marks the dimensions fed to the model."""

    keep: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    model: LogisticRegression
    c: float
    c_grid: list[float]
    val_auc_by_c: dict[float, float]
    val_log_loss_by_c: dict[float, float]
    select_by: str
    degenerate: np.ndarray
    degenerate_dims: str
    c_at_grid_edge: bool = field(default=False)

    def standardize(self, z: np.ndarray) -> np.ndarray:
        """eq. (11) with the training mean and std."""
        return (z[:, self.keep] - self.mean) / self.scale

    def logits(self, z: np.ndarray) -> np.ndarray:
        """``f(z) = w . z~ + b`` (eq. 26) on standardised features."""
        return self.standardize(z) @ self.w + self.b

    def predict_proba(self, z: np.ndarray) -> np.ndarray:
        """p(y=1 | z), the toxic-class probability."""
        return expit(self.logits(z))

    @property
    def w(self) -> np.ndarray:
        return self.model.coef_[0]

    @property
    def b(self) -> float:
        return float(self.model.intercept_[0])

    @property
    def w_raw_norm(self) -> float:
        """Norm of the weights seen by an unstandardised perturbation, ``||w / scale||``: the
        noise std of w . (eps / scale) for eps ~ N(0, sigma^2 I) is this times sigma."""
        return float(np.linalg.norm(self.w / self.scale))


def _fit_logreg(z: np.ndarray, y: np.ndarray, c: float, max_iter: int, seed: int):
    model = LogisticRegression(
        C=c, class_weight="balanced", max_iter=max_iter, solver="lbfgs", random_state=seed
    )
    return model.fit(z, y)


def fit_classifier(
    z_train: np.ndarray,
    y_train: np.ndarray,
    z_val: np.ndarray,
    y_val: np.ndarray,
    *,
    c_grid: Sequence[float],
    max_iter: int,
    degenerate_dims: str,
    degenerate_rel_std: float,
    select_by: str,
    seed: int,
) -> SafetyClassifier:
    """Fit on train, choose C on validation (B.3): the highest ROC-AUC (``select_by='auc'``)
    or the lowest log-loss (``'log_loss'``); ties go to the smaller C. The settings are the
    ``classifier/`` group's (conf/classifier/logreg.yaml holds the paper's), given by name.

    ``degenerate_dims``: ``keep`` is the paper's recipe (sklearn's StandardScaler as is),
    ``drop`` removes degenerate dimensions, ``floor`` raises their std to the median std."""
    if select_by not in SELECT_BY:
        raise ValueError(f"classifier.select_by={select_by!r}; accepted: {', '.join(SELECT_BY)}")
    if degenerate_dims not in DEGENERATE_DIMS:
        raise ValueError(
            f"classifier.degenerate_dims={degenerate_dims!r}; "
            f"accepted: {', '.join(DEGENERATE_DIMS)}"
        )
    c_grid = sorted(float(c) for c in c_grid)
    if not c_grid or any(c <= 0 for c in c_grid):
        raise ValueError(f"classifier.c_grid must hold positive values, got {c_grid}")
    degenerate = degenerate_dimensions(z_train, degenerate_rel_std)
    keep = np.arange(z_train.shape[1])
    if degenerate_dims == "drop":
        keep = np.setdiff1d(keep, degenerate)
    scaler = StandardScaler().fit(z_train[:, keep])
    mean, scale = scaler.mean_.copy(), scaler.scale_.copy()
    if degenerate_dims == "floor" and degenerate.size:
        scale[degenerate] = np.maximum(scale[degenerate], np.median(scale))
    zt, zv = (z_train[:, keep] - mean) / scale, (z_val[:, keep] - mean) / scale

    val_auc, val_loss, models = {}, {}, {}
    for c in c_grid:
        models[c] = _fit_logreg(zt, y_train, c, max_iter, seed)
        scores = models[c].decision_function(zv)
        val_auc[c] = float(roc_auc_score(y_val, scores))
        val_loss[c] = float(log_loss(y_val, expit(scores), labels=[0, 1]))
    if select_by == "auc":
        best = max(c_grid, key=lambda c: (val_auc[c], -c))
    else:
        best = min(c_grid, key=lambda c: (val_loss[c], c))
    return SafetyClassifier(
        keep=keep,
        mean=mean,
        scale=scale,
        model=models[best],
        c=best,
        c_grid=c_grid,
        val_auc_by_c=val_auc,
        val_log_loss_by_c=val_loss,
        select_by=select_by,
        degenerate=degenerate,
        degenerate_dims=degenerate_dims,
        c_at_grid_edge=len(c_grid) > 1 and best in (c_grid[0], c_grid[-1]),
    )
