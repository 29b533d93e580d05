"""The rho-guided LoRA training loop of ``driftbench.rho.train`` on mlx.

Same loss (``L_SFT + lambda_rho * mean hinge(CE(x+) - CE(x-) + gamma)``, CE the per-text mean
next-token CE), same data order and pair sampling (the same ``random.Random(seed)`` calls), same
optimiser (AdamW with bias correction, decoupled weight decay, global-norm clipping, warmup then
linear decay, gradient accumulation). LoRA layers are mlx-lm's ``LoRALinear`` with
``scale = alpha / rank`` (peft's scaling); peft and mlx-lm both draw A from U(-1/sqrt(in),
1/sqrt(in)) and start B at 0, from different random streams. The tests copy peft's A into
mlx and check one optimizer step gives the same loss within 1e-3.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np

from driftbench.backends.mlx_model import MlxModel, _batch, token_ce
from driftbench.rho.train import TrainConfig, answer_mask, lr_lambda, sample_pairs


def linear_paths(model: MlxModel) -> dict[str, object]:
    """Dotted path -> module for every linear layer (what LoRA can target)."""
    import mlx.nn as nn

    kinds = (nn.Linear, nn.QuantizedLinear)
    return {n: m for n, m in model.model.named_modules() if isinstance(m, kinds)}


def check_lora_targets(model: MlxModel, targets: list[str]) -> None:
    have = sorted({n.rsplit(".", 1)[-1] for n in linear_paths(model)})
    missing = [t for t in targets if t not in have]
    if missing:
        raise ValueError(
            f"sft.lora.target_modules {missing} not in the model; its linear modules are: "
            f"{', '.join(have)}"
        )


def apply_lora(model: MlxModel, cfg: TrainConfig, seed: int) -> MlxModel:
    """Freeze the model and wrap every targeted linear layer in mlx-lm's LoRALinear."""
    import mlx.core as mx
    from mlx.utils import tree_unflatten
    from mlx_lm.tuner.lora import LoRALinear

    check_lora_targets(model, list(cfg.target_modules))
    mx.random.seed(seed)
    model.model.freeze()
    scale = cfg.lora_alpha / cfg.lora_rank
    wrapped = [
        (path, LoRALinear.from_base(m, r=cfg.lora_rank, dropout=cfg.lora_dropout, scale=scale))
        for path, m in sorted(linear_paths(model).items())
        if path.rsplit(".", 1)[-1] in cfg.target_modules
    ]
    model.model.update_modules(tree_unflatten(wrapped))
    model.lora = {
        "rank": cfg.lora_rank,
        "scale": scale,
        "dropout": cfg.lora_dropout,
        "paths": [p for p, _ in wrapped],
    }
    return model


def save_adapter(model: MlxModel, path: Path) -> None:
    """mlx-lm's adapter format, so ``mlx_lm.generate --adapter-path`` loads it."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    if model.lora is None:
        raise ValueError("the model has no LoRA adapter to save")
    path.mkdir(parents=True, exist_ok=True)
    weights = dict(tree_flatten(model.model.trainable_parameters()))
    mx.save_safetensors(str(path / "adapters.safetensors"), weights)
    keys = sorted({p.split(".layers.", 1)[1].split(".", 1)[1] for p in model.lora["paths"]})
    config = {
        "fine_tune_type": "lora",
        "num_layers": len(model.model.layers),
        "lora_parameters": {
            "rank": model.lora["rank"],
            "scale": model.lora["scale"],
            "dropout": model.lora["dropout"],
            "keys": keys,
        },
    }
    (path / "adapter_config.json").write_text(json.dumps(config, indent=2))


def per_text_ce(logits, input_ids, mask: np.ndarray, loss_mask: np.ndarray | None = None):
    """Mean next-token CE per row (``driftbench.rho.loss.per_text_ce`` in mlx)."""
    import mlx.core as mx

    m = mask[:, 1:] if loss_mask is None else mask[:, 1:] * loss_mask[:, 1:]
    tok = token_ce(logits, input_ids, mask)[:, :-1] * mx.array(m)
    return tok.sum(axis=1) / mx.maximum(mx.array(m.sum(axis=1)), 1.0)


def micro_loss(net, sft, pairs, cfg: TrainConfig):
    """One micro-step's loss; ``sft`` = (ids, mask) or None, ``pairs`` = (ids, mask,
    loss_mask, k) or None. Returns (total, sft loss, hinge mean, active fraction)."""
    import mlx.core as mx

    zero = mx.array(0.0)
    total, sft_loss, c_loss, active = zero, zero, zero, zero
    if sft is not None:  # token mean over the SFT rows, as Hugging Face's labels= loss
        ids, mask = sft
        sft_loss = token_ce(net(ids), ids, mask).sum() / float(mask[:, 1:].sum())
        total = total + sft_loss
    if pairs is not None:  # both texts of every pair in one padded forward
        ids, mask, loss_mask, k = pairs
        ce = per_text_ce(net(ids), ids, mask, loss_mask)
        h = mx.maximum(ce[:k] - ce[k:] + cfg.margin, 0.0)
        c_loss, active = h.mean(), (h > 0).astype(mx.float32).mean()
        total = total + cfg.lambda_rho * c_loss
    return total, sft_loss, c_loss, active


def train(
    model: MlxModel,
    tokenizer,
    sft_texts: list[str],
    pairs: dict[str, list[dict]],
    cfg: TrainConfig,
    seed: int = 42,
    progress: bool = True,
) -> tuple[MlxModel, list[dict]]:
    """``driftbench.rho.train.train`` on mlx; a model that already has LoRA layers keeps them
    (the cross-check test copies peft's initial A matrices in first)."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx.utils import tree_map
    from tqdm.auto import tqdm

    cfg.validate()
    rng = random.Random(seed)
    if model.lora is None:
        apply_lora(model, cfg, seed)
    contrastive_on = cfg.use_contrastive and cfg.lambda_rho > 0 and any(pairs.values())
    if not cfg.use_sft and not contrastive_on:
        raise ValueError("nothing to train: no SFT term and no contrastive term (lambda_rho = 0)")
    if not sft_texts:
        raise ValueError("the SFT set is empty: check sft.data (n, alpaca_path)")

    def enc(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, truncation=True, max_length=cfg.max_length)["input_ids"]

    sft_ids = enc(sft_texts)
    n_micro = math.ceil(len(sft_ids) / cfg.batch_size) * cfg.epochs
    total = cfg.max_steps or math.ceil(n_micro / cfg.grad_accum)
    schedule = lr_lambda(total, cfg.warmup_ratio)
    opt = optim.AdamW(
        learning_rate=cfg.lr * schedule(0), weight_decay=cfg.weight_decay, bias_correction=True
    )
    loss_and_grad = nn.value_and_grad(model.model, lambda *a: micro_loss(model.model, *a, cfg))
    pad = tokenizer.pad_token_id
    model.train()
    history: list[dict] = []
    acc = {"sft": 0.0, "contrastive": 0.0, "active": 0.0, "tokens": 0, "n": 0}
    grads_sum = None
    bar = tqdm(total=total, desc="train (mlx)", unit="step", disable=not progress)
    t0 = time.perf_counter()

    def micro_batches():
        while True:  # the same random calls, in the same order, as the torch loop
            order = list(range(len(sft_ids)))
            rng.shuffle(order)
            for i in range(0, len(order), cfg.batch_size):
                yield [sft_ids[j] for j in order[i : i + cfg.batch_size]] if cfg.use_sft else []

    for micro, rows in enumerate(micro_batches()):
        batch_pairs = sample_pairs(pairs, rng, cfg.shuffle_pairs) if contrastive_on else []
        pos_ids = enc([p["positive"] for p in batch_pairs]) if batch_pairs else []
        neg_ids = enc([p["negative"] for p in batch_pairs]) if batch_pairs else []
        sft = _batch(rows, pad) if rows else None
        pair = None
        if batch_pairs:
            ids, mask = _batch(pos_ids + neg_ids, pad)
            loss_mask = None
            if cfg.ce_on == "answer":
                masks = [answer_mask(p, q) for p, q in zip(pos_ids, neg_ids, strict=True)]
                loss_mask = _batch([m[0] for m in masks] + [m[1] for m in masks], 0)[0]
                loss_mask = np.array(loss_mask, dtype=np.float32)
            pair = (ids, mask, loss_mask, len(batch_pairs))
        (loss, sft_loss, c_loss, active), grads = loss_and_grad(sft, pair)
        grads_sum = grads if grads_sum is None else tree_map(mx.add, grads_sum, grads)
        mx.eval(loss, grads_sum)
        acc["sft"] += float(sft_loss)
        acc["contrastive"] += float(c_loss)
        acc["active"] += float(active)
        acc["tokens"] += int(sum(len(x) for x in rows + pos_ids + neg_ids))
        acc["n"] += 1
        if (micro + 1) % cfg.grad_accum == 0:
            grads = tree_map(lambda g: g / cfg.grad_accum, grads_sum)
            grads, _ = optim.clip_grad_norm(grads, cfg.grad_clip)
            opt.learning_rate = cfg.lr * schedule(len(history))
            opt.update(model.model, grads)
            mx.eval(model.model.parameters(), opt.state)
            grads_sum = None
            n = acc["n"]
            history.append(
                {
                    "step": len(history) + 1,
                    "lr": cfg.lr * schedule(len(history) + 1),
                    "sft_loss": acc["sft"] / n if cfg.use_sft else None,
                    "contrastive_loss": acc["contrastive"] / n if contrastive_on else None,
                    "active_hinge_fraction": acc["active"] / n if contrastive_on else None,
                    "real_tokens": acc["tokens"],
                    "wall_s": time.perf_counter() - t0,
                }
            )
            acc = {"sft": 0.0, "contrastive": 0.0, "active": 0.0, "tokens": 0, "n": 0}
            bar.update(1)
            if len(history) >= total:
                break
    bar.close()
    model.eval()
    return model, history
