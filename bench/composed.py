"""The config as a run composes it (conf/ plus Hydra overrides, ranges checked by the schema), for
the benchmarks: they read the settings a run would use, never a second copy of their defaults."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

import driftbench  # noqa: F401  (registers resolvers)
from driftbench import schema

ROOT = Path(__file__).resolve().parents[1]


def compose_config(*overrides: str) -> DictConfig:
    """``conf/config.yaml`` with ``overrides`` (``model=tiny_random``, ``sft.optim.lr=1e-3``)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    schema.check(cfg)
    return cfg


def sft_config(*overrides: str) -> schema.Sft:
    """The ``sft`` group's schema object, what the training loops take."""
    return OmegaConf.to_object(compose_config(*overrides).sft)
