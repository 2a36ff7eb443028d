"""Tests for lmkcore.analysis.propagation: sampling landmark distributions into clinical classes.

References: closed forms (degenerate distributions, a 1-D Gaussian pushed through
the SNA angle), numpy/scipy (Cholesky, weighted moments, normal CDF) and brute
force (classifying the drawn samples directly).
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import norm

from lmkcore.analysis import clinical as C
from lmkcore.errors import ConfigError
from lmkcore.data.image_cache import resize_landmarks
from lmkcore.analysis.propagation import (
    GaussianLandmarks,
    HeatmapLandmarks,
    cholesky_2x2,
    gaussian_from_result,
    heatmap_from_result,
    propagate,
    sample_landmarks,
)

# A plausible ISBI landmark set in mm, patient facing right (as in test_clinical.py).
BASE = np.array([(80, 100), (146, 96), (128, 121), (60, 120), (141, 163), (132, 200), (137, 216), (127, 223),
                 (132, 221), (72, 190), (140, 178), (143, 179), (156, 172), (153, 190), (152, 155), (147, 220),
                 (88, 153), (150, 153), (70, 150)], dtype=np.float64)
IDX = {n: i for i, n in enumerate(C.ISBI_LANDMARK_NAMES)}


def shapes(n: int, seed: int = 0, sigma: float = 3.0) -> np.ndarray:
    return BASE + sigma * np.random.default_rng(seed).standard_normal((n, 19, 2))


def random_spd(shape, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape + (2, 2))
    return a @ np.swapaxes(a, -1, -2) + 0.05 * np.eye(2)


def test_cholesky_2x2_matches_numpy_and_handles_singular():
    cov = random_spd((50,))
    np.testing.assert_allclose(cholesky_2x2(cov), np.linalg.cholesky(cov), rtol=1e-12, atol=1e-12)
    sing = np.array([[[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 4.0]], [[1.0, 2.0], [2.0, 4.0]]])
    L = cholesky_2x2(sing)
    np.testing.assert_allclose(L @ np.swapaxes(L, -1, -2), sing, atol=1e-12)
    assert np.isfinite(L).all()


def test_zero_covariance_gives_point_class_with_probability_one():
    mean = shapes(30)
    res = propagate(GaussianLandmarks(mean, np.zeros((30, 19, 2, 2))), n_samples=200, seed=3)
    point = C.classify_all(mean)
    for m in C.MEASURES:
        expected = np.eye(C.N_CLASSES[m])[point[m]]
        np.testing.assert_array_equal(res.probabilities[m], expected)
        np.testing.assert_array_equal(res.most_probable[m], point[m])
        np.testing.assert_array_equal(res.entropy[m], 0.0)
    # the classes vary over these shapes, so this is not a constant answer
    assert sum(len(np.unique(point[m])) for m in C.MEASURES) > len(C.MEASURES)


def test_single_pixel_heatmap_is_degenerate_too():
    mean = shapes(5, seed=4)
    heat = np.zeros((5, 19, 7, 7))
    heat[..., 3, 3] = 1.0
    origin = mean - 3.0  # pixel (3, 3) of the crop sits on the mean (scale 1 mm / px)
    res = propagate(HeatmapLandmarks(heat, origin, np.ones((5, 2)), jitter=False), n_samples=100, seed=0)
    point = C.classify_all(mean)
    for m in C.MEASURES:
        np.testing.assert_array_equal(res.probabilities[m], np.eye(C.N_CLASSES[m])[point[m]])


def test_entropy_grows_with_covariance():
    mean = shapes(40, seed=5)
    ents = []
    for sd in (0.0, 0.5, 1.0, 2.0, 4.0):
        cov = np.broadcast_to(sd**2 * np.eye(2), (40, 19, 2, 2))
        res = propagate(GaussianLandmarks(mean, cov), n_samples=2000, seed=0)
        ents.append([res.entropy[m].mean() for m in C.MEASURES])
    ents = np.array(ents)  # (levels, measures)
    assert (ents[0] == 0).all()
    assert (np.diff(ents, axis=0) > 0).all(), ents


def test_sna_probability_matches_closed_form():
    """A moves on a line perpendicular to N->A: SNA = SNA0 + s * atan(t / |NA|), t ~ N(0, sd^2)."""
    lm = BASE.copy()
    n_pt, a_pt = lm[IDX["nasion"]], lm[IDX["subspinale"]]
    na = a_pt - n_pt
    length = np.linalg.norm(na)
    u = np.array([-na[1], na[0]]) / length
    sna0 = float(C.sna(lm))
    moved = lm.copy()
    moved[IDX["subspinale"]] += 1e-3 * u
    s = np.sign(float(C.sna(moved)) - sna0)
    lo, hi, below, above = C.THRESHOLDS["SNA"]
    # SNA normal <=> t in [t(lo), t(hi)] (monotone in t)
    t_edges = sorted(s * length * np.tan(np.radians([lo - sna0, hi - sna0])))
    sd = 2.0
    p_normal = norm.cdf(t_edges[1] / sd) - norm.cdf(t_edges[0] / sd)
    mean = lm[None]
    cov = np.zeros((1, 19, 2, 2))
    cov[0, IDX["subspinale"]] = sd**2 * np.outer(u, u)  # rank-1
    n = 200_000
    res = propagate(GaussianLandmarks(mean, cov), n_samples=n, seed=11)
    p = res.probabilities["SNA"][0, C.NORMAL_CLASS]
    assert 0.05 < p_normal < 0.95
    assert abs(p - p_normal) < 5 * np.sqrt(p_normal * (1 - p_normal) / n)


def test_gaussian_samples_have_requested_moments():
    mean = shapes(2, seed=7)
    cov = random_spd((2, 19), seed=8)
    s = sample_landmarks(GaussianLandmarks(mean, cov), 40_000, seed=1)
    np.testing.assert_allclose(s.mean(0), mean, atol=0.05)
    emp = np.einsum("simx,simy->imxy", s - mean, s - mean) / s.shape[0]
    np.testing.assert_allclose(emp, cov, atol=0.08 * np.abs(cov).max())


def _blob_heatmaps(m, n, size=21, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    cov = random_spd((m, n), seed=seed + 1) * 4.0
    prec = np.linalg.inv(cov)
    c = size // 2 + rng.uniform(-2, 2, (m, n, 2))
    d = np.stack([xx, yy], -1)[None, None] - c[:, :, None, None, :]
    q = np.einsum("mnhwi,mnij,mnhwj->mnhw", d, prec, d)
    heat = np.exp(-0.5 * q) + 0.02 * rng.random((m, n, size, size)) - 0.01  # small negatives get clipped
    return heat.astype(np.float16)


def test_heatmap_moments_match_weighted_reference():
    heat = _blob_heatmaps(3, 19)
    origin = np.random.default_rng(2).uniform(0, 100, (3, 19, 2))
    scale = np.array([[0.5, 0.5], [1.5, 1.2], [0.1, 0.1]])
    offset = np.array([[0.0, 0.0], [0.3, -0.2], [1.0, 2.0]])
    dist = HeatmapLandmarks(heat, origin, scale, offset, jitter=False)
    mean, cov = dist.moments_mm()
    yy, xx = np.mgrid[0:21, 0:21]
    for i, k in ((0, 0), (1, 5), (2, 18)):
        w = np.clip(heat[i, k].astype(np.float64), 0, None).ravel()
        pts = (np.stack([xx.ravel(), yy.ravel()], -1) + origin[i, k]) * scale[i] + offset[i]
        np.testing.assert_allclose(mean[i, k], np.average(pts, axis=0, weights=w), rtol=1e-10)
        np.testing.assert_allclose(cov[i, k], np.cov(pts.T, aweights=w, bias=True), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("jitter", [False, True])
def test_heatmap_sampling_matches_heatmap_distribution(jitter):
    heat = _blob_heatmaps(2, 19, seed=3)
    origin = np.zeros((2, 19, 2))
    dist = HeatmapLandmarks(heat, origin, np.array([[1.0, 1.0], [0.5, 0.25]]), jitter=jitter)
    n = 50_000
    s = sample_landmarks(dist, n, seed=5)  # (S, 2, 19, 2)
    mean, cov = dist.moments_mm()
    sd = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
    assert (np.abs(s.mean(0) - mean) < 5 * sd / np.sqrt(n)).all()
    emp = np.einsum("simx,simy->imxy", s - mean, s - mean) / n
    np.testing.assert_allclose(emp, cov, rtol=0.05, atol=0.02 * np.abs(cov).max())
    if not jitter:
        # brute force: pixel frequencies vs the normalised heatmap (image 0, landmark 4)
        w = np.clip(heat[0, 4].astype(np.float64), 0, None)
        p = w / w.sum()
        freq = np.zeros_like(p)
        np.add.at(freq, (s[:, 0, 4, 1].astype(int), s[:, 0, 4, 0].astype(int)), 1.0 / n)
        assert (np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-12).all()


def test_probabilities_equal_brute_force_and_do_not_depend_on_chunks():
    mean = shapes(7, seed=9)
    dist = GaussianLandmarks(mean, random_spd((7, 19), seed=10))
    a = propagate(dist, n_samples=500, seed=42, chunk_images=3)
    b = propagate(dist, n_samples=500, seed=42, chunk_images=1)
    ref = C.class_probabilities(sample_landmarks(dist, 500, seed=42))
    sub = sample_landmarks(dist, 500, seed=42, images=[5])
    np.testing.assert_array_equal(sub[:, 0], sample_landmarks(dist, 500, seed=42)[:, 5])
    for m in C.MEASURES:
        np.testing.assert_array_equal(a.probabilities[m], b.probabilities[m])
        np.testing.assert_array_equal(a.probabilities[m], ref[m])
        np.testing.assert_allclose(a.entropy[m], C.class_entropy(ref[m]))
        np.testing.assert_array_equal(a.most_probable[m], np.argmax(ref[m], -1))
    c = propagate(dist, n_samples=500, seed=43)
    assert any((c.probabilities[m] != a.probabilities[m]).any() for m in C.MEASURES)


def test_gaussian_from_result_falls_back_where_fit_failed():
    m, n = 2, 19
    spacing = np.array([[0.1, 0.1], [0.2, 0.1]])
    fit = shapes(m) / 0.1
    arg = fit + 1.0
    cov = random_spd((m, n))
    ok = np.ones((m, n), bool)
    ok[1, 3] = False
    cov[1, 3] = np.nan
    res = SimpleNamespace(spacing=spacing, pred_fit_px=np.where(ok[..., None], fit, arg), pred_argmax_px=arg,
                          fit_cov_mm=cov, fit_ok=ok)
    dist, fallback = gaussian_from_result(res, fallback_sd_mm=0.3)
    assert fallback.sum() == 1 and fallback[1, 3]
    np.testing.assert_allclose(dist.cov_mm[1, 3], 0.09 * np.eye(2))
    np.testing.assert_allclose(dist.mean_mm[1, 3], arg[1, 3] * spacing[1])
    np.testing.assert_allclose(dist.mean_mm[0], fit[0] * spacing[0])
    np.testing.assert_allclose(dist.cov_mm[0], cov[0])


def test_heatmap_from_result_maps_working_pixels_to_original_mm():
    m, n, size = 2, 19, 5
    image_size = np.array([[1935, 2400], [1935, 2400]], dtype=float)
    spacing = np.full((m, 2), 0.1)
    work = np.array([128, 159], dtype=float)
    ws = spacing * image_size / work
    crops = np.zeros((m, n, size, size), np.float16)
    crops[..., 1, 3] = 1.0  # pixel (x=3, y=1)
    origin = np.random.default_rng(0).integers(0, 100, (m, n, 2))
    res = SimpleNamespace(heatmap_crops=crops, crop_origin=origin, work_spacing=ws, spacing=spacing)
    s = sample_landmarks(heatmap_from_result(res, jitter=False), 3, seed=0)
    work_px = origin + np.array([3, 1])
    expected = np.stack([resize_landmarks(work_px[i], work, image_size[i]) for i in range(m)]) * spacing[:, None]
    np.testing.assert_allclose(s[0], expected, rtol=1e-12)


def test_invalid_inputs_raise_clear_errors():
    mean = shapes(1)
    bad = np.zeros((1, 19, 2, 2))
    bad[0, 2] = [[1.0, 2.0], [2.0, 1.0]]  # indefinite
    with pytest.raises(ConfigError, match=r"cov_mm\[0, 2\]"):
        GaussianLandmarks(mean, bad)
    with pytest.raises(ConfigError, match="not finite"):
        GaussianLandmarks(mean, np.full((1, 19, 2, 2), np.nan))
    # an all-zero heatmap is an undefined landmark (NaN samples), not an error
    assert np.isnan(sample_landmarks(HeatmapLandmarks(np.zeros((1, 19, 3, 3)), np.zeros((1, 19, 2)), np.ones((1, 2))), 4)).all()
    with pytest.raises(ConfigError, match="n_samples"):
        propagate(GaussianLandmarks(mean, np.zeros((1, 19, 2, 2))), n_samples=0)
    with pytest.raises(ConfigError, match="19 ISBI"):
        propagate(GaussianLandmarks(mean[:, :5], np.zeros((1, 5, 2, 2))), n_samples=10)
