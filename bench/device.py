"""Where a benchmark runs (``--device cpu|cuda``), shared by ``bench/embed.py``,
``bench/audit.py`` and ``bench/sft.py`` so the three time a GPU the same way.

Why a clock of its own: CUDA kernels run asynchronously, so ``time.perf_counter()`` read right
after a call measures the launches, not the work. ``clock(device)`` waits for the device first
(``torch.cuda.synchronize``); on a CPU it is ``time.perf_counter()`` alone, so a CPU run times
exactly what it timed before the option existed. Not yet run on a GPU (bench/README.md).
"""

from __future__ import annotations

import time

import torch

DEVICES = ("cpu", "cuda")


def add_device_arg(ap) -> None:
    """``--device``: the device both arms (float32 and bfloat16) run on; cpu by default."""
    ap.add_argument(
        "--device",
        choices=DEVICES,
        default="cpu",
        help="cpu (default) or cuda: where the float32 and bfloat16 arms run",
    )


def check_device(device: str) -> None:
    """Stop at once, in one line, where ``--device cuda`` names a GPU this machine lacks."""
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device cuda: torch {torch.__version__} sees no CUDA device")


def clock(device: str) -> float:
    """``time.perf_counter()`` once every kernel queued on ``device`` has finished."""
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def matmul_n(device: str) -> int:
    """The side of the square matmul a benchmark's roofline times: 2048 on a CPU, as before;
    8192 on a GPU, which a 2048^2 matmul is too small to fill."""
    return 8192 if device == "cuda" else 2048


def about_gpu(device: str, **entries) -> dict:
    """JSON entries a GPU run adds (the device, the GPU's name, ``entries``: what it left out
    and why); empty on a CPU, whose JSON keeps the keys it had."""
    if device != "cuda":
        return {}
    return {"device": "cuda", "gpu": torch.cuda.get_device_name(), **entries}
