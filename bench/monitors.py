"""Benchmark the monitors' hot path, in one run: MMD's permutation test with one kernel matrix for
all B permutations against recomputing the kernel for every permutation, and every monitor at
one checkpoint against the classifier's fit.

On the default run's data (SmolLM2-135M-Instruct embeddings of 2,000 Davidson tweets, cached by
any drift run, else computed once, about 2 minutes): the validation split (200) as the
reference, windows of 200 test texts after Gaussian drift at sigma = 0.02.

* MMD: both sides compute the unbiased MMD^2 of the same B assignments (``random_assignments``)
  with the median-heuristic RBF kernel; the baseline permutes the pooled rows and recomputes
  distances, bandwidth and kernel each time (what a per-permutation call of a two-sample
  function does). The run fails if a statistic differs by more than 1e-9.
* One checkpoint: ``drift_monitoring.Monitoring.checkpoint`` (monitor=all, its default
  windows), as a drift run calls it, against ``classifier.fit_classifier`` on the same data
  (the task's C grid).

    python bench/monitors.py [--permutations 199] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import driftbench  # noqa: E402,F401
from driftbench import drift as drift_ops  # noqa: E402
from driftbench import monitors as MON  # noqa: E402
from driftbench.classifier import fit_classifier  # noqa: E402
from driftbench.data import load_toxicity, resolve_data_path  # noqa: E402
from driftbench.embed import cached_embeddings  # noqa: E402
from driftbench.models import ModelSpec  # noqa: E402
from driftbench.runs import atomic_write_json  # noqa: E402
from driftbench.tasks.drift_monitoring import Monitoring  # noqa: E402

SIGMA = 0.02


def best_of(repeats: int, fn):
    """(smallest wall time in s, the last result)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def mmd_reused(pooled: np.ndarray, m: int, assignments: np.ndarray) -> np.ndarray:
    sq = MON.pairwise_sq_dists(pooled)
    kernel = MON.rbf_kernel(sq, MON.median_bandwidth(sq))
    return MON.mmd2_permuted(kernel, m, assignments)


def mmd_recomputed(pooled: np.ndarray, m: int, assignments: np.ndarray) -> np.ndarray:
    out = []
    for row in assignments:
        x = pooled[np.r_[np.flatnonzero(row), np.flatnonzero(~row)]]
        sq = MON.pairwise_sq_dists(x)
        out.append(MON.mmd2_unbiased(MON.rbf_kernel(sq, MON.median_bandwidth(sq)), m))
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--permutations", type=int, default=199)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "monitors.json"))
    args = ap.parse_args()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config")
    seed = int(cfg.seed)
    data = load_toxicity(
        resolve_data_path(cfg.data.path, cfg.runtime.data_dir),
        n_samples=int(cfg.data.n_samples),
        split=tuple(cfg.data.split),
        sample_seed=int(cfg.data.sample_seed),
        split_seed=seed,
    )
    spec = ModelSpec.from_dict(OmegaConf.to_container(cfg.model, resolve=True))
    z, _ = cached_embeddings(
        spec,
        data.texts,
        pooling=cfg.embed.pooling,
        max_length=int(cfg.embed.max_length),
        layer=int(cfg.embed.layer),
        batch_tokens=int(cfg.embed.batch_tokens),
        cache_dir=cfg.runtime.cache_dir,
        device="cpu",
        progress=False,
        extra_key={"data_file_sha256": data.file_sha256},
        backend=cfg.backend.name,
        packed=bool(cfg.embed.packed),
    )
    z = drift_ops.normalize(z.astype(np.float64))
    y = data.labels
    tr, va, te = (data.split[s] for s in ("train", "val", "test"))

    c = cfg.classifier
    fit_s, clf = best_of(
        1,
        lambda: fit_classifier(
            z[tr],
            y[tr],
            z[va],
            y[va],
            c_grid=list(c.c_grid),
            max_iter=int(c.max_iter),
            degenerate_dims=c.degenerate_dims,
            degenerate_rel_std=float(c.degenerate_rel_std),
            select_by=c.select_by,
            seed=seed,
        ),
    )
    operator = drift_ops.make_drift("gaussian", z.shape[1], np.random.default_rng([seed, 1]))
    zc = operator(z[te], SIGMA)
    p = clf.predict_proba(zc)

    rng = np.random.default_rng(0)
    window = int(cfg.monitor.window)
    pooled = np.concatenate([z[va], zc[MON.draw_windows(len(te), window, 1, rng)[0]]])
    m = len(va)
    assignments = MON.random_assignments(len(pooled), m, args.permutations, rng)
    with threadpool_limits(1):  # as the monitors run (monitors.run_windows)
        reused_s, reused = best_of(args.repeats, lambda: mmd_reused(pooled, m, assignments))
        recomputed_s, recomputed = best_of(
            args.repeats, lambda: mmd_recomputed(pooled, m, assignments)
        )
    diff = float(np.max(np.abs(reused - recomputed)))
    if diff > 1e-9:
        sys.exit(f"MMD^2 differs between the reused and recomputed kernels by {diff:.3g}")

    monitoring = Monitoring(cfg, clf, z, y, data.split, seed)
    checkpoint_s = min(monitoring.checkpoint(zc, p) for _ in range(args.repeats))
    per_monitor = {}
    views = [MON.View(zc[te_idx], p[te_idx]) for te_idx in monitoring.windows[:20]]
    with threadpool_limits(1):
        for name, mon in MON.MONITORS.items():
            s, _ = best_of(
                1,
                lambda mon=mon: [
                    mon.test(monitoring.reference, v, monitoring.settings, rng) for v in views
                ],
            )
            per_monitor[name] = 1000 * s / len(views)

    result = {
        "model": spec.name,
        "machine": platform.processor() or platform.machine(),
        "platform": platform.system(),
        "blas_threads": 1,
        "dim": int(z.shape[1]),
        "n_reference": m,
        "window": window,
        "sigma": SIGMA,
        "mmd": {
            "permutations": args.permutations,
            "reused_kernel_s": reused_s,
            "recomputed_kernel_s": recomputed_s,
            "speedup": recomputed_s / reused_s,
            "max_abs_diff_mmd2": diff,
        },
        "checkpoint": {
            "monitors": monitoring.names,
            "n_windows": len(monitoring.windows),
            "all_monitors_s": checkpoint_s,
            "classifier_fit_s": fit_s,
            "monitors_over_fit": checkpoint_s / fit_s,
            "ms_per_window": per_monitor,
        },
    }
    atomic_write_json(args.out, result)
    print(
        f"MMD, {args.permutations} permutations of {len(pooled)} x {z.shape[1]}: one kernel "
        f"{1000 * reused_s:.1f} ms, a kernel per permutation {1000 * recomputed_s:.0f} ms "
        f"({recomputed_s / reused_s:.0f}x) | all {len(monitoring.names)} monitors on "
        f"{len(monitoring.windows)} windows: {checkpoint_s:.2f} s, the classifier's fit "
        f"{fit_s:.2f} s -> {args.out}"
    )


if __name__ == "__main__":
    main()
