"""The interface every compute backend implements, and what it hands back.

A backend loads a model and computes, from token ids, what the tasks need: pooled embeddings
of a batch, the per-token CE of a batch, greedy generations and LoRA training. Batching,
tokenising, decoding and every statistic stay in the shared code (``driftbench.embed``,
``driftbench.rho``), which gets the numbers from the model's backend (``driftbench.embed`` asks
``driftbench.backends.backend_of``; ``driftbench.rho``, below the backends, is handed the
backend by its caller) and never asks which backend it is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class LoadedModel:
    """A loaded model with its tokenizer, the identity that keys its cached results, and the
    backend that computes it."""

    model: object
    tokenizer: object
    identity: dict
    is_encoder: bool
    folder: Path | None
    backend: Backend


@dataclass(frozen=True)
class Forward:
    """How a backend computes one batch of token-id rows, and how it wants rows batched.

    ``run(rows, pad_id)`` gives one output row per input row (a pooled vector, or the (T,)
    next-token CE of that row). ``padding_free``: rows go in as chunks of at most
    ``batch_tokens`` real tokens (``batching.token_chunks``), else as right-padded length
    buckets (``batching.bucket_batches``). ``workers``: chunks that may run side by side
    (``driftbench.workers``). ``kind`` names the forward in the statistics."""

    kind: str
    run: Callable[[list[list[int]], int], np.ndarray]
    padding_free: bool = False
    workers: int = 1


class Backend(ABC):
    """One entry of ``driftbench.backends.BACKENDS``; ``conf/backend/<name>.yaml`` picks it."""

    name: str
    # what the embedding cache key adds for this backend's embeddings
    cache_key: dict = {}
    # whether ``weights``/``set_weights`` work (real model updates edit weights in place)
    edits_weights: bool = False
    # the dtypes it computes in (``runtime.dtype``, ``backends.resolve_dtype``)
    dtypes: tuple[str, ...] = ("float32",)

    @abstractmethod
    def check(self, spec, cache_dir) -> None:
        """Cheap checks before any heavy work (installed packages, a model it can run; ``spec``
        may be None: the packages only)."""

    @abstractmethod
    def check_generation(self, spec, cache_dir) -> None:
        """Cheap checks for a run that generates: generation settings it cannot honour."""

    @abstractmethod
    def check_embed_layer(self, layer: int) -> None:
        """Refuse an ``embed.layer`` the backend cannot read."""

    @abstractmethod
    def load(self, spec, cache_dir: Path, device: str, head: str, dtype: str) -> LoadedModel:
        """The model of ``spec`` computing in ``dtype`` (one of ``dtypes``), without its LM
        head (``head='base'``, embeddings) or with it (``'causal_lm'``: CE, generation,
        training)."""

    @abstractmethod
    def embed_forward(
        self, model, pooling: str, layer: int, packed: bool, workers: int | None
    ) -> Forward:
        """Pooled hidden states of a batch: (rows, d) float32. ``packed``: the padding-free
        forward where the backend has one; ``workers``: how many may run side by side."""

    @abstractmethod
    def ce_forward(self, model, packed: bool) -> Forward:
        """Per-token next-token CE of a batch: (rows, T) float32; position t scores token t+1,
        0 past each row's end."""

    @abstractmethod
    def generate(
        self,
        model,
        tokenizer,
        prompts: list[str],
        max_new_tokens: int,
        batch_tokens: int,
        max_batch: int,
        progress: bool,
        desc: str,
    ) -> list[str]:
        """Greedy completions as rho-eval's ``generate`` gives them, one per prompt."""

    def weights(self, model) -> dict[str, np.ndarray]:
        """A float32 copy of every parameter by name: what a real model update
        (``driftbench.updates``) edits. A backend that cannot edit weights refuses."""
        raise ValueError(
            f"backend={self.name!r} cannot edit a model's weights (drift updates); "
            "accepted: backend=torch"
        )

    def set_weights(self, model, new: dict[str, np.ndarray]) -> None:
        """Overwrite the named parameters in place (shapes unchanged)."""
        raise ValueError(f"backend={self.name!r} cannot edit a model's weights")

    @abstractmethod
    def check_lora_targets(self, model, targets: list[str]) -> None:
        """Refuse LoRA target modules the model does not have, naming the ones it has."""

    @abstractmethod
    def train(
        self,
        model,
        tokenizer,
        sft_texts: list[str],
        pairs: dict,
        sft,
        seed: int,
        progress: bool,
        after_step: Callable[[int, object], None] | None = None,
    ) -> tuple[object, list[dict]]:
        """The rho-guided LoRA training loop over one ``rho.plan.TrainingPlan``, its knobs the
        ``sft`` config group (``schema.Sft``): (trained model, one history record per optimizer
        step). ``after_step(step, model)`` runs after each optimizer step but the last, the
        model in eval mode without gradients (``rho.plan.step_hook``), then training goes on."""
