"""The audit's model calls, on any backend: batched teacher-forced scoring and greedy generation.

rho-eval scores one text per forward pass. Here all texts of a call are tokenised once, sorted
by length and batched; one forward per batch gives every text's per-token cross-entropy. The
model's backend, which the caller hands in (a run's ``LoadedModel.backend``; the method imports
no backend), computes a batch and says how it wants texts batched: right-padded length buckets
of at most ``batch_tokens`` padded tokens (under right padding and a causal mask, each text's
real-token logits equal its unpadded forward up to float rounding, ~1e-6), or, for a plain Llama
causal LM on torch, chunks of ``batch_tokens`` real tokens through the padding-free forward of
``driftbench.packed``. Either way the per-text numbers equal rho-eval's:

* ``mean_ce`` / ``mean_logprob``: rho-eval's ``get_mean_logprob`` = ``-model(ids,
  labels=ids).loss``: tokenised with the tokenizer's own special tokens, truncated to
  ``SCORE_MAX_LENGTH`` (256) tokens, mean over the T-1 next-token predictions (the first token is
  context only, never scored). A text of fewer than 2 tokens has no prediction: HF's loss is NaN
  and rho-eval returns 0.0 (``mean_logprob`` does the same; ``mean_ce`` keeps the NaN).
* ``mean_token_prob``: the cartography engine's ``mean_top1_prob`` (factual rho): the mean over
  the same T-1 positions of softmax(logits)[next token] -- the probability of the *actual* next
  token, despite its name -- on the untruncated text.

The rho-guided SFT loss computes the same per-text CE, differentiably (on torch
``driftbench.backends.torch_loss``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from driftbench.batching import bucket_batches, token_chunks
from driftbench.rho.encoding import SCORE_MAX_LENGTH, encode


class ModelCompute(Protocol):
    """What the audit asks of a model's backend; ``driftbench.backends.base.Backend`` is one."""

    def ce_forward(self, model, packed: bool): ...

    def generate(
        self,
        model,
        tokenizer,
        prompts: list[str],
        max_new_tokens: int,
        batch_tokens: int,
        max_batch: int,
        progress: bool,
        desc: str,
    ) -> list[str]: ...


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


def score_texts(
    model,
    tokenizer,
    texts: list[str],
    max_length: int | None = SCORE_MAX_LENGTH,
    *,
    backend: ModelCompute,
    batch_tokens: int,
    progress: bool = False,
    desc: str = "scoring",
    packed: bool = True,
) -> TextScores:
    """Teacher-forced per-token CE for every text, one forward per length-sorted batch.

    ``backend`` (the model's) computes the forwards. Duplicate texts are scored once.
    ``batch_tokens`` bounds the tokens per forward (the fp32 logits take ``batch_tokens x vocab
    x 4`` bytes, ~0.8 GB at 4096 for a 49k vocab). ``packed=False`` keeps the model's own
    forward where the packed one would apply."""
    from tqdm.auto import tqdm

    if batch_tokens < 1:
        raise ValueError(f"batch_tokens={batch_tokens}; accepted: an integer >= 1")
    forward = backend.ce_forward(model, packed)
    chunk = token_chunks if forward.padding_free else bucket_batches
    t0 = time.perf_counter()
    unique = list(dict.fromkeys(texts))
    ids = encode(tokenizer, unique, max_length)
    lengths = [len(x) for x in ids]
    scored = [i for i, n in enumerate(lengths) if n >= 2]
    per_unique: list[np.ndarray] = [np.zeros(0, dtype=np.float32) for _ in unique]
    stats = ScoreStats(n_texts=len(texts), n_unique=len(unique), real_tokens=int(sum(lengths)))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    bar = tqdm(total=len(scored), desc=desc, disable=not progress, leave=False)
    for batch in chunk([lengths[i] for i in scored], batch_tokens):
        rows = [scored[j] for j in batch]
        ce = forward.run([ids[i] for i in rows], pad_id)
        stats.padded_tokens += (
            sum(lengths[i] for i in rows) if forward.padding_free else int(ce.size)
        )
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


def greedy_generate(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    batch_tokens: int,
    max_batch: int = 32,
    progress: bool = False,
    desc: str = "generating",
    *,
    backend: ModelCompute,
) -> list[str]:
    """Greedy completions of every prompt, as rho-eval's ``generate`` (prompt truncated to 512
    tokens, ``do_sample=False``, stop at eos, decoded without special tokens), computed by
    ``backend``, the model's: on torch many prompts per batch
    (``driftbench.backends.torch_generate``), on mlx one at a time. ``batch_tokens`` and
    ``max_batch`` bound the batches where the backend batches."""
    return backend.generate(
        model, tokenizer, prompts, max_new_tokens, batch_tokens, max_batch, progress, desc
    )
