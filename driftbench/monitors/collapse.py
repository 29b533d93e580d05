"""The collapse a run's monitors should catch, by named criteria, and each monitor's lead on it.

A collapse defined by ROC-AUC alone misses a classifier whose ranking holds while its decisions
and its confidence break: directional drift at sigma = 0.25 takes accuracy 0.80 -> 0.66, silent
failures 47.5% -> 72.1% and ECE 0.087 -> 0.245 and was reported as nothing broken (issue 32).
So each criterion of ``CRITERIA`` reads one metric of the frozen classifier
(``driftbench.metrics.checkpoint_metrics``) and fires at the first checkpoint where that metric
is worse than its undrifted value by at least the criterion's threshold (``monitor.collapse``).
The run's collapse is the first checkpoint where any criterion fires; "nothing broke" is said
only where none does. A monitor's lead on a criterion is that criterion's checkpoint less the
monitor's alarm checkpoint: > 0 the alarm came first, < 0 it lagged.

numpy-free, torch-free, Hydra-free: plain numbers in, plain dicts out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Criterion:
    """One way a classifier breaks: ``metric`` (a key of ``checkpoint_metrics``) moves the wrong
    way, ``worse`` = -1 (it drops: ROC-AUC) or +1 (it rises: ECE), by at least a threshold.
    ``label`` names it in reports, with ``unit`` after the threshold."""

    metric: str
    worse: int
    label: str
    unit: str = ""

    def fires(self, value: float, undrifted: float, threshold: float) -> bool:
        """``value`` at least ``threshold`` worse than ``undrifted``. A NaN (a silent-failure rate
        with no error to count) never fires: the rate is undefined, not high."""
        if self.worse < 0:
            return value <= undrifted - threshold
        return value >= undrifted + threshold

    def describe(self, threshold: float) -> str:
        """``ROC-AUC − 0.05``, ``SFR + 10 points``: the criterion and its threshold, for a table."""
        sign = "−" if self.worse < 0 else "+"
        return f"{self.label} {sign} {threshold:g}{self.unit}"


# The criteria, in the order reports show them; conf/monitor/all.yaml's ``collapse`` names each.
CRITERIA: dict[str, Criterion] = {
    "roc_auc_drop": Criterion("roc_auc", -1, "ROC-AUC"),
    "balanced_accuracy_drop": Criterion("balanced_accuracy", -1, "balanced accuracy"),
    "ece_rise": Criterion("ece", +1, "ECE"),
    "silent_failure_rate_rise_pct": Criterion("silent_failure_rate_pct", +1, "SFR", " points"),
}


def check_criteria(thresholds: Mapping[str, float | None]) -> dict[str, float]:
    """The criteria switched on (threshold not null), in ``CRITERIA``'s order. At least one must
    be: with none, a run could not tell a collapse from nothing broken."""
    unknown = sorted(set(thresholds) - set(CRITERIA))
    if unknown:
        raise ValueError(
            f"monitor.collapse: no criterion {', '.join(unknown)}; accepted: {', '.join(CRITERIA)}"
        )
    on = {n: float(thresholds[n]) for n in CRITERIA if thresholds.get(n) is not None}
    bad = {n: t for n, t in on.items() if not (math.isfinite(t) and t > 0)}
    if bad:
        raise ValueError(f"monitor.collapse: thresholds {bad}; accepted: a number > 0, or null")
    if not on:
        raise ValueError(
            "monitor.collapse: every criterion is null; accepted: a threshold for at least one "
            f"of {', '.join(CRITERIA)}"
        )
    return on


def collapse_points(
    rows: Sequence[Mapping[str, float]],
    undrifted: Mapping[str, float],
    thresholds: Mapping[str, float | None],
    knobs: Sequence[float],
    knob: str,
) -> dict:
    """Where each criterion fires, and the run's collapse: the first checkpoint any fires at.

    ``rows[c]``: checkpoint c's metrics of the frozen classifier; ``undrifted``: the same on the
    undrifted texts; ``knobs[c]``: checkpoint c's knob value, named ``knob`` in what is returned
    (``sigma``; ``rung`` on a quantization ladder). ``by_criterion[name]``: its threshold, the
    undrifted value, the checkpoint and knob where it first fires and the metric's value there
    (None where it never fires); ``criteria``: those that fire at the collapse (empty: nothing
    broke)."""
    by: dict[str, dict] = {}
    for name, threshold in check_criteria(thresholds).items():
        crit = CRITERIA[name]
        base = float(undrifted[crit.metric])
        values = [float(r[crit.metric]) for r in rows]
        c = next((i for i, v in enumerate(values) if crit.fires(v, base, threshold)), None)
        by[name] = {
            "metric": crit.metric,
            "threshold": threshold,
            "undrifted": base,
            "checkpoint": c,
            knob: None if c is None else float(knobs[c]),
            "value": None if c is None else values[c],
        }
    fired = [b["checkpoint"] for b in by.values() if b["checkpoint"] is not None]
    first = min(fired, default=None)
    return {
        "by_criterion": by,
        "checkpoint": first,
        knob: None if first is None else float(knobs[first]),
        "criteria": [n for n, b in by.items() if first is not None and b["checkpoint"] == first],
    }


def leads(alarm: int | None, collapse: Mapping) -> dict[str, int | None]:
    """A monitor's lead on each criterion of ``collapse`` (``collapse_points``), in checkpoints:
    the criterion's checkpoint less the alarm's (> 0 ahead, 0 together, < 0 behind). None where
    the monitor never alarms or the criterion never fires."""
    return {
        name: None if alarm is None or b["checkpoint"] is None else b["checkpoint"] - alarm
        for name, b in collapse["by_criterion"].items()
    }
