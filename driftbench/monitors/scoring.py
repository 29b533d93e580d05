"""Pools and windows, and scoring a run's monitors against the collapse the benchmark knows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

from driftbench.monitors.collapse import leads
from driftbench.monitors.registry import MONITORS
from driftbench.monitors.views import Outcome, Reference, Settings, Windows

# --- pools and windows, and scoring a run's monitors --------------------------------------------


@dataclass(frozen=True)
class Pools:
    """Row indices into the test split, pairwise disjoint: the ``reference`` (None: the
    validation split is the reference), the ``calibration`` pool whose undrifted windows set the
    alarm thresholds, and the ``evaluation`` pool whose windows are scored (undrifted: false
    alarms; at every checkpoint: power)."""

    reference: np.ndarray | None
    calibration: np.ndarray
    evaluation: np.ndarray


def pool_sizes(n_test: int, calibration_share: float, reference_share: float | None) -> dict:
    """How many test texts each pool holds (``split_pools``), so a run checks them before any
    heavy work: ``reference_share`` of the test split (None: the reference is the validation
    split; at least 2), then ``calibration_share`` of what is left, the rest for evaluation."""
    n_ref = 0 if reference_share is None else max(2, int(round(reference_share * n_test)))
    n_cal = int(round(calibration_share * (n_test - n_ref)))
    sizes = {"reference": n_ref, "calibration": n_cal, "evaluation": n_test - n_ref - n_cal}
    if min(sizes["calibration"], sizes["evaluation"]) < 2:
        raise ValueError(
            f"monitor.calibration_share={calibration_share:g} leaves pools of {sizes} of the "
            f"{n_test} test texts; accepted: a share that leaves at least 2 texts in each pool"
        )
    return sizes


def split_pools(n_test: int, calibration_share: float, reference_share: float | None, rng) -> Pools:
    """The test split shuffled once and cut into the pools of ``pool_sizes``, each sorted.
    Thresholds come from texts the scored windows never see: a window that shares texts with
    the calibration windows shares their statistics, and the false alarms it counts then
    measure how well the threshold fits those texts, not the level a team would get."""
    sizes = pool_sizes(n_test, calibration_share, reference_share)
    order = rng.permutation(n_test)
    ref, cal = sizes["reference"], sizes["reference"] + sizes["calibration"]
    return Pools(
        reference=None if reference_share is None else np.sort(order[:ref]),
        calibration=np.sort(order[ref:cal]),
        evaluation=np.sort(order[cal:]),
    )


def draw_windows(n_pool: int, window: int, n_windows: int, rng) -> np.ndarray:
    """(n_windows, window) row indices into a pool of n_pool texts, each row without
    replacement (a window is w distinct texts) and sorted (two draws of one set of texts then
    give bit-identical statistics)."""
    if not 2 <= window <= n_pool:
        raise ValueError(f"a window of {window} texts needs a pool of at least that, got {n_pool}")
    return np.stack([np.sort(rng.choice(n_pool, window, replace=False)) for _ in range(n_windows)])


def run_windows(
    ref: Reference,
    windows: Windows,
    names: Sequence[str],
    settings: Settings,
    rng: np.random.Generator,
) -> dict[str, list[Outcome]]:
    """Every named monitor on every window of one pool (``Monitor.batch``). On one BLAS/OpenMP
    thread: the matrices are a few hundred rows, and two threads spinning against each other
    on a shared 2-core machine made logistic-regression fits 3x and MMD 2x slower than one
    (SmolLM2 windows of 200)."""
    with threadpool_limits(1):
        return {n: MONITORS[n].batch(ref, windows, settings, rng) for n in names}


def null_threshold(statistics: Sequence[float], alpha: float) -> float:
    """The (1 - alpha) quantile of a statistic over undrifted windows: the alarm level of a
    monitor without a p-value."""
    return float(np.quantile(np.asarray(statistics, dtype=np.float64), 1.0 - alpha))


def alarms(outcomes: Sequence[Outcome], alpha: float, threshold: float | None) -> np.ndarray:
    """Which windows alarm: p <= alpha where there is a p-value, else statistic > threshold
    (a statistic equal to it up to rounding, as on an undrifted checkpoint, does not)."""
    if threshold is None:
        return np.array([o.p_value <= alpha for o in outcomes])
    stat = np.array([o.statistic for o in outcomes])
    return (stat > threshold) & ~np.isclose(stat, threshold, rtol=1e-9, atol=1e-12)


def first_index(flags: Sequence[bool]) -> int | None:
    return next((i for i, f in enumerate(flags) if f), None)


def window_set_row(
    name: str,
    outcomes: Sequence[Outcome],
    *,
    windows: str,
    checkpoint: int | None,
    knob: tuple[str, float],
    alpha: float,
    threshold: float | None,
    true_accuracy: np.ndarray | None = None,
) -> dict:
    """One row of monitors.csv: one monitor over one set of windows (the undrifted ones, or one
    checkpoint's). ``knob``: the checkpoint's knob, named (``("sigma", 0.02)``, ``("rung", 3)``)."""
    mon = MONITORS[name]
    stat = np.array([o.statistic for o in outcomes])
    row = {
        "windows": windows,
        "checkpoint": checkpoint,
        knob[0]: knob[1],
        "monitor": name,
        "alarm_rate": float(alarms(outcomes, alpha, threshold).mean()),
        "statistic_mean": float(stat.mean()),
        "p_value_median": (
            float(np.median([o.p_value for o in outcomes])) if mon.has_p_value else None
        ),
        "threshold": threshold,
        "accuracy_estimate_mean": None,
        "accuracy_true_mean": None,
        "accuracy_abs_error_mean": None,
    }
    if mon.estimates_accuracy and true_accuracy is not None:
        est = np.array([o.accuracy for o in outcomes])
        row.update(
            accuracy_estimate_mean=float(est.mean()),
            accuracy_true_mean=float(np.mean(true_accuracy)),
            accuracy_abs_error_mean=float(np.mean(np.abs(est - true_accuracy))),
        )
    return row


def scorecard(
    names: Sequence[str],
    calibration: dict[str, list[Outcome]],
    undrifted: dict[str, list[Outcome]],
    checkpoints: Sequence[dict[str, list[Outcome]]],
    sigmas: Sequence[float],
    collapse: Mapping,
    true_accuracy: Sequence[np.ndarray],
    *,
    alpha: float,
    power_level: float,
    knob: str,
) -> tuple[dict, list[dict]]:
    """Score each monitor of a run: its false-alarm rate on undrifted windows (thresholds come
    from other, calibration windows), its detection power per checkpoint (the share of windows
    that alarm), the first sigma with power >= ``power_level`` and its lead on the ``collapse``
    (``collapse_points``: per criterion, and on the first any fires), and for the estimators
    |estimate - true accuracy| per checkpoint (mean over windows).

    ``checkpoints[c][name]``: the outcomes on checkpoint c's windows; ``true_accuracy[c]``: each
    of those windows' real accuracy. ``sigmas``: the checkpoints' knob values, named ``knob``
    in what is returned (``sigma_at_alarm``; ``rung_at_alarm`` on a quantization ladder).
    Returns (scores for metrics.json, rows for monitors.csv)."""
    sigmas = [float(s) for s in sigmas]
    scores: dict = {"collapse": dict(collapse), "by_monitor": {}}
    rows = []
    for name in names:
        entry, monitor_rows = monitor_score(
            name,
            calibration,
            undrifted,
            checkpoints,
            sigmas,
            true_accuracy,
            collapse,
            alpha=alpha,
            power_level=power_level,
            knob=knob,
        )
        rows += monitor_rows
        scores["by_monitor"][name] = entry
    return scores, rows


def monitor_score(
    name: str,
    calibration: dict[str, list[Outcome]],
    undrifted: dict[str, list[Outcome]],
    checkpoints: Sequence[dict[str, list[Outcome]]],
    sigmas: list[float],
    true_accuracy: Sequence[np.ndarray],
    collapse: Mapping,
    *,
    alpha: float,
    power_level: float,
    knob: str,
) -> tuple[dict, list[dict]]:
    """Monitor ``name``'s entry of :func:`scorecard` (same arguments) and its rows (undrifted,
    then each checkpoint): its threshold from the calibration windows (none for a monitor with a
    p-value, which has no calibration windows), false-alarm rate, power per checkpoint, first
    alarm and its lead on the ``collapse``: on its first checkpoint (any criterion) and on each
    criterion's own."""
    mon = MONITORS[name]
    threshold = (
        None if mon.has_p_value else null_threshold([o.statistic for o in calibration[name]], alpha)
    )
    common = {"alpha": alpha, "threshold": threshold}
    null_row = window_set_row(
        name, undrifted[name], windows="undrifted", checkpoint=None, knob=(knob, 0.0), **common
    )
    ckpt_rows = [
        window_set_row(
            name,
            checkpoints[c][name],
            windows="drifted",
            checkpoint=c,
            knob=(knob, sigmas[c]),
            true_accuracy=true_accuracy[c],
            **common,
        )
        for c in range(len(sigmas))
    ]
    power = [r["alarm_rate"] for r in ckpt_rows]
    alarm = first_index([p >= power_level for p in power])
    first = collapse["checkpoint"]
    entry = {
        "has_p_value": mon.has_p_value,
        "threshold": threshold,
        "false_alarm_rate": null_row["alarm_rate"],
        "n_undrifted_windows": len(undrifted[name]),
        "power": power,
        "statistic_mean": [r["statistic_mean"] for r in ckpt_rows],
        "alarm_checkpoint": alarm,
        f"{knob}_at_alarm": None if alarm is None else sigmas[alarm],
        "lead_checkpoints": None if alarm is None or first is None else first - alarm,
        "lead_by_criterion": leads(alarm, collapse),
    }
    if mon.estimates_accuracy:
        err = [r["accuracy_abs_error_mean"] for r in ckpt_rows]
        entry.update(
            accuracy_estimate=[r["accuracy_estimate_mean"] for r in ckpt_rows],
            accuracy_true=[r["accuracy_true_mean"] for r in ckpt_rows],
            abs_error=err,
            abs_error_mean=float(np.mean(err)),
            abs_error_at_max=err[-1],
        )
    return entry, [null_row, *ckpt_rows]
