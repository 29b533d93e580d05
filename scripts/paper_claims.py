"""The drift paper, claim by claim: each quantitative claim beside driftbench's number.

    python scripts/paper_claims.py outputs/multirun/<sweep dir> [more sweep or run dirs ...]

The paper: "I Can't Believe It's Not Robust: Catastrophic Collapse of Safety Classifiers under
Embedding Drift". The complete drift_eval runs under the given dirs are read with the sweep
report's own discovery (``driftbench.report.collect``: failed, running, died and edited runs are
skipped and listed); the synthetic drifts (``driftbench.drift.DRIFTS``: gaussian, directional,
subspace) of the unmitigated classifier are kept and grouped into settings with
``driftbench.report.group_runs`` (runs that differ in ``seed`` or ``data.seed`` alone are
replicates of one setting). One Markdown table is printed: claim | the paper's number |
driftbench's number [interval] (runs) | verdict, from ``CLAIMS``, one function per claim.

driftbench's number is the mean over a setting's runs with the 95% Student t-interval across
them (``driftbench.intervals.replicate_interval``). A setting of one run shows that run's
bootstrap interval over its test texts where the run stores one (a checkpoint metric; for a
change from sigma 0, the interval at sigma less the value at 0), else its value alone.

Verdicts (``verdict``):

- **holds**: the paper's number (or range) lies within driftbench's interval (the two overlap);
- **holds in shape**: not that, but the change the claim describes goes the paper's way: the
  interval of that change (from sigma 0, or between the two settings compared) excludes zero on
  the paper's side; same direction, different size;
- **does not hold**: neither;
- **not testable here**: the runs cannot answer the claim; the reason is given. Among the
  reasons: a claim that something moves, where the paper's number lies in the interval but so
  does no movement at all (the change's interval holds zero): at that many runs the two are not
  told apart, so it is not called "holds".

Reading the paper: "≈ x" and "about x" are x ± 50% (≈ 1° is 0.5° to 1.5°); "maximum drift" is
the paper's sigma_max = 0.15 (its Table 1), which is on the sweep's grid, not the sweep's own
largest sigma; a claim at a sigma is read at the run's sigma nearest it, within 25% (the row says
which when it differs); the headline numbers of section 3 are compared on Gaussian drift (eq. 5,
the operator of the paper's SNR analysis, B.6), the claims about drift types on each type.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from driftbench.drift import DRIFTS
from driftbench.intervals import replicate_interval
from driftbench.report import RunGroup, collect, group_runs

PAPER_SIGMA_MAX = 0.15  # the paper's Table 1: "maximum drift"
SIGMA_RTOL = 0.25  # a claim at sigma s is read at the run's sigma nearest s, within 25% of s
APPROX = 0.5  # "≈ x": x ± 50%
HEADLINE_DRIFT = "gaussian"  # the drift of section 3's headline numbers (eq. 5, B.6)
VARIANT_SUFFIX = re.compile(r"[-_](instruct|it|base|chat)$")

HOLDS, SHAPE, NOT_HOLD = "holds", "holds in shape", "does not hold"


def about(x: float) -> tuple[float, float]:
    """The range the paper's "≈ x" stands for."""
    return tuple(sorted((x * (1 - APPROX), x * (1 + APPROX))))


# ── numbers with their interval ──────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Estimate:
    """A number over a setting's runs: mean and interval, and how the interval was made: ``t``
    (Student t across ``n`` replicate runs), ``bootstrap`` (one run, over its test texts),
    ``point`` (one run, no interval: low = high = mean)."""

    mean: float
    low: float
    high: float
    n: int
    how: str

    @property
    def defined(self) -> bool:
        return self.n > 0 and math.isfinite(self.mean)

    def cell(self, unit: Unit) -> str:
        """``mean unit [low, high] (runs)``, as a table cell shows it."""
        if not self.defined:
            return "undefined"
        if self.how == "point":
            return f"{unit(self.mean)}{unit.suffix} (1 run, no interval)"
        runs = f"{self.n} runs" if self.how == "t" else "1 run, bootstrap"
        return f"{unit(self.mean)}{unit.suffix} [{unit(self.low)}, {unit(self.high)}] ({runs})"


def estimate(values: list, ci: tuple[float, float] | None = None) -> Estimate:
    """Mean and 95% t-interval of one number over replicate runs; with one run, ``ci`` (its
    bootstrap interval) where given and finite, else the value alone. NaN and None (a run where
    the number is undefined) are left out, as ``replicate_interval`` leaves them."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    mean, low, high = replicate_interval(finite)
    if len(finite) >= 2:
        return Estimate(mean, low, high, len(finite), "t")
    if len(finite) == 1 and ci is not None and all(map(math.isfinite, ci)):
        return Estimate(mean, min(ci), max(ci), 1, "bootstrap")
    return Estimate(mean, mean, mean, len(finite), "point")


def verdict(
    est: Estimate,
    target: tuple[float, float],
    change: Estimate | None = None,
    direction: int = 0,
) -> str:
    """The stated rule: ``holds`` where the paper's range ``target`` meets ``est``'s interval;
    else ``holds in shape`` where ``change`` (the movement the claim describes) has an interval
    on the ``direction`` side of zero (+1: up, -1: down); else ``does not hold``. A claim of a
    movement whose ``change`` interval holds zero as well as the paper's number is not told
    apart from no movement at this many runs: not testable here, not "holds"."""
    if not est.defined:
        return "not testable here: the number is undefined in every run"
    moved = (
        direction != 0
        and change is not None
        and change.defined
        and direction * change.low > 0
        and direction * change.high > 0
    )
    if est.low <= target[1] and target[0] <= est.high:
        if direction and not moved:
            return (
                f"not testable here: at {est.n} run(s) the interval holds the paper's number "
                "and no change alike"
            )
        return HOLDS
    return SHAPE if moved else NOT_HOLD


# ── the runs ─────────────────────────────────────────────────────────────────────────────────


def drift_of(run: dict) -> str | None:
    return (run["config"].get("drift") or {}).get("name")


def synthetic_runs(runs: list[dict]) -> tuple[list[dict], list[tuple[str, str]]]:
    """(the runs the claims are about, (dir, why) for each other run): drift_eval runs of a
    synthetic drift without a mitigation (the paper's classifier stays frozen and as trained)."""
    kept, left = [], []
    for r in runs:
        mitigation = (r["config"].get("mitigation") or {}).get("name", "none")
        if r["meta"].get("task") != "drift_eval":
            left.append((str(r.get("dir")), f"task {r['meta'].get('task')}"))
        elif drift_of(r) not in DRIFTS or "update" in r["metrics"]:
            left.append((str(r.get("dir")), f"drift {drift_of(r)}: a real update, not eq. 5-8"))
        elif mitigation != "none":
            left.append((str(r.get("dir")), f"mitigation {mitigation}: not the frozen classifier"))
        else:
            kept.append(r)
    return kept, left


def replicate_key(run: dict) -> tuple:
    """Which draw of its setting a run is: its run seed and data seed."""
    return run["config"].get("seed"), (run["config"].get("data") or {}).get("seed")


def setting(g: RunGroup, skip: tuple[str, ...] = ("drift",)) -> str:
    """The group's axis values less ``skip``, for a row's claim; "" where nothing else varies."""
    label = g.label(skip=skip)
    return "" if label == "all" else label


def of_drift(groups: list[RunGroup], drift: str | None) -> list[RunGroup]:
    """The groups of one drift (None: every group)."""
    return [g for g in groups if drift is None or drift_of(g.runs[0]) == drift]


def by_replicate(groups: list[RunGroup], skip: tuple[str, ...]) -> dict[tuple, list[RunGroup]]:
    """Groups alike but for the axes ``skip``, together: runs of one draw in them are paired."""
    out: dict[tuple, list[RunGroup]] = {}
    for g in groups:
        out.setdefault(g.key(skip=skip), []).append(g)
    return out


# ── a checkpoint metric at a sigma ───────────────────────────────────────────────────────────


def checkpoint(run: dict, sigma: float) -> dict | None:
    """The run's checkpoint at the sigma of its schedule nearest ``sigma``; None where none lies
    within ``SIGMA_RTOL`` of it (sigma 0: exactly 0)."""
    cps = run["metrics"]["checkpoints"]
    best = min(cps, key=lambda c: abs(c["sigma"] - sigma))
    return best if abs(best["sigma"] - sigma) <= SIGMA_RTOL * sigma else None


def undrifted(run: dict) -> dict | None:
    """The run's checkpoint at sigma 0 (None where its schedule starts above 0)."""
    return checkpoint(run, 0.0)


def value(c: dict, metric: str) -> float:
    v = c.get(metric)
    return math.nan if v is None else float(v)


def ci(c: dict, metric: str) -> tuple[float, float] | None:
    if f"{metric}_ci_low" not in c:
        return None
    return value(c, f"{metric}_ci_low"), value(c, f"{metric}_ci_high")


@dataclass(frozen=True)
class AtSigma:
    """A metric at a sigma over a group's runs, and its change from sigma 0 (``relative``: in %
    of the value at 0). ``sigma``: the sigma read (None where a run has none near it)."""

    est: Estimate
    change: Estimate
    sigma: float | None


def at_sigma(g: RunGroup, metric: str, sigma: float, relative: bool = False) -> AtSigma:
    """``metric`` over the group's runs at their sigma nearest ``sigma`` (``relative``: its
    change from sigma 0, in %), and its change from sigma 0 per run (``AtSigma``)."""
    at = [checkpoint(r, sigma) for r in g.runs]
    base = [undrifted(r) for r in g.runs]
    if any(c is None for c in at + base):
        nan = estimate([])
        return AtSigma(nan, nan, None)
    x = [value(c, metric) for c in at]
    x0 = [value(c, metric) for c in base]
    scale = [100 / v if relative else 1.0 for v in x0]
    changes = [(a - b) * s for a, b, s in zip(x, x0, scale, strict=True)]
    low_high = ci(at[0], metric)  # used where the group is one run
    moved = None if low_high is None else tuple((v - x0[0]) * scale[0] for v in low_high)
    change = estimate(changes, moved)
    return AtSigma(change if relative else estimate(x, low_high), change, at[0]["sigma"])


# ── units ────────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Unit:
    """How a number is shown: times ``scale``, with ``spec``, then ``suffix`` (once a cell)."""

    scale: float
    spec: str
    suffix: str = ""

    def __call__(self, v: float) -> str:
        return format(v * self.scale, self.spec)


PCT = Unit(100, ".1f", "%")  # a share, as %
PCT_OF = Unit(1, ".1f", "%")  # a number already in % (SFR)
PCT_CHANGE = Unit(1, "+.1f", "%")  # a relative change, in % of the value at sigma 0
POINTS = Unit(100, "+.1f", " points")  # a difference of shares (ROC-AUC, ECE), in points
POINTS_OF = Unit(1, "+.1f", " points")  # a difference already in points
DEG = Unit(1, ".2f", "°")
SPREAD = Unit(1, ".1f", " points")  # a spread of ROC-AUC, in points
SIGMA = Unit(1, ".3g")


# ── rows ─────────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Row:
    """One line of the table; ``est``: the number compared, for tests (None: none)."""

    claim: str
    paper: str
    ours: str
    verdict: str
    est: Estimate | None = None


def untestable(claim: str, paper: str, why: str) -> list[Row]:
    return [Row(claim, paper, "–", f"not testable here: {why}")]


def metric_rows(
    groups: list[RunGroup],
    claim: str,
    paper: str,
    *,
    metric: str,
    sigma: float,
    target: tuple[float, float],
    unit: Unit,
    direction: int = 0,
    relative: bool = False,
    drift: str | None = HEADLINE_DRIFT,
    change_unit: Unit = POINTS,
) -> list[Row]:
    """One row per group of ``drift`` (None: every drift): ``metric`` at the run's sigma nearest
    ``sigma`` (``relative``: its change from sigma 0 in %), against the paper's ``target``;
    ``direction``: the way the paper says it moves from sigma 0, for "holds in shape"."""
    chosen = of_drift(groups, drift)
    if not chosen:
        return untestable(claim, paper, f"no {drift} drift runs")
    rows = []
    for g in chosen:
        label = ", ".join(x for x in (drift_of(g.runs[0]), setting(g)) if x)
        a = at_sigma(g, metric, sigma, relative)
        if a.sigma is None:
            why = f"no σ = 0 and σ within 25% of {sigma:g} in every run"
            rows += untestable(f"{claim} ({label})", paper, why)
            continue
        ours = a.est.cell(unit)
        if a.sigma != sigma:
            ours = f"at σ = {a.sigma:g}: {ours}"
        if direction and not relative:
            ours += f"; from σ = 0: {a.change.cell(change_unit)}"
        v = verdict(a.est, target, a.change, direction)
        rows.append(Row(f"{claim} ({label})", paper, ours, v, a.est))
    return rows


def undrifted_rows(
    groups: list[RunGroup],
    claim: str,
    paper: str,
    metric: str,
    target: tuple[float, float],
    unit: Unit,
) -> list[Row]:
    """``metric`` at checkpoint 0 (before any drift, the same for every drift of one draw): one
    row per setting less the drift, each replicate (seed, data seed) counted once."""
    rows = []
    for together in by_replicate(groups, skip=("drift", "schedule")).values():
        first = {}  # draw -> its checkpoint 0 (the first run of the draw that has the metric)
        for g in together:
            for r in g.runs:
                c = undrifted(r)
                if c is not None and math.isfinite(value(c, metric)):
                    first.setdefault(replicate_key(r), c)
        cps = list(first.values()) or [{}]
        est = estimate([value(c, metric) for c in cps], ci(cps[0], metric))
        label = setting(together[0], skip=("drift", "schedule"))
        rows.append(
            Row(
                claim + (f" ({label})" if label else ""),
                paper,
                est.cell(unit),
                verdict(est, target),
                est,
            )
        )
    return rows


def replicates(together: list[RunGroup]) -> list[list[dict]]:
    """For each draw (seed, data seed) that every group of ``together`` holds: its run in each
    group, in ``together``'s order. Paired numbers (a difference, a spread) are taken per draw."""
    runs = [{replicate_key(r): r for r in g.runs} for g in together]
    common = set.intersection(*(set(x) for x in runs))
    return [[x[k] for x in runs] for k in sorted(common, key=str)]


def relative_drop(run: dict, sigma: float) -> float:
    """ROC-AUC lost from sigma 0 to the run's sigma nearest ``sigma``, in % of the AUC at 0 (the
    paper's "relative drop of roughly 45%"); NaN where the run has no sigma near it."""
    c, c0 = checkpoint(run, sigma), undrifted(run)
    if c is None or c0 is None:
        return math.nan
    return 100 * (value(c0, "roc_auc") - value(c, "roc_auc")) / value(c0, "roc_auc")


def failure_cliff(run: dict) -> float | None:
    """The run's failure-cliff sigma (``summary.failure_cliff_sigma``: the first sigma with
    ROC-AUC below 0.55, driftbench's "near chance"); None where it never falls below."""
    return run["metrics"]["summary"].get("failure_cliff_sigma")


def transition_width(run: dict) -> float | None:
    """How far the cliff lies from the end of "minimal degradation": the cliff sigma less the
    first sigma whose ROC-AUC is 5% or more below its value at sigma 0 (the narrower of the two
    readings of the paper's window, so the one that favours it); None without a cliff."""
    cliff = failure_cliff(run)
    if cliff is None:
        return None
    sigmas = [c["sigma"] for c in run["metrics"]["checkpoints"]]
    return cliff - next((s for s in sigmas if relative_drop(run, s) >= 5), cliff)


def cliff_rows(
    groups: list[RunGroup],
    claim: str,
    paper: str,
    target: tuple[float, float],
    of_run: Callable[[dict], float | None],
    unit: Unit,
    shape: bool,
) -> list[Row]:
    """One row per group: ``of_run`` (the cliff, or the transition's width) over its runs. A run
    that never falls below AUC 0.55 has no cliff on its grid: it is counted, not averaged.
    holds: every run has one and their interval meets ``target``; with ``shape``, holds in
    shape where some run has one (a cliff exists, at another sigma or not in every run)."""
    rows = []
    for g in groups:
        values = [of_run(r) for r in g.runs]
        reached = [v for v in values if v is not None]
        label = ", ".join(x for x in (drift_of(g.runs[0]), setting(g)) if x)
        top = max(c["sigma"] for c in g.runs[0]["metrics"]["checkpoints"])
        est = estimate(reached)
        if not reached:
            ours, v = f"no cliff up to σ = {top:g} (0 of {len(values)} runs)", NOT_HOLD
        else:
            ours = f"{est.cell(unit)}; a cliff in {len(reached)} of {len(values)} runs"
            v = verdict(est, target) if len(reached) == len(values) else NOT_HOLD
            if v != HOLDS and shape:
                v = SHAPE
        rows.append(Row(f"{claim} ({label})", paper, ours, v, est))
    return rows


def paired_rows(
    claim: str,
    paper: str,
    target: tuple[float, float],
    pairs: list[tuple[str, list[list[dict]]]],
    of_pair: Callable[[list[dict]], float],
    unit: Unit,
    direction: int = 0,
) -> list[Row]:
    """One row per (label, draws): ``of_pair`` of each draw's runs (a difference, a spread),
    its mean and t-interval over the draws; the number is its own change for holds in shape."""
    rows = []
    for label, draws in pairs:
        est = estimate([of_pair(runs) for runs in draws])
        v = verdict(est, target, est, direction)
        rows.append(Row(f"{claim} ({label})", paper, est.cell(unit), v, est))
    return rows


def variant(run: dict) -> str | None:
    return (run["metrics"].get("model") or {}).get("variant") or run["config"]["model"].get(
        "variant"
    )


def model_id(run: dict) -> str:
    """Which model a run embeds with: its config name, or a ``model=hf`` run's path or id."""
    model = run["config"]["model"]
    if model["name"] == "hf" and model.get("name_or_path"):
        return str(model["name_or_path"])
    return model["name"]


def family(run: dict) -> str:
    """A model's family: its name (a path's or Hub id's last part) less a variant suffix
    (``smollm2_135m_instruct`` -> ``smollm2_135m``, ``Qwen/Qwen3-0.6B-Base`` -> ``qwen3-0.6b``)."""
    return VARIANT_SUFFIX.sub("", Path(model_id(run)).name.lower())


def model_pairs(groups: list[RunGroup], skip: tuple[str, ...]) -> tuple[list, dict[str, str]]:
    """(label, draws of (base run, instruct run)) for each base and instruct model of one family
    among groups alike but for ``skip`` (``model`` among them), paired by draw; and each model
    seen with its variant, which a row names where there is no pair."""
    pairs, seen = [], {}
    for together in by_replicate(groups, skip).values():
        models: dict[str, dict] = {}  # model name -> {draw: run}
        for g in together:
            for r in g.runs:
                models.setdefault(model_id(r), {}).setdefault(replicate_key(r), r)
                seen[model_id(r)] = str(variant(r))
        for base, b in models.items():
            for instruct, i in models.items():
                first_b, first_i = next(iter(b.values())), next(iter(i.values()))
                if (variant(first_b), variant(first_i)) != ("base", "instruct"):
                    continue
                if family(first_b) == family(first_i):
                    draws = [[b[k], i[k]] for k in sorted(set(b) & set(i), key=str)]
                    pairs.append((f"{instruct} vs {base}", draws))
    return pairs, seen


def no_pair(seen: dict[str, str]) -> str:
    models = ", ".join(f"{m}: {v}" for m, v in sorted(seen.items()))
    return f"no base and instruct model of one family among the runs ({models})"


# ── the claims, one function each ────────────────────────────────────────────────────────────


def angle_at_sigma_002(groups: list[RunGroup]) -> list[Row]:
    """Abstract: "normalized perturbations of magnitude σ=0.02 (corresponding to ≈1° angular
    drift on the embedding sphere)". Compared: ``realized_angle_deg`` (the mean angle between
    each test embedding at sigma 0 and at sigma) at sigma = 0.02, per drift type: the paper's
    sentence names no type, and the angle of one sigma differs by type (Gaussian noise has norm
    ≈ sigma·√d). ≈ 1° is 0.5° to 1.5°. The angle has no bootstrap interval."""
    return metric_rows(
        groups,
        "σ = 0.02 turns embeddings by ≈ 1°",
        "≈ 1° at σ = 0.02",
        metric="realized_angle_deg",
        sigma=0.02,
        target=about(1.0),
        unit=DEG,
        drift=None,
    )


def baseline_auc(groups: list[RunGroup]) -> list[Row]:
    """Section 3: "at baseline (checkpoint 0) classifiers achieve 85% to 90% AUC"; the setup:
    "producing a baseline ROC AUC in the range 0.85 to 0.90 on undrifted test embeddings".
    Compared: ``roc_auc`` at sigma 0, each draw once (it is the same for every drift type)."""
    return undrifted_rows(
        groups, "undrifted ROC-AUC is 85-90%", "85-90%", "roc_auc", (0.85, 0.90), PCT
    )


def auc_at_sigma_002(groups: list[RunGroup]) -> list[Row]:
    """Abstract: "normalized perturbations of magnitude σ=0.02 (...) reduce classifier
    performance from 85% to 50% ROC-AUC" (section 3: "at checkpoint 1 with drift magnitude
    σ=0.028 performance falls to 49.75% AUC"). Compared: ``roc_auc`` at sigma = 0.02, the
    abstract's sigma, on Gaussian drift; holds in shape where it falls from sigma 0 without
    reaching chance."""
    return metric_rows(
        groups,
        "σ = 0.02 takes ROC-AUC to 50%",
        "50% (85% → 50%)",
        metric="roc_auc",
        sigma=0.02,
        target=(0.50, 0.50),
        unit=PCT,
        direction=-1,
    )


def small_drift_is_harmless(groups: list[RunGroup]) -> list[Row]:
    """Section 3: "drift below σ=0.01 causes minimal degradation (less than 5% AUC drop)".
    Compared: the change of ``roc_auc`` from sigma 0 to sigma = 0.01 (the boundary itself), in %
    of its value at 0 (relative, as the paper's "relative drop of roughly 45%"; 5 AUC points
    would be almost the same bound at AUC 0.88), on Gaussian drift: a drop under 5% is a change
    above -5%."""
    return metric_rows(
        groups,
        "σ ≤ 0.01 costs < 5% of ROC-AUC",
        "> −5% (< 5% drop)",
        metric="roc_auc",
        sigma=0.01,
        target=(-5.0, math.inf),
        unit=PCT_CHANGE,
        relative=True,
    )


def cliff_sigma(groups: list[RunGroup]) -> list[Row]:
    """Figure 2: "failure cliff at σ=0.01–0.028"; section 3: "drift above σ=0.02 produces near
    random performance". The paper defines no cliff beyond "near random"; driftbench's is the
    first sigma with ROC-AUC below 0.55 (``summary.failure_cliff_sigma``), per drift type
    (Figure 2: "uniformly across drift types"), read on the run's own grid (to 0.25 in
    ``experiment=monitors``, beyond the paper's 0.15)."""
    claim, paper = "the failure cliff is at σ = 0.01-0.028", "σ = 0.01-0.028"
    return cliff_rows(groups, claim, paper, (0.01, 0.028), failure_cliff, SIGMA, shape=True)


def cliff_is_sharp(groups: list[RunGroup]) -> list[Row]:
    """Section 3: "The failure exhibits threshold behavior rather than gradual degradation
    (...) with the transition occurring within a narrow window of approximately 1% drift
    magnitude constituting a sharp performance cliff." Compared: the cliff sigma less the first
    sigma with a 5% relative ROC-AUC drop (``transition_width``), on Gaussian drift; "within
    ≈ 0.01" is 0 to 0.015 (a sharper cliff keeps the claim). A run without a cliff has no
    width."""
    chosen = of_drift(groups, HEADLINE_DRIFT)
    claim, paper = "the cliff is sharp: within ≈ 0.01 in σ", "≤ ≈ 0.01"
    if not chosen:
        return untestable(claim, paper, f"no {HEADLINE_DRIFT} drift runs")
    return cliff_rows(
        chosen, claim, paper, (0.0, about(0.01)[1]), transition_width, SIGMA, shape=False
    )


def auc_at_max_by_drift(groups: list[RunGroup]) -> list[Row]:
    """Section 3: "all mechanisms reducing ROC AUC to roughly 46% to 52% at maximum magnitude".
    Compared: ``roc_auc`` at sigma = 0.15 (the paper's maximum, Table 1), per drift type; holds
    in shape where it falls from sigma 0 without reaching 46-52%."""
    return metric_rows(
        groups,
        "every drift type takes ROC-AUC to 46-52% at max drift",
        "46-52% at σ = 0.15",
        metric="roc_auc",
        sigma=PAPER_SIGMA_MAX,
        target=(0.46, 0.52),
        unit=PCT,
        direction=-1,
        drift=None,
    )


def drift_types_agree(groups: list[RunGroup]) -> list[Row]:
    """Section 3: "all mechanisms reducing ROC AUC to roughly 46% to 52% at maximum magnitude
    differing by at most about 6 percentage points". Compared: per draw (seed, data seed), the
    largest less the smallest ``roc_auc`` at sigma = 0.15 over the drift types run on it; "at
    most about 6" is 0 to 9 points."""
    claim, paper = "drift types end within ≈ 6 AUC points", "≤ ≈ 6 points at σ = 0.15"
    buckets = [t for t in by_replicate(groups, skip=("drift",)).values() if len(t) > 1]
    if not buckets:
        return untestable(claim, paper, "one drift type only")
    pairs = [(", ".join(drift_of(g.runs[0]) for g in t), replicates(t)) for t in buckets]

    def spread_points(runs: list[dict]) -> float:
        aucs = [value(checkpoint(r, PAPER_SIGMA_MAX) or {}, "roc_auc") for r in runs]
        return 100 * (max(aucs) - min(aucs))

    return paired_rows(claim, paper, (0.0, 9.0), pairs, spread_points, SPREAD)


def subspace_worse_than_gaussian(groups: list[RunGroup]) -> list[Row]:
    """Section 3: "subspace rotation producing slightly worse degradation (approximately a
    48.9% drop versus 42.7% for Gaussian)". Compared: per draw, subspace's relative ROC-AUC drop
    at sigma = 0.15 less Gaussian's, in points (the paper: +6.2, ≈ 3.1 to 9.3); holds in shape
    where subspace drops more, by another amount."""
    claim, paper = "subspace drift degrades more than Gaussian", "+6.2 points (48.9% vs 42.7%)"
    pairs = []
    for together in by_replicate(groups, skip=("drift",)).values():
        by = {drift_of(g.runs[0]): g for g in together}
        if {"subspace", "gaussian"} <= set(by):
            pairs.append(("subspace − gaussian", replicates([by["subspace"], by["gaussian"]])))
    if not pairs:
        return untestable(claim, paper, "no subspace and Gaussian runs of one setting")

    def difference(runs: list[dict]) -> float:
        sub, gauss = (relative_drop(r, PAPER_SIGMA_MAX) for r in runs)
        return sub - gauss

    return paired_rows(claim, paper, about(6.2), pairs, difference, POINTS_OF, direction=+1)


def accuracy_at_max(groups: list[RunGroup]) -> list[Row]:
    """Section 3: "While accuracy collapses to 51.7%, ...". Compared: ``accuracy`` at sigma =
    0.15: the paragraph describes the plateau after the cliff, and its ECE "at maximum drift"
    fixes where it stands. Gaussian drift; holds in shape where accuracy falls from sigma 0."""
    return metric_rows(
        groups,
        "accuracy collapses to 51.7%",
        "51.7% at max drift",
        metric="accuracy",
        sigma=PAPER_SIGMA_MAX,
        target=(0.517, 0.517),
        unit=PCT,
        direction=-1,
    )


def confidence_barely_drops(groups: list[RunGroup]) -> list[Row]:
    """Abstract: "Critically, mean confidence only drops 14%"; section 3: "mean prediction
    confidence remains at 0.73, representing only a 14% drop from the baseline mean confidence
    of 0.85". Compared: the change of ``mean_confidence`` (max(p, 1 - p), eq. 16) from sigma 0
    to sigma = 0.15, in % of its value at 0, on Gaussian drift; holds in shape where it falls."""
    return metric_rows(
        groups,
        "mean confidence drops only 14%",
        "−14% (0.85 → 0.73)",
        metric="mean_confidence",
        sigma=PAPER_SIGMA_MAX,
        target=(-14.0, -14.0),
        unit=PCT_CHANGE,
        direction=-1,
        relative=True,
    )


def silent_failures(groups: list[RunGroup]) -> list[Row]:
    """Abstract: "producing dangerous silent failures where 72% of misclassifications occur with
    high confidence"; section 3: "among all misclassifications 72% occur with high confidence".
    Compared: ``silent_failure_rate_pct`` (eq. 18, confidence >= 0.8) at sigma = 0.15 (the
    collapsed state the paragraph describes), Gaussian drift; holds in shape where it rises."""
    return metric_rows(
        groups,
        "72% of errors are made with high confidence",
        "72%",
        metric="silent_failure_rate_pct",
        sigma=PAPER_SIGMA_MAX,
        target=(72.0, 72.0),
        unit=PCT_OF,
        direction=+1,
        change_unit=POINTS_OF,
    )


def confident_errors(groups: list[RunGroup]) -> list[Row]:
    """Section 3: "38.4% of test samples receive high confidence (above 0.8) yet incorrect
    predictions". Compared: ``high_confidence_error_rate`` (confident and wrong over all test
    texts) at sigma = 0.15, Gaussian drift; holds in shape where it rises."""
    return metric_rows(
        groups,
        "38.4% of texts are confidently wrong",
        "38.4%",
        metric="high_confidence_error_rate",
        sigma=PAPER_SIGMA_MAX,
        target=(0.384, 0.384),
        unit=PCT,
        direction=+1,
    )


def baseline_ece(groups: list[RunGroup]) -> list[Row]:
    """Section 3: "Calibration degrades severely from a baseline ECE of 1.2% ...". Compared:
    ``ece`` (eq. 19, 5 bins over [0.5, 1]) at sigma 0, each draw once."""
    return undrifted_rows(groups, "undrifted ECE is 1.2%", "1.2%", "ece", (0.012, 0.012), PCT)


def ece_at_max(groups: list[RunGroup]) -> list[Row]:
    """Section 3: "Calibration degrades severely from a baseline ECE of 1.2% to 22.6% at maximum
    drift". Compared: ``ece`` at sigma = 0.15, the paper's maximum, Gaussian drift; holds in
    shape where it rises from sigma 0."""
    return metric_rows(
        groups,
        "ECE reaches 22.6% at max drift",
        "22.6%",
        metric="ece",
        sigma=PAPER_SIGMA_MAX,
        target=(0.226, 0.226),
        unit=PCT,
        direction=+1,
    )


def accuracy_when_sure(groups: list[RunGroup]) -> list[Row]:
    """Section 3: "when the classifier reports 90% confidence, the empirical accuracy falls to
    56%". Compared: ``accuracy_at_conf_0.9`` (accuracy of the predictions with confidence >= 0.9)
    at sigma = 0.15, Gaussian drift; holds in shape where it falls. (Figure 3 says 36% at
    maximum drift for "high-confidence predictions"; the text's 56% is the one compared.)"""
    return metric_rows(
        groups,
        "accuracy at ≥ 90% confidence is 56%",
        "56%",
        metric="accuracy_at_conf_0.9",
        sigma=PAPER_SIGMA_MAX,
        target=(0.56, 0.56),
        unit=PCT,
        direction=-1,
    )


def instruct_less_separable(groups: list[RunGroup]) -> list[Row]:
    """Abstract: "instruction-tuned models exhibit 20% worse class separability than base
    models"; section 3: "the base model attains a Silhouette score of 0.245 (...) the instruction
    tuned model attains 0.198 (...) corresponding to 19% and 26% degradations". Compared: per
    draw, the instruct model's ``separability.silhouette`` (training embeddings) less the base
    model's of the same family, in % of the base's (≈ -20%: -30% to -10%); the paper's pair
    (Qwen-0.6B base, Qwen-4B-Instruct) differs in size too, a pair here must share a family."""
    claim, paper = "instruct models are ≈ 20% less separable", "−19% silhouette (0.245 → 0.198)"
    pairs, seen = model_pairs(groups, skip=("model", "drift", "schedule", "classifier"))
    if not pairs:
        return untestable(claim, paper, no_pair(seen))

    def change(runs: list[dict]) -> float:
        base, instruct = (r["metrics"]["separability"]["silhouette"] for r in runs)
        return 100 * (instruct - base) / abs(base)

    return paired_rows(claim, paper, about(-20.0), pairs, change, PCT_CHANGE, direction=-1)


def instruct_more_fragile(groups: list[RunGroup]) -> list[Row]:
    """Section 3: "Under maximum drift the base model classifier degrades 39.2% in ROC AUC while
    the instruction tuned classifier degrades 41.2%". Compared: per draw, the instruct model's
    relative ROC-AUC drop at sigma = 0.15 less the base model's of the same family, in points
    (+2.0: ≈ 1 to 3), Gaussian drift; holds in shape where the instruct model drops more."""
    claim, paper = "instruct models degrade more under drift", "+2.0 points (41.2% vs 39.2%)"
    pairs, seen = model_pairs(of_drift(groups, HEADLINE_DRIFT), skip=("model",))
    if not pairs:
        return untestable(claim, paper, no_pair(seen))

    def difference(runs: list[dict]) -> float:
        base, instruct = (relative_drop(r, PAPER_SIGMA_MAX) for r in runs)
        return instruct - base

    return paired_rows(claim, paper, about(2.0), pairs, difference, POINTS_OF, direction=+1)


CLAIMS: list[Callable[[list[RunGroup]], list[Row]]] = [
    angle_at_sigma_002,
    baseline_auc,
    auc_at_sigma_002,
    small_drift_is_harmless,
    cliff_sigma,
    cliff_is_sharp,
    auc_at_max_by_drift,
    drift_types_agree,
    subspace_worse_than_gaussian,
    accuracy_at_max,
    confidence_barely_drops,
    silent_failures,
    confident_errors,
    baseline_ece,
    ece_at_max,
    accuracy_when_sure,
    instruct_less_separable,
    instruct_more_fragile,
]


# ── the table ────────────────────────────────────────────────────────────────────────────────


def claim_rows(paths: list[Path]) -> tuple[list[Row], list[dict], list[tuple[str, str]]]:
    """(every claim's rows, the runs they read, (dir, why) of each run left out)."""
    runs, skipped = collect(paths)
    kept, left = synthetic_runs(runs)
    groups = group_runs(kept) if kept else []
    rows = [row for claim in CLAIMS for row in claim(groups)] if groups else []
    return rows, kept, skipped + left


def markdown(rows: list[Row], runs: list[dict], left: list[tuple[str, str]]) -> str:
    left_out = [f"- `{d}`: {why}" for d, why in left]
    if left:
        left_out = ["", f"Left out {len(left)} run(s):", "", *left_out]
    if not rows:
        return "\n".join(["No complete synthetic-drift run of drift_eval here.", *left_out]) + "\n"
    lines = [
        "| claim | the paper | driftbench [95% interval] (runs) | verdict |",
        "|---|---|---|---|",
        *(f"| {r.claim} | {r.paper} | {r.ours} | {r.verdict} |" for r in rows),
    ]
    draws = sorted({replicate_key(r) for r in runs}, key=str)
    shown = ", ".join("(" + ", ".join("–" if x is None else str(x) for x in k) + ")" for k in draws)
    lines += [
        "",
        f"{len(runs)} runs; draws (seed, data seed): {shown}. Interval: 95% Student t over the "
        "runs of a setting; one run: its bootstrap over test texts, or none. Verdict: holds "
        "(the paper's number or range meets the interval), holds in shape (the change the claim "
        "describes has an interval on the paper's side of zero), does not hold, not testable "
        "here (with the reason).",
    ]
    return "\n".join(lines + left_out) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python scripts/paper_claims.py", description=__doc__.splitlines()[0]
    )
    ap.add_argument("paths", nargs="+", type=Path, help="sweep dirs or run dirs")
    args = ap.parse_args(argv)
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        ap.error(f"no such path: {', '.join(missing)}")
    rows, runs, left = claim_rows(args.paths)
    sys.stdout.write(markdown(rows, runs, left))


if __name__ == "__main__":
    main()
