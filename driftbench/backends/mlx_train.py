"""The rho-guided LoRA training loop of ``torch_train`` on mlx (``backend=mlx``).

Same loss (``L_SFT + lambda_rho * mean hinge(CE(x+) - CE(x-) + gamma)``, CE the per-text mean
next-token CE), same data order and pair sampling (the same ``random.Random(seed)`` calls), same
optimiser (AdamW with bias correction, decoupled weight decay, global-norm clipping, warmup then
linear decay, gradient accumulation). LoRA layers are mlx-lm's ``LoRALinear`` with
``scale = alpha / rank`` (peft's scaling); peft and mlx-lm both draw A from U(-1/sqrt(in),
1/sqrt(in)) and start B at 0, from different random streams. The tests copy peft's A into
mlx and check one optimizer step gives the same loss within 1e-3.
"""

from __future__ import annotations

import numpy as np

from driftbench.backends.mlx_model import MlxModel, _batch, token_ce
from driftbench.batching import pad_batch
from driftbench.rho.plan import LoraKnobs, SftKnobs, TrainingPlan, step_hook


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


def apply_lora(model: MlxModel, lora: LoraKnobs, seed: int) -> MlxModel:
    """Freeze the model and wrap every linear layer ``sft.lora`` targets in mlx-lm's
    LoRALinear."""
    import mlx.core as mx
    from mlx.utils import tree_unflatten
    from mlx_lm.tuner.lora import LoRALinear

    check_lora_targets(model, list(lora.target_modules))
    mx.random.seed(seed)
    model.model.freeze()
    scale = lora.alpha / lora.rank
    wrapped = [
        (path, LoRALinear.from_base(m, r=lora.rank, dropout=lora.dropout, scale=scale))
        for path, m in sorted(linear_paths(model).items())
        if path.rsplit(".", 1)[-1] in lora.target_modules
    ]
    model.model.update_modules(tree_unflatten(wrapped))
    model.lora = {
        "rank": lora.rank,
        "scale": scale,
        "dropout": lora.dropout,
        "paths": [p for p, _ in wrapped],
    }
    return model


def per_text_ce(logits, input_ids, mask: np.ndarray, loss_mask: np.ndarray | None = None):
    """Mean next-token CE per row (``torch_loss.per_text_ce`` in mlx)."""
    import mlx.core as mx

    m = mask[:, 1:] if loss_mask is None else mask[:, 1:] * loss_mask[:, 1:]
    tok = token_ce(logits, input_ids, mask)[:, :-1] * mx.array(m)
    return tok.sum(axis=1) / mx.maximum(mx.array(m.sum(axis=1)), 1.0)


def micro_loss(net, rows, pairs, margin: float, lambda_rho: float):
    """One micro-step's loss; ``rows`` = the SFT texts' (ids, mask) or None, ``pairs`` = (ids,
    mask, loss_mask, k) or None; ``margin`` and ``lambda_rho`` as in the ``sft`` config group.
    Returns (total, sft loss, hinge mean, active fraction)."""
    import mlx.core as mx

    zero = mx.array(0.0)
    total, sft_loss, c_loss, active = zero, zero, zero, zero
    if rows is not None:  # token mean over the SFT rows, as Hugging Face's labels= loss
        ids, mask = rows
        sft_loss = token_ce(net(ids), ids, mask).sum() / float(mask[:, 1:].sum())
        total = total + sft_loss
    if pairs is not None:  # both texts of every pair in one padded forward
        ids, mask, loss_mask, k = pairs
        ce = per_text_ce(net(ids), ids, mask, loss_mask)
        h = mx.maximum(ce[:k] - ce[k:] + margin, 0.0)
        c_loss, active = h.mean(), (h > 0).astype(mx.float32).mean()
        total = total + lambda_rho * c_loss
    return total, sft_loss, c_loss, active


def train(
    model: MlxModel,
    tokenizer,
    sft_texts: list[str],
    pairs: dict[str, list[dict]],
    sft: SftKnobs,
    seed: int = 42,
    progress: bool = True,
    after_step=None,
) -> tuple[MlxModel, list[dict]]:
    """``torch_train.train`` on mlx; a model that already has LoRA layers keeps them
    (the cross-check test copies peft's initial A matrices in first). ``after_step`` as there
    (mlx keeps no gradient tape: eval mode is all it needs)."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx.utils import tree_map

    plan = TrainingPlan(tokenizer, sft_texts, pairs, sft, seed, progress)
    knobs = sft.optim
    if model.lora is None:
        apply_lora(model, sft.lora, seed)
    opt = optim.AdamW(
        learning_rate=plan.lr(0), weight_decay=knobs.weight_decay, bias_correction=True
    )
    margin, lambda_rho = sft.margin, sft.lambda_rho
    loss_and_grad = nn.value_and_grad(
        model.model, lambda *a: micro_loss(model.model, *a, margin, lambda_rho)
    )
    pad = tokenizer.pad_token_id
    model.train()
    plan.start("train (mlx)", on_step=step_hook(after_step, model))
    grads_sum = None
    for micro, mb in enumerate(plan.micro_batches()):
        rows = _batch(mb.rows, pad) if mb.rows else None
        pair = None
        if mb.pos_ids:
            ids, mask = _batch(mb.pos_ids + mb.neg_ids, pad)
            loss_mask = None  # ce_on=answer: 0/1 per token, right-padded with 0
            if mb.loss_masks is not None:
                loss_mask = pad_batch(mb.loss_masks, 0)[0].astype(np.float32)
            pair = (ids, mask, loss_mask, len(mb.pos_ids))
        (_, sft_loss, c_loss, active), grads = loss_and_grad(rows, pair)
        grads_sum = grads if grads_sum is None else tree_map(mx.add, grads_sum, grads)
        mx.eval(grads_sum, sft_loss, c_loss, active)
        plan.add(mb, float(sft_loss), float(c_loss), float(active))
        if (micro + 1) % knobs.grad_accum == 0:
            grads, _ = optim.clip_grad_norm(
                tree_map(lambda g: g / knobs.grad_accum, grads_sum), knobs.grad_clip
            )
            opt.learning_rate = plan.lr(len(plan.history))
            opt.update(model.model, grads)
            mx.eval(model.model.parameters(), opt.state)
            grads_sum = None
            if plan.step_done():
                break
    model.eval()
    return model, plan.history
