"""``drift=adapter``: M_c is the model with a LoRA adapter merged at scale s_c (0: the model
itself, 1: the fine-tune, larger: the same update pushed further). The adapter is a rho_sft
run's (the fine-tune *is* the update) or any peft LoRA folder (``drift.adapter``)."""

from __future__ import annotations

from pathlib import Path

from driftbench.checkpoints import Knob
from driftbench.digests import files_sha256
from driftbench.updates.base import Step, Update
from driftbench.updates.weights import adapter_files, adapter_folder, lora_deltas, merge


class Adapter(Update):
    knob = Knob("scale", "adapter scale", "scale")

    @property
    def trains(self) -> bool:
        """No adapter given: the run trains one with ``drift.train`` (the sft group's settings;
        driftbench/tasks/drift_eval/adapter.py) and sets ``adapter`` to it before the first step."""
        return self.settings.get("adapter") is None

    def folder(self) -> Path:
        return adapter_folder(self.settings["adapter"])

    def check(self) -> None:
        if self.trains and self.settings.get("train") is None:
            raise ValueError(
                "drift.adapter and drift.train are both null; accepted: a rho_sft run dir or a "
                "peft LoRA folder in drift.adapter, or training settings in drift.train"
            )
        if not self.trains:
            self.folder()
        self.check_starts_at_zero("scales")

    def training(self) -> dict:
        """What a trained adapter's folder holds besides the adapter (``drift=tune``: its
        snapshots): nothing, so the adapter is the one a rho_sft run with the same settings
        trains, cached under the same key as before."""
        return {}

    def inputs(self) -> dict:
        """The adapter's files (a trained one is decided by the config: ``drift.train``)."""
        return {} if self.trains else {"adapter": files_sha256(adapter_files(self.folder()))}

    def steps(self) -> list[Step]:
        digest = files_sha256(adapter_files(self.folder()))
        return [
            Step(f"s={s:g}", float(s), None if s == 0 else {"adapter": digest, "scale": float(s)})
            for s in self.settings["scales"]
        ]

    def prepare(self, base, load_weights) -> None:
        self.deltas = lora_deltas(self.folder(), list(base))

    def weights_at(self, step, base):
        return merge(base, self.deltas, step.knob)
