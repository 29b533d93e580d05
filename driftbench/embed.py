"""Embedding extraction (eq. 1-4 of the drift paper) and its on-disk cache.

Texts are tokenised once and sorted by length; the model's backend (``driftbench.backends``)
computes each batch. Llama-architecture decoders on torch take the padding-free forward of
``driftbench.packed`` (chunks of at most ``batch_tokens`` real tokens, no padding at all), run
on one single-threaded worker per CPU thread (``driftbench.workers``). Every other forward takes
batches of at most ``batch_tokens`` padded tokens, bucketed by length so nearly every FLOP is
spent on real tokens; padding is on the right and pooling reads the attention mask, so a padded
text gives the same vector as its unpadded forward.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from driftbench.backends import backend_of
from driftbench.batching import bucket_batches, token_chunks
from driftbench.digests import cache_key, dtype_key, texts_sha256

POOLINGS = ("last_token", "mean")
CACHE_VERSION = 2

log = logging.getLogger(__name__)


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


def chunk_tokens(
    batch_tokens: int,
    cuda_batch_tokens: int | None,
    device: str,
    cuda_available: bool | None = None,
) -> int:
    """Tokens per embedding forward on ``device`` (``runtime.device``; ``auto`` resolved by
    ``models.device_kind``, ``cuda_available`` as there), the one place that chooses it:
    ``embed.batch_tokens`` on a CPU, where chunks of 1.5-2k tokens are fastest
    (bench/README.md); ``runtime.cuda_batch_tokens`` on a CUDA device (None: ``embed.
    batch_tokens`` there too), where a 2k-token chunk leaves most of a GPU idle between kernel
    launches and a larger one costs a few hundred MB of activations. Why the CUDA value lives in
    ``runtime``, outside every key: how texts are chunked moves an embedding by rounding alone
    (the embedding cache has never keyed on it), as the device does; a CPU run reads
    ``embed.batch_tokens`` as before, so its result key and numbers stay what they were."""
    from driftbench.models import device_kind

    if cuda_batch_tokens is not None and device_kind(device, cuda_available) == "cuda":
        return cuda_batch_tokens
    return batch_tokens


def extract_embeddings(
    model,
    tokenizer,
    texts: list[str],
    pooling: str = "last_token",
    max_length: int = 256,
    layer: int = -1,
    *,
    batch_tokens: int,
    progress: bool = True,
    max_pad_fraction: float = 0.15,
    packed: bool = True,
    workers: int | None = None,
) -> tuple[np.ndarray, EmbedStats]:
    """Pooled hidden states (n, d), float32, not yet normalised. ``model`` is the base model
    (no LM head) of any backend (``driftbench.backends``). ``layer=-1`` is the final hidden
    state; other values index hidden_states (torch only). ``batch_tokens`` bounds the tokens of
    one forward (a run passes ``embed.batch_tokens``). ``packed=False`` forces the model's
    own forward where the packed one would apply. ``workers``: packed forwards run side by side
    (default: one per CPU thread, 1 on a GPU); the other forwards always run one at a time."""
    from tqdm.auto import tqdm

    from driftbench.workers import balanced_limit, map_on_workers

    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r}; accepted: {', '.join(POOLINGS)}")
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens={batch_tokens}; accepted: an integer >= 1")
    t0 = time.perf_counter()
    ids = tokenize(tokenizer, texts, max_length)
    lengths = [len(x) for x in ids]
    forward = backend_of(model).embed_forward(model, pooling, layer, packed, workers)
    if forward.padding_free:
        batches = token_chunks(lengths, balanced_limit(sum(lengths), batch_tokens, forward.workers))
        n_workers = min(forward.workers, len(batches))
    else:
        batches = bucket_batches(lengths, batch_tokens, max_pad_fraction)
        n_workers = 1
    out: np.ndarray | None = None
    stats = EmbedStats(
        n_texts=len(texts), real_tokens=int(sum(lengths)), forward=forward.kind, workers=n_workers
    )
    bar = tqdm(total=len(texts), desc="embed", unit="text", disable=not progress)

    def run(batch):
        return forward.run([ids[i] for i in batch], tokenizer.pad_token_id)

    for batch, pooled in zip(batches, map_on_workers(run, batches, n_workers), strict=True):
        if out is None:
            out = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
        out[batch] = pooled
        stats.n_forward_batches += 1
        widths = [lengths[i] for i in batch]
        stats.padded_tokens += sum(widths) if forward.padding_free else len(batch) * max(widths)
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
        from driftbench.fileio import atomic_write_bytes, atomic_write_json

        atomic_write_bytes(self.path(key), lambda f: np.save(f, z))
        atomic_write_json(self.root / f"{key}.json", {"parts": parts, "stats": asdict(stats)})


def embedding_parts(
    spec,
    cache_dir: Path,
    pooling: str,
    max_length: int,
    layer: int,
    packed: bool,
    backend: str,
    dtype: str = "float32",
) -> dict:
    """What decides one text's embedding besides the text: the model's identity (file hashes
    or tiny config), pooling, max_length, layer, the forward asked for (``packed``; the
    backend, when not torch) and the dtype the model computes in, when not float32
    (``digests.dtype_key``: float32 entries keep the keys they had before the choice)."""
    from driftbench.backends import get_backend
    from driftbench.models import model_identity

    return {
        "version": CACHE_VERSION,
        "model": model_identity(spec, cache_dir),
        "pooling": pooling,
        "max_length": max_length,
        "layer": layer,
        "packed": packed,
        **get_backend(backend).cache_key,
        **dtype_key(dtype),
        # bfloat16 with packed=True took the Hugging Face forward until the packed forward
        # learned bfloat16: entries made before differ by rounding, so they are not reused
        **({"bf16_packed": 1} if dtype == "bfloat16" and packed else {}),
    }


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
    dtype: str = "float32",
) -> tuple[np.ndarray, dict]:
    """Embeddings from the cache, or from the model (loaded only on a miss, computing in
    ``dtype``) and then cached; float32 arrays whatever the model's dtype.

    The key covers the model's identity (file hashes or tiny config), the texts themselves,
    pooling, max_length, layer, the forward asked for (``packed``; the backend, when not
    torch) and the dtype when not float32: a sweep over drift, sigma, seed or classifier
    computes the embeddings once."""
    from driftbench.backends import load_model

    cache_dir = Path(os.path.expanduser(str(cache_dir)))
    parts = {
        **embedding_parts(spec, cache_dir, pooling, max_length, layer, packed, backend, dtype),
        "texts_sha256": texts_sha256(texts),
        "n_texts": len(texts),
        **(extra_key or {}),
    }
    identity = parts["model"]
    key = cache_key(parts)
    cache = EmbeddingCache(cache_dir)
    z = cache.load(key, len(texts))
    if z is not None:
        stats = EmbedStats(n_texts=len(texts), cache_hit=True)
    else:
        loaded = load_model(
            spec, cache_dir, device=device, head="base", backend=backend, dtype=dtype
        )
        z, stats = extract_embeddings(
            loaded.model,
            loaded.tokenizer,
            texts,
            pooling,
            max_length,
            layer,
            batch_tokens=batch_tokens,
            progress=progress,
            packed=packed,
        )
        check_finite(z, f"model {spec.name!r}")
        cache.save(key, z, parts, stats)
    return z, {"identity": identity, "cache_key": key, "stats": asdict(stats)}
