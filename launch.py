"""driftbench's one entry point.

python launch.py                                   # default drift study (SmolLM2, Davidson)
python launch.py -m drift=gaussian,directional,subspace seed=0,1,2
python launch.py task=rho_sft experiment=rho_smoke
"""

import logging
import os
import re
import sys

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

import driftbench  # noqa: F401  (registers the config resolvers)
from driftbench.data import DataError
from driftbench.launcher import ConfigError, run
from driftbench.runs import DiskFullError

log = logging.getLogger("driftbench")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except (ConfigError, DataError, DiskFullError) as e:
        if not getattr(e, "reported", False):  # a failed run's log line already said it
            log.error("error: %s", e)
        sys.exit(2)


def one_line(e: Exception) -> str:
    """Hydra's composition errors in one line: what was asked and what is accepted, without the
    config search path and the hints that follow."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    missing = re.search(r"Could not find '(.+)/([^/']+)'", lines[0])
    if missing and any(ln.startswith("Available options") for ln in lines):
        i = next(i for i, ln in enumerate(lines) if ln.startswith("Available options"))
        options = [ln for ln in lines[i + 1 :] if not ln.startswith(("Config search", "provider="))]
        return f"{missing[1]}={missing[2]}: no such option; accepted: {', '.join(options)}"
    cause = e.__cause__
    if isinstance(cause, OmegaConfBaseException) and str(cause).strip():
        return f"{lines[0]} {str(cause).strip().splitlines()[0]}"
    return lines[0]


if __name__ == "__main__":
    # Composition errors (an unknown group option or key, a bad override) reach us as exceptions
    # instead of Hydra's multi-line report; errors inside a job are handled in main().
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except HydraException as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
