"""``drift=tune``: the model along its own instruction tune. The run trains one LoRA adapter on
Alpaca with the ``sft`` group's settings (as ``drift=adapter`` does with no adapter given, and
through the same code: driftbench/tasks/drift_eval/adapter.py), saving the adapter at the
optimizer steps nearest each share ``drift.fractions`` of the run; checkpoint c is the model
with that snapshot merged at scale 1 (share 0: the model itself, 1: the finished tune).

LoRA, not full fine-tuning: the project's SFT is LoRA (one training loop for rho_sft, the
trained adapter and this), a full tune of Gemma-3-270M on this project's 2 CPU cores would
hold AdamW's two moments for all 270M weights and cost several times a LoRA step, and a merged
LoRA snapshot is an edit of the model's weights in place, the update ``drift=adapter`` already
meets the frozen classifier with. What LoRA cannot show (a tune that moves every weight) is
a limit of this update, said where its results are reported (docs/updates.md).

Beside each checkpoint the training run records, in the adapter's folder (``MANIFEST``), its
optimizer step and the mean token cross-entropy of held-out Alpaca texts training never saw
(``drift.heldout`` of them): whether the tune did something by that checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path

from driftbench.checkpoints import Knob
from driftbench.digests import files_sha256
from driftbench.updates.adapter import Adapter
from driftbench.updates.base import Step
from driftbench.updates.weights import adapter_files, lora_deltas, merge

MANIFEST = "tune.json"  # in the trained adapter's folder: its steps, snapshots, held-out losses


def snapshot_step(fraction: float, total: int) -> int:
    """The optimizer step nearest ``fraction`` of ``total`` (halves round up): where the
    snapshot of that share of the tune is taken."""
    return int(math.floor(fraction * total + 0.5))


def snapshot_folder(folder: Path, step: int, total: int) -> Path:
    """Where the adapter after optimizer ``step`` lies: the finished adapter is the folder
    itself (what ``drift=adapter`` trains and merges), the others ``snapshots/step_<n>``."""
    return folder if step == total else folder / "snapshots" / f"step_{step}"


class Tune(Adapter):
    knob = Knob("progress", "share of the tune's optimizer steps", "progress")
    training_separability = True  # each checkpoint's training texts: the paper's B.5 measures

    def check(self) -> None:
        if self.settings.get("train") is None:
            raise ValueError("drift.train is null; accepted: the LoRA SFT settings (${sft})")
        self.check_starts_at_zero("fractions")
        if max(self.settings["fractions"]) > 1:
            raise ValueError(
                f"drift.fractions={list(self.settings['fractions'])}; accepted: shares of the "
                "tune's optimizer steps, 0..1"
            )

    @property
    def trains(self) -> bool:
        return True  # always this run's own tune: the snapshots are its steps

    def training(self) -> dict:
        """What the trained adapter's folder also holds: the snapshots and held-out losses."""
        return {"fractions": list(self.settings["fractions"]), "heldout": self.settings["heldout"]}

    def manifest(self) -> dict:
        return json.loads((self.folder() / MANIFEST).read_text(encoding="utf-8"))

    def steps(self) -> list[Step]:
        tune = self.manifest()
        total = tune["total_steps"]
        out = []
        for f in self.settings["fractions"]:
            n = snapshot_step(f, total)
            about = {
                "optimizer_step": n,
                "total_steps": total,
                "heldout_loss": tune["heldout_loss"][str(n)],
                "train_loss": tune["train_loss"][n - 1] if n else None,
            }
            identity = None  # the model itself: its embeddings are the run's
            if n:  # as drift=adapter's at s = 1 of the same adapter: they share cached rows
                folder = snapshot_folder(self.folder(), n, total)
                identity = {"adapter": files_sha256(adapter_files(folder)), "scale": 1.0}
            out.append(Step(f"p={n / total:.3g}", n / total, identity, about))
        return out

    def prepare(self, base, load_weights) -> None:
        """Each snapshot's deltas (``(alpha / r) * B @ A``), once."""
        total, names = self.manifest()["total_steps"], list(base)
        self.deltas = {
            n: lora_deltas(snapshot_folder(self.folder(), n, total), names)
            for n in {snapshot_step(f, total) for f in self.settings["fractions"]} - {0}
        }

    def weights_at(self, step, base):
        return merge(base, self.deltas[step.about["optimizer_step"]], 1.0)
