"""Maps from a new model's embedding space into the old one (adapters), fitted on N paired rows:
``z_new[i]`` and ``z_old[i]`` are the same text embedded by the new and by the old model, and
the widths may differ. What a team that keeps its classifier across a model update fits instead
of re-embedding its training set (Drift-Adapter, Vejendla, EMNLP 2025, arXiv 2509.23471, maps
with Procrustes, a low-rank affine map or a residual MLP); also the map a model swap
(``drift.map``) and the ``adapter`` mitigation apply. numpy, scipy and scikit-learn only.

Every adapter has one interface: ``fit(z_new, z_old)`` on the pairs, ``transform(z)`` (the
fitted map itself, what tests compare with a known map), ``apply(z)`` (the mapped rows back on
the unit sphere: every embedding driftbench classifies is unit-norm, eq. (4) of the drift paper,
so the classifier reads what it was trained on) and ``describe()``. ``ADAPTERS`` names them;
``make_adapter`` builds one with its settings checked.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from sklearn.linear_model import RidgeCV
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from driftbench.drift import normalize

# ridge strengths tried by ``affine``, relative to the mean eigenvalue of the centred Gram matrix
# of the new rows (so the same grid serves embeddings of any scale)
RIDGE_GRID = tuple(10.0**k for k in range(-8, 3))


def refuse_rank(kind: str, rank: int | None, key: str) -> None:
    if rank is not None:
        raise ValueError(
            f"{key}rank={rank} with {key}kind={kind}; accepted: null (only low_rank has a rank)"
        )


class Adapter(ABC):
    """A map fitted on paired rows; ``min_pairs``: the fewest pairs it can be fitted on."""

    name: str
    min_pairs = 2

    @classmethod
    def build(cls, *, rank: int | None, seed: int, key: str) -> Adapter:
        """The adapter for the settings ``make_adapter`` was given."""
        refuse_rank(cls.name, rank, key)
        return cls()

    def fit(self, z_new: np.ndarray, z_old: np.ndarray) -> Adapter:
        """Fit on the pairs (row i of both: the same text); returns the adapter."""
        z_new, z_old = np.asarray(z_new, dtype=np.float64), np.asarray(z_old, dtype=np.float64)
        if z_new.ndim != 2 or z_old.ndim != 2 or len(z_new) != len(z_old):
            raise ValueError(
                f"pairs of shapes {z_new.shape} (new) and {z_old.shape} (old); accepted: two 2-D "
                "arrays with one row per text in both"
            )
        if len(z_new) < self.min_pairs:
            raise ValueError(
                f"{self.name} fitted on {len(z_new)} pairs; accepted: at least {self.min_pairs}"
            )
        self.widths = (z_new.shape[1], z_old.shape[1])
        # one BLAS thread, as the classifiers fit: on a busy 2-core machine two threads fitted
        # every adapter 1.5-10x slower (1,400 pairs of 576 dimensions)
        with threadpool_limits(limits=1, user_api="blas"):
            self._fit(z_new, z_old)
        return self

    @abstractmethod
    def _fit(self, z_new: np.ndarray, z_old: np.ndarray) -> None: ...

    @abstractmethod
    def transform(self, z: np.ndarray) -> np.ndarray:
        """Rows of the new space mapped into the old one, as fitted (no renormalisation)."""

    def apply(self, z: np.ndarray) -> np.ndarray:
        """``transform`` back on the unit sphere (eq. 4): what the frozen classifier reads."""
        return normalize(self.transform(z))

    def describe(self) -> dict:
        return {"kind": self.name, "widths": list(self.widths)}


def procrustes(z_new: np.ndarray, z_old: np.ndarray) -> np.ndarray:
    """The (semi-)orthogonal ``W`` maximising ``tr(W^T z_new^T z_old)``: ``U V^T`` from the SVD of
    ``z_new^T z_old`` (scipy.linalg.orthogonal_procrustes for equal widths). With fewer pairs
    than dimensions that product is rank-deficient and W is free on its null space; a ridge of
    ``1e-10`` of its norm towards the identity (``eye(d_new, d_old)``) picks the W that leaves
    those directions where they are, and moves a well-posed solution by about 1e-10."""
    m = z_new.T @ z_old
    m = m + 1e-10 * np.linalg.norm(m, 2) * np.eye(*m.shape)
    u, _, vt = np.linalg.svd(m, full_matrices=False)
    return u @ vt


class Linear(Adapter):
    """A map ``z @ w + b`` (``b`` zero where the adapter has no bias)."""

    w: np.ndarray
    b: np.ndarray | float = 0.0

    def transform(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z, dtype=np.float64) @ self.w + self.b


class Procrustes(Linear):
    """``procrustes``: orthogonal Procrustes, no bias; semi-orthogonal where the widths differ.
    A rotation (or an isometric embedding) keeps every angle between texts, so it can only undo
    an update that turned the whole space; it has no parameter to overfit with few pairs."""

    name = "procrustes"

    def _fit(self, z_new, z_old) -> None:
        self.w = procrustes(z_new, z_old)


class LeastSquares(Linear):
    """``lstsq``: ordinary least squares, no bias (any linear map; with fewer pairs than
    dimensions, numpy's minimum-norm one)."""

    name = "lstsq"

    def _fit(self, z_new, z_old) -> None:
        self.w = np.linalg.lstsq(z_new, z_old, rcond=None)[0]


class Affine(Linear):
    """``affine``: ridge regression with a bias, one strength for every output dimension chosen
    by scikit-learn's efficient leave-one-out (RidgeCV) from ``RIDGE_GRID`` times the mean
    eigenvalue of the centred new rows' Gram matrix: with fewer pairs than dimensions least
    squares interpolates the pairs, and the ridge is what keeps the map sensible off them."""

    name = "affine"

    def _fit(self, z_new, z_old) -> None:
        scale = float(np.sum((z_new - z_new.mean(axis=0)) ** 2)) / z_new.shape[1]
        if not scale > 0:
            raise ValueError(
                f"{self.name}: the {len(z_new)} new rows are all equal; accepted: "
                "pairs of different texts"
            )
        ridge = RidgeCV(alphas=[a * scale for a in RIDGE_GRID]).fit(z_new, z_old)
        self.w, self.b = ridge.coef_.T.reshape(self.widths), ridge.intercept_
        self.alpha_relative = float(ridge.alpha_) / scale

    def describe(self) -> dict:
        return {**super().describe(), "ridge_alpha_relative": self.alpha_relative}


class LowRank(Linear):
    """``low_rank``: an affine map whose linear part has rank ``rank``, by reduced-rank
    regression (Izenman 1975): the ``affine`` fit, its linear part projected onto the top
    ``rank`` right singular directions of its centred fitted values. Under squared error those
    directions span the best rank-r approximation of what the full map predicts, so this is the
    least-squares optimal rank-r map given the ridge fit (reduced-rank ridge regression,
    Mukherjee and Zhu 2011); fewer parameters to fit from few pairs than ``affine``."""

    name = "low_rank"

    def __init__(self, rank: int):
        self.rank = rank

    @classmethod
    def build(cls, *, rank: int | None, seed: int, key: str) -> Adapter:
        if isinstance(rank, bool) or not isinstance(rank, int | np.integer) or rank < 1:
            raise ValueError(
                f"{key}rank={rank!r} with {key}kind={cls.name}; accepted: an integer >= 1"
            )
        return cls(int(rank))

    def _fit(self, z_new, z_old) -> None:
        if self.rank > min(self.widths):
            raise ValueError(
                f"rank={self.rank} for widths {self.widths[0]} -> {self.widths[1]}; accepted: "
                f"1..{min(self.widths)}"
            )
        full = Affine().fit(z_new, z_old)
        mean_new = z_new.mean(axis=0)
        _, _, vt = np.linalg.svd((z_new - mean_new) @ full.w, full_matrices=False)
        top = vt[: self.rank]
        self.w = full.w @ top.T @ top
        self.b = full.transform(mean_new[None])[0] - mean_new @ self.w
        self.alpha_relative = full.alpha_relative

    def describe(self) -> dict:
        return {
            **super().describe(),
            "rank": self.rank,
            "ridge_alpha_relative": self.alpha_relative,
        }


class ResidualMLP(Adapter):
    """``mlp``: the ``affine`` map plus a small MLP (scikit-learn's MLPRegressor, one ReLU layer
    of ``HIDDEN`` units, adam) fitted on what the affine map leaves (the residual), on
    standardised inputs and the residual divided by its RMS. Training stops when the R^2 on a
    held-out share (``HELD_OUT``) of the pairs stops rising; an MLP whose best held-out R^2 is
    not above 0 predicts the residual worse than zero does and is dropped (``mlp_kept``). The
    affine base makes a linear update cost the MLP nothing to represent; the MLP is for what
    bends."""

    name = "mlp"
    HIDDEN = 256
    HELD_OUT = 0.2
    LEARNING_RATE = 1e-2
    BATCH = 64
    PATIENCE = 20  # epochs without held-out improvement before stopping
    MAX_EPOCHS = 500
    min_pairs = 10  # two held out at least

    def __init__(self, seed: int):
        self.seed = int(seed)

    @classmethod
    def build(cls, *, rank: int | None, seed: int, key: str) -> Adapter:
        refuse_rank(cls.name, rank, key)
        return cls(seed)

    def _fit(self, z_new, z_old) -> None:
        self.base = Affine().fit(z_new, z_old)
        residual = z_old - self.base.transform(z_new)
        self.scale = float(np.sqrt(np.mean(residual**2)))
        self.mlp = None
        if self.scale == 0:  # the affine map is exact: nothing left to learn
            return
        mlp = MLPRegressor(
            hidden_layer_sizes=(self.HIDDEN,),
            learning_rate_init=self.LEARNING_RATE,
            batch_size=self.BATCH,
            early_stopping=True,
            validation_fraction=self.HELD_OUT,
            n_iter_no_change=self.PATIENCE,
            max_iter=self.MAX_EPOCHS,
            random_state=self.seed,
        )
        pipeline = make_pipeline(StandardScaler(), mlp).fit(z_new, residual / self.scale)
        self.held_out_r2, self.epochs = float(mlp.best_validation_score_), int(mlp.n_iter_)
        if self.held_out_r2 > 0:
            self.mlp = pipeline

    def transform(self, z: np.ndarray) -> np.ndarray:
        out = self.base.transform(z)
        if self.mlp is None:
            return out
        return out + self.scale * self.mlp.predict(np.asarray(z, dtype=np.float64)).reshape(
            out.shape
        )

    def describe(self) -> dict:
        held = {"held_out_r2": self.held_out_r2, "epochs": self.epochs} if self.scale else {}
        return {
            **super().describe(),
            "hidden": self.HIDDEN,
            "mlp_kept": self.mlp is not None,
            **held,
            "ridge_alpha_relative": self.base.alpha_relative,
        }


ADAPTERS: dict[str, type[Adapter]] = {
    a.name: a for a in (Procrustes, LeastSquares, Affine, LowRank, ResidualMLP)
}


def make_adapter(kind: str, *, rank: int | None, seed: int, key: str = "") -> Adapter:
    """The adapter ``kind`` with its settings checked: ``rank`` is low_rank's (null for the
    others), ``seed`` the MLP's. ``key`` prefixes the names in an error (``mitigation.``)."""
    if kind not in ADAPTERS:
        raise ValueError(f"{key}kind={kind!r}; accepted: {', '.join(ADAPTERS)}")
    return ADAPTERS[kind].build(rank=rank, seed=seed, key=key)
