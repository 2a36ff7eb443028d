import numpy as np
import pytest

from lmkcore.analysis.covariance import axis_angle_difference, cov_to_params, empirical_cov, params_to_cov


def test_params_roundtrip_against_eigendecomposition():
    rng = np.random.default_rng(0)
    theta = rng.uniform(-np.pi / 2 + 1e-3, np.pi / 2, 200)
    s1 = rng.uniform(1, 5, 200)
    s2 = s1 / rng.uniform(1.2, 4, 200)
    cov = params_to_cov(theta, s1, s2)
    # reference: numpy eigendecomposition
    w, v = np.linalg.eigh(cov)
    np.testing.assert_allclose(np.sqrt(w[:, 1]), s1, rtol=1e-10)
    np.testing.assert_allclose(np.sqrt(w[:, 0]), s2, rtol=1e-10)
    ref_theta = np.arctan2(v[:, 1, 1], v[:, 0, 1])
    assert np.all(np.degrees(axis_angle_difference(ref_theta, theta)) < 1e-6)
    t, a, b = cov_to_params(cov)
    np.testing.assert_allclose(a, s1, rtol=1e-10)
    np.testing.assert_allclose(b, s2, rtol=1e-10)
    np.testing.assert_allclose(t, theta, atol=1e-9)


def test_theta_is_image_frame_clockwise():
    # y points down: an axis along +x+y (down-right on screen) is +45 degrees
    cov = np.array([[2.0, 1.5], [1.5, 2.0]])
    theta, _, _ = cov_to_params(cov)
    assert theta == pytest.approx(np.pi / 4)


def test_axis_angle_difference_is_modulo_pi():
    assert axis_angle_difference(np.radians(89), np.radians(-89)) == pytest.approx(np.radians(2))
    assert axis_angle_difference(0.0, np.pi) == pytest.approx(0.0)


def test_empirical_cov_matches_numpy_and_ignores_nan():
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(50, 2)) @ np.array([[2.0, 0.0], [0.7, 0.5]])
    np.testing.assert_allclose(empirical_cov(pts), np.cov(pts.T), rtol=1e-12)
    with_nan = np.vstack([pts, [[np.nan, np.nan]]])
    np.testing.assert_allclose(empirical_cov(with_nan), np.cov(pts.T), rtol=1e-12)


def test_non_finite_covariance_gives_nan_parameters_without_warning():
    import warnings

    cov = np.array([[[4.0, 1.0], [1.0, 2.0]], [[np.inf, 0.0], [0.0, np.inf]], [[np.nan, 0.0], [0.0, 1.0]]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        theta, s1, s2 = cov_to_params(cov)
    assert np.isnan([theta[1:], s1[1:], s2[1:]]).all()
    ref_theta, ref_s1, ref_s2 = cov_to_params(cov[0])
    assert (theta[0], s1[0], s2[0]) == (ref_theta, ref_s1, ref_s2)
