"""The sha256 digests that name every cache entry and every run: of a JSON-able dict, of a file
or a set of files, of a list of texts, of numpy arrays. Each is written once, here: the caches on
disk are keyed by them, so two copies that drifted apart would split one cache in two."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np


def json_sha256(obj) -> str:
    """sha256 of ``obj`` as JSON with sorted keys: equal dicts, equal digests, whatever the
    order they were built in."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def cache_key(parts: dict) -> str:
    """A cache entry's name: the first 32 hex digits of ``json_sha256(parts)``."""
    return json_sha256(parts)[:32]


def dtype_key(dtype: str) -> dict:
    """What a result or cache key adds for the dtype a model computes in (``runtime.dtype``,
    resolved): nothing for float32, the only dtype before there was a choice, so every key made
    then stays valid; ``{"dtype": dtype}`` for any other."""
    return {} if dtype == "float32" else {"dtype": dtype}


def file_sha256(path: Path, _cache: dict = {}) -> str:  # noqa: B006 - process-wide memo
    """sha256 of a file, memoised on (path, size, mtime) so repeated lookups are free."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _cache[key] = h.hexdigest()
    return _cache[key]


def files_sha256(paths: list[Path]) -> str:
    """One digest over several files' names and bytes (order-free)."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode() + file_sha256(p).encode())
    return h.hexdigest()


def texts_sha256(texts: list[str]) -> str:
    """One digest over a list of texts, in order (each text hashed first, so no two lists
    that join to the same string collide)."""
    h = hashlib.sha256()
    for t in texts:
        h.update(hashlib.sha256(t.encode()).digest())
    return h.hexdigest()


def arrays_sha256(*arrays: np.ndarray) -> str:
    """sha256 over each array's dtype, shape and bytes."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()
