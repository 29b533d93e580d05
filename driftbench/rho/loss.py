"""The rho-guided SFT objective ("Research Notes: Rho-Guided SFT", "Loss Function"):

    L_total = L_SFT + lambda_rho * L_contrastive
    L_contrastive = mean over pairs of max(0, CE(x+) - CE(x-) + gamma)

CE(x) is the mean per-token cross-entropy of the model on text x, the same quantity rho-eval
computes one text at a time with ``model(**enc, labels=input_ids).loss``. Each backend computes
it (``driftbench.backends.torch_loss``, ``driftbench.backends.mlx_train``); here is the hinge
on the per-text CEs it hands back.

gamma is the hinge margin (rho-eval's ``margin``); rho-eval's own ``gamma_weight`` is a different
thing (a protection-loss weight) and has no counterpart here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hinge(ce_pos: torch.Tensor, ce_neg: torch.Tensor, margin: float) -> torch.Tensor:
    """``max(0, CE(x+) - CE(x-) + gamma)`` per pair."""
    return F.relu(ce_pos - ce_neg + margin)


def contrastive_loss(
    ce_pos: torch.Tensor, ce_neg: torch.Tensor, margin: float
) -> tuple[torch.Tensor, float]:
    """(mean hinge over the pair batch, fraction of pairs whose hinge is active)."""
    h = hinge(ce_pos, ce_neg, margin)
    return h.mean(), float((h > 0).float().mean())
