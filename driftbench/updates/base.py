"""The interface of a real model update (one ``drift/`` choice each), and its checkpoints."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from driftbench.checkpoints import Knob
from driftbench.models import ModelSpec

# drift.map: the adapters (driftbench.adapters) a model swap fits on its anchors, or none
MAPS = ("procrustes", "lstsq", "none")


@dataclass(frozen=True)
class Step:
    """One checkpoint of an update. ``knob`` is its position on the update's own axis (ladder
    rung, adapter scale, alpha; the report's x axis); ``identity`` is what decides the updated
    weights (with the original model's identity, the key of the cached embeddings), None for
    the original model itself. ``about``: what the update knows of the checkpoint beyond its
    weights (a tune's optimizer step and held-out loss), a column of the run's rows."""

    label: str
    knob: float
    identity: dict | None
    about: dict = field(default_factory=dict, compare=False)


class Update(ABC):
    """A family of updated models M_c of the run's model M_0. The classifier was fitted on
    M_0's embeddings; checkpoint c's test texts are embedded by M_c.

    ``in_place``: M_c is M_0 with edited weights (``weights_at``), so one loaded model serves
    every checkpoint; otherwise ``target`` is another model that embeds the texts itself, with
    its own pooling at its last layer, unless ``run_embedding`` says it embeds as the run does
    (the run's model again, in another dtype)."""

    in_place = True
    run_embedding = False  # not in place, yet embeds as the run does (its pooling and layer)
    # each checkpoint's separability of the classes (metrics.separability) on its own
    # embeddings of the drift.anchors training texts: the paper's base-vs-instruct measures
    training_separability = False
    knob: Knob  # the update's own axis, named for what it is (never "sigma")

    def __init__(self, settings: dict, spec: ModelSpec, cache_dir: Path):
        self.settings, self.spec, self.cache_dir = settings, spec, cache_dir

    @property
    def name(self) -> str:
        return self.settings["name"]

    @property
    def map(self) -> str:
        """How checkpoint c's embeddings are mapped into M_0's space before the classifier."""
        return self.settings.get("map", "none")

    def check_map(self) -> None:
        """The map every update may ask for, and the anchors it is fitted on."""
        if self.map not in MAPS:
            raise ValueError(f"drift.map={self.map!r}; accepted: {', '.join(MAPS)}")
        anchors = int(self.settings.get("anchors", 0))
        if self.map != "none" and anchors < 2:
            raise ValueError(
                f"drift.map={self.map} with drift.anchors={anchors}; accepted: drift.anchors >= 2 "
                "(the training texts both models embed to fit the map)"
            )

    def check(self) -> None:
        """Cheap checks before any embedding (one line naming the bad value)."""
        return None

    def check_starts_at_zero(self, key: str) -> None:
        """Checkpoint 0 is the model itself: a knob list that starts at 0."""
        knobs = list(self.settings[key])
        if not knobs or knobs[0] != 0 or any(b < a for a, b in zip(knobs, knobs[1:], strict=False)):
            raise ValueError(
                f"drift.{key}={knobs}; accepted: a non-decreasing list starting at 0 (checkpoint "
                "0 is the model itself)"
            )

    def inputs(self) -> dict:
        """Digests of the files the update reads (an adapter, another model's weights)."""
        return {}

    @abstractmethod
    def steps(self) -> list[Step]: ...

    def prepare(self, base: dict[str, np.ndarray], load_weights) -> None:
        """Heavy set-up shared by every checkpoint (another endpoint's weights, an adapter's
        deltas), given M_0's weights and ``load_weights(spec) -> weights`` for another model."""
        return None

    def weights_at(self, step: Step, base: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The parameters of M_c that differ from M_0's."""
        raise NotImplementedError(f"drift={self.name} embeds with another model")

    def target(self) -> ModelSpec:
        raise NotImplementedError(f"drift={self.name} edits the run's model in place")

    def other_dtypes(self) -> list[str]:
        """The dtypes its checkpoints compute in besides the run's (checked before any work)."""
        return []

    def dtype_at(self, step: Step, run_dtype: str) -> str:
        """The dtype checkpoint ``step``'s model computes in: the run's (``runtime.dtype``)
        unless the update is a change of precision."""
        return run_dtype
