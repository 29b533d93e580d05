"""Drift operators and the sigma schedule of 000_b7270e02dd833497.txt, eq. (5)-(9).

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


def make_drift(
    name: str, d: int, rng: np.random.Generator, noise_rng: np.random.Generator | None = None
) -> DriftFn:
    """Build the operator for one run: the state shared across checkpoints (v, Q) is drawn once
    here from ``rng``; Gaussian noise is drawn fresh at every call, as eq. (5) requires, from
    ``noise_rng`` (default: ``rng``). Two operators built from equal ``rng`` states share v and
    Q; give the second its own ``noise_rng`` so its noise is independent of the first's."""
    if name not in DRIFTS:
        raise ValueError(f"unknown drift {name!r}; accepted: {', '.join(DRIFTS)}")
    return DRIFTS[name](d, rng, rng if noise_rng is None else noise_rng)


def _gaussian(d: int, rng: np.random.Generator, noise: np.random.Generator) -> DriftFn:
    return lambda z0, sigma: apply_gaussian_drift(z0, sigma, noise)


def _directional(d: int, rng: np.random.Generator, noise: np.random.Generator) -> DriftFn:
    v = random_direction(d, rng)
    return lambda z0, sigma: apply_directional_drift(z0, sigma, v)


def _subspace(d: int, rng: np.random.Generator, noise: np.random.Generator) -> DriftFn:
    q = random_orthogonal(d, rng)
    return lambda z0, sigma: apply_subspace_drift(z0, sigma, q)


DriftMaker = Callable[[int, np.random.Generator, np.random.Generator], DriftFn]
DRIFTS: dict[str, DriftMaker] = {
    "gaussian": _gaussian,
    "directional": _directional,
    "subspace": _subspace,
}
