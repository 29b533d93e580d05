"""``backend=mlx``: Apple's MLX through mlx-lm (``pip install -e ".[mlx]"``), the backend the
rho-guided SFT study ran on. The model, its forwards and generation are in ``mlx_model``, the
training loop in ``mlx_train``; mlx itself is imported only when a model loads.
"""

from __future__ import annotations

from pathlib import Path

from driftbench.backends import mlx_train
from driftbench.backends.base import Backend, Forward, LoadedModel
from driftbench.backends.mlx_model import (
    MLX_INSTALL,
    batch_token_ce,
    check_architecture,
    check_generation_config,
    generation_config_of,
    greedy_generate,
    load,
    local_folder,
    mlx_available,
    pooled_batch,
    read_config,
)
from driftbench.models import ModelSpec


class MlxBackend(Backend):
    name = "mlx"
    cache_key = {"backend": "mlx"}

    def check(self, spec: ModelSpec | None, cache_dir) -> None:
        """mlx and mlx-lm installed, and an architecture mlx-lm implements where the model's
        config is already on disk (otherwise loading checks it)."""
        if not mlx_available():
            raise ValueError(
                f"backend=mlx needs mlx and mlx-lm, which are not installed: {MLX_INSTALL}"
            )
        folder = local_folder(spec) if spec is not None else None
        if folder is not None:
            check_architecture(read_config(folder), spec.name)

    def check_generation(self, spec: ModelSpec | None, cache_dir) -> None:
        folder = local_folder(spec) if spec is not None else None
        if folder is not None:
            check_generation_config(generation_config_of(folder), spec.name)

    def check_embed_layer(self, layer: int) -> None:
        if layer != -1:
            raise ValueError(f"embed.layer={layer} with backend=mlx; accepted: -1")

    def load(
        self, spec: ModelSpec, cache_dir: Path, device: str, head: str, dtype: str
    ) -> LoadedModel:
        """``device`` is not used: mlx runs on Metal on Apple silicon, on the CPU elsewhere.
        ``dtype`` is float32, the one of ``dtypes``: ``mlx_model.load`` casts every weight to
        float32, as the rho-guided SFT study ran (bfloat16 here is a step of its own)."""
        model, tokenizer, identity, folder = load(spec, cache_dir, head)
        return LoadedModel(model, tokenizer, identity, False, folder, self)

    def embed_forward(self, model, pooling: str, layer: int, packed: bool, workers: int | None):
        self.check_embed_layer(layer)
        return Forward("mlx", lambda rows, pad_id: pooled_batch(model, rows, pad_id, pooling))

    def ce_forward(self, model, packed: bool) -> Forward:
        return Forward("mlx", lambda rows, pad_id: batch_token_ce(model, rows, pad_id))

    def generate(
        self, model, tokenizer, prompts, max_new_tokens, batch_tokens, max_batch, progress, desc
    ) -> list[str]:
        """One prompt at a time: ``batch_tokens`` and ``max_batch`` are not used."""
        return greedy_generate(model, tokenizer, prompts, max_new_tokens, progress, desc)

    def check_lora_targets(self, model, targets: list[str]) -> None:
        mlx_train.check_lora_targets(model, targets)

    def train(self, model, tokenizer, sft_texts, pairs, sft, seed, progress, after_step=None):
        return mlx_train.train(
            model, tokenizer, sft_texts, pairs, sft, seed, progress, after_step=after_step
        )
