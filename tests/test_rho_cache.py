"""The untouched model's audit and stress test are computed once per sweep: a run with another
condition or seed loads them from the cache with the same numbers, a changed setting misses, a
bad entry is logged, removed and recomputed."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from test_rho_task import TINY_RHO

from driftbench.digests import cache_key
from driftbench.launcher import run
from driftbench.rho.audit_cache import BeforeCache, audit_parts, cached
from driftbench.rho.probes import installed_digest, load_probes


def new_run_dir(outputs: Path, seen: set) -> Path:
    """The one run dir under ``outputs`` not in ``seen`` (then added to it)."""
    (d,) = {m.parent for m in outputs.glob("runs/*/meta.json")} - seen
    seen.add(d)
    return d


def without_wall(audit: dict) -> dict:
    return {b: {k: v for k, v in r.items() if k != "wall_s"} for b, r in audit.items()}


def test_a_sweep_audits_the_untouched_model_once(make_cfg, tmp_path, caplog):
    cache = tmp_path / "cache"
    outputs = tmp_path / "outputs"
    first = run(make_cfg(*TINY_RHO, "sft/condition=baseline", cache_dir=cache))
    assert not first["before_cache"]["rho_audit"]["hit"]
    assert not first["before_cache"]["rho_stress"]["hit"]
    seen: set = set()
    fresh = new_run_dir(outputs, seen)

    with caplog.at_level(logging.INFO, logger="driftbench.rho.audit_cache"):
        second = run(make_cfg(*TINY_RHO, "sft/condition=sft_only", "seed=7", cache_dir=cache))
    said = [r.getMessage() for r in caplog.records]
    assert any("rho_audit before training: loaded from the cache" in s for s in said)
    assert (
        second["before_cache"]["rho_audit"]["hit"] and second["before_cache"]["rho_stress"]["hit"]
    )
    assert second["before_cache"]["rho_audit"]["key"] == first["before_cache"]["rho_audit"]["key"]
    reused = new_run_dir(outputs, seen)
    for name in ("audit_before.json", "stress_before.json"):  # byte for byte the fresh run's
        assert (reused / name).read_text() == (fresh / name).read_text()
    assert second["behaviors"].keys() == first["behaviors"].keys()
    for b, row in second["behaviors"].items():
        assert row["rho_before"] == first["behaviors"][b]["rho_before"] or (
            row["rho_before"] != row["rho_before"]  # NaN stays NaN
        )

    # another probe subset: the audit misses, the stress test (which does not read it) hits
    third = run(make_cfg(*TINY_RHO, "sft/condition=baseline", "task.n_probes=5", cache_dir=cache))
    assert not third["before_cache"]["rho_audit"]["hit"]
    assert third["before_cache"]["rho_stress"]["hit"]
    assert len(list((cache / "rho_audit").glob("*.json"))) == 2

    # a truncated entry: one warning, recomputed with the same numbers, healed on disk
    entry = Path(first["before_cache"]["rho_audit"]["path"])
    entry.write_text(entry.read_text()[:100])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        fourth = run(make_cfg(*TINY_RHO, "sft/condition=baseline", "seed=3", cache_dir=cache))
    bad = [r.getMessage() for r in caplog.records if "cache entry" in r.getMessage()]
    assert len(bad) == 1 and "unreadable" in bad[0] and "recomputing" in bad[0]
    assert not fourth["before_cache"]["rho_audit"]["hit"]
    assert without_wall(fourth["audit_before"]) == without_wall(first["audit_before"])
    assert json.loads(entry.read_text())["result"].keys() == first["audit_before"].keys()


def parts_of(make_cfg, *overrides: str) -> dict:
    from driftbench.rho.training_set import build_training_set, pair_and_trap_behaviors

    cfg = make_cfg(*TINY_RHO, *overrides)
    probes = {b: load_probes(b, 6, 42) for b in pair_and_trap_behaviors(cfg.sft)}
    _, _, held = build_training_set(cfg.sft, probes, int(cfg.seed), cfg.runtime.data_dir)
    behaviors = list(cfg.task.audit_behaviors)
    return audit_parts(
        model={"source": "tiny_random"},
        probes=installed_digest(),
        behaviors=behaviors,
        n_probes=6,
        probe_seed=42,
        heldout={b: v for b, v in held.items() if v and b in behaviors},
        batching={"batch_tokens": 4096, "gen_max_batch": 32},
        backend="torch",
        device="cpu",
        results_version=1,
    )


def test_the_audit_key_follows_the_held_out_probes_not_the_condition_or_seed(make_cfg):
    key = cache_key(parts_of(make_cfg))
    assert cache_key(parts_of(make_cfg, "sft/condition=shuffled_pairs", "seed=9")) == key
    assert cache_key(parts_of(make_cfg, "sft.lambda_rho=0.5", "sft.margin=0")) == key
    held = parts_of(make_cfg, "sft.holdout_fraction=0.5")
    assert sum(held["heldout"].values()) > 0 and cache_key(held) != key
    other_split = parts_of(make_cfg, "sft.holdout_fraction=0.5", "sft.data.seed=7")
    assert cache_key(other_split) not in (key, cache_key(held))


GOOD = {b: {"behavior": b, "rho": 0.5} for b in ("factual", "bias")}
PARTS = {"kind": "rho_audit", "behaviors": ["factual", "bias"], "heldout": {}}


def spoil_truncated(path: Path) -> None:
    path.write_text(path.read_text()[:20])


def spoil_other_parts(path: Path) -> None:
    entry = json.loads(path.read_text())
    entry["parts"]["behaviors"] = ["factual"]
    path.write_text(json.dumps(entry))


def spoil_missing_behaviour(path: Path) -> None:
    entry = json.loads(path.read_text())
    del entry["result"]["bias"]
    path.write_text(json.dumps(entry))


@pytest.mark.parametrize(
    "spoil, reason",
    [
        (spoil_truncated, "unreadable"),
        (spoil_other_parts, "made for other settings"),
        (spoil_missing_behaviour, "no result for bias"),
    ],
)
def test_a_bad_before_cache_entry_is_logged_removed_and_recomputed(tmp_path, caplog, spoil, reason):
    calls = []

    def compute() -> dict:
        calls.append(1)
        return GOOD

    _, info = cached(tmp_path, "rho_audit", PARTS, compute)
    spoil(Path(info["path"]))
    with caplog.at_level(logging.WARNING):
        result, again = cached(tmp_path, "rho_audit", PARTS, compute)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and reason in said[0] and "removed, recomputing" in said[0]
    assert result == GOOD and not again["hit"] and len(calls) == 2
    assert BeforeCache(tmp_path, "rho_audit").load(info["key"], PARTS) == GOOD  # healed


def test_nan_survives_the_cache(tmp_path):
    nan = {"factual": {"rho": float("nan")}, "bias": {"rho": 0.25}}
    cached(tmp_path, "rho_audit", PARTS, lambda: nan)
    result, info = cached(tmp_path, "rho_audit", PARTS, lambda: pytest.fail("recomputed"))
    assert info["hit"] and result["factual"]["rho"] != result["factual"]["rho"]
    assert result["bias"]["rho"] == 0.25
