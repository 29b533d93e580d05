"""Benchmark a real model update's cost, in one run: for the quantize ladder on SmolLM2 (the
default model and data, ``drift=quantize``), the time spent re-quantizing and swapping weights
against the time spent embedding the test split with each re-quantized model, and a second
pass served from the update cache against the first.

The first pass runs against an empty update cache (a fresh folder whose ``models`` and ``gguf``
link to the real cache, so the GGUF conversion is not timed); the original model's embeddings
come from the embedding cache as in any drift run (computed once if missing, not timed).
Targets: the update itself <= 10% of the first pass; the cached pass < 1% of the first.

    python bench/update.py
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import driftbench  # noqa: E402,F401
from driftbench import drift as drift_ops  # noqa: E402
from driftbench.fileio import atomic_write_json  # noqa: E402
from driftbench.tasks.drift_eval.task import embed_data, load_data  # noqa: E402
from driftbench.tasks.drift_eval.updates import anchor_rows, update_checkpoints  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "update.json"))
    args = ap.parse_args()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["drift=quantize", "runtime.progress=false"])
    seed = int(cfg.seed)
    data = load_data(cfg)
    z, _ = embed_data(cfg, data)
    z = drift_ops.normalize(z.astype(np.float64))
    test = data.split["test"]
    anchors = anchor_rows(data.split["train"], int(cfg.drift.anchors), seed)
    real_cache = Path(cfg.runtime.cache_dir).expanduser()
    load_before = os.getloadavg()  # above 1 on 2 cores: other work shared them
    with tempfile.TemporaryDirectory(prefix="bench-update-") as tmp:
        for sub in ("models", "gguf"):
            if (real_cache / sub).exists():
                (Path(tmp) / sub).symlink_to(real_cache / sub)
        cfg.runtime.cache_dir = tmp
        passes = []
        for _ in range(2):
            t0 = time.perf_counter()
            ckpts = update_checkpoints(cfg, data.texts, z, test, anchors)
            passes.append((time.perf_counter() - t0, ckpts))
    (first_s, first), (cached_s, _) = passes
    levels = [c for c in first if c.info.get("update_s") is not None]
    update_s = sum(c.info["update_s"] for c in levels) + levels[0].info["prepare_s"]
    embed_s = sum(c.info["embed_s"] for c in levels)
    result = {
        "model": cfg.model.name,
        "machine": platform.machine(),
        "platform": platform.system(),
        "n_test_texts": len(test),
        "levels": {
            c.label: {
                "relative_weight_error": c.info["relative_weight_error"],
                "update_s": c.info["update_s"],
                "embed_s": c.info["embed_s"],
            }
            for c in levels
        },
        "first_pass_s": first_s,
        "update_s": update_s,
        "embed_s": embed_s,
        "update_share_of_first_pass": update_s / first_s,
        "cached_pass_s": cached_s,
        "cached_over_first": cached_s / first_s,
        "targets": {"update_share_max": 0.10, "cached_over_first_max": 0.01},
        "meets_targets": update_s / first_s <= 0.10 and cached_s / first_s <= 0.01,
        "cpus": os.cpu_count(),
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
    }
    atomic_write_json(args.out, result)
    print(
        f"quantize ladder on {cfg.model.name}, {len(levels)} levels x {len(test)} texts: "
        "first pass "
        f"{first_s:.1f} s (update {update_s:.1f} s = {100 * update_s / first_s:.1f}%, embedding "
        f"{embed_s:.1f} s); cached pass {cached_s:.3f} s = {100 * cached_s / first_s:.2f}%"
    )


if __name__ == "__main__":
    main()
