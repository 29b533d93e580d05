"""Compute backends: ``backend=`` in the config picks one; ``conf/backend/`` lists the same names.

``torch`` (default) runs everything through PyTorch + transformers. ``mlx`` runs the same
models (the same local safetensors folder, the same tokenizer) through Apple's MLX with mlx-lm,
as the rho-guided SFT study was run on Apple silicon: embeddings, per-token CE, greedy
generation and the LoRA training loop. On Linux MLX runs on the CPU (``mlx[cpu]``): useful to
check the backend, not to make it fast.

Each backend is one sibling module behind the interface of :class:`base.Backend`, imported only
when chosen. A run resolves its backend once, from ``backend=``, when it loads the model; the
loaded model carries it (``LoadedModel.backend``), and shared code that is handed a bare model
asks :func:`backend_of`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from driftbench.backends.base import Backend, LoadedModel
from driftbench.models import ModelSpec, check_spec

HEADS = ("base", "causal_lm")


def _torch() -> Backend:
    from driftbench.backends.torch_backend import TorchBackend

    return TorchBackend()


def _mlx() -> Backend:
    from driftbench.backends.mlx_backend import MlxBackend

    return MlxBackend()


BACKENDS: dict[str, Callable[[], Backend]] = {"torch": _torch, "mlx": _mlx}


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise ValueError(f"backend={name!r}; accepted: {', '.join(BACKENDS)}")
    return BACKENDS[name]()


def backend_of(model) -> Backend:
    """The backend that computes ``model``: the one its ``backend_name`` names (a backend whose
    models are not torch modules wraps them in an object that has one); a torch module, as
    transformers and peft give it, is the torch backend's."""
    return get_backend(getattr(model, "backend_name", "torch"))


def check_backend(name: str, spec: ModelSpec | None = None, cache_dir=None) -> None:
    """Cheap checks before any heavy work: a known backend, its packages, and a model it can
    run, where the model's config is already on disk."""
    get_backend(name).check(spec, cache_dir)


def load_model(
    spec: ModelSpec,
    cache_dir: str | Path,
    device: str = "cpu",
    head: str = "base",
    backend: str = "torch",
) -> LoadedModel:
    """Load in fp32 (bf16 matmul is far slower on CPU). ``head='base'`` gives the transformer
    without its LM head (embeddings); ``'causal_lm'`` the full model (CE, generation).
    ``backend`` names the backend that loads and computes it."""
    if head not in HEADS:
        raise ValueError(f"head={head!r}; accepted: {', '.join(HEADS)}")
    chosen = get_backend(backend)
    check_spec(spec)
    return chosen.load(spec, Path(os.path.expanduser(str(cache_dir))), device, head)
