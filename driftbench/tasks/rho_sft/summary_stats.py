"""What a rho_sft sweep can conclude: each arm against sft_only and each margin against γ = 0
(difference of mean changes over seeds, Cohen's d, Welch's t-test), and the power statement: with
this many seeds and this run-to-run spread, the smallest difference the sweep could detect.

The smallest detectable difference δ* (two-sided, level α, power 1 − β) of two arms with
run-to-run standard deviations s_a, s_b over n_a, n_b seeds solves

    P(|T| > t_{1−α/2, ν}) = 1 − β,   T ~ noncentral t(ν, δ / SE),
    SE = sqrt(s_a²/n_a + s_b²/n_b),   ν = SE⁴ / ((s_a²/n_a)²/(n_a − 1) + (s_b²/n_b)²/(n_b − 1)),

Welch's test with the observed standard deviations taken as the true ones and the
Welch-Satterthwaite degrees of freedom (the usual approximation of its power; with equal n and
equal s it is the exact power of Student's t-test, ν = 2n − 2). statsmodels has no power analysis
for Welch's test, so δ* is solved here (scipy's noncentral t and brentq). In Cohen's d
(s_a = s_b = s, pooled df = n_a + n_b − 2), d* = δ*/s is a function of n_a and n_b alone:
statsmodels' ``TTestIndPower.solve_power``. With 3 seeds per arm d* = 3.07: only effects of about
three run-to-run standard deviations are found with 80% probability. numpy, scipy and statsmodels
only; the sweep report (``summary``) picks the arms.
"""

from __future__ import annotations

import math

import numpy as np

ALPHA = 0.05
POWER = 0.8


def welch_df(var_a: float, n_a: int, var_b: float, n_b: int) -> float:
    """Welch-Satterthwaite degrees of freedom of the difference of two means."""
    qa, qb = var_a / n_a, var_b / n_b
    if qa + qb == 0:
        return float("nan")
    return (qa + qb) ** 2 / (qa**2 / (n_a - 1) + qb**2 / (n_b - 1))


def power_two_sided(delta: float, se: float, df: float, alpha: float = ALPHA) -> float:
    """P(|T| > t_{1−α/2, df}) for T ~ noncentral t(df, delta / se). The lower tail is taken as
    the upper tail of −T (scipy's ``nct.cdf`` far in the tail of a large nc returns NaN)."""
    from scipy.stats import nct, t

    crit = t.ppf(1 - alpha / 2, df)
    nc = delta / se
    return float(nct.sf(crit, df, nc) + nct.sf(crit, df, -nc))


def _solve(se: float, df: float, alpha: float, power: float) -> float:
    """The delta > 0 whose two-sided power is ``power``."""
    from scipy.optimize import brentq

    hi = se
    while not power_two_sided(hi, se, df, alpha) >= power:
        if hi > 1e6 * se:
            raise ValueError(f"no difference reaches power {power} (se={se}, df={df})")
        hi *= 2
    return float(brentq(lambda d: power_two_sided(d, se, df, alpha) - power, 0.0, hi, xtol=1e-12))


def _check(n_a: int, n_b: int, alpha: float, power: float) -> None:
    if n_a < 2 or n_b < 2:
        raise ValueError(f"n_a={n_a}, n_b={n_b}; accepted: at least 2 runs per arm")
    if not 0 < alpha < 1 or not alpha < power < 1:
        raise ValueError(f"alpha={alpha}, power={power}; accepted: 0 < alpha < power < 1")


def detectable_difference(
    sd_a: float, n_a: int, sd_b: float, n_b: int, alpha: float = ALPHA, power: float = POWER
) -> float:
    """δ*: the smallest difference of means a two-sided Welch test at level ``alpha`` finds with
    probability ``power`` (module docstring); NaN when both standard deviations are 0."""
    _check(n_a, n_b, alpha, power)
    se = math.sqrt(sd_a**2 / n_a + sd_b**2 / n_b)
    if se == 0:
        return float("nan")
    return _solve(se, welch_df(sd_a**2, n_a, sd_b**2, n_b), alpha, power)


def detectable_d(n_a: int, n_b: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """d*: the smallest Cohen's d a two-sided two-sample t-test at level ``alpha`` finds with
    probability ``power`` (statsmodels' ``TTestIndPower``: noncentral t, df = n_a + n_b − 2)."""
    from statsmodels.stats.power import TTestIndPower

    _check(n_a, n_b, alpha, power)
    d = float(
        TTestIndPower().solve_power(
            nobs1=n_a, ratio=n_b / n_a, alpha=alpha, power=power, alternative="two-sided"
        )
    )
    if not math.isfinite(d):
        raise ValueError(f"no effect size reaches power {power} (n_a={n_a}, n_b={n_b})")
    return d


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    """Mean difference over the pooled standard deviation (NaN with fewer than 2 per group)."""
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    pooled = np.sqrt(
        ((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2)
    )
    return float((a.mean() - b.mean()) / pooled) if pooled > 0 else float("nan")


def d_interval(d: float, n_a: int, n_b: int, level: float = 0.95) -> tuple[float, float]:
    """The ``level`` confidence interval of Cohen's d by inverting the noncentral t (Steiger and
    Fouladi 1997; Cumming and Finch 2001): t = d·√(n_a n_b / (n_a + n_b)) is noncentral t with
    df = n_a + n_b − 2 and noncentrality δ·√(n_a n_b / (n_a + n_b)); the bounds are the δ whose
    distribution puts t at its 1 − α/2 and α/2 quantiles. Exact for normal runs of equal
    spread; the large-sample d ± z·√((n_a + n_b)/(n_a n_b) + d²/(2(n_a + n_b))) is symmetric
    and narrower at 3 + 3 seeds (at d = 3: [0.67, 5.33] against [0.38, 5.50]), so it is not
    used. (NaN, NaN) where d is undefined."""
    if not math.isfinite(d) or n_a < 2 or n_b < 2:
        return float("nan"), float("nan")
    if d < 0:  # the noncentral t is symmetric in (t, δ) -> (−t, −δ)
        lo, hi = d_interval(-d, n_a, n_b, level)
        return -hi, -lo
    scale = math.sqrt(n_a * n_b / (n_a + n_b))
    df, t_obs, alpha = n_a + n_b - 2, d * scale, 1 - level
    lo = _nc_where(t_obs, df, alpha / 2)
    hi = _nc_where(t_obs, df, 1 - alpha / 2)
    return lo / scale, hi / scale


def _nc_where(t_obs: float, df: int, upper: float) -> float:
    """The noncentrality whose noncentral t (df) has P(T > t_obs) = ``upper`` (the tail
    probability rises with it; ``sf`` where ``cdf`` would lose the tail)."""
    from scipy.optimize import brentq
    from scipy.stats import nct

    def f(nc: float) -> float:
        return float(nct.sf(t_obs, df, nc)) - upper

    step = max(1.0, abs(t_obs))
    lo, hi = t_obs - step, t_obs + step
    while f(lo) > 0:
        lo -= step
        step *= 2
    while f(hi) < 0:
        hi += step
        step *= 2
    return float(brentq(f, lo, hi, xtol=1e-12))


def holm(p: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the order given: sorted ascending, the k-th
    smallest (from 0) times m − k, made non-decreasing, capped at 1 (a test survives at α when
    its adjusted p is ≤ α: Holm's step-down rule, uniformly more powerful than Bonferroni's
    with the same family-wise error). NaN (an undefined test) stays NaN and is not counted in m."""
    defined = sorted((x, i) for i, x in enumerate(p) if not math.isnan(x))
    out = [float("nan")] * len(p)
    running = 0.0
    for k, (x, i) in enumerate(defined):
        running = max(running, min(1.0, (len(defined) - k) * x))
        out[i] = running
    return out


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    """Arm ``a`` against arm ``b`` (one value per seed each): difference of means, Cohen's d
    with its 95% interval (``d_interval``), Welch's p (scipy's ``ttest_ind(equal_var=False)``),
    the Welch degrees of freedom and the smallest detectable difference (NaN where a side has
    fewer than 2 runs or no spread)."""
    from scipy.stats import ttest_ind

    nan = float("nan")
    out = {"diff": float(a.mean() - b.mean()), "d": nan, "p": nan, "df": nan, "detectable": nan}
    out.update(d_low=nan, d_high=nan)
    if len(a) < 2 or len(b) < 2:
        return out
    sa, sb = float(a.std(ddof=1)), float(b.std(ddof=1))
    if sa + sb == 0:
        return out
    d = cohens_d(a, b)
    low, high = d_interval(d, len(a), len(b))
    return {
        **out,
        "d": d,
        "d_low": low,
        "d_high": high,
        "p": float(ttest_ind(a, b, equal_var=False).pvalue),
        "df": welch_df(sa**2, len(a), sb**2, len(b)),
        "detectable": detectable_difference(sa, len(a), sb, len(b)),
    }


def pooled_sd(samples: list[np.ndarray]) -> tuple[float, int]:
    """(pooled within-arm standard deviation, its degrees of freedom) over arms of ≥ 2 runs."""
    kept = [s for s in samples if len(s) > 1]
    dof = sum(len(s) - 1 for s in kept)
    if dof == 0:
        return float("nan"), 0
    return float(math.sqrt(sum((len(s) - 1) * s.var(ddof=1) for s in kept) / dof)), dof


def fmt(x: float | None, spec: str) -> str:
    """A number, or – where it is undefined (None, NaN)."""
    return "–" if x is None or math.isnan(x) else format(x, spec)


def comparison_table(
    symbol: str, behaviors: list[str], axes: list[str], rows: list[tuple]
) -> list[str]:
    """Markdown lines: one row per ``(cells, against, {behaviour: (arm, reference)})``, the
    ``cells`` under the columns ``axes``, then each behaviour's difference, d, Welch p and δ*
    (``compare``)."""
    lines = [
        f"### {symbol}: each arm against its reference, and what the seeds can detect",
        "",
        f"Each cell: difference of mean {symbol} (arm − reference), Cohen's d, Welch's p and δ*, "
        f"the smallest difference a two-sided Welch test at p < {ALPHA:g} finds with "
        f"{POWER:.0%} power given these two arms' seeds and spread.",
        "",
        "| " + " | ".join([*axes, "against", *behaviors]) + " |",
        "|" + "---|" * (len(axes) + 1 + len(behaviors)),
    ]
    for cells, against, samples in rows:
        out = []
        for b in behaviors:
            a, ref = samples[b]
            if not len(a) or not len(ref):
                out.append("–")
                continue
            c = compare(a, ref)
            out.append(
                f"{c['diff']:+.4f} (d={fmt(c['d'], '.2f')}, p={fmt(c['p'], '.3g')}; "
                f"δ*={fmt(c['detectable'], '.4f')})"
            )
        lines.append("| " + " | ".join([*cells, against, *out]) + " |")
    return lines


def power_table(
    behaviors: list[str], arms: list[dict[str, np.ndarray]], rows: list[tuple]
) -> list[str]:
    """The power statement: with the fewest seeds of any trained arm (``arms``: per behaviour,
    one value per seed), d* and, per behaviour, δ* = d* × the run-to-run standard deviation
    pooled over the arms, beside the largest difference of means among the comparisons
    ``rows`` (as ``comparison_table`` takes them)."""
    n = min((len(v) for arm in arms for v in arm.values()), default=0)
    if n < 2:
        return []
    d_star = detectable_d(n, n)
    lines = [
        "",
        f"Power: with {n} seeds per arm, the smallest effect found at p < {ALPHA:g} with "
        f"{POWER:.0%} power (two-sided, noncentral t, df = {2 * n - 2}) is d* = {d_star:.2f} "
        "run-to-run standard deviations; in each behaviour's units, from the spread pooled over "
        f"the {len(arms)} trained arms:",
        "",
        "| behaviour | run-to-run SD (pooled) | its df | smallest detectable difference "
        "(d* × SD) | largest observed difference |",
        "|---|---|---|---|---|",
    ]
    for b in behaviors:
        sd, dof = pooled_sd([arm[b] for arm in arms if b in arm])
        diffs = [abs(a.mean() - r.mean()) for *_, s in rows for a, r in [s[b]] if len(a) and len(r)]
        lines.append(
            f"| {b} | {fmt(sd, '.4f')} | {dof} | {fmt(d_star * sd, '.4f')} | "
            f"{fmt(max(diffs, default=float('nan')), '.4f')} |"
        )
    return lines


def holm_lines(axes: list[str], tests: list[tuple]) -> list[str]:
    """Markdown lines: one row per test ``(symbol, cells, against, behaviour, arm values,
    reference values)``, with ``compare``'s difference, d [95% interval] and Welch p, the
    Holm-adjusted p over every defined test here (``holm``) and ✓ where it is ≤ ALPHA."""
    results = [compare(a, ref) for *_, a, ref in tests]
    adjusted = holm([r["p"] for r in results])
    m = sum(not math.isnan(r["p"]) for r in results)
    lines = [
        f"### The planned comparisons, Holm–Bonferroni over their {m} tests",
        "",
        "Each planned comparison of the tables above in both measures, one family: Welch's p, "
        f"Holm's adjusted p (✓: survives at {ALPHA:g}; – where a test is undefined, not "
        "counted), and Cohen's d with its 95% interval (noncentral t, equal spread assumed).",
        "",
        "| " + " | ".join([*axes, "against", "measure", "behaviour"]) + " | difference | "
        "d [95% interval] | Welch p | Holm p | survives Holm |",
        "|" + "---|" * (len(axes) + 8),
    ]
    for (symbol, cells, against, b, *_), r, h in zip(tests, results, adjusted, strict=True):
        d = f"{fmt(r['d'], '.2f')} [{fmt(r['d_low'], '.2f')}, {fmt(r['d_high'], '.2f')}]"
        mark = "–" if math.isnan(h) else ("✓" if h <= ALPHA else "")
        lines.append(
            "| "
            + " | ".join([*cells, against, symbol, b, f"{r['diff']:+.4f}", d])
            + f" | {fmt(r['p'], '.3g')} | {fmt(h, '.3g')} | {mark} |"
        )
    return lines
