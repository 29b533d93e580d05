"""Maps from a new model's embedding space into the old one, fitted on anchor texts that both
models embedded: what a model swap needs (widths differ) and what the ``realign`` mitigation
applies. Pure numpy/scipy.

``procrustes`` is orthogonal Procrustes (for widths that differ, the same SVD solution with a
semi-orthogonal ``W``: a map that keeps angles between embeddings and only rotates/embeds).
``lstsq`` is ordinary least squares (any linear map; with fewer anchors than dimensions, the
minimum-norm one).
"""

from __future__ import annotations

import numpy as np

MAPS = ("procrustes", "lstsq", "none")


def fit_map(z_new: np.ndarray, z_old: np.ndarray, kind: str) -> np.ndarray | None:
    """``W`` with ``z_new @ W ≈ z_old`` on the anchors (rows are the same texts), or None for
    ``none`` (widths must then match)."""
    if kind not in MAPS:
        raise ValueError(f"map={kind!r}; accepted: {', '.join(MAPS)}")
    if z_new.shape[0] != z_old.shape[0]:
        raise ValueError(f"anchors differ: {z_new.shape[0]} new rows, {z_old.shape[0]} old rows")
    if kind == "none":
        if z_new.shape[1] != z_old.shape[1]:
            raise ValueError(
                f"map=none with widths {z_new.shape[1]} -> {z_old.shape[1]}; accepted: "
                "procrustes or lstsq when the widths differ"
            )
        return None
    if kind == "lstsq":
        return np.linalg.lstsq(z_new, z_old, rcond=None)[0]
    return procrustes(z_new, z_old)


def procrustes(z_new: np.ndarray, z_old: np.ndarray) -> np.ndarray:
    """The (semi-)orthogonal ``W`` maximising ``tr(W^T z_new^T z_old)``: ``U V^T`` from the SVD of
    ``z_new^T z_old`` (scipy.linalg.orthogonal_procrustes for equal widths). With fewer anchors
    than dimensions that product is rank-deficient and W is free on its null space; a ridge of
    ``1e-10`` of its norm towards the identity (``eye(d_new, d_old)``) picks the W that leaves
    those directions where they are, and moves a well-posed solution by about 1e-10."""
    m = z_new.T @ z_old
    m = m + 1e-10 * np.linalg.norm(m, 2) * np.eye(*m.shape)
    u, _, vt = np.linalg.svd(m, full_matrices=False)
    return u @ vt


def apply_map(z: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """Mapped rows, back on the unit sphere (the classifier saw unit-norm embeddings)."""
    out = z if w is None else z @ w
    return out / np.linalg.norm(out, axis=1, keepdims=True)
