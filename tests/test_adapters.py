"""The adapters (driftbench/adapters.py): each recovers a map of its own family exactly, at every
scale of the data, on texts it was not fitted on; the MLP beats the linear maps where the map
bends; every adapter maps a wider model into a narrower one; bad settings are one line."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes

from driftbench import drift as D
from driftbench.adapters import ADAPTERS, Affine, make_adapter

SCALES = (1e-3, 1.0, 1e3)  # the data's magnitude: every tolerance is relative to it


def unit(n: int, d: int, seed: int) -> np.ndarray:
    z = np.random.default_rng(seed).standard_normal((n, d))
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def orthonormal(rows: int, cols: int, seed: int) -> np.ndarray:
    """A ``rows x cols`` matrix with orthonormal columns (a rotation when square)."""
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((rows, cols)))[0]


def adapter(kind: str, rank: int | None = None):
    return make_adapter(kind, rank=rank, seed=0)


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """The largest error, relative to the largest entry of what was wanted."""
    return float(np.abs(got - want).max() / np.abs(want).max())


def held_out_error(fitted, truth, x: np.ndarray) -> float:
    """Mean squared error on fresh rows, relative to the variance of the truth there."""
    y = truth(x)
    return float(np.mean((fitted.transform(x) - y) ** 2) / np.mean((y - y.mean(0)) ** 2))


@pytest.mark.parametrize("scale", SCALES)
def test_procrustes_recovers_a_rotation(scale):
    q = orthonormal(8, 8, 1)
    x = scale * unit(100, 8, 0)
    fitted = adapter("procrustes").fit(x, x @ q)
    fresh = scale * unit(50, 8, 2)
    assert relative_error(fitted.transform(fresh), fresh @ q) < 1e-8


def test_procrustes_is_scipys_and_leaves_the_directions_no_pair_spans_alone():
    z_old = unit(300, 24, 0)
    noisy = z_old @ orthonormal(24, 24, 1) + 0.1 * unit(300, 24, 5)
    want = orthogonal_procrustes(noisy, z_old)[0]
    np.testing.assert_allclose(adapter("procrustes").fit(noisy, z_old).w, want, atol=1e-8)
    few = z_old[:10]  # fewer pairs than dimensions: the map is free on the other 14
    q = orthonormal(24, 24, 1)
    fitted = adapter("procrustes").fit(few @ q.T, few)
    np.testing.assert_allclose(fitted.transform(few @ q.T), few, atol=1e-8)
    np.testing.assert_allclose(fitted.w @ fitted.w.T, np.eye(24), atol=1e-8)
    np.testing.assert_allclose(adapter("procrustes").fit(few, few).w, np.eye(24), atol=1e-6)


@pytest.mark.parametrize("scale", SCALES)
def test_affine_recovers_a_rotation_a_scale_and_a_shift(scale):
    q, shift = orthonormal(8, 8, 1), scale * np.random.default_rng(3).standard_normal(8)

    def truth(x):
        return 2.5 * x @ q + shift

    x = scale * unit(200, 8, 0)
    fitted = adapter("affine").fit(x, truth(x))
    fresh = scale * unit(50, 8, 2)
    assert relative_error(fitted.transform(fresh), truth(fresh)) < 1e-6


@pytest.mark.parametrize("scale", SCALES)
def test_low_rank_recovers_a_rank_2_map_and_has_rank_2(scale):
    rng = np.random.default_rng(4)
    m, shift = rng.standard_normal((8, 2)) @ rng.standard_normal((2, 6)), scale * rng.normal(size=6)

    def truth(x):
        return x @ m + shift

    x = scale * unit(200, 8, 0)
    fitted = adapter("low_rank", rank=2).fit(x, truth(x))
    fresh = scale * unit(50, 8, 2)
    assert relative_error(fitted.transform(fresh), truth(fresh)) < 1e-6
    assert np.linalg.matrix_rank(fitted.w, tol=1e-8 * np.abs(fitted.w).max()) == 2


def test_low_rank_at_full_rank_is_the_affine_map():
    x, y = unit(200, 8, 0), unit(200, 6, 1)  # unrelated: the best maps are far from exact
    full, affine = adapter("low_rank", rank=6).fit(x, y), adapter("affine").fit(x, y)
    np.testing.assert_allclose(full.transform(x), affine.transform(x), atol=1e-12)


def test_lstsq_recovers_any_linear_map():
    m = np.random.default_rng(4).standard_normal((8, 6))
    x = unit(100, 8, 0)
    fresh = unit(50, 8, 2)
    assert relative_error(adapter("lstsq").fit(x, x @ m).transform(fresh), fresh @ m) < 1e-10


def test_the_mlp_beats_every_linear_map_where_the_map_bends():
    """A rotation into 5 dimensions plus a square of each: no linear map can follow the bend;
    the affine base plus the residual MLP does, on texts none of them was fitted on."""
    q = orthonormal(8, 5, 1)

    def truth(x):
        return x @ q + 2.0 * x[:, :5] ** 2

    x, fresh = unit(400, 8, 0), unit(400, 8, 2)
    errors = {
        kind: held_out_error(adapter(kind, 4 if kind == "low_rank" else None).fit(x, truth(x)),
                             truth, fresh)
        for kind in ADAPTERS
    }  # fmt: skip
    linear = min(e for kind, e in errors.items() if kind != "mlp")
    assert linear > 0.3 and errors["mlp"] < linear / 20, errors


def test_an_mlp_that_cannot_beat_zero_on_held_out_pairs_is_dropped():
    """Independent noise on top of an affine map: the residual holds nothing to learn, so the
    MLP's held-out R^2 is not above 0 and the adapter is the affine map alone."""
    m = np.random.default_rng(4).standard_normal((8, 5))
    x = unit(200, 8, 0)
    y = x @ m + 0.3 * np.random.default_rng(9).standard_normal((200, 5))
    mlp = adapter("mlp").fit(x, y)
    assert mlp.describe()["mlp_kept"] is False and mlp.describe()["held_out_r2"] <= 0
    np.testing.assert_array_equal(mlp.transform(x), Affine().fit(x, y).transform(x))


@pytest.mark.parametrize("kind", sorted(ADAPTERS))
def test_every_adapter_maps_a_wider_model_into_a_narrower_one(kind):
    """A new model 8 wide that holds the old 5-wide space isometrically (a swap to a wider
    model): every adapter recovers the old embeddings and returns them on the unit sphere."""
    embed = orthonormal(8, 5, 1)  # 8 x 5, orthonormal columns
    z_old, fresh = unit(200, 5, 0), unit(50, 5, 2)
    fitted = adapter(kind, 5 if kind == "low_rank" else None)  # an isometry has rank 5
    fitted.fit(z_old @ embed.T, z_old)
    mapped = fitted.apply(fresh @ embed.T)
    assert mapped.shape == (50, 5) and fitted.describe()["widths"] == [8, 5]
    np.testing.assert_allclose(np.linalg.norm(mapped, axis=1), 1.0, atol=1e-12)
    assert relative_error(mapped, fresh) < 1e-6


def test_apply_is_transform_back_on_the_unit_sphere():
    x, y = unit(100, 8, 0), 3.0 * unit(100, 8, 1)
    fitted = adapter("affine").fit(x, y)
    np.testing.assert_array_equal(fitted.apply(x), D.normalize(fitted.transform(x)))


@pytest.mark.parametrize(
    "build, said",
    [
        (lambda: make_adapter("cca", rank=None, seed=0),
         "kind='cca'; accepted: procrustes, lstsq, affine, low_rank, mlp"),
        (lambda: make_adapter("low_rank", rank=None, seed=0),
         "rank=None with kind=low_rank; accepted: an integer >= 1"),
        (lambda: make_adapter("low_rank", rank=0, seed=0),
         "rank=0 with kind=low_rank; accepted: an integer >= 1"),
        (lambda: make_adapter("affine", rank=4, seed=0, key="mitigation."),
         "mitigation.rank=4 with mitigation.kind=affine; accepted: null (only low_rank has "),
        (lambda: adapter("low_rank", 6).fit(unit(20, 8, 0), unit(20, 5, 1)),
         "rank=6 for widths 8 -> 5; accepted: 1..5"),
        (lambda: adapter("mlp").fit(unit(5, 8, 0), unit(5, 8, 1)),
         "mlp fitted on 5 pairs; accepted: at least 10"),
        (lambda: adapter("affine").fit(unit(20, 8, 0), unit(19, 8, 1)),
         "pairs of shapes (20, 8) (new) and (19, 8) (old); accepted: two 2-D arrays"),
    ],
)  # fmt: skip
def test_bad_kinds_ranks_and_pairs_are_refused_in_one_line(build, said):
    with pytest.raises(ValueError) as err:
        build()
    assert said in str(err.value) and "\n" not in str(err.value)
