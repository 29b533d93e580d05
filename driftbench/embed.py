"""Embedding extraction (eq. 1-4 of the drift paper) and its on-disk cache.

Texts are tokenised once and sorted by length. Llama-architecture decoders take the padding-free
forward of ``driftbench.packed`` (chunks of at most ``batch_tokens`` real tokens, no padding at
all), run on one single-threaded worker per CPU thread (``driftbench.workers``). Every other
model goes through its Hugging Face forward in batches of at most ``batch_tokens`` padded
tokens, bucketed by length so nearly every FLOP is spent on real tokens; padding is on the right
and pooling reads the attention mask, so a padded text gives the same vector as its unpadded
forward.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from driftbench.backends import is_mlx

POOLINGS = ("last_token", "mean")
CACHE_VERSION = 2

log = logging.getLogger(__name__)


def last_token_pool(hidden, mask):
    """eq. (2) under right padding: the hidden state of the last non-pad token of each row."""
    import torch

    last = mask.sum(dim=1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def mean_pool(hidden, mask):
    """eq. (3): mean of hidden states over the attention mask."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


POOLERS = {"last_token": last_token_pool, "mean": mean_pool}


def bucket_batches(
    lengths: list[int], batch_tokens: int, max_pad_fraction: float = 0.15
) -> list[list[int]]:
    """Indices grouped longest first; a batch closes when one more row would exceed
    ``batch_tokens`` padded tokens or be shorter than ``(1 - max_pad_fraction)`` of the batch's
    longest row. Short texts in one wide batch would spend most FLOPs on padding; tight buckets
    keep padding small while still giving the GEMMs many rows."""
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens={batch_tokens}; accepted: an integer >= 1")
    if not 0.0 <= max_pad_fraction < 1.0:
        raise ValueError(f"max_pad_fraction={max_pad_fraction}; accepted: 0 <= value < 1")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current:
            width = lengths[current[0]]
            full = width * (len(current) + 1) > batch_tokens
            if full or lengths[i] < (1.0 - max_pad_fraction) * width:
                batches.append(current)
                current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def token_chunks(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Indices longest first, cut into chunks of at most ``batch_tokens`` real tokens (a text
    longer than that is a chunk of its own): the packed forward's batches."""
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens={batch_tokens}; accepted: an integer >= 1")
    chunks: list[list[int]] = []
    current, tokens = [], 0
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if current and tokens + lengths[i] > batch_tokens:
            chunks.append(current)
            current, tokens = [], 0
        current.append(i)
        tokens += lengths[i]
    if current:
        chunks.append(current)
    return chunks


def pad_batch(ids: list[list[int]], pad_id: int):
    """Right-pad token id lists into (input_ids, attention_mask) tensors."""
    import torch

    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for r, x in enumerate(ids):
        input_ids[r, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[r, : len(x)] = 1
    return input_ids, mask


@dataclass
class EmbedStats:
    n_texts: int = 0
    n_forward_batches: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    wall_s: float = 0.0
    cache_hit: bool = False
    forward: str = ""  # "packed" (driftbench.packed), "hf" (the model's own) or "mlx"
    workers: int = 1  # forwards run side by side (driftbench.workers)


def tokenize(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, add_special_tokens=True)
    ids = enc["input_ids"]
    empty = [i for i, x in enumerate(ids) if len(x) == 0]
    if empty:
        raise ValueError(f"{len(empty)} texts tokenise to nothing (first: row {empty[0]})")
    return ids


class _EarlyExit(Exception):
    def __init__(self, hidden):
        self.hidden = hidden


def layer_stack(model):
    """The model's list of transformer blocks (decoders: ``layers``; BERT: ``encoder.layer``),
    or None where it has neither."""
    import torch

    for path in ("layers", "encoder.layer"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, torch.nn.ModuleList) and len(obj) == model.config.num_hidden_layers:
            return obj
    return None


def hidden_at(model, input_ids, mask, layer: int):
    """``hidden_states[layer]`` of the model's forward (``-1``: ``last_hidden_state``), without
    running the blocks after that layer: entry k > 0 is block k-1's output (entry 0 the block
    stack's input), so a forward hook there ends the forward. Probing layer 15 of 30 costs half
    a forward. The final entry (after the final norm) needs the whole forward."""
    if layer == -1:
        return model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    n = model.config.num_hidden_layers
    if not -(n + 1) <= layer <= n:
        raise ValueError(f"embed.layer={layer}; accepted for this {n}-layer model: -{n + 1}..{n}")
    index, blocks = layer % (n + 1), layer_stack(model)
    if blocks is None or index == n:
        res = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
        return res.hidden_states[layer]

    def before_first(module, args, kwargs):
        raise _EarlyExit(args[0] if args else kwargs["hidden_states"])

    def after(module, args, output):
        raise _EarlyExit(output[0] if isinstance(output, tuple) else output)

    hook = (
        blocks[0].register_forward_pre_hook(before_first, with_kwargs=True)
        if index == 0
        else blocks[index - 1].register_forward_hook(after)
    )
    try:
        model(input_ids=input_ids, attention_mask=mask)
    except _EarlyExit as stop:
        return stop.hidden
    finally:
        hook.remove()
    raise RuntimeError(f"embed.layer={layer}: the forward never reached block {index}")


def pooled_batch(model, rows: list[list[int]], pad_id: int, pooling: str, layer: int):
    """One right-padded forward of token id lists -> pooled (len(rows), d) float32 array."""
    input_ids, mask = pad_batch(rows, pad_id)
    device = next(model.parameters()).device
    input_ids, mask = input_ids.to(device), mask.to(device)
    hidden = hidden_at(model, input_ids, mask, layer)
    return POOLERS[pooling](hidden, mask).float().cpu().numpy()


def extract_embeddings(
    model,
    tokenizer,
    texts: list[str],
    pooling: str = "last_token",
    max_length: int = 256,
    layer: int = -1,
    batch_tokens: int = 2048,
    progress: bool = True,
    max_pad_fraction: float = 0.15,
    packed: bool = True,
    workers: int | None = None,
) -> tuple[np.ndarray, EmbedStats]:
    """Pooled hidden states (n, d), float32, not yet normalised. ``model`` is the base model
    (no LM head), torch or mlx (``driftbench.backends``). ``layer=-1`` is the final hidden
    state; other values index hidden_states (torch only). ``packed=False`` forces the model's
    own forward where the packed one would apply. ``workers``: packed forwards run side by side
    (default: one per CPU thread, 1 on a GPU); the other forwards always run one at a time."""
    from tqdm.auto import tqdm

    from driftbench.packed import PackedLlama, unsupported
    from driftbench.workers import balanced_limit, cpu_workers, map_on_workers

    if pooling not in POOLERS:
        raise ValueError(f"pooling={pooling!r}; accepted: {', '.join(POOLERS)}")
    t0 = time.perf_counter()
    ids = tokenize(tokenizer, texts, max_length)
    lengths = [len(x) for x in ids]
    n_workers = 1
    if is_mlx(model):
        from driftbench.backends import mlx_model

        forward, kind = mlx_model.pooled_batch, "mlx"
        batches = bucket_batches(lengths, batch_tokens, max_pad_fraction)
    elif packed and unsupported(model) is None:
        packed_model = PackedLlama(model)

        def forward(model, rows, pad_id, pooling, layer):
            return packed_model.pooled(rows, pooling, layer).float().cpu().numpy()

        if workers is None:
            workers = cpu_workers(model.embed_tokens.weight.device)
        if batch_tokens < 1:
            raise ValueError(f"batch_tokens={batch_tokens}; accepted: an integer >= 1")
        if workers < 1:
            raise ValueError(f"workers={workers}; accepted: an integer >= 1")
        limit = balanced_limit(sum(lengths), batch_tokens, workers)
        kind, batches = "packed", token_chunks(lengths, limit)
        n_workers = min(workers, len(batches))
    else:
        forward, kind = pooled_batch, "hf"
        batches = bucket_batches(lengths, batch_tokens, max_pad_fraction)
    out: np.ndarray | None = None
    stats = EmbedStats(
        n_texts=len(texts), real_tokens=int(sum(lengths)), forward=kind, workers=n_workers
    )
    bar = tqdm(total=len(texts), desc="embed", unit="text", disable=not progress)

    def run(batch):
        return forward(model, [ids[i] for i in batch], tokenizer.pad_token_id, pooling, layer)

    for batch, pooled in zip(batches, map_on_workers(run, batches, n_workers), strict=True):
        if out is None:
            out = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
        out[batch] = pooled
        stats.n_forward_batches += 1
        widths = [lengths[i] for i in batch]
        stats.padded_tokens += sum(widths) if kind == "packed" else len(batch) * max(widths)
        bar.update(len(batch))
    bar.close()
    stats.wall_s = time.perf_counter() - t0
    return out, stats


def check_finite(z: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(z).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"{what}: {rows.size} of {len(z)} embeddings contain NaN or inf "
            f"(first: row {rows[0]}); "
            "the model's outputs are not usable (try runtime.device=cpu, or another model)"
        )


def cache_key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def texts_sha256(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(hashlib.sha256(t.encode()).digest())
    return h.hexdigest()


class EmbeddingCache:
    """``<cache_dir>/embeddings/<key>.npy`` with a JSON sidecar naming what the key covers.
    Writes go to a temp file in the same folder and are renamed into place, so a job that dies
    mid-write leaves no corrupt entry and concurrent jobs of a sweep can share the folder."""

    def __init__(self, cache_dir: str | Path):
        self.root = Path(os.path.expanduser(str(cache_dir))) / "embeddings"

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npy"

    def load(self, key: str, n_rows: int) -> np.ndarray | None:
        """The entry, or None when there is none or it cannot be trusted: a file that does not
        load (truncated, overwritten), a shape other than (n_rows, d), or NaN/inf. A bad entry
        is logged in one line and removed, and the caller recomputes it."""
        p = self.path(key)
        if not p.exists():
            return None
        try:
            z = np.load(p, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            problem = f"unreadable: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        else:
            if z.ndim != 2 or z.shape[0] != n_rows or z.shape[1] < 1:
                problem = f"shape {z.shape}, expected ({n_rows}, d)"
            elif not np.isfinite(z).all():
                problem = "non-finite values"
            else:
                return z
        log.warning("embedding cache entry %s is bad (%s): removed, recomputing", p, problem)
        p.unlink(missing_ok=True)
        return None

    def save(self, key: str, z: np.ndarray, parts: dict, stats: EmbedStats) -> None:
        from driftbench.runs import atomic_write_bytes, atomic_write_json

        atomic_write_bytes(self.path(key), lambda f: np.save(f, z))
        atomic_write_json(self.root / f"{key}.json", {"parts": parts, "stats": asdict(stats)})


def cached_embeddings(
    spec,
    texts: list[str],
    pooling: str,
    max_length: int,
    layer: int,
    batch_tokens: int,
    cache_dir: str | Path,
    device: str = "cpu",
    progress: bool = True,
    extra_key: dict | None = None,
    backend: str = "torch",
    packed: bool = True,
) -> tuple[np.ndarray, dict]:
    """Embeddings from the cache, or from the model (loaded only on a miss) and then cached.

    The key covers the model's identity (file hashes or tiny config), the texts themselves,
    pooling, max_length, layer and the forward asked for (``packed``; the backend, when not
    torch): a sweep over drift, sigma, seed or classifier computes the embeddings once."""
    from driftbench.models import load_model, model_identity

    cache_dir = Path(os.path.expanduser(str(cache_dir)))
    identity = model_identity(spec, cache_dir)
    parts = {
        "version": CACHE_VERSION,
        "model": identity,
        "texts_sha256": texts_sha256(texts),
        "n_texts": len(texts),
        "pooling": pooling,
        "max_length": max_length,
        "layer": layer,
        "packed": packed,
        **(extra_key or {}),
        **({"backend": backend} if backend != "torch" else {}),
    }
    key = cache_key(parts)
    cache = EmbeddingCache(cache_dir)
    z = cache.load(key, len(texts))
    if z is not None:
        stats = EmbedStats(n_texts=len(texts), cache_hit=True)
    else:
        loaded = load_model(spec, cache_dir, device=device, head="base", backend=backend)
        z, stats = extract_embeddings(
            loaded.model,
            loaded.tokenizer,
            texts,
            pooling,
            max_length,
            layer,
            batch_tokens,
            progress,
            packed=packed,
        )
        check_finite(z, f"model {spec.name!r}")
        cache.save(key, z, parts, stats)
    return z, {"identity": identity, "cache_key": key, "stats": asdict(stats)}
