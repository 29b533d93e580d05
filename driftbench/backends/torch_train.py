"""LoRA SFT with the contrastive hinge of the rho-guided SFT notes, one screen of training loop:
the torch backend's. The data order, pair sampling, schedule and history come from
:class:`driftbench.rho.plan.TrainingPlan`, which the mlx loop (``backends/mlx_train.py``) shares;
the hinge from ``driftbench.rho.loss``, the per-text CE from ``torch_loss``.

Each micro-step runs one forward for its SFT texts and one for both texts of every sampled probe
pair: the SFT loss is the token-mean CE over the SFT texts (as Hugging Face's ``labels=`` loss), the
contrastive loss the hinge over the per-text mean CE of the pair texts. Both forwards are packed
(``packed_text_ce``): no padding, each pair's shared question computed once, the LM head only on
scored positions; the same losses as padded rows, with 0.65 tokens through the model per real token
where padded rows took 2.07 (bench/sft.py, SmolLM2). Models whose attention cannot take the packed
mask (flash attention) use padded rows, each forward padded to its own longest text. rho-eval pads
SFT texts to 256 tokens and forwards contrast texts one at a time. (Putting SFT and pair texts in
ONE padded batch was measured slower: the short pair texts were padded to SFT length, 2.3 processed
tokens per real token. Packing them into one row would not pad, but attention grows with the square
of a row.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from driftbench.backends.torch_loss import packed_text_ce, packing_unsupported, padded_text_ce
from driftbench.rho.loss import contrastive_loss
from driftbench.rho.plan import LoraKnobs, SftKnobs, TrainingPlan, step_hook

log = logging.getLogger(__name__)


def linear_modules(model) -> list[str]:
    """Short names of the model's Linear layers (what LoRA can target)."""
    return sorted(
        {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    )


def check_lora_targets(model, targets: list[str]) -> None:
    have = linear_modules(model)
    missing = [t for t in targets if t not in have]
    if missing:
        raise ValueError(
            f"sft.lora.target_modules {missing} not in the model; its linear modules are: "
            f"{', '.join(have)}"
        )


def apply_lora(model, lora: LoraKnobs):
    """``model`` frozen, with peft LoRA adapters of ``sft.lora`` on its target modules."""
    from peft import LoraConfig, TaskType, get_peft_model

    check_lora_targets(model, list(lora.target_modules))
    for p in model.parameters():
        p.requires_grad = False
    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
    )
    return get_peft_model(model, config)


def select_text_ce(model, pad_id: int) -> Callable[..., torch.Tensor]:
    """``text_ce(id_lists, loss_masks=None, pairs=0)`` -> per-text mean CE: packed where the
    model's attention takes the packed mask, else padded rows (the same values, more work)."""
    reason = packing_unsupported(model)
    if reason is None:
        return lambda ids, masks=None, pairs=0: packed_text_ce(model, ids, masks, pairs)
    log.warning("training on padded rows, not packed: %s", reason)
    return lambda ids, masks=None, pairs=0: padded_text_ce(model, ids, masks, pad_id)


def autocast_of(model, device):
    """Where the frozen weights are bfloat16 (``runtime.dtype``), the forwards and losses run
    under ``torch.autocast(dtype=bfloat16)`` and the backward outside it, as torch's automatic
    mixed precision has it: the trainable LoRA weights (peft keeps them float32 beside a
    bfloat16 base, ``autocast_adapter_dtype``) are the float32 master weights that AdamW
    updates, and the matmuls run in bfloat16; a float32 model trains in float32, unchanged."""
    import contextlib

    if model.get_input_embeddings().weight.dtype != torch.bfloat16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def train(
    model,
    tokenizer,
    sft_texts: list[str],
    pairs: dict[str, list[dict]],
    sft: SftKnobs,
    seed: int = 42,
    progress: bool = True,
    after_step: Callable[[int, object], None] | None = None,
) -> tuple[object, list[dict]]:
    """Train LoRA adapters with the knobs of the ``sft`` config group; returns (peft model, one
    history record per optimizer step).
    A peft model keeps the adapters it has (the backend cross-check starts both backends from
    the same LoRA matrices). ``after_step(step, model)``: called after each optimizer step but
    the last, in eval mode under ``no_grad`` (``plan.step_hook``; e.g. the audit along the way)."""
    from peft import PeftModel

    plan = TrainingPlan(tokenizer, sft_texts, pairs, sft, seed, progress)
    optim = sft.optim
    torch.manual_seed(seed)
    if not isinstance(model, PeftModel):
        model = apply_lora(model, sft.lora)
    device = next(model.parameters()).device
    autocast = autocast_of(model, device)
    text_ce = select_text_ce(model, tokenizer.pad_token_id)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, plan.schedule)
    model.train()
    plan.start(on_step=step_hook(after_step, model, torch.no_grad))
    for micro, mb in enumerate(plan.micro_batches()):
        loss = torch.zeros((), device=device)
        sft_loss = c_loss = torch.zeros(())
        active = 0.0
        with autocast:
            if mb.rows:  # SFT texts and pair texts go through separate forwards
                ce = text_ce(mb.rows)
                weights = torch.tensor(
                    [max(len(x) - 1, 0) for x in mb.rows], dtype=ce.dtype, device=device
                )
                sft_loss = (ce * weights).sum() / weights.sum().clamp(min=1)  # token mean
                loss = loss + sft_loss
            if mb.pos_ids:  # both texts of every pair in one forward, positives first
                k = len(mb.pos_ids)
                ce = text_ce(mb.pos_ids + mb.neg_ids, mb.loss_masks, pairs=k)
                c_loss, active = contrastive_loss(ce[:k], ce[k:], sft.margin)
                loss = loss + sft.lambda_rho * c_loss
        (loss / optim.grad_accum).backward()
        plan.add(mb, float(sft_loss.detach()), float(c_loss.detach()), active)
        if (micro + 1) % optim.grad_accum == 0:
            torch.nn.utils.clip_grad_norm_(params, optim.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            if plan.step_done():
                break
    model.eval()
    return model, plan.history
