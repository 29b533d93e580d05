"""LoRA SFT with the contrastive hinge of 003_c2ae76f2d78a8631.txt, one screen of training loop.

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
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from driftbench.rho.loss import (
    contrastive_loss,
    packed_text_ce,
    packing_unsupported,
    padded_text_ce,
)

log = logging.getLogger(__name__)
CE_ON = ("full_text", "answer")


@dataclass
class TrainConfig:
    """Every knob of the loop; ``conf/sft/`` holds the same names."""

    lambda_rho: float = 0.2
    margin: float = 0.1
    use_sft: bool = True
    use_contrastive: bool = True
    shuffle_pairs: bool = False
    ce_on: str = "full_text"
    lr: float = 2e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    grad_accum: int = 4
    batch_size: int = 2
    epochs: int = 1
    max_steps: int | None = None
    max_length: int = 256
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "o_proj"])

    def validate(self) -> None:
        if self.lambda_rho < 0:
            raise ValueError(
                f"sft.lambda_rho={self.lambda_rho}: the contrastive weight must be >= 0"
            )
        if self.margin < 0:
            raise ValueError(f"sft.margin={self.margin}: the hinge margin gamma must be >= 0")
        if self.ce_on not in CE_ON:
            raise ValueError(f"sft.ce_on={self.ce_on!r}; accepted: {', '.join(CE_ON)}")
        for name in ("grad_accum", "batch_size", "epochs", "max_length", "lora_rank"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"sft.{name}={getattr(self, name)}: must be >= 1")


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


def apply_lora(model, cfg: TrainConfig):
    from peft import LoraConfig, TaskType, get_peft_model

    check_lora_targets(model, list(cfg.target_modules))
    for p in model.parameters():
        p.requires_grad = False
    lora = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
    )
    return get_peft_model(model, lora)


def answer_mask(pos: list[int], neg: list[int]) -> tuple[list[int], list[int]]:
    """Per-token 1/0 masks marking the tokens after the pair's common token prefix: for bias and
    sycophancy pairs (same question, different answer) that is the answer, which the whole-text
    mean would dilute."""
    k = 0
    while k < min(len(pos), len(neg)) - 1 and pos[k] == neg[k]:
        k += 1
    return [0] * k + [1] * (len(pos) - k), [0] * k + [1] * (len(neg) - k)


def lr_lambda(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    """10% linear warmup, then linear decay to 0 (as rho-eval's trainer)."""
    warmup = int(total_steps * warmup_ratio)

    def f(step: int) -> float:
        if step < warmup:
            return step / max(warmup, 1)
        return max(0.0, 1.0 - (step - warmup) / max(total_steps - warmup, 1))

    return f


def sample_pairs(pairs: dict[str, list[dict]], rng: random.Random, shuffle: bool) -> list[dict]:
    """One pair per behaviour (uniform over behaviours); ``shuffle`` swaps positive and negative
    at random: the negative control whose loss carries no behavioural signal."""
    out = []
    for behavior in sorted(pairs):
        p = rng.choice(pairs[behavior])
        if shuffle and rng.random() < 0.5:
            p = {**p, "positive": p["negative"], "negative": p["positive"]}
        out.append(p)
    return out


def select_text_ce(model, pad_id: int) -> Callable[..., torch.Tensor]:
    """``text_ce(id_lists, loss_masks=None, pairs=0)`` -> per-text mean CE: packed where the
    model's attention takes the packed mask, else padded rows (the same values, more work)."""
    reason = packing_unsupported(model)
    if reason is None:
        return lambda ids, masks=None, pairs=0: packed_text_ce(model, ids, masks, pairs)
    log.warning("training on padded rows, not packed: %s", reason)
    return lambda ids, masks=None, pairs=0: padded_text_ce(model, ids, masks, pad_id)


def train(
    model,
    tokenizer,
    sft_texts: list[str],
    pairs: dict[str, list[dict]],
    cfg: TrainConfig,
    seed: int = 42,
    progress: bool = True,
) -> tuple[object, list[dict]]:
    """Train LoRA adapters; returns (peft model, one history record per optimizer step).
    A peft model keeps the adapters it has (the backend cross-check starts both backends from
    the same LoRA matrices)."""
    from tqdm.auto import tqdm

    cfg.validate()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        model = apply_lora(model, cfg)
    device = next(model.parameters()).device
    contrastive_on = cfg.use_contrastive and cfg.lambda_rho > 0 and any(pairs.values())
    if not cfg.use_sft and not contrastive_on:
        raise ValueError("nothing to train: no SFT term and no contrastive term (lambda_rho = 0)")

    def enc(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, truncation=True, max_length=cfg.max_length)["input_ids"]

    if not sft_texts:
        raise ValueError("the SFT set is empty: check sft.data (n, alpaca_path)")
    text_ce = select_text_ce(model, tokenizer.pad_token_id)
    sft_ids = enc(sft_texts)  # also sets the step count of contrastive_only, for comparability
    n_micro = math.ceil(len(sft_ids) / cfg.batch_size) * cfg.epochs
    total = cfg.max_steps or math.ceil(n_micro / cfg.grad_accum)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, cfg.warmup_ratio))
    model.train()
    history: list[dict] = []
    acc = {"sft": 0.0, "contrastive": 0.0, "active": 0.0, "tokens": 0, "n": 0}
    bar = tqdm(total=total, desc="train", unit="step", disable=not progress)
    t0 = time.perf_counter()

    def micro_batches():
        while True:  # epochs end through ``total``; max_steps may ask for more than one pass
            order = list(range(len(sft_ids)))
            rng.shuffle(order)
            for i in range(0, len(order), cfg.batch_size):
                yield [sft_ids[j] for j in order[i : i + cfg.batch_size]] if cfg.use_sft else []

    for micro, rows in enumerate(micro_batches()):
        batch_pairs = sample_pairs(pairs, rng, cfg.shuffle_pairs) if contrastive_on else []
        pos_ids = enc([p["positive"] for p in batch_pairs]) if batch_pairs else []
        neg_ids = enc([p["negative"] for p in batch_pairs]) if batch_pairs else []
        loss = torch.zeros((), device=device)
        if rows:  # SFT texts and pair texts go through separate forwards
            ce = text_ce(rows)
            weights = torch.tensor(
                [max(len(x) - 1, 0) for x in rows], dtype=ce.dtype, device=device
            )
            sft_loss = (ce * weights).sum() / weights.sum().clamp(min=1)  # token mean (labels=)
            loss = loss + sft_loss
            acc["sft"] += float(sft_loss.detach())
        if batch_pairs:  # both texts of every pair in one forward, positives first
            k = len(batch_pairs)
            loss_masks = None
            if cfg.ce_on == "answer":
                masks = [answer_mask(p, q) for p, q in zip(pos_ids, neg_ids, strict=True)]
                loss_masks = [m[0] for m in masks] + [m[1] for m in masks]
            ce = text_ce(pos_ids + neg_ids, loss_masks, pairs=k)
            c_loss, active = contrastive_loss(ce[:k], ce[k:], cfg.margin)
            loss = loss + cfg.lambda_rho * c_loss
            acc["contrastive"] += float(c_loss.detach())
            acc["active"] += active
        (loss / cfg.grad_accum).backward()
        acc["tokens"] += int(sum(len(x) for x in rows + pos_ids + neg_ids))
        acc["n"] += 1
        if (micro + 1) % cfg.grad_accum == 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            n = acc["n"]
            history.append(
                {
                    "step": len(history) + 1,
                    "lr": sched.get_last_lr()[0],
                    "sft_loss": acc["sft"] / n if cfg.use_sft else None,
                    "contrastive_loss": acc["contrastive"] / n if contrastive_on else None,
                    "active_hinge_fraction": acc["active"] / n if contrastive_on else None,
                    "real_tokens": acc["tokens"],
                    "wall_s": time.perf_counter() - t0,
                }
            )
            acc = {"sft": 0.0, "contrastive": 0.0, "active": 0.0, "tokens": 0, "n": 0}
            bar.update(1)
            bar.set_postfix(
                sft=history[-1]["sft_loss"], hinge=history[-1]["contrastive_loss"], refresh=False
            )
            if len(history) >= total:
                break
    bar.close()
    model.eval()
    return model, history
