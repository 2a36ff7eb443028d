"""2D covariance matrices and their ellipse parameters.

Angles follow the image frame: x to the right, y **down**; ``theta`` is the
angle of the major axis measured from +x towards +y (clockwise on screen), in
radians in ``(-pi/2, pi/2]``.
"""
from __future__ import annotations

import numpy as np


def params_to_cov(theta, sigma_major, sigma_minor) -> np.ndarray:
    """Covariance ``(..., 2, 2)`` from ellipse parameters.

    Parameters
    ----------
    theta : array_like
        ``(...)`` major-axis angle in radians (image frame, see module doc).
    sigma_major, sigma_minor : array_like
        ``(...)`` standard deviations along the major and minor axes (any unit;
        the covariance is in that unit squared).
    """
    theta, s1, s2 = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (theta, sigma_major, sigma_minor)))
    c, s = np.cos(theta), np.sin(theta)
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
    diag = np.zeros(theta.shape + (2, 2))
    diag[..., 0, 0] = s1**2
    diag[..., 1, 1] = s2**2
    return rot @ diag @ np.swapaxes(rot, -1, -2)


def cov_to_params(cov) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ellipse parameters ``(theta, sigma_major, sigma_minor)`` of covariance ``(..., 2, 2)``.

    ``theta`` is in ``(-pi/2, pi/2]`` (an axis, not a direction); for an
    isotropic covariance it is 0. A covariance with a non-finite entry (e.g. a
    diverged fit) gives NaN for all three, without a warning.
    """
    cov = np.asarray(cov, dtype=np.float64)
    bad = ~np.isfinite(cov).all(axis=(-2, -1))
    if bad.any():
        cov = np.where(bad[..., None, None], np.nan, cov)
    a, b, d = cov[..., 0, 0], 0.5 * (cov[..., 0, 1] + cov[..., 1, 0]), cov[..., 1, 1]
    half_trace, half_diff = 0.5 * (a + d), 0.5 * (a - d)
    root = np.hypot(half_diff, b)
    lam1, lam2 = half_trace + root, np.maximum(half_trace - root, 0.0)
    theta = 0.5 * np.arctan2(2.0 * b, a - d)
    theta = np.where(theta <= -np.pi / 2, theta + np.pi, theta)
    return theta, np.sqrt(lam1), np.sqrt(lam2)


def axis_angle_difference(theta_a, theta_b) -> np.ndarray:
    """Smallest angle between two axes (radians, in ``[0, pi/2]``), i.e. modulo pi."""
    diff = np.mod(np.asarray(theta_a) - np.asarray(theta_b), np.pi)
    return np.minimum(diff, np.pi - diff)


def empirical_cov(points, axis: int = 0) -> np.ndarray:
    """Unbiased sample covariance of points ``(..., K, 2)`` along ``axis`` (NaNs ignored)."""
    pts = np.moveaxis(np.asarray(points, dtype=np.float64), axis, -2)
    mean = np.nanmean(pts, axis=-2, keepdims=True)
    d = pts - mean
    valid = ~np.isnan(d).any(-1)
    d = np.where(valid[..., None], d, 0.0)
    n = valid.sum(-1)[..., None, None]
    return np.einsum("...ki,...kj->...ij", d, d) / np.maximum(n - 1, 1)
