"""Compute backends: ``backend=`` in the config picks one; ``conf/backend/`` lists the same names.

``torch`` (default) runs everything through PyTorch + transformers. ``mlx`` runs the same
models (the same local safetensors folder, the same tokenizer) through Apple's MLX with mlx-lm,
as the rho-guided SFT study was run on Apple silicon: embeddings, per-token CE, greedy
generation and the LoRA training loop. On Linux MLX runs on the CPU (``mlx[cpu]``): useful to
check the backend, not to make it fast.
"""

from __future__ import annotations

import importlib.util

BACKENDS = ("torch", "mlx")
MLX_INSTALL = (
    'pip install -e ".[mlx]"  (i.e. pip install mlx-lm plus mlx on macOS, "mlx[cpu]" on Linux: '
    "plain mlx on Linux fails with libmlx.so missing)"
)


def is_mlx(model) -> bool:
    """An mlx-lm model (``mlx_model.MlxModel``): model calls go to ``mlx_model``'s functions."""
    return getattr(model, "backend", "torch") == "mlx"


def mlx_available() -> bool:
    """mlx and mlx-lm import (on Linux ``mlx.core`` needs the ``mlx[cpu]`` extra's library)."""
    if importlib.util.find_spec("mlx") is None or importlib.util.find_spec("mlx_lm") is None:
        return False
    try:
        import mlx.core  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def require_mlx() -> None:
    if not mlx_available():
        raise ImportError(
            f"backend=mlx needs mlx and mlx-lm, which are not installed: {MLX_INSTALL}"
        )


def check_backend(name: str, spec=None, cache_dir=None) -> None:
    """Cheap checks before any heavy work: a known backend, its packages, and (mlx) a model
    architecture mlx-lm implements, where the model's config is already on disk."""
    if name not in BACKENDS:
        raise ValueError(f"backend={name!r}; accepted: {', '.join(BACKENDS)}")
    if name == "mlx":
        try:
            require_mlx()
        except ImportError as e:
            raise ValueError(str(e)) from e
        if spec is not None:
            from driftbench.backends.mlx_model import check_model

            check_model(spec, cache_dir)
