"""Which token-id lists go through one forward, and their padding: numpy only.

Every backend batches texts the same way, so the backends see the same batches. A padded
forward takes length buckets (:func:`bucket_batches`) of right-padded rows (:func:`pad_batch`);
a padding-free one (``driftbench.packed``) takes chunks of real tokens (:func:`token_chunks`).
"""

from __future__ import annotations

import numpy as np


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


def pad_batch(ids: list[list[int]], pad_id: int, left: bool = False):
    """Token id lists padded into ``(input_ids, attention_mask)``, two (rows, width) int64
    arrays: on the right (scoring, embeddings), or on the left (``left=True``: generation,
    where every prompt must end at the last column)."""
    width = max(len(x) for x in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for r, x in enumerate(ids):
        cols = slice(width - len(x), width) if left else slice(0, len(x))
        input_ids[r, cols] = x
        mask[r, cols] = 1
    return input_ids, mask
