"""The rho-guided SFT objective of 003_c2ae76f2d78a8631.txt ("Loss Function"):

    L_total = L_SFT + lambda_rho * L_contrastive
    L_contrastive = mean over pairs of max(0, CE(x+) - CE(x-) + gamma)

CE(x) is the mean per-token cross-entropy of the model on text x, the same quantity rho-eval
computes one text at a time with ``model(**enc, labels=input_ids).loss``. Here both texts of every
pair go through the model in one right-padded batch, and the per-text mean is taken over the
attention mask, so a padded row gives the value of its unpadded forward.

gamma is the hinge margin (rho-eval's ``margin``); rho-eval's own ``gamma_weight`` is a different
thing (a protection-loss weight) and has no counterpart here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from driftbench.rho.scoring import token_ce


def per_text_ce(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    loss_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean next-token CE per row, shape (batch,).

    Token t is predicted from positions < t, so the first token of a text is never scored
    (as in Hugging Face's shifted LM loss); a text under 2 tokens gives 0, as rho-eval's NaN
    guard does. ``loss_mask`` (same shape as input_ids) restricts the
    mean to chosen target tokens, e.g. the answer of a bias or sycophancy pair."""
    tok_ce = token_ce(logits, input_ids, attention_mask)[:, :-1]  # position t scores token t+1
    mask = attention_mask[:, 1:].to(tok_ce.dtype)
    if loss_mask is not None:
        mask = mask * loss_mask[:, 1:].to(tok_ce.dtype)
    return (tok_ce * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def hinge(ce_pos: torch.Tensor, ce_neg: torch.Tensor, margin: float) -> torch.Tensor:
    """``max(0, CE(x+) - CE(x-) + gamma)`` per pair."""
    return F.relu(ce_pos - ce_neg + margin)


def contrastive_loss(
    ce_pos: torch.Tensor, ce_neg: torch.Tensor, margin: float
) -> tuple[torch.Tensor, float]:
    """(mean hinge over the pair batch, fraction of pairs whose hinge is active)."""
    h = hinge(ce_pos, ce_neg, margin)
    return h.mean(), float((h > 0).float().mean())
