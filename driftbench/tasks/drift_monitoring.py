"""The label-free monitors of one drift_eval run (``monitor/`` group), wired to its classifier,
embeddings and checkpoints; the monitors themselves and their scoring are ``driftbench.monitors``
(numpy/scipy/scikit-learn only)."""

from __future__ import annotations

import logging
import time

import numpy as np
from omegaconf import DictConfig

from driftbench import metrics as M
from driftbench import monitors as MON

log = logging.getLogger(__name__)


def check_monitoring(cfg: DictConfig) -> None:
    """The monitor group's registry names (monitors and reference): before any heavy work."""
    monitor_names(cfg)
    if cfg.monitor.reference not in MON.REFERENCES:
        raise ValueError(
            f"monitor.reference={cfg.monitor.reference!r}; accepted: {', '.join(MON.REFERENCES)}"
        )


def monitor_names(cfg: DictConfig) -> list[str]:
    chosen = cfg.monitor.monitors
    return MON.check_names(None if chosen is None else list(chosen))


class Monitoring:
    """The monitors of one run (``monitor/`` group): an undrifted, labelled reference, a pool
    of test texts the windows are drawn from (the same row indices at every checkpoint), and
    each checkpoint's outcomes. Undrifted windows are scored twice over: one draw sets the
    thresholds of the monitors without a p-value, another counts false alarms."""

    def __init__(self, cfg: DictConfig, clf, z, y, split: dict, seed: int):
        m = cfg.monitor
        tr, va, te = (split[s] for s in ("train", "val", "test"))
        self.names = monitor_names(cfg)
        self.clf, self.alpha = clf, float(m.alpha)
        self.power_level, self.auc_drop = float(m.power_level), float(m.auc_drop)
        self.settings = MON.Settings(
            mmd_permutations=int(m.mmd_permutations),
            c2st_holdout=float(m.c2st_holdout),
            c2st_c=float(m.c2st_c),
        )
        rng = np.random.default_rng([seed, 2])
        self.rng = np.random.default_rng([seed, 3])  # the tests' own draws (permutations, C2ST)
        if m.reference == "val":
            z_ref, y_ref, self.pool = z[va], y[va], np.arange(len(te))
        else:
            order = rng.permutation(len(te))
            n_ref = max(2, int(round(float(m.reference_share) * len(te))))
            z_ref, y_ref, self.pool = z[te][order[:n_ref]], y[te][order[:n_ref]], order[n_ref:]
        self.reference = MON.Reference(
            MON.View(z_ref, clf.predict_proba(z_ref)), y_ref, z[tr], int(m.pca_components)
        )
        self.window, n = min(int(m.window), len(self.pool)), int(m.n_windows)
        if self.window < int(m.window):  # every window would hold the same texts: one will do
            log.warning(
                "monitor.window=%d is more than the %d test texts the windows are drawn from: "
                "one window of all %d per checkpoint",
                m.window,
                len(self.pool),
                self.window,
            )
            n = 1
        self.windows = MON.draw_windows(len(self.pool), self.window, n, rng)
        self.calibration_windows = MON.draw_windows(len(self.pool), self.window, n, rng)
        self.y_pool = y[te][self.pool]
        self.seconds: list[float] = []
        t0 = time.perf_counter()
        z0 = z[te][self.pool]
        p0 = clf.predict_proba(z0)
        self.calibration = self._outcomes(z0, p0, self.calibration_windows)[0]
        self.undrifted = self._outcomes(z0, p0, self.windows)[0]
        self.undrifted_s = time.perf_counter() - t0
        self.checkpoints: list[dict] = []
        self.true_accuracy: list[np.ndarray] = []

    def _outcomes(self, z_pool, p_pool, windows) -> tuple[dict, np.ndarray]:
        wins = MON.Windows(MON.View(z_pool, p_pool), windows)
        acc = (M.predict(p_pool) == self.y_pool)[windows].mean(axis=1)
        return MON.run_windows(self.reference, wins, self.names, self.settings, self.rng), acc

    def checkpoint(self, zc_test: np.ndarray, p_test: np.ndarray) -> float:
        """Every monitor on this checkpoint's windows; returns the seconds they took."""
        t0 = time.perf_counter()
        out, acc = self._outcomes(zc_test[self.pool], p_test[self.pool], self.windows)
        self.checkpoints.append(out)
        self.true_accuracy.append(acc)
        self.seconds.append(time.perf_counter() - t0)
        return self.seconds[-1]

    def score(self, sigmas, rows: list[dict], roc_auc_undrifted: float, fit_s: float):
        scores, csv_rows = MON.scorecard(
            self.names,
            self.calibration,
            self.undrifted,
            self.checkpoints,
            sigmas,
            [r["roc_auc"] for r in rows],
            roc_auc_undrifted,
            self.true_accuracy,
            alpha=self.alpha,
            power_level=self.power_level,
            auc_drop=self.auc_drop,
        )
        head = {
            "monitors": self.names,
            "reference": {"n": len(self.reference.y), "accuracy": self.reference.accuracy},
            "pool": len(self.pool),
            "window": self.window,
            "n_windows": len(self.windows),
            "alpha": self.alpha,
            "power_level": self.power_level,
            "timing": {
                "classifier_fit_s": fit_s,
                "monitors_per_checkpoint_s": self.seconds,
                "monitors_undrifted_s": self.undrifted_s,  # both undrifted sets, once a run
            },
        }
        return {**head, **scores}, csv_rows


def monitor_digest(scores: dict) -> str:
    """One log line: each monitor's false-alarm rate and sigma at alarm, against the collapse."""

    def at(sigma: float | None) -> str:
        return "none" if sigma is None else f"{sigma:.3g}"

    parts = [
        f"{n} false alarms {m['false_alarm_rate']:.0%}, alarm at σ={at(m['sigma_at_alarm'])}"
        for n, m in scores["by_monitor"].items()
    ]
    return f"collapse at σ={at(scores['collapse']['sigma'])}; " + "; ".join(parts)
