"""driftbench's one entry point.

python launch.py                                   # default drift study (SmolLM2, Davidson)
python launch.py -m drift=gaussian,directional,subspace seed=0,1,2
python launch.py task=rho_sft experiment=rho_smoke
"""

import logging
import sys

import hydra
from omegaconf import DictConfig

import driftbench  # noqa: F401  (registers the config resolvers)
from driftbench.data import DataError
from driftbench.launcher import ConfigError, run


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except ConfigError as e:
        logging.getLogger("driftbench").error("error: %s", e)
        sys.exit(2)
    except DataError:
        sys.exit(2)  # the run's log line and its meta.json already say why, in one sentence


if __name__ == "__main__":
    main()
