"""What a monitor sees: a window's view, the labelled reference, the settings and the outcome."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from sklearn.isotonic import IsotonicRegression

from driftbench.metrics import confidence, predict
from driftbench.monitors.statistics import atc_threshold

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


class Windows:
    """k windows of w texts each, as rows of one pool's view (the pool: a checkpoint's test
    texts; every window a sorted set of distinct rows). The monitors compute what does not
    depend on the window once per pool: its PCA coordinates, its kernel and Gram matrices."""

    def __init__(self, pool: View, idx: np.ndarray):
        idx = np.asarray(idx)
        if idx.ndim != 2 or idx.shape[1] < 2 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"windows need (k, w >= 2) integer row indices, got {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= len(pool.p)):
            raise ValueError(f"window rows must index the pool's {len(pool.p)} texts")
        if (np.diff(np.sort(idx, axis=1), axis=1) == 0).any():
            raise ValueError("a window holds distinct texts: its row indices repeat")
        self.pool, self.idx = pool, idx

    def __len__(self) -> int:
        return self.idx.shape[0]

    @property
    def size(self) -> int:
        """w: texts per window."""
        return self.idx.shape[1]

    def view(self, i: int) -> View:
        return View(self.pool.z[self.idx[i]], self.pool.p[self.idx[i]])

    @classmethod
    def of_views(cls, views: Sequence[View]) -> Windows:
        """Windows of equal size stacked into one pool (each window its own rows)."""
        sizes = {len(v.p) for v in views}
        if len(sizes) != 1:
            raise ValueError(f"windows of one batch need one size, got sizes {sorted(sizes)}")
        pool = View(np.concatenate([v.z for v in views]), np.concatenate([v.p for v in views]))
        return cls(pool, np.arange(len(pool.p)).reshape(len(views), -1))

    @cached_property
    def confidence_mean(self) -> np.ndarray:
        """Each window's mean confidence, (k,)."""
        return self.pool.confidence[self.idx].mean(axis=1)

    @cached_property
    def mean(self) -> np.ndarray:
        """Each window's mean embedding, (k, d): one product with the (k, pool) averaging
        matrix, never a (k, w, d) copy of the windows."""
        avg = np.zeros((len(self), len(self.pool.p)))
        np.put_along_axis(avg, self.idx, 1.0 / self.size, axis=1)
        return avg @ self.pool.z


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
