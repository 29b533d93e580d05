"""driftbench's one entry point in a clone (installed, the same app is the `driftbench` command:
driftbench/cli.py holds what both run).

python launch.py                                   # default drift study (SmolLM2, Davidson)
python launch.py -m drift=gaussian,directional,subspace seed=0,1,2
python launch.py task=rho_sft experiment=rho_smoke
"""

import hydra
from omegaconf import DictConfig

from driftbench.cli import launch, run_job


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_job(cfg)


if __name__ == "__main__":
    launch(main)
