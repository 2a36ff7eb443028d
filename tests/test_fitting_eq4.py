"""Sigma-hat fit with Thaler et al.'s Eq. 4 (amplitude tied to Sigma), the default of lmkcore.analysis.fitting.

Heatmaps are Eq. 4 itself, ``gamma * N(x; mu, Sigma)`` at pixel centres (gamma = 100, as the training targets),
built by :func:`lmkcore.training.targets.gaussian_heatmaps` (tested against scipy.stats there), plus i.i.d. noise.
"""
import numpy as np
import pytest
import torch
from scipy.optimize import least_squares
from scipy.stats import multivariate_normal

from lmkcore.analysis.covariance import params_to_cov
from lmkcore.analysis.fitting import FIT_PRESETS, fit_gaussian_scipy, fit_gaussians, fit_gaussians_scipy
from lmkcore.errors import ConfigError
from lmkcore.training.targets import gaussian_heatmaps

GAMMA = 100.0


def eq4_batch(n, seed, size=(64, 60), noise=0.0):
    """``(1, n, H, W)`` float64 Eq. 4 heatmaps, their centres ``(n, 2)`` and covariances ``(n, 2, 2)`` (px^2).

    ``noise``: SD of added Gaussian noise as a fraction of each heatmap's peak.
    """
    rng = np.random.default_rng(seed)
    cov = params_to_cov(rng.uniform(-np.pi / 2, np.pi / 2, n), rng.uniform(2.0, 4.5, n), rng.uniform(1.0, 2.0, n))
    mu = np.stack([rng.uniform(20, size[0] - 20, n), rng.uniform(20, size[1] - 20, n)], -1)
    h = gaussian_heatmaps(torch.tensor(mu[None]), size, cov=torch.tensor(cov)[None], gamma=GAMMA)
    if noise:
        h = h + noise * h.amax((-2, -1), keepdim=True) * torch.tensor(rng.normal(size=h.shape))
    return h, mu, cov


def test_tied_fit_recovers_sigma_of_noiseless_eq4_heatmaps_exactly():
    h, mu, cov = eq4_batch(12, seed=1)
    fit = fit_gaussians(h, xtol=1e-12, ftol=1e-15, iterations=60)  # defaults: tied amplitude, linear loss
    assert fit.converged.all()
    np.testing.assert_allclose(fit.cov[0].numpy(), cov, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(fit.center[0].numpy(), mu, atol=1e-9)
    np.testing.assert_allclose(fit.amplitude[0].numpy(), GAMMA / (2 * np.pi * np.sqrt(np.linalg.det(cov))), rtol=1e-9)
    assert fit.residual_rms.max() < 1e-9
    ref = fit_gaussians_scipy(h[:, :3].numpy(), xtol=1e-15, ftol=1e-15, gtol=1e-15)  # scipy trf, same model
    np.testing.assert_allclose(ref.cov[0].numpy(), cov[:3], rtol=1e-8, atol=1e-8)


def _independent_trf_fit(heatmap, window=15):
    """Eq. 4 fitted by scipy's least_squares(method="trf"), written independently of lmkcore: parameters
    (mu_x, mu_y, log s_xx, s_xy / sqrt(s_xx), log of the Schur complement) on the window around the argmax."""
    iy, ix = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    half = window // 2
    yy, xx = np.mgrid[iy - half: iy + half + 1, ix - half: ix + half + 1]
    pts = np.stack([xx.ravel(), yy.ravel()], -1).astype(float)
    vals = heatmap[yy.ravel(), xx.ravel()]

    def cov_of(q):
        a = np.exp(q[2])
        b = q[3] * np.sqrt(a)
        return np.array([[a, b], [b, b * b / a + np.exp(q[4])]])

    res = least_squares(lambda q: GAMMA * multivariate_normal(q[:2], cov_of(q)).pdf(pts) - vals,
                        [ix, iy, np.log(4.0), 0.0, np.log(4.0)], method="trf", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    return res.x[:2], cov_of(res.x)


def test_tied_fit_equals_scipy_trf_on_noisy_heatmaps():
    h, mu, cov = eq4_batch(16, seed=2, noise=0.03)
    fit = fit_gaussians(h, xtol=1e-10, ftol=1e-15, iterations=60)
    assert fit.converged.all()
    ref = fit_gaussians_scipy(h.numpy(), xtol=1e-15, ftol=1e-15, gtol=1e-15)  # same code path, scipy solver
    np.testing.assert_allclose(fit.cov.numpy(), ref.cov.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fit.center.numpy(), ref.center.numpy(), atol=1e-7)
    for n in range(4):  # and an independent implementation of the same model with scipy's trf
        center, c = _independent_trf_fit(h[0, n].numpy())
        np.testing.assert_allclose(fit.cov[0, n].numpy(), c, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(fit.center[0, n].numpy(), center, atol=1e-7)
    # the noise moves the estimate: the comparison is not between two copies of the truth
    assert np.abs(fit.cov[0].numpy() - cov).max() > 1e-3


def test_tied_and_free_fits_differ_where_the_peak_height_disagrees_with_its_shape():
    """On a peak 0.7x the height of its Eq. 4 target the free amplitude keeps Sigma; the tied fit widens it."""
    h, _, cov = eq4_batch(6, seed=3)
    h = 0.7 * h
    tied = fit_gaussians(h)
    free = fit_gaussians(h, **FIT_PRESETS["free_soft_l1"])
    np.testing.assert_allclose(free.cov[0].numpy(), cov, rtol=1e-4, atol=1e-4)
    size_tied = (tied.sigma_major * tied.sigma_minor)[0].numpy()
    size_true = np.sqrt(np.linalg.det(cov))
    assert np.all(size_tied > 1.15 * size_true)
    # with the right gamma the tied fit is exact again
    np.testing.assert_allclose(fit_gaussians(h, gamma=0.7 * GAMMA, xtol=1e-10).cov[0].numpy(), cov, rtol=1e-6, atol=1e-6)


def test_single_heatmap_reference_and_bad_model():
    h, mu, cov = eq4_batch(1, seed=4, noise=0.02)
    one = fit_gaussian_scipy(h[0, 0].numpy())
    batch = fit_gaussians(h, xtol=1e-8)
    np.testing.assert_allclose(one["cov"], batch.cov[0, 0].numpy(), rtol=1e-4, atol=1e-5)
    assert one["amplitude"] == pytest.approx(GAMMA / (2 * np.pi * np.sqrt(np.linalg.det(one["cov"]))), rel=1e-12)
    with pytest.raises(ConfigError):
        fit_gaussians(h, model="bogus")
    with pytest.raises(ConfigError):
        fit_gaussians(h, gamma=0.0)
