"""``drift=interpolate``: M_c has weights ``(1 - a) theta_t + a theta_t1`` between the run's
model and another checkpoint of the same architecture: another model (``drift.target``, a
``model/`` choice) or the run's model re-quantized (``drift.quantize``)."""

from __future__ import annotations

from driftbench.checkpoints import Knob
from driftbench.models import (
    ModelSpec,
    check_available,
    check_spec,
    model_identity,
    model_shape,
)
from driftbench.updates.base import Step, Update
from driftbench.updates.weights import (
    check_quant_type,
    check_same_architecture,
    interpolate,
    requantize,
)


class Interpolate(Update):
    knob = Knob("alpha", "interpolation α", "α")

    def _target_spec(self) -> ModelSpec | None:
        target = self.settings.get("target")
        return None if target is None else ModelSpec.from_dict(dict(target))

    def check(self) -> None:
        target, quant = self._target_spec(), self.settings.get("quantize")
        if (target is None) == (quant is None):
            raise ValueError(
                "drift=interpolate needs exactly one endpoint: drift.quantize=<type> (the run's "
                "model re-quantized) or drift.target=<a model/ choice>, e.g. "
                "+model@drift.target=smollm2_135m_instruct"
            )
        self.check_starts_at_zero("alphas")
        if quant is not None:
            check_quant_type(quant, "drift.quantize")
        else:
            check_spec(target)
            check_available(target, "drift.target")
            ours, theirs = (
                model_shape(self.spec, self.cache_dir),
                model_shape(target, self.cache_dir),
            )
            differ = [k for k in ours or {} if theirs and ours[k] != theirs[k]]
            if differ:
                k = differ[0]
                raise ValueError(
                    f"drift=interpolate: {self.spec.name} and {target.name} differ ({k} "
                    f"{ours[k]} vs {theirs[k]}); accepted: two checkpoints of the same architecture"
                )

    def endpoint(self) -> dict:
        target = self._target_spec()
        if target is None:
            return {"quantize": self.settings["quantize"]}
        return {"model": model_identity(target, self.cache_dir)}

    def inputs(self) -> dict:
        target = self._target_spec()
        return {} if target is None else {"target": model_identity(target, self.cache_dir)}

    def steps(self) -> list[Step]:
        to = self.endpoint()
        return [
            Step(f"a={a:g}", float(a), None if a == 0 else {"interpolate": float(a), "to": to})
            for a in self.settings["alphas"]
        ]

    def prepare(self, base, load_weights) -> None:
        target = self._target_spec()
        if target is None:
            self.end = {**base, **requantize(base, self.settings["quantize"])}
        else:
            self.end = load_weights(target)
            check_same_architecture(base, self.end, "drift=interpolate")

    def weights_at(self, step, base):
        return interpolate(base, self.end, step.knob)
