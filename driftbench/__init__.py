"""driftbench: Hydra-configured sweeps for safety classifiers under embedding drift and for
rho-guided SFT. ``launch.py`` is the entry point; ``driftbench.launcher.run`` runs one job."""

import secrets
from pathlib import Path

from omegaconf import OmegaConf

from driftbench import schema

__version__ = "0.1.0"

# One short random id per launching process, cached by OmegaConf with the config, so that two
# multiruns started in the same second get different sweep dirs (Hydra issue #1607).
_UID = secrets.token_hex(3)
if not OmegaConf.has_resolver("driftbench_uid"):
    OmegaConf.register_new_resolver("driftbench_uid", lambda: _UID, use_cache=True)

schema.register()  # the config groups' schemas, before Hydra composes (conf/config.yaml)

# driftbench's Slurm launcher lives in driftbench/hydra_plugins/ and is imported as
# hydra_plugins.driftbench_slurm: Hydra takes launchers only from that namespace package.
try:
    import hydra_plugins
except ImportError:  # no Hydra plugin installed (no submitit): nothing to extend
    pass
else:
    _PLUGINS = str(Path(__file__).resolve().parent / "hydra_plugins")
    if _PLUGINS not in list(hydra_plugins.__path__):
        hydra_plugins.__path__.append(_PLUGINS)
