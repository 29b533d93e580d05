"""Label-free monitors of a frozen safety classifier, scored against a collapse the benchmark knows.

The drift paper ("I Can't Believe It's Not Robust", section 4) warns that a collapsed classifier
stays confident, so "standard unsupervised monitoring based on average confidence" will not catch
it. driftbench knows, at every checkpoint, what a team sees without labels and what really happened,
so it can score each monitor: how often it alarms on undrifted data, at which sigma it alarms, and
(for the accuracy estimators) how far its estimate is from the truth.

Pure numpy / scipy / scikit-learn: no torch, no Hydra, no files. Vocabulary:

* a ``View`` is what a team sees of some texts without labels: unit embeddings ``z`` (n, d) and
  the classifier's toxic-class probabilities ``p`` (n,);
* the ``Reference`` is an undrifted, held-out ``View`` with its labels (a team has labelled
  validation data when it deploys), plus the principal components of the training embeddings;
* a window is the ``View`` of the w texts a team sees in a day; ``Windows``, k windows as rows
  of one pool (a checkpoint's test texts);
* ``Pools``: the test split cut into disjoint pools (``split_pools``): the calibration windows,
  which set the thresholds, are drawn from texts the scored (evaluation) windows never hold.

Every monitor in ``MONITORS`` maps (reference, window) to an ``Outcome``: a statistic that grows
with drift, its p-value where the statistic has a calibrated test, and an accuracy estimate for the
estimators; its ``batch`` does the same for all windows of a pool at once (``batched``), which is
how runs call it. A monitor without a p-value alarms above the (1 - alpha) quantile of its
statistic over undrifted calibration windows (``null_threshold``).

The collapse a monitor should catch is named criteria (``CRITERIA``: ROC-AUC drop,
balanced-accuracy drop, ECE rise, silent-failure-rate rise; ``collapse_points``), and a
monitor's lead is counted against each (``leads``).
"""

from driftbench.monitors.batched import (
    c2st_windows,
    ks_windows,
    logistic_dual_fit,
    mmd_windows,
)
from driftbench.monitors.collapse import (
    CRITERIA,
    Criterion,
    check_criteria,
    collapse_points,
    leads,
)
from driftbench.monitors.registry import MONITORS, Monitor, check_names
from driftbench.monitors.scoring import (
    Pools,
    alarms,
    draw_windows,
    null_threshold,
    pool_sizes,
    run_windows,
    scorecard,
    split_pools,
)
from driftbench.monitors.statistics import (
    atc_estimate,
    atc_threshold,
    c2st,
    c2st_split,
    cbpe_estimate,
    doc_estimate,
    ks_bonferroni,
    median_bandwidth,
    mmd2_permuted,
    mmd2_unbiased,
    mmd_test,
    pairwise_sq_dists,
    permutation_p_value,
    random_assignments,
    rbf_kernel,
)
from driftbench.monitors.views import REFERENCES, Outcome, Reference, Settings, View, Windows

__all__ = [
    "CRITERIA",
    "MONITORS",
    "REFERENCES",
    "Criterion",
    "Monitor",
    "Outcome",
    "Pools",
    "Reference",
    "Settings",
    "View",
    "Windows",
    "alarms",
    "atc_estimate",
    "atc_threshold",
    "c2st",
    "c2st_split",
    "c2st_windows",
    "cbpe_estimate",
    "check_criteria",
    "check_names",
    "collapse_points",
    "doc_estimate",
    "draw_windows",
    "ks_bonferroni",
    "ks_windows",
    "leads",
    "logistic_dual_fit",
    "median_bandwidth",
    "mmd2_permuted",
    "mmd2_unbiased",
    "mmd_test",
    "mmd_windows",
    "null_threshold",
    "pairwise_sq_dists",
    "permutation_p_value",
    "pool_sizes",
    "random_assignments",
    "rbf_kernel",
    "run_windows",
    "scorecard",
    "split_pools",
]
