"""Where a drift_eval run's checkpoints come from: one interface for synthetic drift and real
model updates alike. A source yields named checkpoints in order, each with its knob (sigma, a
quantization rung, alpha, an adapter scale, a target model) and the test embeddings it
produces, with the anchor texts' embeddings where a mitigation or a map needs them; then it
adds its own columns to each checkpoint's row (an update: its twins) and its own part of the
run's metrics. The task loops over a source and never asks which kind it has. Asked for other
texts of the run (the upgrade playbook's training and validation texts, ``reembed``), a source
gives its last checkpoint's model's embeddings of them too (``Reembedding``).

Pure numpy here: the synthetic source; the real updates' source embeds with the updated models
(``driftbench.tasks.drift_eval.updates``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from driftbench import drift as D


@dataclass
class Reembedding:
    """A checkpoint's model's embeddings in its own space (before any map into M_0's; a swap's
    target may be of another width), unit norm: of the test texts (``test``) and of the rows a
    run asked for (``rows``), those rows also as the frozen classifier reads them (``rows_read``:
    through the checkpoint's map, where it has one), and what embedding them costs: the seconds
    per text the model was measured at (0 for a synthetic drift, which embeds nothing) and how
    many texts this run embedded (the rest came from the cache). What re-embedding a training set
    with an updated model gives, and what it costs (the upgrade playbook)."""

    test: np.ndarray
    rows: np.ndarray
    rows_read: np.ndarray
    seconds_per_text: float
    embedded_now: int


@dataclass
class Checkpoint:
    label: str  # what a log line or report prints: "sigma=0.021", "Q4_0", "a=0.5"
    knob: float  # the position on the source's axis (sigma, rung, alpha, scale, target)
    z: np.ndarray  # the test embeddings at this checkpoint, unit norm, in M_0's space
    anchors: tuple[np.ndarray, np.ndarray] | None  # the anchor texts at checkpoint 0 and here
    info: dict = field(default_factory=dict)  # the source's own record of this checkpoint
    reembedded: Reembedding | None = None  # the last checkpoint's, where a run asked for rows


@dataclass(frozen=True)
class Knob:
    """A source's axis: its name as a field (``sigma``, ``rung``: rows, summaries and monitor
    scores are keyed by it), as an axis is labelled, and as a table or log line writes it."""

    name: str
    label: str
    symbol: str


class CheckpointSource(Protocol):
    knob: Knob
    noun: str  # "drift" or "update", as a figure's title says it

    def checkpoints(self) -> Iterator[Checkpoint]:
        """The checkpoints in order (lazily: a synthetic drift draws its noise as it goes)."""
        ...

    def describe(
        self, ckpt: Checkpoint, angle_deg: float, clf, y_test: np.ndarray, p_frozen: np.ndarray
    ) -> tuple[dict, float]:
        """This source's columns for the checkpoint's row, and the sigma at which the
        classifier's amplification diagnostic is read (an update: its Gaussian twin's)."""
        ...

    def finish(self, run_dir: Path, title: str) -> dict:
        """This source's part of the run's metrics, once every checkpoint is done (an update:
        its per-checkpoint records, and their figure)."""
        ...


SIGMA = Knob("sigma", "drift magnitude σ", "σ")


def knob_of(metrics: dict) -> tuple[Knob, list[float]]:
    """A drift_eval run's checkpoint axis and its values, from its metrics.json (a run from
    before the knob was recorded is on sigma)."""
    knob = Knob(**metrics["knob"]) if "knob" in metrics else SIGMA
    return knob, metrics.get(f"{knob.name}s", [])


class SyntheticSource:
    """A synthetic drift (``driftbench.drift``) at each sigma of the schedule. The test texts'
    operator, the anchors' and the asked rows' (``z0_rows``: M_0's embeddings of them, drifted at
    the last sigma) share v or Q (same ``rng`` state) and draw noise of their own."""

    knob, noun = SIGMA, "drift"

    def __init__(self, kind: str, sigmas, z_test, z0_anchor, seed: int, z0_rows=None):
        d = z_test.shape[1]
        self.sigmas, self.z_test, self.z0_anchor = [float(s) for s in sigmas], z_test, z0_anchor
        self.z0_rows = z0_rows
        self.operator = D.make_drift(kind, d, np.random.default_rng([seed, 1]))
        self.moved = D.make_drift(
            kind, d, np.random.default_rng([seed, 1]), np.random.default_rng([seed, 7])
        )
        if z0_rows is not None:
            self.rows_moved = D.make_drift(
                kind, d, np.random.default_rng([seed, 1]), np.random.default_rng([seed, 9])
            )

    def checkpoints(self) -> Iterator[Checkpoint]:
        for c, s in enumerate(self.sigmas):
            anchors = (
                (self.z0_anchor, self.moved(self.z0_anchor, s)) if len(self.z0_anchor) else None
            )
            z = self.operator(self.z_test, s)
            last = c == len(self.sigmas) - 1 and self.z0_rows is not None
            reembedded = self.reembed(z, s) if last else None
            yield Checkpoint(f"sigma={s:.3f}", s, z, anchors, reembedded=reembedded)

    def reembed(self, z_test: np.ndarray, sigma: float) -> Reembedding:
        """The asked rows drifted as the test texts are: what "re-embedding" them means here."""
        rows = self.rows_moved(self.z0_rows, sigma)
        return Reembedding(z_test, rows, rows, seconds_per_text=0.0, embedded_now=0)

    def describe(self, ckpt, angle_deg, clf, y_test, p_frozen) -> tuple[dict, float]:
        return {}, ckpt.knob

    def finish(self, run_dir: Path, title: str) -> dict:
        return {}
