"""The label-free monitors of one drift_eval run (``monitor/`` group), wired to its classifier,
embeddings and checkpoints; the monitors themselves and their scoring are ``driftbench.monitors``
(numpy/scipy/scikit-learn only)."""

from __future__ import annotations

import logging
import multiprocessing
import time
import weakref
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed, wait

import numpy as np
from omegaconf import DictConfig, OmegaConf
from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

from driftbench import metrics as M
from driftbench import monitors as MON
from driftbench.checkpoints import Knob
from driftbench.workers import can_fork, process_workers

log = logging.getLogger(__name__)


def check_monitoring(cfg: DictConfig, n_test: int) -> None:
    """The monitor group's registry names (monitors, reference, collapse criteria) and its pools
    of the ``n_test`` test texts (where any monitor runs): before any heavy work."""
    names = monitor_names(cfg)
    m = cfg.monitor
    if m.reference not in MON.REFERENCES:
        raise ValueError(
            f"monitor.reference={m.reference!r}; accepted: {', '.join(MON.REFERENCES)}"
        )
    MON.check_criteria(OmegaConf.to_container(m.collapse))
    if names:
        MON.pool_sizes(n_test, m.calibration_share, reference_share(cfg))


def reference_share(cfg: DictConfig) -> float | None:
    """The share of the test split held out as the reference; None where it is the validation
    split."""
    return None if cfg.monitor.reference == "val" else cfg.monitor.reference_share


def monitor_names(cfg: DictConfig) -> list[str]:
    chosen = cfg.monitor.monitors
    return MON.check_names(None if chosen is None else list(chosen))


def pool_outcomes(reference, names, settings, seed: int, key: int, z_pool, p_pool, windows):
    """Every monitor on the windows of one pool, with the pool's own random stream (seed, 3,
    key): the outcomes do not depend on which worker runs which pool, or in what order."""
    t0 = time.perf_counter()
    wins = MON.Windows(MON.View(z_pool, p_pool), windows)
    out = MON.run_windows(reference, wins, names, settings, np.random.default_rng([seed, 3, key]))
    return out, time.perf_counter() - t0


_PROCESSES: dict[int, ProcessPoolExecutor] = {}


def _processes(workers: int) -> ProcessPoolExecutor:
    """The process pool the monitors of every run in this process share, made on first use:
    forked (Linux), so a worker starts from this process's imports in milliseconds; a pool
    whose worker died is replaced. Processes, not threads: the monitors' per-window Python
    holds the GIL, and on two threads beside the run's own loop a sweep's job took 2.2 s where
    processes leave each pool a core."""
    pool = _PROCESSES.get(workers)
    if pool is None or getattr(pool, "_broken", False):
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
        _PROCESSES[workers] = pool
    return pool


def _release(executor: ThreadPoolExecutor | None, limits) -> None:
    if executor is not None:
        executor.shutdown(wait=True)
    limits.restore_original_limits()


def window_size(window: int, n_windows: int, pools: MON.Pools) -> tuple[int, int]:
    """Texts per window and windows per pool: ``monitor.window`` cut to the smaller of the two
    pools the windows are drawn from, with one window where it is cut (every window would
    hold the same texts), and the log says so."""
    smaller = min(len(pools.calibration), len(pools.evaluation))
    if window <= smaller:
        return window, n_windows
    log.warning(
        "monitor.window=%d is more than the %d texts of the smaller pool (calibration %d, "
        "evaluation %d test texts): one window of %d per pool",
        window,
        smaller,
        len(pools.calibration),
        len(pools.evaluation),
        smaller,
    )
    return smaller, 1


class Monitoring:
    """The monitors of one run (``monitor/`` group): an undrifted, labelled reference, and the
    test split cut into disjoint pools (``MON.split_pools``): a calibration pool, whose undrifted
    windows set the thresholds of the monitors without a p-value, and an evaluation pool, whose
    windows (the same row indices at every checkpoint) are scored: undrifted, they count the
    false alarms; drifted, the power. The thresholds thus come from texts the scored windows
    never see. Why a held-out share of the test split and not the validation split: the
    validation split is the default reference, and a window of the reference's own texts
    compared with it gives statistics near zero, thresholds too low.

    The truth the monitors are scored against is the frozen classifier's metrics on every test
    text at each checkpoint (``truth``), against the same on the undrifted texts: where each
    criterion of ``monitor.collapse`` fires (``MON.collapse_points``).

    Pools run on ``workers`` worker processes while the run goes on (one thread in the
    background where that is 1 or there is no fork), each on one BLAS thread (two threads of
    BLAS per pool on top would oversubscribe the cores); ``score`` collects them, with a
    progress bar (``progress``: ``runtime.progress``) while the last ones finish.
    A checkpoint whose pool is the undrifted one (to 1e-12: sigma = 0 renormalises unit
    vectors; a real update's original model) reuses the undrifted windows' outcomes: the same
    windows of the same texts."""

    def __init__(
        self,
        cfg: DictConfig,
        clf,
        z,
        y,
        split: dict,
        seed: int,
        workers: int = 0,
        progress: bool = False,
    ):
        m = cfg.monitor
        self.progress = progress
        tr, va, te = (split[s] for s in ("train", "val", "test"))
        self.names = monitor_names(cfg)
        self.clf, self.alpha, self.seed = clf, m.alpha, int(seed)
        self.power_level = m.power_level
        self.criteria = MON.check_criteria(OmegaConf.to_container(m.collapse))
        self.tau, self.n_bins = cfg.task.tau, cfg.task.ece_bins
        self.settings = MON.Settings(
            mmd_permutations=m.mmd_permutations,
            c2st_holdout=float(m.c2st_holdout),
            c2st_c=float(m.c2st_c),
        )
        rng = np.random.default_rng([seed, 2])
        self.pools = MON.split_pools(len(te), m.calibration_share, reference_share(cfg), rng)
        ref = va if self.pools.reference is None else te[self.pools.reference]
        self.reference = MON.Reference(
            MON.View(z[ref], clf.predict_proba(z[ref])), y[ref], z[tr], m.pca_components
        )
        self.window, n = window_size(m.window, m.n_windows, self.pools)
        cal, ev = self.pools.calibration, self.pools.evaluation
        self.windows = MON.draw_windows(len(ev), self.window, n, rng)
        self.calibration_windows = MON.draw_windows(len(cal), self.window, n, rng)
        self.y_test, self.y_pool = y[te], y[te][ev]
        self.workers = workers or process_workers(2)
        if self.workers > 1 and can_fork():
            self._executor, owned = _processes(self.workers), None
        else:
            self._executor = owned = ThreadPoolExecutor(self.workers, thread_name_prefix="mon")
        # score() gives back the BLAS limit and a thread of its own; so does an error that
        # drops the run
        self._finalize = weakref.finalize(self, _release, owned, threadpool_limits(1))
        z_test, p_test = z[te], clf.predict_proba(z[te])
        self.truth_undrifted = M.checkpoint_metrics(self.y_test, p_test, self.tau, self.n_bins)
        self._z0 = z_test[ev]
        # the calibration windows set the thresholds of the monitors without a p-value alone
        thresholded = [n for n in self.names if not MON.MONITORS[n].has_p_value]
        self._calibration = self._submit(
            0, z_test[cal], p_test[cal], self.calibration_windows, names=thresholded
        )
        self._undrifted = self._submit(1, self._z0, p_test[ev], self.windows)
        self._checkpoints: list[Future] = []
        self.true_accuracy: list[np.ndarray] = []
        self.truth: list[dict] = []

    def _submit(self, key: int, z_pool, p_pool, windows, names=None) -> Future:
        names = self.names if names is None else names
        args = (self.reference, names, self.settings, self.seed, key)
        return self._executor.submit(pool_outcomes, *args, z_pool, p_pool, windows)

    @property
    def undrifted_s(self) -> float:
        """Seconds the two sets of undrifted windows took on their workers (waits for them)."""
        return self._calibration.result()[1] + self._undrifted.result()[1]

    def close(self) -> None:
        """Wait for the queued pools and give back the thread and the BLAS limit (``score``
        does it too)."""
        wait([self._calibration, self._undrifted, *self._checkpoints])
        self._finalize()

    def checkpoint(self, zc_test: np.ndarray, p_test: np.ndarray) -> None:
        """Queue every monitor on this checkpoint's windows (``score`` waits for them), and
        record the truth: the frozen classifier's metrics on every test text."""
        self.truth.append(M.checkpoint_metrics(self.y_test, p_test, self.tau, self.n_bins))
        z_pool, p_pool = zc_test[self.pools.evaluation], p_test[self.pools.evaluation]
        self.true_accuracy.append((M.predict(p_pool) == self.y_pool)[self.windows].mean(axis=1))
        if z_pool.shape == self._z0.shape and np.allclose(z_pool, self._z0, rtol=0, atol=1e-12):
            self._checkpoints.append(self._undrifted)
        else:
            key = 2 + len(self._checkpoints)
            self._checkpoints.append(self._submit(key, z_pool, p_pool, self.windows))

    def _wait(self) -> None:
        """Wait for every queued pool, a bar counting them as they finish: the monitors run
        behind the checkpoint loop, and on a long run their last pools end after it."""
        from tqdm.auto import tqdm

        pending = list(dict.fromkeys([self._calibration, self._undrifted, *self._checkpoints]))
        bar = tqdm(total=len(pending), desc="monitors", unit="pool", disable=not self.progress)
        with bar:
            for _ in as_completed(pending):
                bar.update()

    def score(self, knobs, fit_s: float, knob: str):
        """Wait for every pool, then find the collapse (``MON.collapse_points`` on ``truth``)
        and score each monitor against it (``MON.scorecard``) at the checkpoints' ``knobs``,
        named ``knob`` (the run's source: sigma, or an update's rung, alpha, ...)."""
        self._wait()
        calibration, undrifted = self._calibration.result()[0], self._undrifted.result()[0]
        done = [f.result() for f in self._checkpoints]
        self._finalize()
        collapse = MON.collapse_points(self.truth, self.truth_undrifted, self.criteria, knobs, knob)
        scores, csv_rows = MON.scorecard(
            self.names,
            calibration,
            undrifted,
            [out for out, _ in done],
            knobs,
            collapse,
            self.true_accuracy,
            alpha=self.alpha,
            power_level=self.power_level,
            knob=knob,
        )
        head = {
            "monitors": self.names,
            "reference": {
                "split": "val" if self.pools.reference is None else "test",
                "n": len(self.reference.y),
                "accuracy": self.reference.accuracy,
            },
            # test texts of each pool: thresholds from the one, false alarms and power the other
            "pools": {
                "calibration": len(self.pools.calibration),
                "evaluation": len(self.pools.evaluation),
            },
            "window": self.window,
            "n_windows": len(self.windows),
            "n_calibration_windows": len(self.calibration_windows),
            "alpha": self.alpha,
            "power_level": self.power_level,
            "timing": {
                "classifier_fit_s": fit_s,
                # each pool's own wall time on its worker (0 where the undrifted one served)
                "monitors_per_checkpoint_s": [
                    0.0 if f is self._undrifted else s
                    for f, (_, s) in zip(self._checkpoints, done, strict=True)
                ],
                "monitors_undrifted_s": self.undrifted_s,  # both undrifted sets, once a run
                "monitor_workers": self.workers,
            },
        }
        return {**head, **scores}, csv_rows


def monitor_digest(scores: dict, knob: Knob) -> str:
    """One log line: the collapse (and by which criteria), then each monitor's false-alarm rate
    and knob at alarm."""

    def at(value: float | None) -> str:
        return "none" if value is None else f"{value:.3g}"

    k, sym, collapse = knob.name, knob.symbol, scores["collapse"]
    parts = [
        f"{n} false alarms {m['false_alarm_rate']:.0%}, alarm at {sym}={at(m[f'{k}_at_alarm'])}"
        for n, m in scores["by_monitor"].items()
    ]
    if collapse["checkpoint"] is None:
        head = "no collapse criterion fires (nothing broke)"
    else:
        head = f"collapse at {sym}={at(collapse[k])} by {', '.join(collapse['criteria'])}"
    return f"{head}; " + "; ".join(parts)
