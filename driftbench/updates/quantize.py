"""``drift=quantize``: M_c is the model re-quantized to the c-th type of a ladder (fine to
coarse) by the ``gguf`` package and de-quantized back to float32 for the forward."""

from __future__ import annotations

from driftbench.checkpoints import Knob
from driftbench.updates.base import Step, Update
from driftbench.updates.weights import check_quant_type, requantize


class Quantize(Update):
    knob = Knob("rung", "rung of drift.levels (0: the original)", "rung")

    def check(self) -> None:
        levels = list(self.settings["levels"])
        if not levels:
            raise ValueError("drift.levels is empty; accepted: a list of quantization types")
        for name in levels:
            check_quant_type(name, f"drift.levels={levels}")

    def steps(self) -> list[Step]:
        levels = list(self.settings["levels"])
        return [Step("original", 0.0, None)] + [
            Step(t, float(i + 1), {"quantize": t}) for i, t in enumerate(levels)
        ]

    def weights_at(self, step, base):
        return requantize(base, step.identity["quantize"])
