"""What kind of change a checkpoint is (driftbench.metrics.flip_rates, coherent_share): flips
against checkpoint 0 (Yan et al. 2021) and the coherent share of the embedding change, on
examples worked by hand and on the two limits, a pure shift and independent noise."""

import math

import numpy as np
import pytest

from driftbench import drift as D
from driftbench import metrics as M

# Four texts worked through by hand (p = P(toxic), predicted toxic when p >= 0.5):
#   labels               1    1    0    0
#   before  p           .9   .2   .3   .4   -> predicted 1 0 0 0, right: yes no  yes yes
#   after   p           .6   .7   .8   .5   -> predicted 1 1 1 1, right: yes yes no  no
Y = np.array([1, 1, 0, 0])
P_BEFORE = np.array([0.9, 0.2, 0.3, 0.4])
P_AFTER = np.array([0.6, 0.7, 0.8, 0.5])


def test_flips_match_the_hand_computed_four_text_example():
    flips = M.flip_rates(Y, P_BEFORE, P_AFTER)
    assert flips == {
        "negative_flip_rate": 2 / 4,  # texts 3 and 4: right before, wrong after
        "positive_flip_rate": 1 / 4,  # text 2: wrong before, right after
        "positive_rate_change": 4 / 4 - 1 / 4,  # all predicted toxic after, one before
    }
    assert tuple(flips) == M.FLIP_METRICS


def test_accuracy_moves_by_positive_minus_negative_flips():
    rng = np.random.default_rng(0)
    y, before, after = rng.integers(0, 2, 500), rng.random(500), rng.random(500)
    flips = M.flip_rates(y, before, after)
    change = (
        M.checkpoint_metrics(y, after)["accuracy"] - M.checkpoint_metrics(y, before)["accuracy"]
    )
    assert change == pytest.approx(flips["positive_flip_rate"] - flips["negative_flip_rate"])
    assert M.flip_rates(y, before, before) == dict.fromkeys(M.FLIP_METRICS, 0.0)


def test_coherent_share_matches_the_hand_computed_four_text_example():
    z0 = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    moves = np.array([[3.0, 4.0], [3.0, 4.0], [3.0, -4.0], [3.0, -4.0]])
    # each move has norm 5; their mean is (3, 0), of norm 3: a share of 3 / 5
    assert M.coherent_share(z0, z0 + moves) == pytest.approx(3 / 5)


def test_coherent_share_is_one_for_a_pure_shift():
    z0 = D.normalize(np.random.default_rng(1).standard_normal((300, 32)))
    v = np.random.default_rng(2).standard_normal(32)
    assert M.coherent_share(z0, z0 + 0.05 * v) == pytest.approx(1.0, rel=1e-12)


def test_coherent_share_is_near_zero_for_independent_noise():
    """n independent moves cancel in their mean: the share is about 1/sqrt(n); on 20,000 rows
    it stays below 3/sqrt(n) (about 0.021)."""
    n = 20_000
    rng = np.random.default_rng(3)
    z0 = D.normalize(rng.standard_normal((n, 16)))
    share = M.coherent_share(z0, z0 + 0.1 * rng.standard_normal((n, 16)))
    assert 0 < share < 3 / math.sqrt(n)


def test_coherent_share_is_undefined_when_nothing_moved():
    z0 = D.normalize(np.random.default_rng(4).standard_normal((50, 8)))
    assert math.isnan(M.coherent_share(z0, z0))
    assert math.isnan(M.coherent_share(z0, D.normalize(z0)))  # float rounding is not a move


def test_coherent_share_refuses_embeddings_of_two_shapes():
    with pytest.raises(ValueError, match=r"one shape with n > 0, got \(3, 2\) and \(3, 4\)"):
        M.coherent_share(np.zeros((3, 2)), np.zeros((3, 4)))
