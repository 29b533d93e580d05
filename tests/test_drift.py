"""Drift operators and schedule against hand computation of eq. (5)-(9)."""

import re

import numpy as np
import pytest

from driftbench import drift as D


def unit_rows(n, d, seed=0):
    z = np.random.default_rng(seed).standard_normal((n, d))
    return z / np.linalg.norm(z, axis=1, keepdims=True)


@pytest.mark.parametrize("name", list(D.DRIFTS))
def test_every_drift_keeps_unit_norm(name):
    z0 = unit_rows(50, 32)
    op = D.make_drift(name, 32, np.random.default_rng(1))
    for sigma in (0.0, 0.02, 0.15, 1.0):
        np.testing.assert_allclose(np.linalg.norm(op(z0, sigma), axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize("name", list(D.DRIFTS))
def test_zero_sigma_is_identity(name):
    z0 = unit_rows(20, 16)
    op = D.make_drift(name, 16, np.random.default_rng(3))
    np.testing.assert_allclose(op(z0, 0.0), z0, atol=1e-12)


def test_gaussian_drift_draws_fresh_noise_each_checkpoint():
    z0 = unit_rows(10, 16)
    op = D.make_drift("gaussian", 16, np.random.default_rng(0))
    a, b = op(z0, 0.1), op(z0, 0.1)
    assert not np.allclose(a, b)


def test_gaussian_drift_matches_eq5_by_hand():
    z0 = unit_rows(5, 8)
    eps = np.random.default_rng(7).normal(0.0, 0.05, size=z0.shape)
    expected = (z0 + eps) / np.linalg.norm(z0 + eps, axis=1, keepdims=True)
    np.testing.assert_allclose(D.apply_gaussian_drift(z0, 0.05, np.random.default_rng(7)), expected)


def test_directional_drift_shares_one_unit_vector_across_samples_and_checkpoints():
    d = 24
    z0 = unit_rows(30, d)
    v = D.random_direction(d, np.random.default_rng(5))
    assert np.linalg.norm(v) == pytest.approx(1.0)
    op = D.make_drift("directional", d, np.random.default_rng(5))
    for sigma in (0.05, 0.1):
        zc = op(z0, sigma)
        raw = z0 + sigma * v
        np.testing.assert_allclose(zc, raw / np.linalg.norm(raw, axis=1, keepdims=True))


def test_subspace_rotation_is_eq8_and_q_is_orthogonal():
    d = 12
    q = D.random_orthogonal(d, np.random.default_rng(2))
    np.testing.assert_allclose(q.T @ q, np.eye(d), atol=1e-12)
    sigma = 0.3
    theta = sigma * np.pi / 2
    np.testing.assert_allclose(
        D.subspace_rotation(sigma, q), np.cos(theta) * np.eye(d) + np.sin(theta) * q
    )
    z0 = unit_rows(7, d)
    rz = z0 @ (np.cos(theta) * np.eye(d) + np.sin(theta) * q).T
    np.testing.assert_allclose(
        D.apply_subspace_drift(z0, sigma, q), rz / np.linalg.norm(rz, axis=1, keepdims=True)
    )
    # sigma = 1 -> theta = 90 degrees: R = Q
    np.testing.assert_allclose(D.subspace_rotation(1.0, q), q, atol=1e-12)


def test_schedule_is_eq9():
    s = D.sigma_schedule(0.0, 0.15, 8)
    np.testing.assert_allclose(s, [0.15 * c / 7 for c in range(8)])
    assert s[0] == 0.0 and s[-1] == pytest.approx(0.15)
    sens = D.sigma_schedule(0.0, 0.25, 26)
    np.testing.assert_allclose(np.diff(sens), 0.01)


def test_explicit_sigma_list_replaces_the_linear_schedule():
    np.testing.assert_allclose(D.sigma_schedule(sigmas=[0, 0.01, 0.02]), [0, 0.01, 0.02])


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"sigma_min": -0.1, "sigma_max": 0.1, "k": 4}, "sigma_min=-0.1"),
        ({"sigma_min": 0.2, "sigma_max": 0.1, "k": 4}, "sigma_max=0.1 is below"),
        ({"sigma_min": 0.0, "sigma_max": 0.1, "k": 1}, "schedule.k=1"),
        ({"sigmas": [0.0, -0.02]}, "must be finite and >= 0"),
        ({"sigmas": [0.0, 0.05, 0.02]}, "must not decrease, got [0.0, 0.05, 0.02]"),
    ],
)
def test_bad_schedule_names_the_value(kwargs, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        D.sigma_schedule(**kwargs)


def test_gaussian_sigma_002_in_d896_moves_a_unit_vector_by_about_30_degrees():
    """What sigma means: ||eps|| ~ sigma sqrt(d), so the angle is ~atan(0.02 sqrt(896)) = 30.9 deg,
    not the paper's "1 degree"."""
    z0 = unit_rows(400, 896)
    zc = D.apply_gaussian_drift(z0, 0.02, np.random.default_rng(99))
    angle = D.realized_angle_deg(z0, zc).mean()
    assert angle == pytest.approx(np.degrees(np.arctan(0.02 * np.sqrt(896))), abs=0.5)
    assert 29 < angle < 32


def test_directional_angle_is_about_sigma_radians():
    z0 = unit_rows(400, 896)
    zc = D.apply_directional_drift(z0, 0.02, D.random_direction(896, np.random.default_rng(1)))
    assert D.realized_angle_deg(z0, zc).mean() == pytest.approx(np.degrees(0.02), rel=0.05)


def test_subspace_angle_is_about_theta_equals_sigma_times_90_degrees():
    z0 = unit_rows(300, 896)
    q = D.random_orthogonal(896, np.random.default_rng(4))
    zc = D.apply_subspace_drift(z0, 0.1, q)
    assert D.realized_angle_deg(z0, zc).mean() == pytest.approx(9.0, abs=0.3)


@pytest.mark.parametrize("theta", [1e-9, 1e-4, 0.5, np.pi / 2, 3.0])
def test_realized_angle_is_exact_for_a_known_rotation_small_or_large(theta):
    """A unit vector rotated by theta in a random plane: the angle comes back to float precision
    (arccos of the dot product would return ~1e-6 degrees for theta=1e-9 rad)."""
    rng = np.random.default_rng(5)
    a, b = np.linalg.qr(rng.normal(size=(64, 2)))[0].T
    z0 = a[None]
    zc = (np.cos(theta) * a + np.sin(theta) * b)[None]
    got = D.realized_angle_deg(z0, zc)[0]
    assert got == pytest.approx(np.degrees(theta), rel=1e-6)
    assert D.realized_angle_deg(z0, z0)[0] == 0.0
