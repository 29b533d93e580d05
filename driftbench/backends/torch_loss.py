"""The per-text cross-entropy of the rho-guided SFT objective on torch (the objective and its
hinge: ``driftbench.rho.loss``).

CE(x) is the mean per-token cross-entropy of the model on text x, the same quantity rho-eval
computes one text at a time with ``model(**enc, labels=input_ids).loss``. Two ways to get it for
many texts in one forward, each equal to the unpadded forward of every text:

* ``padded_text_ce``: a right-padded batch, the per-text mean taken over the attention mask
  (``per_text_ce``); works with every attention implementation;
* ``packed_text_ce``: all texts end-to-end without padding, a contrast pair's common prefix
  computed once, the LM head run only on scored positions; needs sdpa or eager attention.

``token_ce`` is also the torch backend's per-token CE of the audit's batched scoring.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from driftbench.batching import pad_batch


def token_ce(logits, input_ids, attention_mask):
    """(B, T) CE of each next token, computed as HF's causal-LM loss does it (fp32 logits,
    labels shifted left); position t scores token t+1, and positions whose target is padding
    (or past the end) are 0. Differentiable: the audit's batched scoring on torch and the rho
    loss read the same numbers."""
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels = F.pad(labels, (0, 1), value=-100)[:, 1:]
    ce = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=-100,
        reduction="none",
    )
    return ce.view(labels.shape) * (labels != -100).to(torch.float32)


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


def padded_text_ce(
    model,
    id_lists: list[list[int]],
    loss_masks: list[list[int]] | None = None,
    pad_id: int = 0,
) -> torch.Tensor:
    """Per-text mean CE from one right-padded forward: the reference path, and the fallback for
    models whose attention cannot take the block-diagonal mask of ``packed_text_ce``."""
    device = next(model.parameters()).device
    input_ids, mask = (torch.from_numpy(a).to(device) for a in pad_batch(id_lists, pad_id))
    loss_mask = None
    if loss_masks is not None:
        loss_mask = torch.from_numpy(pad_batch(loss_masks, 0)[0]).to(device)
    logits = model(input_ids=input_ids, attention_mask=mask).logits
    return per_text_ce(logits, input_ids, mask, loss_mask)


# ----------------------------------------------------------------------------------------------
# Packed forward: no padding, a pair's shared prefix computed once, LM head on scored positions.
#
# rho-eval forwards each contrast text alone; a padded batch pads every pair text to the longest
# (2.07 tokens through the model per real token on SmolLM2). Packing puts every text end-to-end
# in one row, where a 4D mask keeps each text blind to the others and position ids restart per
# text, so each token sees exactly the context (and rotary positions) of its unpadded forward.
# Bias and sycophancy pairs repeat a long question before a short answer: the two texts of a pair
# share one copy of that prefix, each answer branch attending to the prefix and to itself only.
# ----------------------------------------------------------------------------------------------

PACKABLE_ATTENTION = ("sdpa", "eager")  # the two that add a custom 4D float mask to the scores


def packing_unsupported(model) -> str | None:
    """Why ``packed_text_ce`` cannot run on ``model`` (None when it can).

    Flash attention and flex attention take no arbitrary additive mask (flash attention would
    only honour restarting position ids, which cannot express a shared prefix); encoder-decoders
    have no single causal stack to pack."""
    config = model.config
    impl = getattr(config, "_attn_implementation", None)
    if impl not in PACKABLE_ATTENTION:
        return (
            f"attn_implementation={impl!r} cannot take a 4D block-diagonal attention mask; "
            f"packing needs one of {', '.join(PACKABLE_ATTENTION)}"
        )
    if getattr(config, "is_encoder_decoder", False):
        return "an encoder-decoder model has no single causal stack to pack"
    return None


def common_prefix_len(a: list[int], b: list[int]) -> int:
    """Length of the longest common token prefix of two texts."""
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k


@dataclass
class Segment:
    """One text, or the two texts of a pair laid out as prefix + branch_pos + branch_neg.

    ``branch`` is -1 on the shared prefix and the text index on that text's own tokens (a token
    attends to prefix tokens and to its own branch); ``where[i]`` is the segment-local index of
    each token of text i."""

    tokens: list[int]
    positions: list[int]
    branch: list[int]
    where: dict[int, list[int]]


def make_segment(id_lists: list[list[int]], members: list[int]) -> Segment:
    """Lay out one text (``members`` of length 1) or a pair sharing its common prefix."""
    texts = [id_lists[i] for i in members]
    p = len(texts[0]) if len(texts) == 1 else common_prefix_len(*texts)
    seg = Segment(list(texts[0][:p]), list(range(p)), [-1] * p, {})
    for i, t in zip(members, texts, strict=True):
        start = len(seg.tokens)
        seg.tokens += t[p:]
        seg.positions += range(p, len(t))
        seg.branch += [i] * (len(t) - p)
        seg.where[i] = list(range(p)) + list(range(start, start + len(t) - p))
    return seg


def fill_rows(segments: list[Segment], max_row_tokens: int) -> list[list[Segment]]:
    """Greedy, in order: a new row when the next segment would pass ``max_row_tokens`` (a longer
    segment gets a row of its own). Attention costs row_length^2, so one very long row for a
    large batch would cost more than the padding it saves."""
    rows: list[list[Segment]] = [[]]
    used = 0
    for seg in segments:
        if rows[-1] and used + len(seg.tokens) > max_row_tokens:
            rows.append([])
            used = 0
        rows[-1].append(seg)
        used += len(seg.tokens)
    return rows


@dataclass
class PackedBatch:
    """Model inputs of a packed forward and, per scored prediction (text i's token j predicting
    its token j+1), where its logits are (``src``, an index into the kept positions), its target,
    its weight and its text."""

    input_ids: torch.Tensor  # (R, T)
    position_ids: torch.Tensor  # (R, T)
    allowed: torch.Tensor  # (R, T, T) bool: query attends key
    keep: torch.Tensor  # (R, T) bool: positions whose logits are needed
    src: torch.Tensor  # (N,)
    targets: torch.Tensor  # (N,)
    weights: torch.Tensor  # (N,)
    text: torch.Tensor  # (N,)


def block_causal(group: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    """(R, T, T) bool, query attends key: an earlier (or the same) position of the same segment,
    on the shared prefix or on the query's own branch; ``group`` and ``branch`` are (R, T)."""
    causal = torch.ones(group.shape[1], group.shape[1], dtype=torch.bool).tril()
    same_group = group[:, :, None] == group[:, None, :]
    visible_branch = (branch[:, None, :] == -1) | (branch[:, :, None] == branch[:, None, :])
    return causal & same_group & visible_branch


def pack(
    id_lists: list[list[int]],
    loss_masks: list[list[int]] | None = None,
    pairs: int = 0,
    max_row_tokens: int = 512,
) -> PackedBatch:
    """The packed layout of ``packed_text_ce`` (CPU tensors); see there for the arguments."""
    n = len(id_lists)
    if not 0 <= 2 * pairs <= n:
        raise ValueError(f"pairs={pairs}: the first 2 x pairs of {n} texts must be the pairs")
    groups = [[i, pairs + i] for i in range(pairs)] + [[i] for i in range(2 * pairs, n)]
    rows = fill_rows([make_segment(id_lists, g) for g in groups], max_row_tokens)
    width = max(1, max(sum(len(s.tokens) for s in row) for row in rows))
    shape = (len(rows), width)
    input_ids = torch.zeros(shape, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    # each padding position is a segment of its own, so it attends to itself only (a query
    # that may attend to nothing gives NaN in softmax) and no text attends to it
    group = torch.arange(width).repeat(len(rows), 1) + len(groups)
    branch = torch.full(shape, -1, dtype=torch.long)
    flat_of: dict[int, list[int]] = {}  # text -> flat index (r * width + t) of each of its tokens
    g = 0
    for r, row in enumerate(rows):
        start = 0
        for seg in row:
            end = start + len(seg.tokens)
            input_ids[r, start:end] = torch.tensor(seg.tokens, dtype=torch.long)
            position_ids[r, start:end] = torch.tensor(seg.positions, dtype=torch.long)
            branch[r, start:end] = torch.tensor(seg.branch, dtype=torch.long)
            group[r, start:end] = g
            for i, local in seg.where.items():
                flat_of[i] = [r * width + start + x for x in local]
            start, g = end, g + 1
    allowed = block_causal(group, branch)

    src, targets, weights, text = [], [], [], []
    for i, ids in enumerate(id_lists):  # token j's position predicts token j + 1
        src += flat_of[i][:-1]
        targets += ids[1:]
        weights += loss_masks[i][1:] if loss_masks is not None else [1] * (len(ids) - 1)
        text += [i] * (len(ids) - 1)
    keep = torch.zeros(len(rows) * width, dtype=torch.bool)
    keep[src] = True
    rank = keep.cumsum(0) - 1  # flat index -> row of the kept (row-major) logits
    return PackedBatch(
        input_ids,
        position_ids,
        allowed,
        keep.view(shape),
        rank[torch.tensor(src, dtype=torch.long)],
        torch.tensor(targets, dtype=torch.long),
        torch.tensor(weights, dtype=torch.float32),
        torch.tensor(text, dtype=torch.long),
    )


def check_window(model, id_lists: list[list[int]]) -> None:
    """A custom 4D mask replaces sliding-window masks too, so packing is exact only while no
    text is longer than the window."""
    window = getattr(model.config, "sliding_window", None)
    longest = max(len(x) for x in id_lists)
    if window and getattr(model.config, "use_sliding_window", True) and longest > window:
        raise ValueError(
            f"a {longest}-token text exceeds the model's sliding window ({window}), which a "
            "packed 4D mask does not apply; use padded_text_ce"
        )


def packed_text_ce(
    model,
    id_lists: list[list[int]],
    loss_masks: list[list[int]] | None = None,
    pairs: int = 0,
    max_row_tokens: int = 512,
) -> torch.Tensor:
    """Per-text mean next-token CE, shape (len(id_lists),): what ``per_text_ce`` gives on a
    padded batch of the same texts, from a packed forward without padding.

    The first ``2 * pairs`` texts are contrast pairs, text i with text ``pairs + i`` (train()'s
    positives-then-negatives order); a pair's common token prefix is computed once. The rest are
    single texts. ``loss_masks`` (one 0/1 list per text, as ``per_text_ce``'s ``loss_mask``)
    restricts each mean to chosen target tokens; a text under 2 tokens gives 0.

    Logits come only for the scored positions, through the model's own ``logits_to_keep``: its
    LM head and anything it applies after it (final logit soft-capping, logit scaling) stay the
    model's, while the vocabulary-wide head (49k on SmolLM2) and its log-softmax skip every
    last token and every position that is not scored."""
    reason = packing_unsupported(model)
    if reason:
        raise ValueError(f"packed_text_ce: {reason}; use padded_text_ce")
    n = len(id_lists)
    device = next(model.parameters()).device
    if not any(id_lists):  # nothing to forward; any token keeps the loss in the graph
        return torch.zeros(n, device=device)
    check_window(model, id_lists)
    b = pack(id_lists, loss_masks, pairs, max_row_tokens)
    dtype = model.get_input_embeddings().weight.dtype
    mask = torch.zeros(b.allowed.shape, dtype=dtype)
    mask = mask.masked_fill(~b.allowed, torch.finfo(dtype).min)[:, None].to(device)
    keep = b.keep.to(device)
    logits = model(
        input_ids=b.input_ids.to(device),
        attention_mask=mask,
        position_ids=b.position_ids.to(device),
        logits_to_keep=keep,
        use_cache=False,
    ).logits
    if logits.dim() == 3:  # a model that ignores a boolean logits_to_keep: full logits
        logits = logits[keep]
    logits = logits.float()  # as token_ce (and HF's loss): log-softmax in fp32
    src, targets = b.src.to(device), b.targets.to(device)
    tok_ce = torch.logsumexp(logits, -1)[src] - logits[src, targets]
    w, text = b.weights.to(device), b.text.to(device)
    total = torch.zeros(n, device=device).index_add(0, text, tok_ce * w)
    return total / torch.zeros(n, device=device).index_add(0, text, w).clamp(min=1.0)
