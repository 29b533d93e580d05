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
from driftbench.digests import dtype_key
from driftbench.models import ModelSpec, check_spec

HEADS = ("base", "causal_lm")
DTYPES = ("float32", "bfloat16")  # what a model computes in; runtime.dtype adds auto
CPU_BF16_FLAGS = {"amx_bf16", "avx512_bf16", "bf16"}  # /proc/cpuinfo: x86 (AMX, AVX512), arm64


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


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    return {
        f
        for line in text.splitlines()
        if line.startswith(("flags", "Features"))
        for f in line.partition(":")[2].split()
    }


def bf16_supported(device: str) -> bool:
    """Whether ``device`` (``runtime.device``) computes bfloat16 in hardware: on CUDA as torch
    says (``torch.cuda.is_bf16_supported``); on a CPU where it has AMX or AVX512-BF16 (x86,
    from torch's own probe or /proc/cpuinfo) or BF16 instructions (arm64). ``get_cpu_capability``
    is no help: it says AVX512 for CPUs with and without BF16. Without support torch still runs
    bfloat16, emulated and slower than float32: ``resolve_dtype`` refuses it there rather than
    slow a run down. The one place that asks the hardware."""
    import torch

    if str(device).startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # private; absent in old torch
    return bool(probe is not None and probe()) or bool(CPU_BF16_FLAGS & cpu_flags())


def choose_dtype(
    dtype: str,
    device: str,
    bf16_hardware: bool,
    dtypes: tuple[str, ...] = DTYPES,
    backend: str = "torch",
    key: str = "runtime.dtype",
) -> str:
    """The rule of :func:`resolve_dtype` without the hardware probe, so it is checked for a CUDA
    device on a machine without one: ``auto`` is bfloat16 where the backend computes in it
    (``dtypes``) and ``bf16_hardware`` holds (a bf16 CUDA device, an AMX/AVX512-BF16 CPU), else
    float32. Raises ValueError, in one line naming ``key`` (the setting that asked), for a dtype
    the backend lacks or bfloat16 without the hardware."""
    if dtype == "auto":
        return "bfloat16" if "bfloat16" in dtypes and bf16_hardware else "float32"
    or_auto = " or auto" if key == "runtime.dtype" else ""  # drift.dtypes takes no auto
    if dtype not in dtypes:
        raise ValueError(
            f"{key}={dtype} with backend={backend}; accepted: {', '.join(dtypes)}{or_auto}"
        )
    if dtype == "bfloat16" and not bf16_hardware:
        raise ValueError(
            f"{key}=bfloat16 on runtime.device={device}, which has no bfloat16 hardware (no "
            f"AMX/AVX512-BF16 CPU, no bf16 CUDA device); accepted: float32{or_auto}"
        )
    return dtype


def resolve_dtype(
    dtype: str, device: str, backend: str = "torch", key: str = "runtime.dtype"
) -> str:
    """``runtime.dtype`` as the dtype a run computes in, resolved once per job (the launcher's
    ``prepare``; the result key and the run's config record what it gives), by
    :func:`choose_dtype` with this machine's answer to ``bf16_supported(device)``: so
    ``runtime.dtype=auto`` with ``runtime.device=cuda`` (or ``auto`` on a machine with CUDA)
    computes in bfloat16 on a bf16 GPU (Ampere and later). The hardware is asked only where the
    answer matters (auto or bfloat16, of a backend that computes in bfloat16)."""
    dtypes = tuple(get_backend(backend).dtypes)
    asks = dtype in ("auto", "bfloat16") and "bfloat16" in dtypes
    return choose_dtype(dtype, device, asks and bf16_supported(device), dtypes, backend, key)


def load_model(
    spec: ModelSpec,
    cache_dir: str | Path,
    device: str = "cpu",
    head: str = "base",
    backend: str = "torch",
    dtype: str = "float32",
) -> LoadedModel:
    """Load the model to compute in ``dtype`` (resolved: ``resolve_dtype``). ``head='base'``
    gives the transformer without its LM head (embeddings); ``'causal_lm'`` the full model (CE,
    generation, training). ``backend`` names the backend that loads and computes it. The
    identity that keys its cached results (``LoadedModel.identity``) carries the dtype where it
    is not float32."""
    if head not in HEADS:
        raise ValueError(f"head={head!r}; accepted: {', '.join(HEADS)}")
    chosen = get_backend(backend)
    if dtype not in chosen.dtypes:
        raise ValueError(
            f"dtype={dtype!r} with backend={backend}; accepted: {', '.join(chosen.dtypes)}"
        )
    check_spec(spec)
    loaded = chosen.load(spec, Path(os.path.expanduser(str(cache_dir))), device, head, dtype)
    loaded.identity = {**loaded.identity, **dtype_key(dtype)}
    return loaded
