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
    tgt = HeatmapTarget(4, "learned_aniso", convention="paper_text").double()
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
    iso = HeatmapTarget(3, "learned_iso", init_sigma=[1.0, 2.0, 3.0], convention="paper_text")
    np.testing.assert_allclose(iso.covariances().detach().numpy(), np.array([1.0, 4.0, 9.0])[:, None, None] * np.eye(2),
                               rtol=1e-6)
    assert np.all(iso.parameters_table()["theta"] == 0)


def test_paper_text_initialisation_and_regularisers_by_hand():
    aniso = HeatmapTarget(3, "learned_aniso", alpha=5.0, convention="paper_text")
    tab = aniso.parameters_table()
    np.testing.assert_allclose(tab["sigma_major"], 3.0, rtol=1e-6)
    np.testing.assert_allclose(tab["sigma_minor"], 3.0, rtol=1e-6)
    assert np.all(tab["theta"] == 0) and aniso.gamma == 100.0
    assert aniso.regularization().item() == pytest.approx(5.0 * 3 * 9.0, rel=1e-6)
    with torch.no_grad():
        aniso.raw_sigma_a.copy_(torch.log(torch.tensor([2.0, 4.0, 1.0])))
        aniso.raw_sigma_b.copy_(torch.log(torch.tensor([3.0, 0.5, 1.0])))
    assert aniso.regularization().item() == pytest.approx(5.0 * (6.0 + 2.0 + 1.0), rel=1e-6)

    iso = HeatmapTarget(2, "learned_iso", init_sigma=[2.0, 3.0], alpha=20.0, convention="paper_text")
    assert iso.regularization().item() == pytest.approx(20.0 * (4.0 + 9.0), rel=1e-6)
    assert HeatmapTarget(2, "learned_iso", convention="paper_text").alpha == 20.0
    assert HeatmapTarget(2, "learned_iso", spatial_dims=3).alpha == 1000.0
    assert HeatmapTarget(2, "learned_aniso", convention="paper_text").alpha == 5.0
    fixed = HeatmapTarget(2, "fixed", init_sigma=3.0, convention="paper_text")
    assert fixed.regularization().item() == 0.0 and len(list(fixed.parameters())) == 0
    direct = HeatmapTarget(2, "learned_iso", init_sigma=[2.0, 3.0], alpha=1.0, parameterization="direct",
                           convention="paper_text")
    assert direct.regularization().item() == pytest.approx(13.0, rel=1e-6)


def test_fixed_target_matches_function():
    lm = torch.tensor([[[10.2, 8.8], [3.0, 14.5]]])
    tgt = HeatmapTarget(2, "fixed", init_sigma=3.0, convention="paper_text")
    torch.testing.assert_close(tgt(lm, (20, 18)), gaussian_heatmaps(lm, (20, 18), sigma=3.0))
    # the authors' code: "sigma = 3" is a variance of 3 px^2
    code = HeatmapTarget(2, "fixed", init_sigma=3.0)
    torch.testing.assert_close(code(lm, (20, 18)), gaussian_heatmaps(lm, (20, 18), sigma=math.sqrt(3.0)))


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
        tgt = HeatmapTarget(1, "learned_iso", init_sigma=3.0, alpha=alpha, convention="paper_text")
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


# --- the authors' code convention (Thaler et al. 2021 public code; docs/research/fidelity_facts.md) ------------


def _minimise_target(tgt, pred, lm, size, steps=60):
    """Minimise the module's own objective ``tgt.loss`` over its parameters (prediction fixed), float64 LBFGS."""
    opt = torch.optim.LBFGS(tgt.parameters(), lr=1.0, max_iter=steps, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = tgt.loss(pred, tgt(lm, size))
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    return tgt


def test_fixed_sigma3_is_a_variance_066_mm2_at_isbi_spacing():
    """Thaler Table 4, row sigma = 3: sigma_maj * sigma_min = 0.66 mm^2 at 0.46875 mm/px (3 px^2 x 0.46875^2)."""
    spacing = 0.46875  # mm/px of the network grid (Thaler et al.'s code, 512 px for 240 mm)
    for mode in ("fixed", "learned_iso", "learned_aniso"):  # fixed, and every learned target at its init
        cov_mm = HeatmapTarget(5, mode, init_sigma=3.0).covariances().detach().double().numpy() * spacing**2
        _, s1, s2 = cov_to_params(cov_mm)
        np.testing.assert_allclose(s1 * s2, 3.0 * spacing**2, rtol=1e-6)
        assert np.all(np.round(s1 * s2, 2) == 0.66)
    # the paper-text reading (3 px standard deviation) would report 1.98 mm^2
    _, s1, s2 = cov_to_params(HeatmapTarget(5, "fixed", init_sigma=3.0, convention="paper_text")
                              .covariances().double().numpy() * spacing**2)
    assert np.all(np.round(s1 * s2, 2) == 1.98)


def test_authors_code_objective_by_hand():
    """Half squared error / batch + alpha * v_maj * v_min (variances), alpha = 5 by default."""
    tgt = HeatmapTarget(3, "learned_aniso").double()
    assert tgt.alpha == 5.0 and tgt.convention == "authors_code" and tgt.variance_params
    with torch.no_grad():
        tgt.theta.copy_(torch.tensor([0.4, -1.0, 0.0], dtype=torch.float64))
        tgt.raw_sigma_a.copy_(torch.log(torch.tensor([4.0, 2.0, 1.5], dtype=torch.float64)))
        tgt.raw_sigma_b.copy_(torch.log(torch.tensor([1.0, 3.0, 1.5], dtype=torch.float64)))
    assert tgt.regularization().item() == pytest.approx(5.0 * (4.0 + 6.0 + 2.25), rel=1e-12)
    # Sigma = R diag(v_a, v_b) R^T: the values are variances
    np.testing.assert_allclose(tgt.covariances().detach().numpy(),
                               params_to_cov([0.4, -1.0, 0.0], np.sqrt([4.0, 2.0, 1.5]), np.sqrt([1.0, 3.0, 1.5])),
                               rtol=1e-12, atol=1e-12)
    assert HeatmapTarget(2, "learned_iso").alpha == 5.0  # Thaler's sigma-target: sigma_regularization = 5
    iso = HeatmapTarget(2, "learned_iso", init_sigma=[2.0, 3.0]).double()
    assert iso.regularization().item() == pytest.approx(5.0 * (4.0 + 9.0), rel=1e-6)  # v_maj v_min = v^2
    payer = HeatmapTarget(2, "learned_iso", init_sigma=[2.0, 3.0], convention="payer").double()
    assert payer.alpha == 20.0 and payer.regularization().item() == pytest.approx(10.0 * (4.0 + 9.0), rel=1e-6)
    pred, target = torch.rand(2, 3, 5, 6, dtype=torch.float64), torch.rand(2, 3, 5, 6, dtype=torch.float64)
    ssq = ((pred - target) ** 2).sum().item()
    assert tgt.data_loss(pred, target).item() == pytest.approx(0.5 * ssq / 2, rel=1e-12)
    assert HeatmapTarget(3, "learned_aniso", convention="paper_text").data_loss(pred, target).item() == \
        pytest.approx(ssq / 2, rel=1e-12)
    with pytest.raises(ValueError):
        HeatmapTarget(2, "learned_aniso", convention="payer")
    with pytest.raises(ValueError):
        HeatmapTarget(2, "learned_iso", convention="bogus")


def test_learned_variance_reaches_closed_form_optimum_iso():
    """sigma-target of the authors' code, prediction fixed to gamma N(mu, p I): the learned variance v minimises
    J(v) = 0.5 ||pred - gamma N(mu, v I)||^2 + alpha v^2. With the Gaussian integrals
    int N(v) N(w) = 1 / (2 pi (v + w)) (grid sums equal them to ~exp(-pi^2 v) here),
    dJ/dv = 0.5 gamma^2 [1 / (pi (v + p)^2) - 1 / (4 pi v^2)] + 2 alpha v = 0, solved by brentq."""
    from scipy.optimize import brentq

    gamma, alpha, p = 100.0, 5.0, 8.0
    size, lm = (64, 64), torch.tensor([[[31.4, 32.2]]], dtype=torch.float64)
    pred = gaussian_heatmaps(lm, size, sigma=math.sqrt(p), gamma=gamma)
    tgt = _minimise_target(HeatmapTarget(1, "learned_iso", init_sigma=3.0, alpha=alpha).double(), pred, lm, size)
    dj = lambda v: 0.5 * gamma**2 * (1 / (math.pi * (v + p) ** 2) - 1 / (4 * math.pi * v**2)) + 2 * alpha * v  # noqa
    v_star = brentq(dj, 0.1, p)
    (v_learned,) = tgt.values()
    assert v_learned.item() == pytest.approx(v_star, rel=1e-5)
    assert v_star < 0.8 * p  # the penalty matters: the optimum is well away from the prediction's variance
    # the paper-text objective (full squared error, alpha sigma^2 on a standard deviation) has another optimum
    text = _minimise_target(HeatmapTarget(1, "learned_iso", init_sigma=3.0, alpha=alpha, convention="paper_text")
                            .double(), pred, lm, size)
    assert abs(text.sigmas().item() ** 2 - v_star) > 0.5


def test_learned_aniso_matches_scipy_minimum_of_authors_objective():
    """Sigma-target: the module's optimum equals scipy's minimum of an independent NumPy/scipy.stats implementation
    of the authors' objective 0.5 sum (pred - gamma N(mu, R diag(v_a, v_b) R^T))^2 + alpha v_a v_b."""
    from scipy.optimize import minimize

    gamma, alpha = 100.0, 5.0
    w, h = 48, 44
    mu = np.array([23.3, 21.6])
    pred_cov = params_to_cov(np.radians(35.0), 3.0, 1.6)
    pred_np = gamma * multivariate_normal(mu, pred_cov).pdf(_grid(w, h))
    lm = torch.tensor(mu[None, None])
    pred = torch.tensor(pred_np[None, None])

    def objective(q):
        theta, va, vb = q[0], np.exp(q[1]), np.exp(q[2])
        c, s = np.cos(theta), np.sin(theta)
        rot = np.array([[c, -s], [s, c]])
        cov = rot @ np.diag([va, vb]) @ rot.T
        g = gamma * multivariate_normal(mu, cov).pdf(_grid(w, h))
        return 0.5 * ((pred_np - g) ** 2).sum() + alpha * va * vb

    ref = minimize(objective, x0=[0.3, np.log(4.0), np.log(2.0)], method="Nelder-Mead",
                   options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000})
    ref_cov = params_to_cov(ref.x[0], np.exp(ref.x[1] / 2), np.exp(ref.x[2] / 2))
    tgt = HeatmapTarget(1, "learned_aniso", init_sigma=3.0, alpha=alpha).double()
    with torch.no_grad():  # leave the isotropic init (zero theta gradient there), as training does
        tgt.raw_sigma_a.add_(0.2)
    _minimise_target(tgt, pred, lm, (w, h))
    np.testing.assert_allclose(tgt.covariances().detach().numpy()[0], ref_cov, rtol=1e-4, atol=1e-4)
    assert tgt.loss(pred, tgt(lm, (w, h))).item() == pytest.approx(ref.fun, rel=1e-6)
    _, r1, r2 = cov_to_params(ref_cov)
    _, p1, p2 = cov_to_params(pred_cov)
    assert r1 * r2 < 0.9 * p1 * p2  # alpha shrinks the learned Sigma below the prediction's
