"""driftbench's one entry point.

python launch.py                                   # default drift study (SmolLM2, Davidson)
python launch.py -m drift=gaussian,directional,subspace seed=0,1,2
python launch.py task=rho_sft experiment=rho_smoke
"""

import logging
import os
import sys

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig

import driftbench  # noqa: F401  (registers the config resolvers)
from driftbench.config_errors import composition_error
from driftbench.data import DataError
from driftbench.fileio import DiskFullError
from driftbench.launcher import ConfigError, run

log = logging.getLogger("driftbench")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except (ConfigError, DataError, DiskFullError) as e:
        if not getattr(e, "reported", False):  # a failed run's log line already said it
            log.error("error: %s", e)
        sys.exit(2)


if __name__ == "__main__":
    # Composition errors (an unknown group option or key, a bad override) reach us as exceptions
    # instead of Hydra's multi-line report; errors inside a job are handled in main().
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except HydraException as e:
        print(f"error: {composition_error(e)}", file=sys.stderr)
        sys.exit(2)
