"""Shared fixtures: configs composed exactly as users compose them, and a model cache shared by
the whole session (the tiny model's tokenizer and converted GGUF models are built once)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

import driftbench  # noqa: F401  (registers resolvers)

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")
SHARED_CACHE = Path(os.environ.get("DRIFTBENCH_CACHE", "~/.cache/driftbench")).expanduser()


def conf_value(file: str, *keys: str):
    """One value of a YAML file under conf/."""
    node = yaml.safe_load((ROOT / "conf" / file).read_text())
    for key in keys:
        node = node[key]
    return node


# the batch sizes a run uses, for tests that call the library directly
EMBED_BATCH_TOKENS = conf_value("config.yaml", "embed", "batch_tokens")
RHO_BATCH_TOKENS = conf_value("task/rho_sft.yaml", "batch_tokens")


def sft_config(*overrides: str):
    """The ``sft`` group's schema object (``driftbench.schema.Sft``), composed from conf/ as a
    run composes it and with its ranges checked, with ``overrides`` such as
    ``sft.optim.lr=1e-3``: what the training loops take."""
    from omegaconf import OmegaConf

    from driftbench import schema

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    schema.check(cfg)
    return OmegaConf.to_object(cfg.sft)


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs ``-n 2``) each worker takes its share of the cores
    for torch, as driftbench's own workers do (driftbench/workers.py): two workers of two
    threads each on two cores stall each other."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        torch.set_num_threads(max(1, (cores or 1) // workers))


@contextmanager
def one_torch_thread():
    """One torch thread for a reference computation: on a shared 2-core machine two threads
    stall each other (a tiny model's CE over its 49k-token vocabulary: 10x)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_cache() -> Path:
    SHARED_CACHE.mkdir(parents=True, exist_ok=True)
    return SHARED_CACHE


@pytest.fixture
def make_cfg(tmp_path, shared_cache):
    """compose(overrides) with outputs in a temp dir and the shared model cache."""

    def _make(*overrides: str, cache_dir: Path | None = None):
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            return compose(
                config_name="config",
                overrides=[
                    f"runtime.output_root={tmp_path / 'outputs'}",
                    f"runtime.cache_dir={cache_dir or shared_cache}",
                    "runtime.progress=false",
                    *overrides,
                ],
            )

    return _make


@pytest.fixture(scope="session")
def tiny_model(shared_cache):
    """The tiny random causal LM (full model) and its tokenizer."""
    from driftbench.backends import load_model
    from driftbench.models import ModelSpec

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["model=tiny_random"])
    from omegaconf import OmegaConf

    spec = ModelSpec.from_dict(OmegaConf.to_container(cfg.model, resolve=True))
    return load_model(spec, shared_cache, device="cpu", head="causal_lm")


def broken_model_folder(parent: Path) -> Path:
    """A model folder that passes every check (a config and a weights file are there) and fails
    when a run loads it: a failure after the run dir exists. Its error says ``model 'hf' failed
    to load``; use it with ``model=hf model.name_or_path=<folder>``."""
    folder = parent / "broken_model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(b"not a safetensors file" * 40)
    return folder


def saved_tiny_model(tiny_model, parent: Path) -> Path:
    """The tiny random model saved as a Hugging Face folder (``model=hf``)."""
    folder = parent / "tiny_model_folder"
    if not (folder / "config.json").exists():
        tiny_model.model.save_pretrained(folder)
        tiny_model.tokenizer.save_pretrained(folder)
    return folder
