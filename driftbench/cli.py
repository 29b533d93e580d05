"""The ``driftbench`` command, and what ``launch.py`` runs: one Hydra app with two doors.

``launch.py`` (a clone) and ``driftbench`` (installed by pip, ``[project.scripts]``) are each an
``@hydra.main`` over the same primary config and call the same two functions here:
``launch(app)`` turns Hydra's composition errors into one line, ``run_job(cfg)`` runs one job and
turns bad input into one line; both exit with code 2. The command reads the configs where
``driftbench/shipped.py`` finds them (the clone's ``conf/``, or an installed wheel's copy), so
it runs from any directory:

    driftbench debug=smoke
    driftbench -m drift=gaussian,directional,subspace seed=0,1,2
    driftbench --help          # the config groups and their options
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig

import driftbench  # noqa: F401  (registers the config resolvers)
from driftbench import launcher
from driftbench.config_errors import composition_error
from driftbench.data import DataError
from driftbench.fileio import DiskFullError
from driftbench.launcher import ConfigError
from driftbench.shipped import config_dir

log = logging.getLogger("driftbench")


def run_job(cfg: DictConfig) -> None:
    """One job of a run or multirun; bad input is one logged line and exit code 2."""
    try:
        launcher.run(cfg)  # looked up when called: bench/sweep.py times it by wrapping it
    except (ConfigError, DataError, DiskFullError) as e:
        if not getattr(e, "reported", False):  # a failed run's log line already said it
            log.error("error: %s", e)
        sys.exit(2)


def launch(app: Callable[[], None]) -> None:
    """Run a ``@hydra.main`` app. Composition errors (an unknown group option or key, a bad
    override) reach us as exceptions instead of Hydra's multi-line report, and are one line on
    stderr with exit code 2; errors inside a job are handled in ``run_job``."""
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        app()
    except HydraException as e:
        print(f"error: {composition_error(e)}", file=sys.stderr)
        sys.exit(2)


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    run_job(cfg)


def main() -> None:
    """The ``driftbench`` command."""
    launch(_app)
