"""``drift=swap``: M_1 is another model (``drift.target``, a ``model/`` choice). Its width may
differ, so its embeddings are mapped into M_0's space by a map fitted on anchor texts of the
training split that both models embed (``driftbench.adapters``)."""

from __future__ import annotations

from driftbench.checkpoints import Knob
from driftbench.models import ModelSpec, check_available, check_spec, model_identity
from driftbench.updates.base import Step, Update


class Swap(Update):
    knob = Knob("target", "target model (0: the original, 1: the target)", "target")

    in_place = False

    def target(self) -> ModelSpec:
        return ModelSpec.from_dict(dict(self.settings["target"]))

    def check(self) -> None:
        if self.settings.get("target") is None:
            raise ValueError(
                "drift=swap needs drift.target, a model/ choice: e.g. "
                "model@drift.target=gemma3_270m"
            )
        check_spec(self.target())
        check_available(self.target(), "drift.target")

    def inputs(self) -> dict:
        return {"target": model_identity(self.target(), self.cache_dir)}

    def steps(self) -> list[Step]:
        target = self.target()
        identity = {"swap": model_identity(target, self.cache_dir), "pooling": target.pooling}
        return [Step("original", 0.0, None), Step(target.name, 1.0, identity)]
