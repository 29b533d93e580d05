"""What every classifier of the ``classifier/`` group shares: the standardisation of B.3 (eq. 10-11)
with its degenerate-dimension check, the choice of one hyper-parameter on the validation split,
and the interface a drift run and a mitigation use.

Trained once on checkpoint-0 embeddings and frozen. The choice adds what the paper leaves
implicit and a researcher needs to see: which dimensions are (nearly) constant on the training
set, and whether the validation-selected value sits on the edge of its grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

DEGENERATE_DIMS = ("keep", "drop", "floor")
# How the hyper-parameter is chosen on the validation split. AUC only ranks, so it is blind to a
# value that ranks well but is over- or under-confident; log-loss also scores the probabilities
# (and so calibration), which is what a silent-failure study reads.
SELECT_BY = ("auc", "log_loss")
# Fits run on one BLAS thread: on matrices this small (a few thousand texts x d) more threads
# mostly wait for each other; on a busy 2-core machine one thread fitted the default logreg grid
# 50-100x faster than two.
FIT_THREADS = 1


def degenerate_dimensions(z_train: np.ndarray, rel_std: float) -> np.ndarray:
    """Indices of dimensions whose training std is below ``rel_std`` x the median std.

    Standardising (eq. 11) divides by that std, so any drift in such a coordinate is amplified
    by 1/std: with std ~ 1e-33 a drift of 0.005 becomes ~1e30 standard deviations."""
    std = z_train.std(axis=0)
    return np.flatnonzero(std < rel_std * np.median(std))


@dataclass
class Standardizer:
    """eq. (11) with the training mean and population std; ``keep``: the dimensions fed on.
    ``degenerate_dims``: ``keep`` is the paper's recipe (sklearn's StandardScaler as is),
    ``drop`` removes degenerate dimensions, ``floor`` raises their std to the median std.
    ``enabled=False`` passes the embeddings through unchanged (mean 0, scale 1)."""

    keep: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    degenerate: np.ndarray
    mode: str
    rel_std: float
    enabled: bool

    @classmethod
    def fit(cls, z: np.ndarray, *, enabled: bool, mode: str, rel_std: float) -> Standardizer:
        degenerate = degenerate_dimensions(z, rel_std)
        keep = np.arange(z.shape[1])
        if mode == "drop":
            keep = np.setdiff1d(keep, degenerate)
        if not enabled:
            zeros = np.zeros(keep.size)
            return cls(keep, zeros, zeros + 1.0, degenerate, mode, rel_std, enabled)
        scaler = StandardScaler().fit(z[:, keep])
        mean, scale = scaler.mean_.copy(), scaler.scale_.copy()
        if mode == "floor" and degenerate.size:
            scale[degenerate] = np.maximum(scale[degenerate], np.median(scale))
        return cls(keep, mean, scale, degenerate, mode, rel_std, enabled)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return (z[:, self.keep] - self.mean) / self.scale


def check_choice(key: str, value: str, accepted: Sequence[str]) -> None:
    if value not in accepted:
        raise ValueError(f"classifier.{key}={value!r}; accepted: {', '.join(accepted)}")


@dataclass
class Selection:
    """The hyper-parameter ``param`` (config spelling: its grid is ``classifier.<param>_grid``)
    chosen on validation: every grid value's validation ROC-AUC and log-loss, and the winner."""

    param: str
    value: float
    grid: list
    select_by: str
    val_auc: dict
    val_log_loss: dict

    @property
    def at_grid_edge(self) -> bool:
        return len(self.grid) > 1 and self.value in (self.grid[0], self.grid[-1])


class Classifier:
    """The interface of every ``classifier/`` choice: ``fit`` on train with the hyper-parameter
    chosen on validation, ``predict_proba`` (p of the toxic class), ``refit`` (the same family
    and settings, fitted afresh on other data: what a mitigation retrains), ``describe``
    (its part of metrics.json), ``warnings`` and ``amplification`` (the drift terms eq. 26-29
    define for a linear model on standardised features; empty for the others).

    A family sets PARAM (chosen on validation from the setting ``<PARAM>_grid``), LABEL (how a
    message writes it), TIES (ties go to the smaller value, 1, or the larger, -1: the more
    regularised either way) and SCALED (standardises first), and builds one estimator."""

    PARAM: ClassVar[str]
    LABEL: ClassVar[str]
    TIES: ClassVar[int] = 1
    SCALED: ClassVar[bool] = True
    CACHED: ClassVar[bool] = True  # driftbench.fit_cache keeps its fits
    # the embedding width it reads, where it was fitted before the run (``fitted``); a family
    # the run fits reads any width
    n_features_in: int | None = None

    def __init__(self, *, grid: Sequence[float], select_by: str, seed: int, scaling: dict):
        check_choice("select_by", select_by, SELECT_BY)
        if self.SCALED:
            check_choice("degenerate_dims", scaling["mode"], DEGENERATE_DIMS)
        grid = sorted(grid)
        if not grid or any(not v > 0 for v in grid):
            raise ValueError(f"classifier.{self.PARAM}_grid must hold positive values, got {grid}")
        self.grid, self.select_by, self.seed, self.scaling = grid, select_by, seed, scaling
        self.scaler: Standardizer | None = None

    # --- what a family defines ---------------------------------------------------------------

    def _estimator(self, value, n_train: int):
        raise NotImplementedError

    def _scores(self, model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(what validation AUC ranks, p of the toxic class) on features ``x``."""
        p = model.predict_proba(x)[:, 1]
        return p, p

    def check_train_size(self, n_train: int) -> None:
        """Refuse settings a training split of ``n_train`` texts cannot serve (before any load)."""

    def check_width(self, width: int, whose: str) -> None:
        """Refuse embeddings of ``width`` (``whose``: "the embeddings of <model>") where it reads
        another (``n_features_in``); a family the run fits takes any width."""

    def inputs(self) -> dict:
        """Digests of the files it reads besides the embeddings (a run's result key and the fit
        cache's key hold them); none for a family the run fits."""
        return {}

    def _settings(self) -> dict:
        """The constructor's own keywords, for ``refit``."""
        raise NotImplementedError

    # --- the interface -------------------------------------------------------------------------

    def features(self, z: np.ndarray) -> np.ndarray:
        return self.scaler(z) if self.scaler is not None else z

    def fit(self, z_train, y_train, z_val=None, y_val=None) -> Classifier:
        """Fit one estimator per grid value on train; keep the one with the highest validation
        ROC-AUC (``select_by='auc'``) or the lowest log-loss, ties to the more regularised."""
        if self.SCALED:
            self.scaler = Standardizer.fit(z_train, **self.scaling)
        x_train = self.features(z_train)
        models, auc, loss = {}, {}, {}
        with threadpool_limits(limits=FIT_THREADS, user_api="blas"):
            for v in self.grid:
                models[v] = self._estimator(v, len(x_train)).fit(x_train, y_train)
                if z_val is not None:
                    scores, p = self._scores(models[v], self.features(z_val))
                    auc[v] = float(roc_auc_score(y_val, scores))
                    loss[v] = float(log_loss(y_val, p, labels=[0, 1]))
        if len(self.grid) == 1:
            best = self.grid[0]
        elif z_val is None:
            raise ValueError("choosing from a grid of more than one value needs a validation split")
        elif self.select_by == "auc":
            best = max(self.grid, key=lambda v: (auc[v], -self.TIES * v))
        else:
            best = min(self.grid, key=lambda v: (loss[v], self.TIES * v))
        self.model = models[best]
        self.selection = Selection(self.PARAM, best, self.grid, self.select_by, auc, loss)
        return self

    def predict_proba(self, z: np.ndarray) -> np.ndarray:
        """p(y=1 | z), the toxic-class probability."""
        return self._scores(self.model, self.features(z))[1]

    def refit(self, z: np.ndarray, y: np.ndarray, z_val=None, y_val=None) -> Classifier:
        """A classifier of the same family and settings fitted afresh on ``(z, y)``
        (standardisation included): at the hyper-parameter chosen here, or, given a validation
        split, with it chosen again from the whole grid."""
        grid = self.grid if z_val is not None else [self.selection.value]
        settings = {**self._settings(), f"{self.PARAM}_grid": grid}
        return type(self)(**settings, seed=self.seed).fit(z, y, z_val, y_val)

    def describe(self) -> dict:
        s, p = self.selection, self.PARAM
        out = {
            "selected": f"{self.LABEL}={s.value:g}",
            "select_by": s.select_by,
            p: s.value,
            f"{p}_grid": s.grid,
            f"{p}_at_grid_edge": s.at_grid_edge,
            f"val_auc_by_{p}": {str(k): v for k, v in s.val_auc.items()},
            f"val_log_loss_by_{p}": {str(k): v for k, v in s.val_log_loss.items()},
        }
        if self.scaler is not None:
            sc = self.scaler
            out["standardize"] = sc.enabled
            out["degenerate_dims"] = {
                "mode": sc.mode,
                "count": int(sc.degenerate.size),
                "indices": sc.degenerate.tolist(),
                "rel_std": sc.rel_std,
            }
        return out

    def warnings(self) -> list[str]:
        out = []
        sc = self.scaler
        if sc is not None and sc.enabled and sc.degenerate.size:
            handled = {
                "keep": "kept as the paper does, so a collapse under drift may be this artifact; "
                "classifier.degenerate_dims=drop or floor removes it",
                "drop": "dropped (classifier.degenerate_dims=drop)",
                "floor": "their std floored at the median std (classifier.degenerate_dims=floor)",
            }[sc.mode]
            out.append(
                f"{sc.degenerate.size} embedding dimension(s) are (nearly) constant on the "
                f"training set: {sc.degenerate[:20].tolist()}. Standardising divides any drift "
                f"there by their tiny std. They are {handled}."
            )
        s = self.selection
        if s.at_grid_edge:
            out.append(
                f"the selected {self.LABEL}={s.value:g} is at the edge of "
                f"classifier.{self.PARAM}_grid {s.grid}: widen the grid"
            )
        return out

    def amplification(self, z0: np.ndarray, zc: np.ndarray, sigma: float) -> dict:
        """Where the drift from ``z0`` to ``zc`` goes inside the model; {} where undefined."""
        return {}


class ScaledCGrid(Classifier):
    """A family that standardises (optionally) and chooses C on validation: the settings of
    ``conf/classifier/logreg.yaml`` and ``linear_svm.yaml``, shared by ``logreg`` and
    ``linear_svm``."""

    PARAM, LABEL = "c", "C"

    def __init__(
        self,
        *,
        c_grid: Sequence[float],
        select_by: str,
        max_iter: int,
        degenerate_dims: str,
        degenerate_rel_std: float,
        standardize: bool,
        seed: int,
    ):
        scaling = {"enabled": standardize, "mode": degenerate_dims, "rel_std": degenerate_rel_std}
        super().__init__(grid=c_grid, select_by=select_by, seed=seed, scaling=scaling)
        self.max_iter = max_iter

    def _settings(self) -> dict:
        return {
            "select_by": self.select_by,
            "max_iter": self.max_iter,
            "degenerate_dims": self.scaling["mode"],
            "degenerate_rel_std": self.scaling["rel_std"],
            "standardize": self.scaling["enabled"],
        }
