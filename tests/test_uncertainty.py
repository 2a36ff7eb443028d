"""Uncertainty summaries: sizes, correlations, offset Gaussians, angle agreement."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
from scipy import stats

from lmkcore.analysis import uncertainty as unc
from lmkcore.analysis.covariance import params_to_cov


def test_gaussian_size_is_sqrt_det():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 2, 2))
    cov = a @ np.swapaxes(a, -1, -2) + 0.1 * np.eye(2)
    np.testing.assert_allclose(unc.gaussian_size(cov), np.sqrt(np.linalg.det(cov)), rtol=1e-10)
    assert unc.gaussian_size(params_to_cov(0.3, 2.0, 0.5)) == pytest.approx(1.0)


def test_correlation_matches_scipy_and_ignores_nan():
    rng = np.random.default_rng(1)
    x = rng.normal(size=19)
    y = 0.5 * x + rng.normal(scale=0.5, size=19)
    c = unc.correlation(np.append(x, np.nan), np.append(y, 3.0))
    assert c.n == 19
    assert c.pearson_r == pytest.approx(stats.pearsonr(x, y)[0])
    assert c.spearman_rho == pytest.approx(stats.spearmanr(x, y)[0])
    mono = unc.correlation(np.arange(6.0), np.exp(np.arange(6.0)))
    assert mono.spearman_rho == pytest.approx(1.0) and mono.pearson_r < 1.0
    assert np.isnan(unc.correlation([1, 1, 1], [1, 2, 3]).pearson_r)


def test_offset_gaussian_matches_numpy():
    rng = np.random.default_rng(2)
    cov = params_to_cov(np.radians(30), 1.5, 0.4)
    off = rng.multivariate_normal([0.1, -0.2], cov, size=(400, 3))
    off[5, 1] = np.nan
    mean, c = unc.fit_offsets_gaussian(off)
    for n in range(3):
        o = off[:, n][~np.isnan(off[:, n]).any(-1)]
        np.testing.assert_allclose(c[n], np.cov(o.T), atol=1e-12)
        np.testing.assert_allclose(mean[n], o.mean(0), atol=1e-12)
    table = unc.angle_agreement(cov, {"offsets": c}, ["a", "b", "c"])
    assert table["anisotropic"].all()
    assert (table["offsets angle error (deg)"] < 5).all()


def test_prediction_offsets_and_size_table():
    pred = np.array([[[10.0, 10.0], [5.0, 5.0]]])
    tgt = np.array([[[9.0, 10.0], [5.0, 7.0]]])
    off = unc.prediction_offsets_mm(pred, tgt, np.array([[0.5, 0.25]]))
    np.testing.assert_allclose(off, [[[0.5, 0.0], [0.0, -0.5]]])
    learned = np.stack([params_to_cov(0, 1.0, 0.5), params_to_cov(0, 2.0, 1.0)])
    fit = np.stack([learned, np.full((2, 2, 2), np.nan)])
    t = unc.size_error_table(learned, fit, np.array([[1.0, 2.0], [3.0, np.nan]]), ["a", "b"])
    assert t["Σ size (mm²)"].tolist() == pytest.approx([0.5, 2.0])
    assert t["Σ̂ size (mm²)"].tolist() == pytest.approx([0.5, 2.0])
    assert t["Σ̂ fits"].tolist() == [1, 1]
    assert t["PE mean (mm)"].tolist() == pytest.approx([2.0, 2.0])


def test_angle_agreement_known_rotations():
    declared = np.stack([params_to_cov(np.radians(80), 3.0, 1.0), params_to_cov(0.0, 1.0, 1.0)])
    est = np.stack([params_to_cov(np.radians(-85), 2.0, 1.0), params_to_cov(0.5, 1.2, 1.0)])
    t = unc.angle_agreement(declared, {"Σ": est}, ["x", "y"])
    assert t["Σ angle error (deg)"].iloc[0] == pytest.approx(15.0)
    assert t["anisotropic"].tolist() == [True, False]
    assert t["declared ratio"].iloc[0] == pytest.approx(3.0)


def test_declared_cov_mm_on_synthetic(tmp_path):
    from lmkcore.data.datasets import load_dataset

    rec = load_dataset("synthetic", None, n_images=40, width=64, cache_dir=tmp_path)
    c = unc.declared_cov_mm(rec, rec.ids[:3])
    sp = rec.spacing[:3]
    np.testing.assert_allclose(c[:, :, 0, 1], rec.truth["annotation_cov"][:3, :, 0, 1] * sp[:, None, 0] * sp[:, None, 1])
    # the simulated observers scatter as declared: pooled offsets agree in orientation for anisotropic landmarks
    obs = np.stack([rec.annotations[k] - rec.truth["landmarks"] for k in rec.annotators], 1) * rec.spacing[:, None, None]
    _, pooled = unc.fit_offsets_gaussian(obs.transpose(0, 1, 2, 3).reshape(-1, len(rec.landmark_names), 2))
    t = unc.angle_agreement(unc.declared_cov_mm(rec), {"obs": pooled}, rec.landmark_names, min_ratio=2.5)
    assert (t.loc[t["anisotropic"], "obs angle error (deg)"] < 15).all()


def test_offsets_panel_draws():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    cov = params_to_cov(0.4, 1.0, 0.3)
    from lmkcore.reporting.plotting import offsets_panel  # drawing lives in the reporting layer

    lim = offsets_panel(ax, np.random.default_rng(0).normal(size=(50, 2)), covs=np.stack([cov] * 3), mean_cov=cov)
    assert lim > 0 and len(ax.patches) == 4
    plt.close(fig)


def test_mcd_point_distribution_matches_numpy():
    rng = np.random.default_rng(3)
    pts = rng.normal(size=(4, 20, 3, 2)) * [2.0, 1.0] + 50
    pts[1, 4, 2] = np.nan
    spacing = np.array([[0.1, 0.2]] * 4)
    mean_px, cov = unc.mcd_point_distribution(pts, spacing)
    for m in range(4):
        for n in range(3):
            p = pts[m, :, n][~np.isnan(pts[m, :, n]).any(-1)]
            np.testing.assert_allclose(mean_px[m, n], p.mean(0), atol=1e-10)
            np.testing.assert_allclose(cov[m, n], np.cov((p * spacing[m]).T), atol=1e-12)
    same = np.repeat(pts[:, :1], 5, axis=1)  # identical argmax in every pass: zero spread
    assert np.allclose(unc.mcd_point_distribution(same, spacing)[1], 0.0)


def test_spearman_keeps_infinite_uncertainty_and_matches_scipy():
    from lmkcore.analysis.calibration import spearman

    x = np.array([1.0, 2.0, np.inf, 4.0, np.nan, 0.5, 3.0])
    y = np.array([1.0, 3.0, 2.0, 4.0, 2.0, 0.1, 5.0])
    keep = ~np.isnan(x)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x[keep], y[keep]).statistic)  # inf ranked last
    finite_only = unc.correlation(x, y)
    assert finite_only.n == 5 and np.isfinite(finite_only.pearson_r)
    with_inf = unc.correlation(x, y, keep_inf=True)
    assert with_inf.n == 6 and np.isnan(with_inf.pearson_r)
