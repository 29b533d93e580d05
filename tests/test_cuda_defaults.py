"""What ``runtime.device=cuda`` chooses, checked on a CPU: the dtype rule (``auto`` is bfloat16
on a bf16 GPU), the device kind ``auto`` resolves to, the embedding chunk (``runtime.
cuda_batch_tokens`` on a GPU, ``embed.batch_tokens`` on a CPU), one worker on a GPU; that a CPU
run's result key is the key computed without the new entry. None of it has run on a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftbench.backends import DTYPES, choose_dtype
from driftbench.embed import chunk_tokens
from driftbench.models import device_kind
from driftbench.workers import cpu_workers

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "device, hardware, expected",
    [
        ("cuda", True, "bfloat16"),  # Ampere and later
        ("cuda:1", True, "bfloat16"),
        ("cuda", False, "float32"),  # a GPU before Ampere
        ("cpu", True, "bfloat16"),  # AMX / AVX512-BF16
        ("cpu", False, "float32"),
    ],
)
def test_auto_is_bfloat16_where_the_device_has_it(device, hardware, expected):
    assert choose_dtype("auto", device, hardware) == expected


def test_float32_stays_float32_and_a_backend_without_bfloat16_keeps_auto_at_float32():
    assert choose_dtype("float32", "cuda", True) == "float32"
    assert choose_dtype("float32", "cpu", False) == "float32"
    assert choose_dtype("auto", "cuda", True, dtypes=("float32",), backend="mlx") == "float32"
    assert choose_dtype("bfloat16", "cuda", True) == "bfloat16"
    assert DTYPES == ("float32", "bfloat16")


def test_bfloat16_without_the_hardware_or_the_backend_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"runtime.dtype=bfloat16 on runtime.device=cuda, "):
        choose_dtype("bfloat16", "cuda", False)
    with pytest.raises(
        ValueError, match=r"drift.dtypes=bfloat16 with backend=mlx; accepted: float32$"
    ):
        choose_dtype("bfloat16", "cpu", True, ("float32",), "mlx", key="drift.dtypes")


@pytest.mark.parametrize(
    "device, cuda_available, kind",
    [
        ("auto", True, "cuda"),
        ("auto", False, "cpu"),
        ("cuda", False, "cuda"),  # what was asked; check_device refuses it where none is
        ("cuda:0", True, "cuda"),
        ("cpu", True, "cpu"),
    ],
)
def test_device_kind(device, cuda_available, kind):
    assert device_kind(device, cuda_available) == kind


def test_device_kind_asks_torch_for_auto_here():
    import torch

    assert device_kind("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize(
    "device, cuda_available, cuda_tokens, expected",
    [
        ("cpu", True, 16384, 2048),  # a CPU run reads embed.batch_tokens as before
        ("auto", False, 16384, 2048),
        ("auto", True, 16384, 16384),
        ("cuda", True, 16384, 16384),
        ("cuda:1", True, 8192, 8192),
        ("cuda", True, None, 2048),  # null: embed.batch_tokens on CUDA too
    ],
)
def test_the_embedding_chunk_follows_the_device(device, cuda_available, cuda_tokens, expected):
    assert chunk_tokens(2048, cuda_tokens, device, cuda_available) == expected


def test_the_shipped_default_chunks(make_cfg):
    cfg = make_cfg()
    assert cfg.runtime.cuda_batch_tokens > cfg.embed.batch_tokens
    e, r = cfg.embed, cfg.runtime
    assert chunk_tokens(e.batch_tokens, r.cuda_batch_tokens, "cpu") == e.batch_tokens
    assert chunk_tokens(e.batch_tokens, r.cuda_batch_tokens, "cuda") == r.cuda_batch_tokens


def test_a_gpu_takes_one_worker_a_cpu_one_per_thread():
    """The packed forward's thread pool (driftbench.workers) is for CPU threads alone: on a GPU
    one loop queues the kernels (torch.device needs no GPU to be named)."""
    import torch

    assert cpu_workers("cuda") == 1 and cpu_workers("cuda:1") == 1
    assert cpu_workers("cpu") == torch.get_num_threads()


@pytest.mark.parametrize("head", [[], ["debug=smoke_rho_sft"]])
def test_a_cpu_runs_key_is_the_key_without_the_cuda_entry(make_cfg, head):
    """runtime.cuda_batch_tokens came after runs existed: a run's key is the key of its config
    with the entry taken out, whatever its value (runtime is never hashed)."""
    from omegaconf import OmegaConf

    from driftbench.launcher import prepare
    from driftbench.runs import result_key
    from driftbench.tasks import get_task

    cfg = make_cfg(*head, "runtime.device=cpu")
    task = get_task(cfg.task.name)
    full = OmegaConf.to_container(cfg, resolve=True)
    del full["runtime"]["cuda_batch_tokens"]  # the config as it was before the entry existed
    read = {k: full[k] for k in ("seed", *task.CONFIG_GROUPS)}
    old = result_key(read, task.inputs(cfg), task.RESULTS_VERSION)
    assert prepare(cfg).result_key == old
    for value in ("null", "512"):
        other = make_cfg(*head, "runtime.device=cpu", f"runtime.cuda_batch_tokens={value}")
        assert prepare(other).result_key == old
