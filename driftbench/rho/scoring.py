"""Batched teacher-forced scoring and greedy generation for the rho audit (and the rho loss).

rho-eval scores one text per forward pass. Here all texts of a call are tokenised once, sorted
by length and packed into right-padded batches of at most ``batch_tokens`` padded tokens; one
forward per batch gives every text's per-token cross-entropy, masked by the attention mask.
Under right padding and a causal mask, each text's real-token logits equal its unpadded
forward up to float rounding (~1e-6). A plain Llama causal LM takes the padding-free forward of
``driftbench.packed`` instead (chunks of ``batch_tokens`` real tokens, no padding at all). Either
way the per-text numbers equal rho-eval's:

* ``mean_ce`` / ``mean_logprob``: rho-eval's ``get_mean_logprob`` = ``-model(ids,
  labels=ids).loss``: tokenised with the tokenizer's own special tokens, truncated to 256
  tokens, mean over the T-1 next-token predictions (the first token is context only, never
  scored). A text of fewer than 2 tokens has no prediction: HF's loss is NaN and rho-eval
  returns 0.0 (``mean_logprob`` does the same; ``mean_ce`` keeps the NaN).
* ``mean_token_prob``: the cartography engine's ``mean_top1_prob`` (factual rho): the mean over
  the same T-1 positions of softmax(logits)[next token] -- the probability of the *actual* next
  token, despite its name -- on the untruncated text.

:func:`token_ce` is the differentiable core (no ``no_grad``), so the rho-guided SFT loss
computes the same per-text CE as the audit, batched.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from driftbench.backends import is_mlx
from driftbench.embed import bucket_batches, pad_batch, token_chunks

log = logging.getLogger(__name__)

AUDIT_MAX_LENGTH = 256  # rho-eval get_mean_logprob / differentiable_ce_loss truncation
GENERATE_MAX_PROMPT = 512  # rho-eval generate() prompt truncation


def encode(tokenizer, texts: list[str], max_length: int | None) -> list[list[int]]:
    """Token ids exactly as rho-eval's one-text calls produce them (special tokens included;
    right truncation at ``max_length``; ``None`` = no truncation, as the cartography engine)."""
    if not texts:
        return []
    if max_length is None:
        return tokenizer(list(texts))["input_ids"]
    return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]


def token_ce(logits, input_ids, attention_mask):
    """(B, T) CE of each next token, computed as HF's causal-LM loss does it (fp32 logits,
    labels shifted left); position t scores token t+1, and positions whose target is padding
    (or past the end) are 0. Differentiable."""
    import torch
    import torch.nn.functional as F

    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels = F.pad(labels, (0, 1), value=-100)[:, 1:]
    ce = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=-100,
        reduction="none",
    )
    return ce.view(labels.shape) * (labels != -100).to(torch.float32)


@dataclass
class ScoreStats:
    n_texts: int = 0
    n_unique: int = 0
    n_forward_batches: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    wall_s: float = 0.0


@dataclass
class TextScores:
    """Per-text teacher-forced scores; ``token_ce[i]`` holds text i's T_i - 1 next-token CEs."""

    token_ce: list[np.ndarray]
    n_tokens: np.ndarray
    stats: ScoreStats = field(default_factory=ScoreStats)

    @property
    def mean_ce(self) -> np.ndarray:
        """Mean next-token CE (NaN under 2 tokens)."""
        return np.array([c.mean(dtype=np.float64) if c.size else np.nan for c in self.token_ce])

    @property
    def mean_logprob(self) -> np.ndarray:
        """rho-eval's ``get_mean_logprob``: -mean CE, 0.0 where that is not finite."""
        lp = -self.mean_ce
        return np.where(np.isfinite(lp), lp, 0.0)

    @property
    def mean_token_prob(self) -> np.ndarray:
        """Cartography ``mean_top1_prob``: mean of exp(-CE) per text (NaN under 2 tokens)."""
        return np.array(
            [np.exp(-c.astype(np.float64)).mean() if c.size else np.nan for c in self.token_ce]
        )

    def prefix(self, max_tokens: int) -> TextScores:
        """Scores as if each text had been truncated to ``max_tokens`` tokens: under a causal
        mask the first k predictions do not see later tokens."""
        return TextScores(
            [c[: max(max_tokens - 1, 0)] for c in self.token_ce],
            np.minimum(self.n_tokens, max_tokens),
            self.stats,
        )


def model_device(model):
    return next(model.parameters()).device


def batch_token_ce(model, rows: list[list[int]], pad_id: int) -> np.ndarray:
    """One right-padded forward of token id lists -> (len(rows), T) next-token CE array."""
    input_ids, mask = pad_batch(rows, pad_id)
    device = model_device(model)
    input_ids, mask = input_ids.to(device), mask.to(device)
    logits = model(input_ids=input_ids, attention_mask=mask).logits
    return token_ce(logits, input_ids, mask).cpu().numpy()


def packed_scorer(model):
    """:func:`batch_token_ce` through the padding-free forward, for a plain Llama causal LM on
    torch (None for any other model: it keeps its own forward)."""
    import torch
    import torch.nn.functional as F

    from driftbench.packed import PackedLlama, unsupported

    base, head = getattr(model, "model", None), getattr(model, "lm_head", None)
    if type(model).__name__ != "LlamaForCausalLM" or type(head) is not torch.nn.Linear:
        return None
    if base is None or unsupported(base) is not None:
        return None
    packed = PackedLlama(base)

    def score(_model, rows: list[list[int]], _pad_id: int) -> np.ndarray:
        logits = head(packed.hidden(rows)).float()
        device = logits.device
        targets = torch.tensor([t for r in rows for t in r[1:] + [-100]], device=device)
        ce = F.cross_entropy(logits, targets, ignore_index=-100, reduction="none").cpu().numpy()
        out = np.zeros((len(rows), len(rows[0])), dtype=np.float32)
        start = 0
        for r, row in enumerate(rows):  # position t scores token t+1, as token_ce
            out[r, : len(row)] = ce[start : start + len(row)]
            start += len(row)
        return out

    return score


def score_texts(
    model,
    tokenizer,
    texts: list[str],
    max_length: int | None = AUDIT_MAX_LENGTH,
    batch_tokens: int = 4096,
    progress: bool = False,
    desc: str = "scoring",
    packed: bool = True,
) -> TextScores:
    """Teacher-forced per-token CE for every text, one forward per length-sorted batch.

    Duplicate texts are scored once. ``batch_tokens`` bounds the tokens per forward (the fp32
    logits take ``batch_tokens x vocab x 4`` bytes, ~0.8 GB at 4096 for a 49k vocab).
    ``packed=False`` keeps the model's own forward where the packed one would apply."""
    import torch
    from tqdm.auto import tqdm

    if batch_tokens < 1:
        raise ValueError(f"batch_tokens={batch_tokens}; accepted: an integer >= 1")
    forward, scorer = batch_token_ce, None
    if is_mlx(model):
        from driftbench.backends import mlx_model

        forward = mlx_model.batch_token_ce
    elif packed:
        scorer = packed_scorer(model)
        forward = scorer or forward
    chunk = token_chunks if scorer else bucket_batches
    t0 = time.perf_counter()
    unique = list(dict.fromkeys(texts))
    ids = encode(tokenizer, unique, max_length)
    lengths = [len(x) for x in ids]
    scored = [i for i, n in enumerate(lengths) if n >= 2]
    per_unique: list[np.ndarray] = [np.zeros(0, dtype=np.float32) for _ in unique]
    stats = ScoreStats(n_texts=len(texts), n_unique=len(unique), real_tokens=int(sum(lengths)))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    bar = tqdm(total=len(scored), desc=desc, disable=not progress, leave=False)
    with torch.inference_mode():
        for batch in chunk([lengths[i] for i in scored], batch_tokens):
            rows = [scored[j] for j in batch]
            ce = forward(model, [ids[i] for i in rows], pad_id)
            stats.padded_tokens += sum(lengths[i] for i in rows) if scorer else int(ce.size)
            for r, i in enumerate(rows):
                per_unique[i] = ce[r, : lengths[i] - 1].copy()
            stats.n_forward_batches += 1
            bar.update(len(rows))
    bar.close()
    where = {t: i for i, t in enumerate(unique)}
    token_ces = [per_unique[where[t]] for t in texts]
    n_tokens = np.array([lengths[where[t]] for t in texts], dtype=np.int64)
    stats.wall_s = time.perf_counter() - t0
    return TextScores(token_ces, n_tokens, stats)


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
    """Left-pad token id lists so every prompt ends at the last column (generation)."""
    import torch

    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for r, x in enumerate(ids):
        input_ids[r, width - len(x) :] = torch.tensor(x, dtype=torch.long)
        mask[r, width - len(x) :] = 1
    return input_ids, mask


def completion_text(tokenizer, prompt_ids: list[int], new_ids: list[int], stop: set[int]) -> str:
    """rho-eval's decode: the new tokens up to and including the first stop token are appended
    to the prompt, the whole is decoded without special tokens, and the decoded prompt's
    length is cut off the front (so merges across the boundary behave as in rho-eval)."""
    kept = []
    for t in new_ids:
        kept.append(t)
        if t in stop:
            break
    full = tokenizer.decode(prompt_ids + kept, skip_special_tokens=True)
    prompt = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    return full[len(prompt) :].strip()


# Generation-config fields that change greedy decoding (neutral values listed). With any of them
# active, ``model.generate`` decodes one prompt at a time, exactly as rho-eval does (slow, same
# results; in a padded batch some of them, e.g. no_repeat_ngram_size, would also see the pads).
GREEDY_NEUTRAL: dict[str, tuple] = {
    "num_beams": (None, 1),
    "penalty_alpha": (None,),
    "guidance_scale": (None, 1, 1.0),
    "sequence_bias": (None,),
    "encoder_repetition_penalty": (None, 1, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "forced_decoder_ids": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "exponential_decay_length_penalty": (None,),
    "stop_strings": (None,),
    "max_time": (None,),
    "watermarking_config": (None,),
    "prompt_lookup_num_tokens": (None,),
    "dola_layers": (None,),
}


def hf_only_fields(model) -> list[str]:
    """Active generation-config fields our greedy loop does not implement."""
    gc = model.generation_config
    return [k for k, ok in GREEDY_NEUTRAL.items() if getattr(gc, k, None) not in ok]


def repetition_penalty(model) -> float | None:
    value = getattr(model.generation_config, "repetition_penalty", None)
    return None if value in (None, 1, 1.0) else float(value)


def accepts_logits_to_keep(model) -> bool:
    """``generate`` computes only the last position's logits in the prefill when it can."""
    import inspect

    return "logits_to_keep" in inspect.signature(model.forward).parameters


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
    return Prefilled(rows, out.logits[:, -1], out.past_key_values, input_ids, mask)


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

    penalty = repetition_penalty(model)
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
            past_key_values=cache,
            use_cache=True,
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


def greedy_generate(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    batch_tokens: int = 4096,
    max_batch: int = 32,
    progress: bool = False,
    desc: str = "generating",
) -> list[str]:
    """Greedy completions of every prompt, as rho-eval's ``generate`` (prompt truncated to 512
    tokens, ``do_sample=False``, stop at eos, decode without special tokens), but many prompts
    per batch: the prompt forwards run in length buckets (right-sized, little padding), their
    caches are merged into one decode batch of up to ``max_batch`` rows, and a finished row
    leaves it. Deterministic: the batching depends only on the prompts' token lengths."""
    import torch
    from tqdm.auto import tqdm

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens}; accepted: an integer >= 1")
    if max_batch < 1:
        raise ValueError(f"max_batch={max_batch}; accepted: an integer >= 1")
    if is_mlx(model):
        from driftbench.backends import mlx_model

        return mlx_model.greedy_generate(model, tokenizer, prompts, max_new_tokens, progress, desc)
    ids = encode(tokenizer, prompts, GENERATE_MAX_PROMPT)
    empty = [i for i, x in enumerate(ids) if not x]
    if empty:
        raise ValueError(f"prompt {empty[0]} tokenises to nothing; generation needs a prompt")
    pad_id, stop, device = generation_pad_id(tokenizer), eos_ids(model), model_device(model)
    if pad_id is None:
        raise ValueError(
            "the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token"
        )
    hf_fields = hf_only_fields(model)
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
