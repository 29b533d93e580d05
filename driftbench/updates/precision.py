"""``drift=precision``: M_c is the run's own model computing in another dtype (``drift.dtypes``,
e.g. bfloat16 against the run's float32). Precision is a measured choice, not a fixed one: this
update says what a dtype costs the frozen classifier (angle, ROC-AUC, SFR, ECE, flips, with their
intervals), measured as any other update is."""

from __future__ import annotations

from driftbench.backends import DTYPES
from driftbench.checkpoints import Knob
from driftbench.models import ModelSpec
from driftbench.updates.base import Step, Update


class Precision(Update):
    knob = Knob("dtype", "compute dtype (0: the run's own)", "dtype")

    in_place = False  # the same weights, loaded again to compute in the step's dtype
    run_embedding = True  # with the run's pooling and layer: the classifier reads those

    def target(self) -> ModelSpec:
        return self.spec

    def check(self) -> None:
        dtypes = list(self.settings["dtypes"])
        bad = [d for d in dtypes if d not in DTYPES]
        if not dtypes or bad:
            raise ValueError(
                f"drift.dtypes={dtypes}; accepted: a non-empty list of {', '.join(DTYPES)}"
            )

    def steps(self) -> list[Step]:
        return [Step("original", 0.0, None)] + [
            Step(d, float(i + 1), {"dtype": d}) for i, d in enumerate(self.settings["dtypes"])
        ]

    def other_dtypes(self) -> list[str]:
        return list(self.settings["dtypes"])

    def dtype_at(self, step: Step, run_dtype: str) -> str:
        return run_dtype if step.identity is None else step.identity["dtype"]
