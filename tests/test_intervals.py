"""Bootstrap intervals of a checkpoint's metrics: every resample scored by the definitions of
driftbench.metrics, and percentile intervals as scipy's bootstrap gives them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import bootstrap
from sklearn.metrics import roc_auc_score

from driftbench import intervals as I
from driftbench import metrics as M


def checkpoint(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and a classifier's probabilities that rank them better than chance."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = 1 / (1 + np.exp(-(1.5 * (2 * y - 1) + rng.standard_normal(n))))
    return y, p


def start(y: np.ndarray, seed: int = 9) -> np.ndarray:
    """The same texts' probabilities at checkpoint 0, which the flips compare against."""
    noise = np.random.default_rng(seed).standard_normal(len(y))
    return 1 / (1 + np.exp(-(1.0 * (2 * y - 1) + noise)))


def test_every_resample_is_scored_by_the_metrics_definitions():
    y, p = checkpoint(80)
    p[:10] = p[10:20]  # ties, counted one half by ROC-AUC
    p0 = start(y)
    counts = I.resample_counts(80, 40, np.random.default_rng(1))
    assert (counts.sum(axis=1) == 80).all()
    batched = I.batched_metrics(y, p, counts, tau=0.8, n_bins=5, p_before=p0)
    for r, w in enumerate(counts.astype(int)):
        rows = np.repeat(np.arange(80), w)  # the resample as the texts it holds
        one = {
            **M.checkpoint_metrics(y[rows], p[rows], 0.8, 5),
            **M.flip_rates(y[rows], p0[rows], p[rows]),
        }
        for name in I.INTERVAL_METRICS:
            np.testing.assert_allclose(batched[name][r], one[name], rtol=1e-12, atol=1e-15)


def test_a_resample_without_errors_or_without_a_class_leaves_those_metrics_undefined():
    y = np.array([1, 1, 0, 1])
    p = np.array([0.9, 0.8, 0.2, 0.6])
    counts = np.array([[1.0, 2, 0, 1], [1, 1, 1, 1]])  # a resample without a negative
    out = I.batched_metrics(y, p, counts, tau=0.8, n_bins=5, p_before=p)
    assert np.isnan(out["roc_auc"][0]) and np.isnan(out["balanced_accuracy"][0])
    assert np.isnan(out["silent_failure_rate_pct"]).all()  # no error: eq. (18) is undefined
    assert out["roc_auc"][1] == 1.0 and out["accuracy"][1] == 1.0


@pytest.mark.parametrize(
    "name, statistic",
    [
        ("roc_auc", lambda y, p, p0: roc_auc_score(y, p)),
        ("mean_confidence", lambda y, p, p0: M.confidence(p).mean()),
        ("ece", lambda y, p, p0: M.expected_calibration_error(y, p, 5)),
        ("negative_flip_rate", lambda y, p, p0: M.flip_rates(y, p0, p)["negative_flip_rate"]),
    ],
)
def test_the_interval_is_scipys_percentile_bootstrap(name, statistic):
    y, p = checkpoint(120, seed=3)
    p0 = start(y)
    ours = I.bootstrap_intervals(
        y,
        p,
        p_before=p0,
        tau=0.8,
        n_bins=5,
        n_resamples=4000,
        level=0.95,
        rng=np.random.default_rng(4),
    )[name]
    ref = bootstrap(
        (y, p, p0),
        statistic,
        paired=True,
        vectorized=False,
        n_resamples=4000,
        confidence_level=0.95,
        method="percentile",
        rng=np.random.default_rng(5),
    ).confidence_interval
    width = ref.high - ref.low
    assert width > 0
    # two Monte Carlo estimates of the same percentiles: within a tenth of the interval's width
    assert abs(ours[0] - ref.low) < 0.1 * width and abs(ours[1] - ref.high) < 0.1 * width
    point = statistic(y, p, p0)
    assert ours[0] <= point <= ours[1]


def test_a_wider_level_gives_a_wider_interval_and_a_bad_level_is_refused():
    y, p = checkpoint(100)
    kw = {"p_before": p, "tau": 0.8, "n_bins": 5, "n_resamples": 500}
    lo90, hi90 = I.bootstrap_intervals(y, p, level=0.9, rng=np.random.default_rng(0), **kw)["ece"]
    lo99, hi99 = I.bootstrap_intervals(y, p, level=0.99, rng=np.random.default_rng(0), **kw)["ece"]
    assert lo99 <= lo90 < hi90 <= hi99
    with pytest.raises(ValueError, match="level=1.0; accepted: 0 < level < 1"):
        I.bootstrap_intervals(y, p, level=1.0, rng=np.random.default_rng(0), **kw)


def test_interval_columns_name_each_bound():
    cols = I.interval_columns({"roc_auc": (0.8, 0.9)})
    assert cols == {"roc_auc_ci_low": 0.8, "roc_auc_ci_high": 0.9}


def test_a_figure_draws_the_interval_as_a_band_between_its_bounds():
    from driftbench.plots import _band, pyplot

    plt = pyplot()
    fig, ax = plt.subplots()
    rows = [
        {"roc_auc_ci_low": 0.6, "roc_auc_ci_high": 0.8},
        {"roc_auc_ci_low": 0.5, "roc_auc_ci_high": 0.7},
    ]
    _band(ax, [0.0, 1.0], rows, "roc_auc", "C0")
    _band(ax, [0.0, 1.0], [{"ece": 0.1}], "ece", "C1")  # a run without intervals: no band
    try:
        (band,) = ax.collections
        xy = {tuple(np.round(v, 9)) for v in band.get_paths()[0].vertices}
        assert {(0.0, 0.6), (1.0, 0.5), (0.0, 0.8), (1.0, 0.7)} <= xy
    finally:
        plt.close(fig)


# ── across replicates ────────────────────────────────────────────────────────────────────────


def test_the_replicate_interval_is_students_t_on_the_runs_mean():
    from scipy import stats

    x = [0.71, 0.74, 0.69, 0.80]
    mean, low, high = I.replicate_interval(x, 0.95)
    # by hand: mean ± t_{0.975, 3} · s / sqrt(4), s the sample standard deviation
    s = np.sqrt(sum((v - np.mean(x)) ** 2 for v in x) / 3)
    half = stats.t.ppf(0.975, 3) * s / 2
    assert mean == pytest.approx(np.mean(x), rel=1e-12)
    assert (low, high) == pytest.approx((np.mean(x) - half, np.mean(x) + half), rel=1e-12)
    assert stats.t.ppf(0.975, 3) == pytest.approx(3.182, abs=1e-3)  # three df: a wide interval


def test_one_run_has_no_interval_and_undefined_runs_are_left_out():
    assert np.isnan(I.replicate_interval([0.7])[1:]).all()
    assert I.replicate_interval([0.7])[0] == 0.7
    assert I.replicate_interval([0.7, None, float("nan"), 0.9])[0] == pytest.approx(0.8)
    assert np.isnan(I.replicate_interval([])).all()
    assert I.replicate_interval([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)


def test_two_intervals_overlap_when_each_reaches_the_other():
    assert I.overlap((0.5, 0.4, 0.6), (0.65, 0.6, 0.7)) is True  # touching counts
    assert I.overlap((0.5, 0.4, 0.6), (0.7, 0.61, 0.8)) is False
    assert I.overlap((0.5, 0.4, 0.6), (0.55, 0.45, 0.5)) is True  # one inside the other
    assert I.overlap((0.5, float("nan"), float("nan")), (0.5, 0.4, 0.6)) is None


def test_a_paired_difference_is_marked_where_its_interval_excludes_0_and_where_it_survives():
    """difference_cell: mean [t-interval] of the per-run differences; † at 95%, ‡ only when the
    interval at the table's Bonferroni level (m tests) excludes 0 as well."""
    from scipy import stats

    clear, marginal, none = [0.10, 0.11, 0.12, 0.10, 0.11], [0.02, 0.05, 0.01, 0.04], [0.1, -0.1]
    corrected = I.bonferroni_level(20)
    assert corrected == pytest.approx(1 - 0.05 / 20)
    x = np.array(marginal)
    low, high = stats.t.interval(0.95, 3, loc=x.mean(), scale=x.std(ddof=1) / 2)
    wide = stats.t.interval(corrected, 3, loc=x.mean(), scale=x.std(ddof=1) / 2)
    assert low > 0 and wide[0] < 0  # the hand case: significant alone, not over 20 tests
    assert I.difference_cell(marginal, "{:+.3f}", corrected) == (
        f"{x.mean():+.3f} [{low:+.3f}, {high:+.3f}]†"
    )
    assert I.difference_cell(clear, "{:+.3f}", corrected).endswith("‡")
    assert I.difference_cell(none, "{:+.3f}", corrected) == "+0.000 [-1.271, +1.271]"
    # no test: a setting against itself over runs; one run's difference is shown as it is
    assert not I.tested([0.0, 0.0, 0.0]) and I.difference_cell([0.0, 0.0], "{:+.3f}", 0.99) == "–"
    assert I.difference_cell([0.0], "{:+.3f}", 0.99) == "+0.000"
    assert I.difference_cell([], "{:+.3f}", 0.99) == "–"
