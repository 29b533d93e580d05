"""Maps from a new model's embedding space into the old one, fitted on anchor texts that both
models embedded: what a model swap needs (widths differ) and what the ``realign`` mitigation
applies. Pure numpy/scipy.

``procrustes`` is orthogonal Procrustes (scipy.linalg.orthogonal_procrustes when the widths
match; for widths that differ, the same SVD solution with semi-orthogonal ``W``: the map that
keeps angles between embeddings and only rotates/embeds). ``lstsq`` is ordinary least squares
(any linear map; with fewer anchors than dimensions, the minimum-norm one).
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
    if z_new.shape[1] == z_old.shape[1]:
        from scipy.linalg import orthogonal_procrustes

        return orthogonal_procrustes(z_new, z_old)[0]
    u, _, vt = np.linalg.svd(z_new.T @ z_old, full_matrices=False)
    return u @ vt


def apply_map(z: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """Mapped rows, back on the unit sphere (the classifier saw unit-norm embeddings)."""
    out = z if w is None else z @ w
    return out / np.linalg.norm(out, axis=1, keepdims=True)
