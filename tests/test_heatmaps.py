"""Gaussian target heatmaps (Payer et al. 2019 Eq. 1-2; Thaler et al. 2021 Eq. 1-7)."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from lmkcore.analysis.covariance import axis_angle_difference, cov_to_params, params_to_cov
from lmkcore.training.targets import (
    HeatmapTarget,
    aniso_cov,
    gaussian_heatmaps,
    heatmap_loss,
    valid_mask,
    wrap_axis_angle,
)


def _grid(w, h):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx, yy], -1).astype(np.float64)  # (H, W, 2) pixel centres in (x, y)


def test_matches_scipy_reference_anisotropic_and_isotropic():
    w, h = 40, 30
    lms = np.array([[[12.3, 17.8], [25.0, 9.5]]])
    cov = params_to_cov(np.array([0.4, -1.1]), np.array([4.0, 2.5]), np.array([1.5, 2.0]))
    heat = gaussian_heatmaps(torch.tensor(lms), (w, h), cov=torch.tensor(cov), gamma=100.0)
    assert heat.shape == (1, 2, h, w) and heat.dtype == torch.float64
    for i in range(2):
        ref = 100.0 * multivariate_normal(lms[0, i], cov[i]).pdf(_grid(w, h))
        np.testing.assert_allclose(heat[0, i].numpy(), ref, rtol=1e-10, atol=1e-14)
    # isotropic: sigma per landmark, Payer Eq. 1 with d = 2
    sig = np.array([2.0, 3.5])
    heat = gaussian_heatmaps(torch.tensor(lms), (w, h), sigma=torch.tensor(sig))
    for i in range(2):
        ref = 100.0 * multivariate_normal(lms[0, i], sig[i] ** 2 * np.eye(2)).pdf(_grid(w, h))
        np.testing.assert_allclose(heat[0, i].numpy(), ref, rtol=1e-10, atol=1e-14)
    # unnormalised: peak gamma at the landmark
    heat = gaussian_heatmaps(torch.tensor([[[5.0, 7.0]]]), (12, 12), sigma=2.0, gamma=100.0, normalise=False)
    assert heat[0, 0, 7, 5].item() == pytest.approx(100.0)
    assert heat.dtype == torch.float32


def test_x_is_column_and_y_is_row():
    heat = gaussian_heatmaps(torch.tensor([[[3.0, 9.0]]]), (20, 12), sigma=1.0)
    row, col = np.unravel_index(heat[0, 0].argmax().item(), (12, 20))
    assert (row, col) == (9, 3)


def test_centroid_and_second_moments_subpixel():
    w, h = 80, 72
    mu = np.array([38.37, 33.71])
    cov = params_to_cov(np.radians(35.0), 5.0, 2.5)
    heat = gaussian_heatmaps(torch.tensor(mu[None, None]), (w, h), cov=torch.tensor(cov)).numpy()[0, 0]
    g = _grid(w, h)
    m = heat.sum()
    centroid = (heat[..., None] * g).sum((0, 1)) / m
    assert np.abs(centroid - mu).max() < 0.01
    d = g - centroid
    second = np.einsum("hw,hwi,hwj->ij", heat, d, d) / m
    np.testing.assert_allclose(second, cov, rtol=0.01, atol=0.01 * np.abs(cov).max())
    assert m == pytest.approx(100.0, rel=1e-6)  # normalised: integrates to gamma


def test_3d_isotropic_and_full_cov():
    w, h, dep = 14, 12, 10
    lm = torch.tensor([[[6.2, 5.1, 4.7]]], dtype=torch.float64)
    heat = gaussian_heatmaps(lm, (w, h, dep), sigma=1.8, gamma=1000.0)
    assert heat.shape == (1, 1, dep, h, w)
    zz, yy, xx = np.mgrid[0:dep, 0:h, 0:w]
    pts = np.stack([xx, yy, zz], -1).astype(float)
    ref = 1000.0 * multivariate_normal(lm[0, 0].numpy(), 1.8**2 * np.eye(3)).pdf(pts)
    np.testing.assert_allclose(heat[0, 0].numpy(), ref, rtol=1e-10, atol=1e-14)
    cov = np.array([[3.0, 0.8, 0.2], [0.8, 2.0, -0.3], [0.2, -0.3, 1.5]])
    heat = gaussian_heatmaps(lm, (w, h, dep), cov=torch.tensor(cov), gamma=1000.0)
    ref = 1000.0 * multivariate_normal(lm[0, 0].numpy(), cov).pdf(pts)
    np.testing.assert_allclose(heat[0, 0].numpy(), ref, rtol=1e-10, atol=1e-14)
    tgt = HeatmapTarget(1, "learned_iso", spatial_dims=3, init_sigma=1.8, gamma=1000.0).double()
    np.testing.assert_allclose(tgt(lm, (w, h, dep)).detach().numpy(), gaussian_heatmaps(lm, (w, h, dep), sigma=1.8,
                               gamma=1000.0).numpy(), rtol=1e-4)
    assert tgt.covariances().shape == (1, 3, 3)


def test_nan_landmark_gives_zero_heatmap_and_false_mask():
    lm = torch.tensor([[[5.0, 6.0], [float("nan"), float("nan")]], [[float("nan"), 3.0], [2.0, 2.0]]])
    heat, mask = gaussian_heatmaps(lm, (10, 9), sigma=2.0, return_mask=True)
    assert mask.tolist() == [[True, False], [False, True]]
    assert torch.equal(valid_mask(lm), mask)
    assert torch.all(heat[0, 1] == 0) and torch.all(heat[1, 0] == 0)
    assert heat[0, 0].max() > 0 and torch.isfinite(heat).all()
    # learned target: no NaN gradients from missing landmarks; masked loss ignores them
    tgt = HeatmapTarget(2, "learned_aniso")
    target, m = tgt(lm, (10, 9), return_mask=True)
    loss = heatmap_loss(torch.ones_like(target), target, m) + tgt.regularization()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in tgt.parameters())
    full = ((torch.ones_like(target) - target) ** 2)
    expected = (full[0, 0].sum() + full[1, 1].sum()) / 2
    assert heatmap_loss(torch.ones_like(target), target, m).item() == pytest.approx(expected.item(), rel=1e-6)


def test_gradcheck_float64():
    lm = torch.tensor([[[3.3, 2.6], [1.2, 4.1]]], dtype=torch.float64)

    def f_aniso(theta, sa, sb):
        return gaussian_heatmaps(lm, (7, 6), cov=aniso_cov(theta, sa, sb))

    theta = torch.tensor([0.3, -0.9], dtype=torch.float64, requires_grad=True)
    sa = torch.tensor([2.0, 1.4], dtype=torch.float64, requires_grad=True)
    sb = torch.tensor([1.1, 1.7], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f_aniso, (theta, sa, sb))
    sig = torch.tensor([1.5, 2.2], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: gaussian_heatmaps(lm, (7, 6), sigma=s), (sig,))
    lmg = lm.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: gaussian_heatmaps(x, (7, 6), sigma=1.7), (lmg,))
    # through the module's raw parameters
    for mode in ("learned_iso", "learned_aniso"):
        tgt = HeatmapTarget(2, mode).double()
        with torch.no_grad():
            for p in tgt.parameters():
                p.add_(torch.linspace(-0.2, 0.3, p.numel(), dtype=torch.float64))
        names = [n for n, _ in tgt.named_parameters()]

        def f(*vals, tgt=tgt, names=names):
            return torch.func.functional_call(tgt, dict(zip(names, vals)), (lm, (7, 6)))

        vals = tuple(p.detach().clone().requires_grad_(True) for p in tgt.parameters())
        assert torch.autograd.gradcheck(f, vals)


def test_learned_aniso_covariances_match_params_to_cov_and_table():
    tgt = HeatmapTarget(4, "learned_aniso").double()
    with torch.no_grad():
        tgt.theta.copy_(torch.tensor([0.3, 2.0, -1.4, 0.0], dtype=torch.float64))
        tgt.raw_sigma_a.copy_(torch.log(torch.tensor([4.0, 2.0, 1.0, 3.0], dtype=torch.float64)))
        tgt.raw_sigma_b.copy_(torch.log(torch.tensor([1.5, 3.0, 2.5, 3.0], dtype=torch.float64)))
    cov = tgt.covariances().detach().numpy()
    ref = params_to_cov([0.3, 2.0, -1.4, 0.0], [4.0, 2.0, 1.0, 3.0], [1.5, 3.0, 2.5, 3.0])
    np.testing.assert_allclose(cov, ref, rtol=1e-12, atol=1e-12)
    table = tgt.parameters_table()
    assert set(table) == {"theta", "sigma_major", "sigma_minor"}
    assert np.all(table["sigma_major"] >= table["sigma_minor"])
    assert np.all(table["theta"] > -np.pi / 2) and np.all(table["theta"] <= np.pi / 2)
    np.testing.assert_allclose(params_to_cov(table["theta"], table["sigma_major"], table["sigma_minor"]), ref,
                               atol=1e-12)
    t, a, b = cov_to_params(ref)
    np.testing.assert_allclose(table["sigma_major"], a, rtol=1e-10)
    np.testing.assert_allclose(table["sigma_minor"], b, rtol=1e-10)
    assert np.all(np.degrees(axis_angle_difference(table["theta"][:3], t[:3])) < 1e-6)
    # isotropic modes: (N, 2, 2) = sigma^2 I, table theta 0
    iso = HeatmapTarget(3, "learned_iso", init_sigma=[1.0, 2.0, 3.0])
    np.testing.assert_allclose(iso.covariances().detach().numpy(), np.array([1.0, 4.0, 9.0])[:, None, None] * np.eye(2),
                               rtol=1e-6)
    assert np.all(iso.parameters_table()["theta"] == 0)


def test_paper_initialisation_and_regularisers_by_hand():
    aniso = HeatmapTarget(3, "learned_aniso", alpha=5.0)
    tab = aniso.parameters_table()
    np.testing.assert_allclose(tab["sigma_major"], 3.0, rtol=1e-6)
    np.testing.assert_allclose(tab["sigma_minor"], 3.0, rtol=1e-6)
    assert np.all(tab["theta"] == 0) and aniso.gamma == 100.0
    assert aniso.regularization().item() == pytest.approx(5.0 * 3 * 9.0, rel=1e-6)
    with torch.no_grad():
        aniso.raw_sigma_a.copy_(torch.log(torch.tensor([2.0, 4.0, 1.0])))
        aniso.raw_sigma_b.copy_(torch.log(torch.tensor([3.0, 0.5, 1.0])))
    assert aniso.regularization().item() == pytest.approx(5.0 * (6.0 + 2.0 + 1.0), rel=1e-6)

    iso = HeatmapTarget(2, "learned_iso", init_sigma=[2.0, 3.0], alpha=20.0)
    assert iso.regularization().item() == pytest.approx(20.0 * (4.0 + 9.0), rel=1e-6)
    assert HeatmapTarget(2, "learned_iso").alpha == 20.0
    assert HeatmapTarget(2, "learned_iso", spatial_dims=3).alpha == 1000.0
    assert HeatmapTarget(2, "learned_aniso").alpha == 5.0
    fixed = HeatmapTarget(2, "fixed", init_sigma=3.0)
    assert fixed.regularization().item() == 0.0 and len(list(fixed.parameters())) == 0
    direct = HeatmapTarget(2, "learned_iso", init_sigma=[2.0, 3.0], alpha=1.0, parameterization="direct")
    assert direct.regularization().item() == pytest.approx(13.0, rel=1e-6)


def test_fixed_target_matches_function():
    lm = torch.tensor([[[10.2, 8.8], [3.0, 14.5]]])
    tgt = HeatmapTarget(2, "fixed", init_sigma=3.0)
    torch.testing.assert_close(tgt(lm, (20, 18)), gaussian_heatmaps(lm, (20, 18), sigma=3.0))


def test_wrap_axis_angle():
    vals = np.array([0.0, np.pi / 2, -np.pi / 2, np.pi, 3.0, -2.0])
    out = wrap_axis_angle(vals)
    assert np.all(out > -np.pi / 2) and np.all(out <= np.pi / 2 + 1e-12)
    assert np.all(axis_angle_difference(out, vals) < 1e-12)
    torch.testing.assert_close(wrap_axis_angle(torch.tensor(vals)), torch.tensor(out))


@pytest.mark.parametrize("theta_deg, s_maj, s_min", [(30.0, 5.0, 2.0), (80.0, 4.0, 2.5), (-55.0, 3.5, 1.5)])
def test_learned_aniso_recovers_prediction_covariance(theta_deg, s_maj, s_min):
    """Eq. 7 with the prediction fixed: the target parameters converge to the prediction's Sigma."""
    torch.manual_seed(0)
    size = (64, 60)
    lm = torch.tensor([[[31.3, 28.6], [20.0, 35.2]]], dtype=torch.float64)
    cov = torch.tensor(params_to_cov(np.radians(theta_deg), s_maj, s_min))
    pred = gaussian_heatmaps(lm, size, cov=cov[None].expand(2, 2, 2))
    tgt = HeatmapTarget(2, "learned_aniso", alpha=1e-3).double()
    opt = torch.optim.Adam(tgt.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        loss = heatmap_loss(pred, tgt(lm, size)) + tgt.regularization()
        loss.backward()
        opt.step()
    tab = tgt.parameters_table()
    assert np.all(np.degrees(axis_angle_difference(tab["theta"], np.radians(theta_deg))) < 2.0)
    np.testing.assert_allclose(tab["sigma_major"], s_maj, rtol=0.05)
    np.testing.assert_allclose(tab["sigma_minor"], s_min, rtol=0.05)


def test_learned_iso_regulariser_shrinks_sigma():
    """Payer Eq. 2: larger alpha -> smaller learned sigma for the same prediction."""
    lm = torch.tensor([[[20.0, 20.0]]])
    pred = gaussian_heatmaps(lm, (40, 40), sigma=3.0)
    out = []
    for alpha in (1e-3, 10.0):
        tgt = HeatmapTarget(1, "learned_iso", init_sigma=3.0, alpha=alpha)
        opt = torch.optim.Adam(tgt.parameters(), lr=0.05)
        for _ in range(150):
            opt.zero_grad()
            (heatmap_loss(pred, tgt(lm, (40, 40))) + tgt.regularization()).backward()
            opt.step()
        out.append(tgt.sigmas().item())
    assert out[0] == pytest.approx(3.0, rel=0.02)
    assert out[1] < out[0] - 0.1


def test_device_dtype_follow_landmarks():
    lm = torch.tensor([[[2.0, 3.0]]], dtype=torch.float64)
    tgt = HeatmapTarget(1, "learned_aniso")  # float32 parameters
    heat = tgt(lm, (8, 8))
    assert heat.dtype == torch.float64 and heat.device == lm.device
    heat.sum().backward()
    assert tgt.raw_sigma_a.grad is not None


def test_bad_arguments():
    lm = torch.zeros(1, 2, 2)
    with pytest.raises(ValueError):
        gaussian_heatmaps(lm, (8, 8))
    with pytest.raises(ValueError):
        gaussian_heatmaps(lm, (8, 8), sigma=1.0, cov=torch.eye(2))
    with pytest.raises(ValueError):
        gaussian_heatmaps(lm, (8, 8, 8), sigma=1.0)
    with pytest.raises(ValueError):
        HeatmapTarget(2, "learned_aniso", spatial_dims=3)
    with pytest.raises(ValueError):
        HeatmapTarget(2, "bogus")
    assert math.isclose(float(gaussian_heatmaps(lm, (8, 8), sigma=torch.tensor([1.0, 2.0])).sum()),
                        float(gaussian_heatmaps(lm, (8, 8), sigma=[1.0, 2.0]).sum()), rel_tol=1e-6)
