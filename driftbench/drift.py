"""Drift operators and the sigma schedule of the drift paper, eq. (5)-(9).

Pure numpy: no torch, no Hydra, no files. Every operator takes unit-norm embeddings ``z0`` of
shape (n, d) and returns drifted unit-norm embeddings, so the realized drift can be measured as
an angle on the sphere (``angle_deg``), which is what sigma actually means.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def normalize(z: np.ndarray) -> np.ndarray:
    """Project rows onto the unit sphere, eq. (4)."""
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("cannot normalise a zero vector: an embedding row is all zeros")
    return z / norms


def sigma_schedule(
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    k: int | None = None,
    sigmas: Sequence[float] | None = None,
) -> np.ndarray:
    """Checkpoint magnitudes: eq. (9) ``sigma_c = sigma_min + c/(K-1) (sigma_max - sigma_min)``,
    or an explicit list. Validated here so a bad schedule fails before any model is loaded."""
    if sigmas is not None:
        out = np.asarray(list(sigmas), dtype=np.float64)
        if out.ndim != 1 or out.size < 2:
            raise ValueError(f"schedule.sigmas must list at least 2 values, got {list(sigmas)}")
        if not np.all(np.isfinite(out)) or np.any(out < 0):
            raise ValueError(
                f"schedule.sigmas must be finite and >= 0, got {out.tolist()}; sigma is a magnitude"
            )
        if np.any(np.diff(out) < 0):
            raise ValueError(
                f"schedule.sigmas must not decrease, got {out.tolist()}: checkpoint c is the "
                "model after c updates, and the *_at_max summaries read the last one"
            )
        return out
    if sigma_min is None or sigma_max is None or k is None:
        raise ValueError(
            "schedule needs sigma_min, sigma_max and k (eq. 9), or an explicit schedule.sigmas list"
        )
    if k < 2:
        raise ValueError(f"schedule.k={k} is too small: eq. (9) needs K >= 2 checkpoints")
    if sigma_min < 0:
        raise ValueError(f"schedule.sigma_min={sigma_min} is negative: sigma must be >= 0")
    if sigma_max < sigma_min:
        raise ValueError(
            f"schedule.sigma_max={sigma_max} is below sigma_min={sigma_min}: "
            "need sigma_max >= sigma_min"
        )
    c = np.arange(k, dtype=np.float64)
    return sigma_min + c / (k - 1) * (sigma_max - sigma_min)


def apply_gaussian_drift(z0: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """eq. (5): ``Normalize(z0 + eps)``, eps ~ N(0, sigma^2 I), drawn fresh for every call."""
    return normalize(z0 + rng.normal(0.0, sigma, size=z0.shape))


def random_direction(d: int, rng: np.random.Generator) -> np.ndarray:
    """The fixed unit vector v of eq. (6): ``u / ||u||`` with u ~ N(0, I_d)."""
    u = rng.standard_normal(d)
    return u / np.linalg.norm(u)


def apply_directional_drift(z0: np.ndarray, sigma: float, v: np.ndarray) -> np.ndarray:
    """eq. (6): ``Normalize(z0 + sigma v)``, one v for all samples and checkpoints."""
    return normalize(z0 + sigma * v[None, :])


def random_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    """Q of eq. (8): the orthogonal factor of the QR decomposition of A ~ N(0, I_{d x d})."""
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return q


def subspace_rotation(sigma: float, q: np.ndarray) -> np.ndarray:
    """eq. (8): ``R_c = cos(theta) I + sin(theta) Q`` with ``theta = sigma pi / 2``.

    R_c is not itself orthogonal (it interpolates linearly), hence the Normalize of eq. (7)."""
    theta = sigma * np.pi / 2.0
    return np.cos(theta) * np.eye(q.shape[0]) + np.sin(theta) * q


def apply_subspace_drift(z0: np.ndarray, sigma: float, q: np.ndarray) -> np.ndarray:
    """eq. (7): ``Normalize(R_c z0)`` applied to every row."""
    return normalize(z0 @ subspace_rotation(sigma, q).T)


def realized_angle_deg(z0: np.ndarray, zc: np.ndarray) -> np.ndarray:
    """Angle in degrees between each undrifted and drifted unit embedding, as
    ``2 atan2(|z0 - zc|, |z0 + zc|)``: exact at every angle, where ``arccos`` of a dot product
    near 1 turns one rounding step into ~1e-6 degrees."""
    diff = np.linalg.norm(z0 - zc, axis=1)
    both = np.linalg.norm(z0 + zc, axis=1)
    return np.degrees(2.0 * np.arctan2(diff, both))


DriftFn = Callable[[np.ndarray, float], np.ndarray]


class SyntheticDrift:
    """One synthetic drift: how a run draws its state (v, Q) once and drifts embeddings at a
    sigma (``operator``), and the same operator at fixed draws for a real update's synthetic
    twin (``twin_draws``: common random numbers, so the angle is a smooth function of sigma).
    ``twin_stream`` names the twin's random stream (unique per drift, never a list position)
    and ``twin_ceiling`` the largest sigma the twin search tries."""

    twin_ceiling = 1e3

    def __init__(self, name: str, twin_stream: int):
        self.name, self.twin_stream = name, twin_stream

    def state(self, d: int, rng: np.random.Generator):
        """What a run shares across its checkpoints, drawn once (None: nothing)."""
        return None

    def apply(self, z0: np.ndarray, sigma: float, state, noise: np.random.Generator):
        raise NotImplementedError

    def operator(self, d: int, rng: np.random.Generator, noise: np.random.Generator) -> DriftFn:
        state = self.state(d, rng)
        return lambda z0, sigma: self.apply(z0, sigma, state, noise)

    def twin_draws(self, z0: np.ndarray, draws: int, rng: np.random.Generator) -> list[DriftFn]:
        """``draws`` drifts of ``z0``, each a function of sigma alone."""
        states = [self.state(z0.shape[1], rng) for _ in range(draws)]
        return [lambda s, st=st: self.apply(z0, s, st, None) for st in states]


class Gaussian(SyntheticDrift):
    """eq. (5): fresh noise at every call; a twin's draw is one noise matrix e of unit scale,
    eq. (5) with noise sigma e."""

    def apply(self, z0, sigma, state, noise):
        return apply_gaussian_drift(z0, sigma, noise)

    def twin_draws(self, z0, draws, rng):
        noise = [rng.standard_normal(z0.shape) for _ in range(draws)]
        return [lambda s, e=e: normalize(z0 + s * e) for e in noise]


class Directional(SyntheticDrift):
    """eq. (6): one unit vector v per run."""

    def state(self, d, rng):
        return random_direction(d, rng)

    def apply(self, z0, sigma, state, noise):
        return apply_directional_drift(z0, sigma, state)


class Subspace(SyntheticDrift):
    """eq. (7)-(8): one rotation Q per run. A twin's draw keeps ``Q z0`` (``R_c z0 = cos(theta)
    z0 + sin(theta) Q z0``), so the search never multiplies by a d x d matrix again."""

    twin_ceiling = 2.0  # theta <= 180 degrees

    def state(self, d, rng):
        return random_orthogonal(d, rng)

    def apply(self, z0, sigma, state, noise):
        return apply_subspace_drift(z0, sigma, state)

    def twin_draws(self, z0, draws, rng):
        zq = [z0 @ random_orthogonal(z0.shape[1], rng).T for _ in range(draws)]
        theta = lambda s: s * np.pi / 2  # noqa: E731
        return [lambda s, q=q: normalize(np.cos(theta(s)) * z0 + np.sin(theta(s)) * q) for q in zq]


def make_drift(
    name: str, d: int, rng: np.random.Generator, noise_rng: np.random.Generator | None = None
) -> DriftFn:
    """Build the operator for one run: the state shared across checkpoints (v, Q) is drawn once
    here from ``rng``; Gaussian noise is drawn fresh at every call, as eq. (5) requires, from
    ``noise_rng`` (default: ``rng``). Two operators built from equal ``rng`` states share v and
    Q; give the second its own ``noise_rng`` so its noise is independent of the first's."""
    if name not in DRIFTS:
        raise ValueError(f"unknown drift {name!r}; accepted: {', '.join(DRIFTS)}")
    return DRIFTS[name].operator(d, rng, rng if noise_rng is None else noise_rng)


def register(drift: SyntheticDrift) -> None:
    """Add a synthetic drift: a run, the twins of real updates and their report take it up."""
    if any(d.twin_stream == drift.twin_stream for d in DRIFTS.values() if d.name != drift.name):
        raise ValueError(f"twin_stream {drift.twin_stream} is taken; each drift needs its own")
    DRIFTS[drift.name] = drift


DRIFTS: dict[str, SyntheticDrift] = {}
for _drift in (Gaussian("gaussian", 0), Directional("directional", 1), Subspace("subspace", 2)):
    register(_drift)
