"""Greedy generation on torch, many prompts at once, with the tokens rho-eval's ``generate``
gives one prompt at a time (``do_sample=False``, prompt truncated to 512 tokens, stop at eos,
decoded without special tokens).

The prompt forwards run in length buckets (right-sized, little padding), their KV caches are
merged into one left-padded decode batch of up to ``max_batch`` rows, and a row that finishes
leaves the batch. Each decode step is what ``model.generate`` does for greedy search (fp32
last-position logits, the repetition penalty where the model's generation config sets one,
argmax); a model whose generation config sets anything else that changes greedy decoding is
handed to ``model.generate`` itself, one prompt at a time. The torch backend's ``generate``
(``torch_backend.TorchBackend.generate``); ``driftbench.rho.scoring.greedy_generate`` calls the
backend it is handed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from driftbench.batching import bucket_batches, pad_batch
from driftbench.rho.encoding import (
    GENERATE_MAX_PROMPT,
    completion_text,
    encode,
    non_neutral_fields,
    repetition_penalty,
)

log = logging.getLogger(__name__)


def model_device(model):
    return next(model.parameters()).device


def generation_pad_id(tokenizer) -> int:
    """rho-eval passes ``pad_token_id or eos_token_id`` to ``generate`` (so a pad id of 0 also
    falls back to eos); we do the same."""
    return tokenizer.pad_token_id or tokenizer.eos_token_id


def eos_ids(model) -> set[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        return set()
    return {int(eos)} if isinstance(eos, int) else {int(e) for e in eos}


def left_pad(ids: list[list[int]], pad_id: int):
    """Left-pad token id lists so every prompt ends at the last column: (input_ids, mask)
    long tensors."""
    import torch

    return tuple(torch.from_numpy(a) for a in pad_batch(ids, pad_id, left=True))


def forward_parameters(model):
    """The parameters of the model's own forward (a peft wrapper's forward takes ``**kwargs``
    and passes them on to it)."""
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inspect.signature(inner.forward).parameters


def accepts_logits_to_keep(model) -> bool:
    """``generate`` computes only the last position's logits in the prefill when it can."""
    return "logits_to_keep" in forward_parameters(model)


def cache_keyword(model) -> str:
    """The keyword a forward takes its KV cache by: ``cache`` in transformers 5 (which deprecates
    ``past_key_values`` and drops it in 5.40), ``past_key_values`` in 4.x."""
    return "cache" if "cache" in forward_parameters(model) else "past_key_values"


def returned_cache(out):
    """The KV cache a forward returned: ``out.cache`` in transformers 5, ``past_key_values``
    in 4.x (reading that name in 5 warns that it is deprecated)."""
    return out["cache"] if "cache" in out else out.past_key_values


@dataclass
class Prefilled:
    """A left-padded batch after its prompt forward: the last position's logits, the KV cache,
    and the token ids and mask it was computed from (``rows`` index the caller's prompts)."""

    rows: list[int]
    logits: object  # (B, vocab)
    cache: object
    input_ids: object  # (B, T)
    mask: object  # (B, T)


def prefill(model, rows: list[int], input_ids, mask) -> Prefilled:
    """The prompt forward of ``generate``: position ids from the left-padded mask, last-position
    logits only (``logits_to_keep=1``) where the model takes it."""
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    keep_last = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
    out = model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=position_ids,
        use_cache=True,
        **keep_last,
    )
    return Prefilled(rows, out.logits[:, -1], returned_cache(out), input_ids, mask)


def mergeable(cache) -> bool:
    """Only a plain full-attention ``DynamicCache`` is merged; sliding-window, quantised or
    static caches decode per prefill batch."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    return type(cache) is DynamicCache and all(
        type(layer) is DynamicLayer for layer in cache.layers
    )


def merge_prefilled(parts: list[Prefilled], pad_id: int) -> Prefilled:
    """One decode batch from several prefill batches: every cache, mask and id tensor is
    left-padded to the widest prompt (zero keys/values under a zero mask, so attention never
    sees them) and stacked. Rotary positions were applied in each prefill from its own mask,
    so they stay those of the unpadded prompt."""
    import torch
    import torch.nn.functional as F
    from transformers.cache_utils import DynamicCache

    if len(parts) == 1:
        return parts[0]
    width = max(p.mask.shape[1] for p in parts)

    def left(t, value=0):
        return F.pad(t, (width - t.shape[-1], 0), value=value)

    layers = []
    for i in range(len(parts[0].cache.layers)):
        keys = [p.cache.layers[i].keys for p in parts]
        values = [p.cache.layers[i].values for p in parts]
        # (B, heads, T, head_dim): pad the time axis
        keys = torch.cat([F.pad(k, (0, 0, width - k.shape[2], 0)) for k in keys])
        values = torch.cat([F.pad(v, (0, 0, width - v.shape[2], 0)) for v in values])
        layers.append((keys, values))
    return Prefilled(
        rows=[r for p in parts for r in p.rows],
        logits=torch.cat([p.logits for p in parts]),
        cache=DynamicCache(layers),
        input_ids=torch.cat([left(p.input_ids, pad_id) for p in parts]),
        mask=torch.cat([left(p.mask) for p in parts]),
    )


def greedy_decode(model, batch: Prefilled, max_new_tokens: int, stop: set[int]) -> list[list[int]]:
    """HF's greedy search from a prefilled left-padded batch, except that a row that emits a
    stop token leaves the batch (its cache rows are dropped), so short answers do not pay for
    long ones. Each step is what ``generate`` does: fp32 last-position logits, optional
    repetition penalty (pads ignored), argmax. New tokens per row of ``batch``."""
    import torch
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    penalty = repetition_penalty(model.generation_config)
    cache_kw = cache_keyword(model)
    cache, seqs, mask, logits = batch.cache, batch.input_ids, batch.mask, batch.logits
    pad_len = (mask == 0).sum(dim=1)
    rows = torch.arange(seqs.shape[0])
    new: list[list[int]] = [[] for _ in range(seqs.shape[0])]
    stop_t = torch.tensor(sorted(stop), dtype=torch.long, device=seqs.device)
    for step in range(max_new_tokens):
        scores = logits.to(dtype=torch.float32, copy=True)
        if penalty is not None:
            scores = RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=pad_len)(
                seqs, scores
            )
        nxt = scores.argmax(dim=-1)
        for r, t in zip(rows.tolist(), nxt.tolist(), strict=True):
            new[r].append(t)
        if step == max_new_tokens - 1:
            break
        keep = ~torch.isin(nxt, stop_t)
        if not bool(keep.any()):
            break
        if not bool(keep.all()):
            idx = keep.nonzero().squeeze(1)
            cache.batch_select_indices(idx)
            rows, nxt, mask = rows[idx.cpu()], nxt[idx], mask[idx]
            seqs, pad_len = seqs[idx], pad_len[idx]
        seqs = torch.cat([seqs, nxt[:, None]], dim=1)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        logits = model(
            input_ids=nxt[:, None],
            attention_mask=mask,
            position_ids=mask.sum(dim=1, keepdim=True) - 1,
            use_cache=True,
            **{cache_kw: cache},
        ).logits[:, -1]
    return new


def hf_generate_batch(model, input_ids, mask, max_new_tokens: int, pad_id: int):
    """``model.generate`` on a batch (here always one unpadded prompt), new tokens only."""
    gen = model.generate(
        input_ids=input_ids,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=pad_id,
    )
    return gen[:, input_ids.shape[1] :].cpu().tolist()


def decode_groups(lengths: list[int], batch_tokens: int, max_batch: int) -> list[list[list[int]]]:
    """Decode groups of at most ``max_batch`` prompts (longest first), each split into prefill
    batches by length (``bucket_batches``). A decode step reads every weight once whatever the
    number of rows (on a CPU a 135M model's step costs about the same for 1 row as for 30), so
    decoding wants many rows; the prompt forward is compute-bound and wants little padding.
    Deterministic: depends only on the lengths."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups = []
    for k in range(0, len(order), max_batch):
        chunk = order[k : k + max_batch]
        buckets = bucket_batches([lengths[i] for i in chunk], batch_tokens)
        groups.append([[chunk[j] for j in b] for b in buckets])
    return groups


def generate(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    batch_tokens: int,
    max_batch: int = 32,
    progress: bool = False,
    desc: str = "generating",
) -> list[str]:
    """Greedy completions of every prompt, many per batch (see the module docstring).
    Deterministic: the batching depends only on the prompts' token lengths."""
    import torch
    from tqdm.auto import tqdm

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens}; accepted: an integer >= 1")
    if max_batch < 1:
        raise ValueError(f"max_batch={max_batch}; accepted: an integer >= 1")
    ids = encode(tokenizer, prompts, GENERATE_MAX_PROMPT)
    empty = [i for i, x in enumerate(ids) if not x]
    if empty:
        raise ValueError(f"prompt {empty[0]} tokenises to nothing; generation needs a prompt")
    pad_id, stop, device = generation_pad_id(tokenizer), eos_ids(model), model_device(model)
    if pad_id is None:
        raise ValueError(
            "the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token"
        )
    hf_fields = non_neutral_fields(model.generation_config)
    if hf_fields:
        log.warning(
            "generation config sets %s: decoding one prompt at a time", ", ".join(hf_fields)
        )
        groups = [[[i]] for i in range(len(ids))]
    else:
        groups = decode_groups([len(x) for x in ids], batch_tokens, max_batch)
    out: list[str] = [""] * len(prompts)
    bar = tqdm(total=len(prompts), desc=desc, disable=not progress, leave=False)

    def finish(rows: list[int], new: list[list[int]]) -> None:
        for i, tokens in zip(rows, new, strict=True):
            out[i] = completion_text(tokenizer, ids[i], tokens, stop)
        bar.update(len(rows))

    with torch.inference_mode():
        for group in groups:
            parts = []
            for rows in group:
                input_ids, mask = (t.to(device) for t in left_pad([ids[i] for i in rows], pad_id))
                if hf_fields:
                    finish(rows, hf_generate_batch(model, input_ids, mask, max_new_tokens, pad_id))
                else:
                    parts.append(prefill(model, rows, input_ids, mask))
            if parts and all(mergeable(p.cache) for p in parts):
                parts = [merge_prefilled(parts, pad_id)]
            for p in parts:
                finish(p.rows, greedy_decode(model, p, max_new_tokens, stop))
    bar.close()
    return out
