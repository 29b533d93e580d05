"""Benchmark the monitors' hot path, in one run: MMD's permutation test with one kernel matrix for
all B permutations against recomputing the kernel for every permutation; every monitor at one
checkpoint on all its windows at once (``Monitor.batch``, as a drift run calls it) against the
same monitors window by window (``Monitor.test``); and all of them against the classifier's fit.

On the default run's data (SmolLM2-135M-Instruct embeddings of 2,000 Davidson tweets, cached by
any drift run, else computed once, about 2 minutes): the validation split (200) as the
reference, windows of ``monitor.window`` test texts (100 of the evaluation pool since drift_eval's
results version 9; 200 of the whole test split before) after Gaussian drift at sigma = 0.02.

* MMD: both sides compute the unbiased MMD^2 of the same B assignments (``random_assignments``)
  with the median-heuristic RBF kernel; the baseline permutes the pooled rows and recomputes
  distances, bandwidth and kernel each time (what a per-permutation call of a two-sample
  function does). The run fails if a statistic differs by more than 1e-9.
* One checkpoint: ``tasks.drift_eval.monitoring.Monitoring.checkpoint`` (monitor=all, its default
  windows) against a fresh fit of the run's classifier (``classifier/``'s default, as
  ``drift_eval`` fits it on a cache miss), interleaved, ``--repeats`` times each: the ratio
  of the fastest of each; also the run's two undrifted sets (once a run) and one checkpoint at
  the previous default of 100 windows. Per monitor, the batch against the per-window
  definitions on the same windows and draws: time per window, the largest difference of the
  statistic and the share of windows where the alarm agrees (MMD's batch shares one draw of
  permutations, so its p-values differ by permutation noise; C2ST's fit stops at
  scikit-learn's tolerance by another route). The run fails if a statistic other than C2ST's
  differs by more than 1e-9, or a KS alarm differs.

    python bench/monitors.py [--permutations 199] [--repeats 5]
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
from driftbench.classifier import make_classifier  # noqa: E402
from driftbench.fileio import atomic_write_json  # noqa: E402
from driftbench.tasks.drift_eval.monitoring import Monitoring, pool_outcomes  # noqa: E402
from driftbench.tasks.drift_eval.task import embed_data, load_data  # noqa: E402

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
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "monitors.json"))
    args = ap.parse_args()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config", overrides=["runtime.device=cpu", "runtime.progress=false"]
        )
    seed = int(cfg.seed)
    data = load_data(cfg)
    z, _ = embed_data(cfg, data)
    z = drift_ops.normalize(z.astype(np.float64))
    y = data.labels
    tr, va, te = (data.split[s] for s in ("train", "val", "test"))

    settings = OmegaConf.to_container(cfg.classifier, resolve=True)

    def fit():
        return make_classifier(settings, seed).fit(z[tr], y[tr], z[va], y[va])

    clf = fit()
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

    def one_checkpoint(mon: Monitoring) -> float:
        """Every monitor on one checkpoint's windows, on this thread: its seconds."""
        pool = mon.pools.evaluation
        args_ = (mon.reference, mon.names, mon.settings, seed, 2)
        return pool_outcomes(*args_, zc[pool], p[pool], mon.windows)[1]

    monitoring = Monitoring(cfg, clf, z, y, data.split, seed)
    monitoring.close()  # its undrifted windows scored; nothing left running beside the timings
    fit_runs, checkpoint_runs = [], []
    for _ in range(args.repeats):  # interleaved: both see the same load
        fit_runs.append(best_of(1, fit)[0])
        checkpoint_runs.append(one_checkpoint(monitoring))
    fit_s, checkpoint_s = min(fit_runs), min(checkpoint_runs)
    cfg_100 = cfg.copy()
    cfg_100.monitor.n_windows = 100
    monitoring_100 = Monitoring(cfg_100, clf, z, y, data.split, seed)
    monitoring_100.close()
    checkpoint_100_s = min(one_checkpoint(monitoring_100) for _ in range(args.repeats))

    pool = monitoring.pools.evaluation
    wins = MON.Windows(MON.View(zc[pool], p[pool]), monitoring.windows)
    ref, settings_m = monitoring.reference, monitoring.settings
    batch_ms, one_ms, agreement = {}, {}, {}
    with threadpool_limits(1):
        for name, mon in MON.MONITORS.items():
            s_batch, batch = best_of(
                args.repeats,
                lambda mon=mon: mon.batch(
                    ref, MON.Windows(wins.pool, wins.idx), settings_m, np.random.default_rng(1)
                ),
            )
            draws = np.random.default_rng(1)
            s_one, one = best_of(
                1,
                lambda mon=mon, draws=draws: [
                    mon.test(ref, wins.view(i), settings_m, draws) for i in range(len(wins))
                ],
            )
            batch_ms[name], one_ms[name] = 1000 * s_batch / len(wins), 1000 * s_one / len(wins)
            gap = max(abs(a.statistic - b.statistic) for a, b in zip(batch, one, strict=True))
            agree = None
            if mon.has_p_value:
                agree = float(
                    np.mean(
                        [
                            (a.p_value <= monitoring.alpha) == (b.p_value <= monitoring.alpha)
                            for a, b in zip(batch, one, strict=True)
                        ]
                    )
                )
            agreement[name] = {"max_abs_diff_statistic": gap, "alarm_agreement": agree}
            if name != "c2st" and (gap > 1e-9 or (name != "mmd" and agree not in (None, 1.0))):
                sys.exit(f"{name}: the batch differs from the per-window definition ({gap:.3g})")

    result = {
        "model": cfg.model.name,
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
            "all_monitors_s_runs": checkpoint_runs,
            "classifier": cfg.classifier.name,
            "classifier_fit_s": fit_s,
            "classifier_fit_s_runs": fit_runs,
            "monitors_over_fit": checkpoint_s / fit_s,
            "undrifted_windows_s": monitoring.undrifted_s,
            "all_monitors_100_windows_s": checkpoint_100_s,
            "monitors_100_windows_over_fit": checkpoint_100_s / fit_s,
            "ms_per_window": batch_ms,
            "ms_per_window_one_by_one": one_ms,
            "one_by_one_over_batch": sum(one_ms.values()) / sum(batch_ms.values()),
            "batch_against_one_by_one": agreement,
        },
    }
    atomic_write_json(args.out, result)
    print(
        f"MMD, {args.permutations} permutations of {len(pooled)} x {z.shape[1]}: one kernel "
        f"{1000 * reused_s:.1f} ms, a kernel per permutation {1000 * recomputed_s:.0f} ms "
        f"({recomputed_s / reused_s:.0f}x) | all {len(monitoring.names)} monitors on "
        f"{len(monitoring.windows)} windows: {checkpoint_s:.3f} s, the classifier's fit "
        f"{fit_s:.3f} s (ratio {checkpoint_s / fit_s:.2f}; 100 windows "
        f"{checkpoint_100_s:.3f} s) | window by window "
        f"{result['checkpoint']['one_by_one_over_batch']:.1f}x slower -> {args.out}"
    )


if __name__ == "__main__":
    main()
