"""driftbench from Python (a notebook, a script): compose a config as the command does, run it,
read its metrics. The same configs, checks and run dirs as ``driftbench`` / ``python launch.py``;
bad input raises ``ConfigError`` with the one line the command prints.

    from driftbench import api

    cfg = api.compose(["debug=smoke", "runtime.output_root=/tmp/db"])
    result = api.run(cfg)                      # or api.run(["debug=smoke", ...])
    result.run_dir, result.metrics["summary"]  # the run dir and metrics.json

A run's log goes to its ``run.log`` (and to Python's logging, logger ``driftbench``). A sweep
(``-m``, an experiment preset's ``hydra.sweeper.params``) is the command's: ``compose`` refuses
a preset's sweep, as a single run of the command does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, open_dict, read_write

import driftbench  # noqa: F401  (registers the config resolvers)
from driftbench.config_errors import composition_error
from driftbench.launcher import ConfigError, Result, execute, sweep_refusal
from driftbench.shipped import config_dir as shipped_config_dir

__all__ = ["ConfigError", "Result", "compose", "run"]


def compose(overrides: Sequence[str] = (), config_dir: str | Path | None = None) -> DictConfig:
    """The config a run of ``driftbench <overrides>`` gets, e.g. ``["model=tiny_random",
    "drift=subspace", "seed=3"]``. ``config_dir``: another primary config folder (default: the
    shipped one). Raises ``ConfigError`` (one line) for an unknown option or key, a value of the
    wrong type, or a sweep preset whose swept keys the overrides leave open."""
    if isinstance(overrides, str):
        raise TypeError(f"overrides={overrides!r}; accepted: a list of strings such as ['seed=1']")
    folder = Path(config_dir) if config_dir is not None else shipped_config_dir()
    try:
        with initialize_config_dir(config_dir=str(folder.resolve()), version_base="1.3"):
            cfg = hydra_compose(
                config_name="config", overrides=list(overrides), return_hydra_config=True
            )
    except HydraException as e:
        raise ConfigError(composition_error(e)) from e
    refusal = sweep_refusal(cfg)
    if refusal:
        raise ConfigError(refusal)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]  # what a job is handed, as Hydra's run_job does
    return cfg


def run(cfg_or_overrides: DictConfig | Sequence[str]) -> Result:
    """Run one job: a config from ``compose``, or the overrides to compose it from. Returns its
    ``Result``: ``run_dir`` (a complete run with the same result key is reused, and
    ``reused`` says so; ``runtime.force=true`` reruns) and ``metrics`` (``metrics.json``).
    Raises ``ConfigError`` for bad input, before any work; a run that fails midway raises its
    error, and its run dir's ``meta.json`` says ``failed``."""
    if isinstance(cfg_or_overrides, DictConfig):
        cfg = cfg_or_overrides
    elif isinstance(cfg_or_overrides, Sequence) and not isinstance(cfg_or_overrides, str):
        cfg = compose(cfg_or_overrides)
    else:
        raise TypeError(
            f"run({cfg_or_overrides!r}); accepted: a DictConfig from api.compose, or a list "
            "of overrides such as ['debug=smoke']"
        )
    return execute(cfg)
