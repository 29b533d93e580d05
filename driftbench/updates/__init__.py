"""Real model updates as drift (``drift/`` choices beside the synthetic ones of
``driftbench.drift``): the classifier is fitted on the original model's embeddings and frozen,
and checkpoint c's test texts are embedded by an updated model M_c instead of being drifted by
noise. ``UPDATES`` mirrors conf/drift/{quantize,adapter,interpolate,swap,precision,tune}.yaml.
"""

from __future__ import annotations

from pathlib import Path

from driftbench.models import ModelSpec
from driftbench.updates.adapter import Adapter
from driftbench.updates.base import Step, Update
from driftbench.updates.interpolate import Interpolate
from driftbench.updates.precision import Precision
from driftbench.updates.quantize import Quantize
from driftbench.updates.swap import Swap
from driftbench.updates.tune import Tune

UPDATES: dict[str, type[Update]] = {
    "quantize": Quantize,
    "adapter": Adapter,
    "interpolate": Interpolate,
    "swap": Swap,
    "precision": Precision,
    "tune": Tune,
}

__all__ = ["UPDATES", "Step", "Update", "is_update", "make_update"]


def is_update(name: str) -> bool:
    return name in UPDATES


def make_update(settings: dict, spec: ModelSpec, cache_dir: Path) -> Update:
    if settings["name"] not in UPDATES:
        raise ValueError(f"drift={settings['name']!r}; accepted: {', '.join(UPDATES)}")
    return UPDATES[settings["name"]](settings, spec, cache_dir)
