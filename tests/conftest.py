"""Shared fixtures: configs composed exactly as users compose them, and a model cache shared by
the whole session (the tiny model's tokenizer and converted GGUF models are built once)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import driftbench  # noqa: F401  (registers resolvers)

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")
SHARED_CACHE = Path(os.environ.get("DRIFTBENCH_CACHE", "~/.cache/driftbench")).expanduser()


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
