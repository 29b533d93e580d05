"""What both backends' training loops share, torch-free: the data order and pair sampling, the
learning-rate schedule and the per-step history. The knobs are the ``sft`` config group itself
(``driftbench.schema.Sft``, built with ``OmegaConf.to_object(cfg.sft)``), read by their YAML names;
:class:`SftKnobs` says which, so the method imports no config schema (and no Hydra).

``driftbench.backends.torch_train`` (torch) and ``driftbench.backends.mlx_train`` (mlx) each run
the loop of the rho-guided SFT notes over the micro-batches of one :class:`TrainingPlan`, so for
one seed they see the same texts and pairs in the same order.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class LoraKnobs(Protocol):
    """``sft.lora``: the LoRA adapters the loops train."""

    rank: int
    alpha: int
    dropout: float
    target_modules: list[str]


class SftKnobs(Protocol):
    """The ``sft`` config group as the training loops read it; ``driftbench.schema.Sft`` is one.
    ``condition`` holds ``train``, ``use_sft``, ``use_contrastive`` and ``shuffle_pairs``;
    ``optim`` ``lr``, ``weight_decay``, ``warmup_ratio``, ``grad_clip``, ``grad_accum``,
    ``batch_size``, ``epochs`` and ``max_steps`` (as ``schema.Condition`` and ``schema.Optim``)."""

    condition: Any
    optim: Any
    lora: LoraKnobs
    lambda_rho: float
    margin: float
    ce_on: str
    max_length: int


CE_ON = ("full_text", "answer")


def check_ce_on(ce_on: str) -> None:
    """``sft.ce_on``: which tokens of a pair text its CE averages (``MicroBatch.loss_masks``)."""
    if ce_on not in CE_ON:
        raise ValueError(f"sft.ce_on={ce_on!r}; accepted: {', '.join(CE_ON)}")


def trained_lambda_rho(sft: SftKnobs) -> float:
    """The weight the hinge had in training, as a run records it: ``sft.lambda_rho``, or 0 where
    the condition trains without the contrastive term (sft_only), whose λρ weighs nothing."""
    c = sft.condition
    return 0.0 if c.train and not c.use_contrastive else float(sft.lambda_rho)


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


def step_hook(
    after_step: Callable[[int, Any], None] | None, model, guard: Callable = contextlib.nullcontext
) -> Callable[[int], None] | None:
    """``after_step(step, model)`` as a loop calls it after optimizer step ``step`` (1-based):
    the model (its LoRA weights live) in eval mode, so dropout does not blur what is measured,
    under ``guard()`` (torch: ``no_grad``, so nothing measured enters the next step's gradient),
    then back in train mode. None where there is no ``after_step``."""
    if after_step is None:
        return None

    def call(step: int) -> None:
        model.eval()
        try:
            with guard():
                after_step(step, model)
        finally:
            model.train()

    return call


@dataclass
class MicroBatch:
    """The token ids of one micro-step: SFT texts, then the sampled pairs' positive and negative
    texts (and, for ``ce_on=answer``, their loss masks, positives first)."""

    rows: list[list[int]]
    pos_ids: list[list[int]]
    neg_ids: list[list[int]]
    loss_masks: list[list[int]] | None

    @property
    def n_tokens(self) -> int:
        return int(sum(len(x) for x in self.rows + self.pos_ids + self.neg_ids))


def planned_steps(n_texts: int, optim) -> int:
    """The optimizer steps a loop takes over ``n_texts`` SFT texts: ``max_steps``, else the
    epochs' micro-batches over ``grad_accum`` (the last step may take fewer). Known before
    training, so a caller can choose the steps to act at (``drift=tune``'s snapshots)."""
    n_micro = math.ceil(n_texts / optim.batch_size) * optim.epochs
    return optim.max_steps or math.ceil(n_micro / optim.grad_accum)


class TrainingPlan:
    """What both backends' loops share: checks, tokenisation, the step count, the data order
    and pair sampling (one ``random.Random(seed)``, the same calls in the same order), and the
    per-step history with its progress bar."""

    def __init__(self, tokenizer, sft_texts, pairs, sft: SftKnobs, seed: int, progress: bool):
        self.sft, self.tokenizer, self.pairs = sft, tokenizer, pairs
        self.rng = random.Random(seed)
        c, optim = sft.condition, sft.optim
        self.contrastive_on = c.use_contrastive and sft.lambda_rho > 0 and any(pairs.values())
        if not c.use_sft and not self.contrastive_on:
            raise ValueError(
                "nothing to train: no SFT term and no contrastive term (lambda_rho = 0)"
            )
        if not sft_texts:
            raise ValueError("the SFT set is empty: check sft.data (n, alpaca_path)")
        self.sft_ids = self.encode(sft_texts)  # also sets contrastive_only's step count
        self.total = planned_steps(len(self.sft_ids), optim)
        self.schedule = lr_lambda(self.total, optim.warmup_ratio)
        self.history: list[dict] = []
        self.progress = progress
        self._reset()

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, truncation=True, max_length=self.sft.max_length)["input_ids"]

    def micro_batches(self):
        """Micro-batches until ``total`` steps; max_steps may ask for more than one pass."""
        sft, size = self.sft, self.sft.optim.batch_size
        while True:
            order = list(range(len(self.sft_ids)))
            self.rng.shuffle(order)
            for i in range(0, len(order), size):
                rows = [self.sft_ids[j] for j in order[i : i + size]]
                batch_pairs = (
                    sample_pairs(self.pairs, self.rng, sft.condition.shuffle_pairs)
                    if self.contrastive_on
                    else []
                )
                pos = self.encode([p["positive"] for p in batch_pairs]) if batch_pairs else []
                neg = self.encode([p["negative"] for p in batch_pairs]) if batch_pairs else []
                masks = None
                if batch_pairs and sft.ce_on == "answer":
                    both = [answer_mask(p, q) for p, q in zip(pos, neg, strict=True)]
                    masks = [m[0] for m in both] + [m[1] for m in both]
                yield MicroBatch(rows if sft.condition.use_sft else [], pos, neg, masks)

    def _reset(self) -> None:
        self.acc = {"sft": 0.0, "contrastive": 0.0, "active": 0.0, "tokens": 0, "n": 0}

    def start(self, desc: str = "train", on_step: Callable[[int], None] | None = None) -> None:
        """Start the clock and the bar; ``on_step(step)`` (``step_hook``) runs after each
        optimizer step but the last (the caller's own audit follows that one)."""
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, desc=desc, unit="step", disable=not self.progress)
        self.on_step = on_step
        self.t0 = time.perf_counter()

    def add(self, mb: MicroBatch, sft: float, contrastive: float, active: float) -> None:
        self.acc["sft"] += sft
        self.acc["contrastive"] += contrastive
        self.acc["active"] += active
        self.acc["tokens"] += mb.n_tokens
        self.acc["n"] += 1

    def lr(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based), as torch's LambdaLR."""
        return self.sft.optim.lr * self.schedule(step)

    def step_done(self) -> bool:
        """Record one optimizer step (averages over its micro-steps); True when training is
        over."""
        n, on = self.acc["n"], self.contrastive_on
        self.history.append(
            {
                "step": len(self.history) + 1,
                "lr": self.lr(len(self.history) + 1),
                "sft_loss": self.acc["sft"] / n if self.sft.condition.use_sft else None,
                "contrastive_loss": self.acc["contrastive"] / n if on else None,
                "active_hinge_fraction": self.acc["active"] / n if on else None,
                "real_tokens": self.acc["tokens"],
                "wall_s": time.perf_counter() - self.t0,
            }
        )
        self._reset()
        h = self.history[-1]
        self.bar.update(1)
        self.bar.set_postfix(sft=h["sft_loss"], hinge=h["contrastive_loss"], refresh=False)
        if len(self.history) >= self.total:
            self.bar.close()
            return True
        if self.on_step is not None:  # its time is not training time: the clock waits
            paused = time.perf_counter()
            self.on_step(len(self.history))
            self.t0 += time.perf_counter() - paused
        return False
