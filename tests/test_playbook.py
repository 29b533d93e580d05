"""The upgrade playbook (driftbench/tasks/drift_eval/playbook.py, docs/playbook.md): recovery's
arithmetic (``metrics.recovery``) on cases built for it, what a synthetic drift gives as the
re-embedded training texts, N and m capped at the training split, and bad settings refused in
one line before any model loads. A playbook run on a real update (a swap to a narrower model,
through ``drift.map``) is tests/test_updates.py's swap run."""

from __future__ import annotations

import numpy as np
import pytest

from driftbench import drift as D
from driftbench.checkpoints import SyntheticSource
from driftbench.launcher import ConfigError, run
from driftbench.metrics import recovery
from driftbench.tasks.drift_eval.playbook import capped

TINY = ["model=tiny_random", "data.n_samples=200", "monitor=none"]


def test_recovery_is_1_for_re_embedding_0_for_the_frozen_classifier_and_may_exceed_1():
    frozen, reembedded = 0.80, 0.90  # ROC-AUC: the update cost 0.10, re-embedding won it back
    assert recovery(reembedded, frozen, reembedded) == 1.0
    assert recovery(frozen, frozen, reembedded) == 0.0
    assert recovery(0.85, frozen, reembedded) == pytest.approx(0.5)
    # a map onto the old space that beats re-embedding (an update that lost information)
    assert recovery(0.95, frozen, reembedded) == pytest.approx(1.5)
    assert recovery(0.75, frozen, reembedded) == pytest.approx(-0.5)  # worse than doing nothing


def test_recovery_reads_the_same_where_lower_is_better():
    """ECE and silent failures fall when a fix works: both differences change sign together."""
    frozen, reembedded = 0.20, 0.10
    assert recovery(0.10, frozen, reembedded) == 1.0
    assert recovery(0.05, frozen, reembedded) == pytest.approx(1.5)
    np.testing.assert_allclose(
        recovery([0.20, 0.15, 0.05], [0.20] * 3, [0.10] * 3), [0.0, 0.5, 1.5], atol=1e-12
    )


def test_recovery_is_undefined_where_re_embedding_changes_nothing():
    assert np.isnan(recovery(0.9, 0.8, 0.8))
    assert np.isnan(recovery(np.nan, 0.8, 0.9))
    out = recovery([0.85, 0.85], [0.8, 0.8], [0.9, 0.8])
    assert out[0] == pytest.approx(0.5) and np.isnan(out[1])


def test_n_and_m_are_capped_at_the_training_split_each_once_in_order():
    assert capped([100, 300, 1000, 3000, "all"], 1400) == [100, 300, 1000, 1400]
    assert capped([100, 300, 1000, 3000, "all"], 140) == [100, 140]
    assert capped([500, 25, 50], 140) == [25, 50, 140]


def unit(n: int, d: int, seed: int) -> np.ndarray:
    return D.normalize(np.random.default_rng(seed).standard_normal((n, d)))


def test_a_synthetic_drift_moves_the_asked_rows_as_it_moves_the_test_texts_at_its_last_sigma():
    """A synthetic drift's "re-embedding" of the training texts: the same operator (the same v
    for directional drift) at the last sigma, nothing embedded, no seconds."""
    z_test, z_rows, sigmas = unit(30, 16, 0), unit(50, 16, 1), [0.0, 0.1, 0.3]
    source = SyntheticSource("directional", sigmas, z_test, z_test[:0], 4, z0_rows=z_rows)
    ckpts = list(source.checkpoints())
    assert [c.reembedded is None for c in ckpts] == [True, True, False]
    r = ckpts[-1].reembedded
    v = D.random_direction(16, np.random.default_rng([4, 1]))  # what make_drift draws first
    np.testing.assert_allclose(r.rows, D.apply_directional_drift(z_rows, 0.3, v), atol=1e-12)
    np.testing.assert_array_equal(r.test, ckpts[-1].z)
    np.testing.assert_array_equal(r.rows_read, r.rows)
    assert (r.seconds_per_text, r.embedded_now) == (0.0, 0)
    plain = SyntheticSource("directional", sigmas, z_test, z_test[:0], 4)
    assert all(c.reembedded is None for c in plain.checkpoints())


@pytest.mark.parametrize(
    "overrides, said",
    [
        (
            ["task.playbook.adapters=[procrustes,cca]"],
            "task.playbook.adapters=['procrustes', 'cca']: 'cca'; accepted: procrustes, lstsq, "
            "affine, low_rank, mlp",
        ),
        (
            ["task.playbook.pairs=[5,all]"],
            "task.playbook.pairs=[5, 'all']: 5 pairs (of 140 training texts) for mlp; accepted: "
            "at least 10",
        ),
        (
            ["task.playbook.pairs=[1,all]"],
            "task.playbook.pairs=[1, 'all']; accepted: a non-empty list of integers >= 2 or 'all'",
        ),
        (
            ["task.playbook.pairs=[100,every]"],
            "task.playbook.pairs=[100, 'every']; accepted: a non-empty list of integers >= 2 or "
            "'all'",
        ),
        (["task.playbook.m=[2,50]"], "task.playbook.m=[2, 50]; accepted: a non-empty list of "),
        (["task.playbook.rank=0"], "task.playbook.rank=0; accepted: an integer >= 1"),
        (
            ["task.playbook.adapters=[]"],
            "task.playbook.adapters=[]; accepted: a non-empty list of adapter kinds",
        ),
    ],
)
def test_bad_playbook_settings_stop_before_any_model_loads(make_cfg, tmp_path, overrides, said):
    with pytest.raises(ConfigError) as err:
        run(make_cfg(*TINY, "drift=quantize", "task.playbook.enabled=true", *overrides))
    assert said in str(err.value) and "\n" not in str(err.value)
    assert not list((tmp_path / "outputs").glob("**/meta.json"))
