"""Embeddings of an updated model, cached text by text: ``<cache_dir>/updates/<key>.npz``.

A run embeds only its test split and anchor texts with each updated model; the split depends
on the seed, so the cache holds rows by text digest and a later run embeds only the texts it
has not seen. Each entry also keeps what the update reported (its weight error), so a run served
from the cache reports the same numbers. Writes are atomic; an entry that does not load is
logged, removed and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from driftbench.fileio import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class UpdateStore:
    def __init__(self, cache_dir: Path):
        self.root = Path(cache_dir) / "updates"

    def _load(self, key: str) -> tuple[dict[str, np.ndarray], dict]:
        p = self.root / f"{key}.npz"
        if not p.exists():
            return {}, {}
        try:
            with np.load(p, allow_pickle=False) as f:
                digests, rows = f["digests"].tolist(), f["rows"]
                info = json.loads(str(f["info"]))
            if rows.shape[0] != len(digests) or not np.isfinite(rows).all():
                raise ValueError("rows and digests disagree or hold NaN")
        except (OSError, ValueError, KeyError, EOFError) as e:
            log.warning("update cache entry %s is bad (%s): removed, recomputing", p, e)
            p.unlink(missing_ok=True)
            return {}, {}
        return dict(zip(digests, rows, strict=True)), info

    def get(
        self,
        key: str,
        texts: list[str],
        compute: Callable[[list[str]], tuple[np.ndarray, dict]],
        parts: dict,
    ) -> tuple[np.ndarray, dict, int]:
        """(rows for ``texts``, the update's info, how many texts were embedded now).
        ``compute(missing texts) -> (rows, info)`` runs only for texts not yet cached."""
        have, info = self._load(key)
        digests = [text_digest(t) for t in texts]
        missing = list(dict.fromkeys(d for d in digests if d not in have))
        if missing:
            first = {d: t for d, t in zip(digests, texts, strict=True)}
            rows, new_info = compute([first[d] for d in missing])
            have.update(zip(missing, rows, strict=True))
            info = {**info, **new_info}
            names = np.array(list(have))
            stacked = np.stack(list(have.values())).astype(np.float32)

            def write(f):
                np.savez(f, digests=names, rows=stacked, info=np.array(json.dumps(info)))

            atomic_write_bytes(self.root / f"{key}.npz", write)
            atomic_write_json(self.root / f"{key}.json", parts)
        return np.stack([have[d] for d in digests]), info, len(missing)
