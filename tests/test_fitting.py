"""Sub-pixel arg-max and robust anisotropic Gaussian fitting (Thaler et al. 2021, Sec. 3.2).

Synthetic heatmaps are point-sampled ``A * exp(-0.5 d^T Sigma^-1 d)`` at pixel
centres (the fitted model), plus i.i.d. Gaussian noise whose standard
deviation is stated per test as a fraction of the amplitude ``A``.
"""
import numpy as np
import pytest
import torch

from lmkcore.analysis.covariance import axis_angle_difference, params_to_cov
from lmkcore.analysis.decoding import argmax_subpixel
from lmkcore.errors import ConfigError
from functools import partial

from lmkcore.analysis import fitting
from lmkcore.analysis.fitting import HALF_MAX_MOMENT, LOSSES, _normal_equations, gaussian_model, robust_loss

# These tests cover the free-amplitude robust fit (the named option "free_soft_l1"); the default Eq. 4 tied fit
# is tested in tests/test_fitting_eq4.py.
fit_gaussians = partial(fitting.fit_gaussians, **fitting.FIT_PRESETS["free_soft_l1"])
fit_gaussian_scipy = partial(fitting.fit_gaussian_scipy, **fitting.FIT_PRESETS["free_soft_l1"])
fit_gaussians_scipy = partial(fitting.fit_gaussians_scipy, **fitting.FIT_PRESETS["free_soft_l1"])


def gaussian_image(shape, cx, cy, theta, s_major, s_minor, amp=1.0):
    """``(H, W)`` float64 image of an anisotropic Gaussian centred at ``(cx, cy)`` px."""
    prec = np.linalg.inv(params_to_cov(theta, s_major, s_minor))
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    dx, dy = xx - cx, yy - cy
    return amp * np.exp(-0.5 * (prec[0, 0] * dx * dx + 2 * prec[0, 1] * dx * dy + prec[1, 1] * dy * dy))


def random_gaussians(m, noise, seed, shape=(64, 64)):
    """``m`` noisy Gaussians: sub-pixel centre, any angle, ratio 1.5-4, both sigmas in 1.5-6 px, amplitude 0.5-100.

    ``noise`` is the noise SD as a fraction of each image's amplitude.
    """
    rng = np.random.default_rng(seed)
    ratio = rng.uniform(1.5, 4.0, m)
    truth = {
        "cx": rng.uniform(24, 40, m),
        "cy": rng.uniform(24, 40, m),
        "theta": rng.uniform(-np.pi / 2, np.pi / 2, m),
        "s_minor": rng.uniform(1.5, 6.0 / ratio),
        "amp": rng.uniform(0.5, 100.0, m),
    }
    truth["s_major"] = truth["s_minor"] * ratio
    keys = ("cx", "cy", "theta", "s_major", "s_minor", "amp")
    images = [gaussian_image(shape, *(truth[k][i] for k in keys)) for i in range(m)]
    h = np.stack(images) + noise * truth["amp"][:, None, None] * rng.normal(size=(m, *shape))
    return h, truth


def errors_vs_truth(fit, truth):
    """Max centre error (px), max relative sigma errors and max angle error (deg) of a (1, M) fit."""
    c = fit.center[0].double().numpy()
    centre = np.hypot(c[:, 0] - truth["cx"], c[:, 1] - truth["cy"])
    s_maj = np.abs(fit.sigma_major[0].double().numpy() / truth["s_major"] - 1)
    s_min = np.abs(fit.sigma_minor[0].double().numpy() / truth["s_minor"] - 1)
    ang = np.degrees(axis_angle_difference(fit.theta[0].double().numpy(), truth["theta"]))
    return centre, np.maximum(s_maj, s_min), ang


# ------------------------------------------------------------------ argmax


@pytest.mark.parametrize("seed", range(3))
def test_argmax_subpixel_gaussian_peak(seed):
    rng = np.random.default_rng(seed)
    imgs, centres = [], []
    for _ in range(30):
        cx, cy = rng.uniform(5, 27, 2)
        imgs.append(gaussian_image((32, 32), cx, cy, rng.uniform(-1.5, 1.5), rng.uniform(1.5, 6), rng.uniform(1.0, 2.0)))
        centres.append((cx, cy))
    h = torch.tensor(np.stack(imgs))[None]
    coords, values = argmax_subpixel(h)
    # log-quadratic vertex is exact for any sampled Gaussian, also where the brightest
    # pixel of a thin rotated peak is more than half a pixel from its centre
    np.testing.assert_allclose(coords[0].numpy(), centres, atol=1e-6)
    flat = h.flatten(-2).argmax(-1)
    brightest = torch.stack([flat % 32, flat // 32], -1).double()
    assert (coords - brightest).abs().max() > 0.7
    np.testing.assert_allclose(values[0].numpy(), h.flatten(-2).amax(-1)[0].numpy())
    # raw-value quadratic: biased but within 0.1 px for isotropic peaks (sigma 1.5-6 px)
    sig = rng.uniform(1.5, 6, 30)
    iso = torch.tensor(np.stack([gaussian_image((32, 32), cx, cy, 0, s, s) for (cx, cy), s in zip(centres, sig)]))
    assert (argmax_subpixel(iso[None], method="quadratic")[0][0] - torch.tensor(centres)).abs().max() < 0.1
    # 3x3 refinement is noise-sensitive for broad peaks; narrow ones (sigma <= 2.5 px) with
    # noise SD 0.5 % of the amplitude stay within 0.1 px
    narrow = torch.tensor(np.stack([gaussian_image((32, 32), cx, cy, 0, s, s) for (cx, cy), s in zip(centres, rng.uniform(1.5, 2.5, 30))]))
    narrow = narrow + 0.005 * torch.randn(narrow.shape, generator=torch.Generator().manual_seed(seed), dtype=narrow.dtype)
    for method in ("gaussian", "quadratic"):
        assert (argmax_subpixel(narrow[None], method=method)[0][0] - torch.tensor(centres)).abs().max() < 0.1


def test_argmax_subpixel_borders_ties_and_dtypes():
    h = torch.zeros(2, 3, 8, 8)
    h[0, 0, 0, 0] = 1.0  # corner
    h[0, 1, 7, 3], h[0, 1, 7, 4] = 1.0, 0.5  # bottom edge, neighbour to the right
    h[0, 2] = torch.from_numpy(gaussian_image((8, 8), -0.3, 3.2, 0, 1.5, 1.5))  # peak outside the image
    # h[1] stays all zero (flat: degenerate, NaN coordinates)
    coords, values = argmax_subpixel(h)
    assert torch.isfinite(coords[0]).all() and coords.dtype == torch.float32
    np.testing.assert_allclose(coords[0, 0], [0.0, 0.0])
    assert coords[0, 1, 1] == 7.0 and 3.0 < coords[0, 1, 0] <= 3.5
    assert coords[0, 2, 0] == 0.0 and abs(coords[0, 2, 1] - 3.2) < 1e-4  # log-parabola along y only
    assert torch.isnan(coords[1]).all()
    c64, _ = argmax_subpixel(h.double())
    assert c64.dtype == torch.float64 and torch.allclose(c64.float(), coords, equal_nan=True)
    ci, _ = argmax_subpixel((h * 100).int())
    assert ci.dtype == torch.float32 and torch.isfinite(ci[0]).all() and torch.isnan(ci[1]).all()
    with pytest.raises(ConfigError):
        argmax_subpixel(h, method="cubic")


# --------------------------------------------------------- model & losses


def test_model_jacobian_matches_autograd_and_normal_equations():
    gen = torch.Generator().manual_seed(0)
    p = torch.tensor([[1.3, 0.2, -0.4, -0.9, 0.15, -0.6], [40.0, -0.3, 0.1, -1.7, -0.05, -1.2]], dtype=torch.float64)
    off = torch.arange(-3, 4, dtype=torch.float64)
    xs, ys = off.repeat(7), off.repeat_interleave(7)
    _, jac = gaussian_model(p, xs, ys)
    auto = torch.autograd.functional.jacobian(lambda q: gaussian_model(q, xs, ys, jacobian=False)[0], p)
    auto = torch.stack([auto[i, :, i] for i in range(len(p))])  # (P, K, 6)
    torch.testing.assert_close(jac, auto)
    # the fast normal equations equal J^T W J and J^T W r built from gaussian_model + robust_loss
    vals = gaussian_model(p, xs, ys, jacobian=False)[0] + 0.3 * torch.randn(2, 49, generator=gen, dtype=torch.float64)
    mask = (torch.rand(2, 49, generator=gen) > 0.2).double()
    scale = torch.tensor([0.1, 4.0], dtype=torch.float64)
    for loss in LOSSES:
        cost, hess, grad = _normal_equations(p, (vals, mask, scale, xs, ys), loss)
        r = gaussian_model(p, xs, ys, jacobian=False)[0] - vals
        rho, drho = robust_loss((r / scale[:, None]) ** 2, loss)
        w = drho * mask
        torch.testing.assert_close(cost, 0.5 * (scale**2 * (rho * mask).sum(-1)))
        torch.testing.assert_close(hess, jac.transpose(1, 2) @ (jac * w[..., None]))
        torch.testing.assert_close(grad, (jac * (w * r)[..., None]).sum(1))


@pytest.mark.parametrize("loss", LOSSES)
def test_robust_loss_matches_scipy_cost(loss):
    """scipy's reported cost at x0 (no iteration) is 0.5 * sum C^2 rho((r / C)^2)."""
    from scipy.optimize import least_squares

    r = np.array([-3.0, -0.5, 0.01, 0.2, 1.0, 7.5])
    c = 0.7
    ref = least_squares(lambda x: r * x[0], [1.0], loss=loss, f_scale=c, max_nfev=1).cost
    rho, drho = robust_loss(torch.tensor((r / c) ** 2), loss)
    assert 0.5 * c**2 * rho.sum().item() == pytest.approx(ref, rel=1e-12)
    # rho' by central differences
    z = torch.tensor([0.3, 0.9, 1.7, 12.0], dtype=torch.float64)
    num = (robust_loss(z + 1e-6, loss)[0] - robust_loss(z - 1e-6, loss)[0]) / 2e-6
    torch.testing.assert_close(robust_loss(z, loss)[1], num, rtol=1e-6, atol=1e-8)


def test_half_max_moment_constant():
    # weighted variance of x with weights max(g - 1/2, 0) on a fine grid, unit isotropic Gaussian
    x = np.linspace(-3, 3, 1201)
    xx, yy = np.meshgrid(x, x)
    w = np.clip(np.exp(-0.5 * (xx**2 + yy**2)) - 0.5, 0, None)
    assert (w * xx**2).sum() / w.sum() == pytest.approx(HALF_MAX_MOMENT, rel=1e-4)


# ------------------------------------------------------------------- fitting


@pytest.mark.parametrize("loss", ["soft_l1", "linear", "cauchy"])
def test_torch_fit_agrees_with_scipy_reference(loss):
    """(a) Same window/model/init/loss: both reach the same optimum (2 % noise)."""
    h, _ = random_gaussians(40, noise=0.02, seed=10)
    ours = fit_gaussians(torch.tensor(h[None]), loss=loss)
    ref = fit_gaussians_scipy(h[None], loss=loss)
    assert ours.converged.all() and ref.converged.all()
    assert (ours.center - ref.center).abs().max() < 1e-4  # px
    assert (ours.sigma_major / ref.sigma_major - 1).abs().max() < 1e-4
    assert (ours.sigma_minor / ref.sigma_minor - 1).abs().max() < 1e-4
    assert np.degrees(axis_angle_difference(ours.theta.numpy(), ref.theta.numpy())).max() < 0.01
    assert (ours.amplitude / ref.amplitude - 1).abs().max() < 1e-4
    torch.testing.assert_close(ours.residual_rms, ref.residual_rms, rtol=1e-6, atol=0)


def test_default_tolerance_is_close_to_full_convergence():
    h, _ = random_gaussians(100, noise=0.02, seed=11)
    t = torch.tensor(h[None])
    fit, tight = fit_gaussians(t), fit_gaussians(t, xtol=1e-12, ftol=1e-15, iterations=100)
    assert tight.converged.all() and fit.converged.all()
    assert (fit.center - tight.center).abs().max() < 5e-5
    assert (fit.sigma_major / tight.sigma_major - 1).abs().max() < 5e-5
    assert (fit.sigma_minor / tight.sigma_minor - 1).abs().max() < 5e-5


def test_noise_free_gaussians_are_recovered_exactly():
    h, truth = random_gaussians(50, noise=0.0, seed=3)
    for fit in (fit_gaussians(torch.tensor(h[None])), fit_gaussians_scipy(h[None, :10])):
        sub = {k: v[: fit.center.shape[1]] for k, v in truth.items()}
        centre, sig, ang = errors_vs_truth(fit, sub)
        assert centre.max() < 1e-5 and sig.max() < 1e-5 and ang.max() < 1e-3
        np.testing.assert_allclose(fit.amplitude[0].numpy(), sub["amp"], rtol=1e-5)


@pytest.mark.parametrize("method", ["torch", "scipy"])
def test_recovery_from_noisy_gaussians(method):
    """(b) Noise SD 1 % of the amplitude: every draw within 0.05 px, 2 %, 1 deg.

    The errors are statistical (they scale with the noise and the noise-free
    fit is exact): at 1 % noise the RMS centre error is ~0.015 px.
    At 2 % noise the per-draw maxima roughly double, so there the unbiasedness
    is checked instead: mean signed errors are ~0.
    """
    m = 120 if method == "torch" else 60
    fit_fn = (lambda a: fit_gaussians(torch.tensor(a))) if method == "torch" else fit_gaussians_scipy
    h, truth = random_gaussians(m, noise=0.01, seed=5)
    centre, sig, ang = errors_vs_truth(fit_fn(h[None]), truth)
    assert centre.max() < 0.05 and sig.max() < 0.02 and ang.max() < 1.0
    assert np.sqrt(np.mean(centre**2)) < 0.025
    h, truth = random_gaussians(m, noise=0.02, seed=6)
    fit = fit_fn(h[None])
    c = fit.center[0].numpy()
    assert abs(np.mean(c[:, 0] - truth["cx"])) < 0.01 and abs(np.mean(c[:, 1] - truth["cy"])) < 0.01
    assert abs(np.mean(np.log(fit.sigma_major[0].numpy() / truth["s_major"]))) < 0.003
    assert abs(np.mean(np.log(fit.sigma_minor[0].numpy() / truth["s_minor"]))) < 0.003


def _clean_and_contaminated(kind):
    """A 3 x 2 px Gaussian at 30 deg with noise SD 1 % of the amplitude, without and with distractors."""
    rng = np.random.default_rng(1)
    clean = gaussian_image((64, 64), 30.3, 31.6, np.radians(30), 3.0, 2.0) + 0.01 * rng.normal(size=(64, 64))
    if kind == "blob":  # a second, narrower peak 70 % as high, 5.8 px away (inside the 15 px window)
        return clean, clean + gaussian_image((64, 64), 35.3, 28.6, 0.0, 1.2, 1.2, 0.7)
    dirty = clean.copy()
    for x, y in [(25, 26), (36, 35), (24, 36), (37, 27), (33, 24)]:  # five hot pixels of the full amplitude
        dirty[y, x] += 1.0
    return clean, dirty


@pytest.mark.parametrize("kind, robust_max, ratio_max", [("blob", 0.15, 0.35), ("pixels", 0.05, 0.25)])
def test_robust_loss_resists_distractors(kind, robust_max, ratio_max):
    """(c) The distractor moves the robust fit's centre far less than the plain least-squares one.

    Displacement = centre(contaminated) - centre(clean), same noise realisation.
    """
    clean, dirty = (torch.tensor(a[None, None]) for a in _clean_and_contaminated(kind))
    move, cov_err = {}, {}
    for loss in LOSSES:
        a, b = fit_gaussians(clean, loss=loss), fit_gaussians(dirty, loss=loss)
        move[loss] = (b.center - a.center).norm().item()
        cov_err[loss] = ((b.cov - a.cov).norm() / a.cov.norm()).item()
    for loss in ("soft_l1", "huber", "cauchy"):
        assert move[loss] < robust_max and move[loss] < ratio_max * move["linear"], (loss, move)
        assert cov_err[loss] < 0.5 * cov_err["linear"], (loss, cov_err)
    ref_clean, ref_dirty = (fit_gaussian_scipy(t[0, 0].numpy()) for t in (clean, dirty))
    assert np.linalg.norm(ref_dirty["center"] - ref_clean["center"]) == pytest.approx(move["soft_l1"], abs=1e-4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_batch_shape_borders_and_degenerate_heatmaps(dtype):
    """(e) (2, 19, 64, 64) batch incl. peaks at/near/outside borders, flat and constant maps: no NaN."""
    rng = np.random.default_rng(7)
    h = np.zeros((2, 19, 64, 64))
    truth = []
    for b in range(2):
        for n in range(19):
            cx, cy = rng.uniform(8, 56, 2)
            if n < 6:  # near / on / beyond the borders
                cx, cy = [(0.2, 30.0), (63.0, 10.4), (31.5, 0.0), (2.4, 62.7), (-1.0, 20.0), (64.5, 64.5)][n]
            h[b, n] = gaussian_image((64, 64), cx, cy, rng.uniform(-1.5, 1.5), 3.0, 2.0)
            truth.append((cx, cy))
    h += 0.01 * rng.normal(size=h.shape)
    h[1, 17] = 0.0  # empty heatmap
    h[1, 18] = 0.25  # constant heatmap
    fit = fit_gaussians(torch.tensor(h, dtype=dtype), dtype=None)
    assert fit.center.dtype == dtype
    assert fit.center.shape == (2, 19, 2) and fit.cov.shape == (2, 19, 2, 2) and fit.theta.shape == (2, 19)
    for name, value in fit.numpy().items():  # degenerate (empty, constant) heatmaps: NaN and not converged
        assert np.isfinite(value.reshape(38, -1)[:36]).all(), name
        if name != "converged":
            assert np.isnan(value[1, 17:]).all(), name
    assert not fit.converged[1, 17:].any()
    err = np.hypot(*(fit.center.double().numpy().reshape(-1, 2) - np.array(truth)).T).reshape(2, 19)
    assert err[:, :4].max() < 0.1  # peaks inside the image, window cut by the border
    assert err[:, 6:17].max() < 0.1 and err[0, 17:].max() < 0.1
    assert fit.converged[:, 6:17].all()
    s_maj, s_min = fit.sigma_major.flatten()[:36], fit.sigma_minor.flatten()[:36]
    assert (s_min > 0).all() and (s_maj >= s_min).all()
    # the same on the scipy reference for the border cases
    for n in range(4):
        ref = fit_gaussian_scipy(h[0, n])
        assert np.abs(ref["center"] - fit.center[0, n].double().numpy()).max() < 1e-3


@pytest.mark.parametrize("in_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("compute", [torch.float64, None])
def test_float32_and_float64_inputs(in_dtype, compute):
    """(f) Results come back in the input dtype; float32 computation agrees with float64."""
    h, truth = random_gaussians(30, noise=0.01, seed=8)
    fit = fit_gaussians(torch.tensor(h[None], dtype=in_dtype), dtype=compute)
    assert fit.center.dtype == in_dtype and fit.cov.dtype == in_dtype and fit.converged.dtype == torch.bool
    ref = fit_gaussians(torch.tensor(h[None]))
    tol = 1e-6 if (in_dtype, compute) == (torch.float64, torch.float64) else 2e-3
    assert (fit.center.double() - ref.center).abs().max() < tol
    assert (fit.sigma_major.double() / ref.sigma_major - 1).abs().max() < tol
    assert fit.converged.all()


def test_init_sigma_option_and_validation():
    h, truth = random_gaussians(10, noise=0.01, seed=9)
    a = fit_gaussians(torch.tensor(h[None]))
    b = fit_gaussians(torch.tensor(h[None]), init_sigma=2.5)
    assert (a.center - b.center).abs().max() < 1e-4
    with pytest.raises(ConfigError):
        fit_gaussians(torch.tensor(h[None]), window=14)
    with pytest.raises(ConfigError):
        fit_gaussians(torch.tensor(h[None]), loss="l1")
    with pytest.raises(ConfigError):
        fit_gaussians(torch.tensor(h[0]))
