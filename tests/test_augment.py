"""Tests of lmkcore.training.augment (batched spatial + intensity augmentation)."""
from __future__ import annotations

import math

import pytest
import torch

from lmkcore.training.augment import (
    AugmentConfig,
    AugmentParams,
    InversionError,
    affine_from_parameters,
    augment_batch,
    bspline_basis,
    bspline_displacement,
    bspline_evaluate,
    bspline_lipschitz_bound,
    control_spacing,
    inverse_transform_points,
    sample_params,
    transform_points,
    warp,
)
from lmkcore.errors import ConfigError

# Strong but invertible augmentation used by the geometric tests.
STRONG = AugmentConfig(
    intensity_shift=0.0,  # a shifted background would bias the blob centroids
    intensity_scale=0.2,
    translate=0.05,
    rotate_deg=20.0,
    scale=0.1,
    aniso_scale=0.05,
    elastic_grid=6,
    elastic_magnitude=3.0,
)


def render_blobs(centres: torch.Tensor, spatial_shape: tuple[int, ...], sigma: float) -> torch.Tensor:
    """One Gaussian blob channel per landmark: (B, N, n) -> (B, N, *spatial)."""
    n = len(spatial_shape)
    axes = [torch.arange(s, dtype=torch.float64) for s in reversed(spatial_shape)]  # x, y[, z]
    d2 = 0.0
    for j, ax in enumerate(axes):
        view = [1] * n
        view[n - 1 - j] = ax.numel()
        c = centres[..., j].reshape(centres.shape[:2] + (1,) * n)
        d2 = d2 + (ax.reshape(view) - c) ** 2
    return torch.exp(-d2 / (2 * sigma**2)).float()


def peak_centroids(images: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """Intensity-weighted centroid in a (2r+1)^n window around each channel's argmax.

    (B, N, *spatial) -> (B, N, n) as (x, y[, z]).
    """
    B, N = images.shape[:2]
    spatial = images.shape[2:]
    n = len(spatial)
    flat = images.reshape(B, N, -1).double()
    idx = flat.argmax(dim=-1)
    # array-order integer position of the maximum
    pos = []
    rem = idx
    for s in reversed(spatial):
        pos.append(rem % s)
        rem = rem // s
    pos = torch.stack(pos, dim=-1)  # (B, N, n) in x, y[, z] order
    offs = torch.stack(
        torch.meshgrid(*[torch.arange(-radius, radius + 1)] * n, indexing="ij"), dim=-1
    ).reshape(-1, n).flip(-1)  # (K, n) in x, y[, z] order
    coords = pos.unsqueeze(2) + offs  # (B, N, K, n)
    sizes = torch.tensor(list(reversed(spatial)))
    inside = ((coords >= 0) & (coords < sizes)).all(-1)
    c = torch.minimum(coords.clamp_min(0), sizes - 1)
    lin = torch.zeros(coords.shape[:3], dtype=torch.long)
    stride = 1
    for j in range(n):
        lin = lin + c[..., j] * stride
        stride *= int(sizes[j])
    w = torch.gather(flat, 2, lin) * inside
    return (w.unsqueeze(-1) * coords.double()).sum(2) / w.sum(2, keepdim=True)


def affine_only(params: AugmentParams) -> AugmentParams:
    return AugmentParams(
        params.spatial_shape, params.matrix, params.offset, None, params.intensity_scale, params.intensity_shift
    )


# --------------------------------------------------------------------------
# 1. rendered point features end up at the returned landmarks
# --------------------------------------------------------------------------


@pytest.mark.parametrize("n_landmarks", [1, 5])
def test_blob_peaks_follow_landmarks_2d(n_landmarks: int) -> None:
    g = torch.Generator().manual_seed(1234 + n_landmarks)
    B = 50 if n_landmarks == 1 else 12
    shape = (96, 96)
    centres = 26.0 + 44.0 * torch.rand(B, n_landmarks, 2, generator=g, dtype=torch.float64)
    images = render_blobs(centres, shape, sigma=1.0)
    landmarks = centres.float()

    out, moved = augment_batch(images, landmarks, STRONG, generator=torch.Generator().manual_seed(7))
    params = sample_params(B, shape, STRONG, generator=torch.Generator().manual_seed(7))
    assert torch.equal(moved, transform_points(params, landmarks))

    peaks = peak_centroids(out)
    err = (peaks - moved.double()).norm(dim=-1)
    assert err.max() < 0.5, f"max peak/landmark distance {err.max():.3f} px"
    assert err.mean() < 0.15

    # The elastic part must matter: ignoring it would miss the peaks.
    no_elastic = transform_points(affine_only(params), landmarks)
    shift = (no_elastic - moved).norm(dim=-1)
    assert shift.mean() > 1.0, f"elastic displacement too small to test anything ({shift.mean():.2f} px)"
    assert (peaks - no_elastic.double()).norm(dim=-1).max() > 2.0


def test_blob_peaks_follow_landmarks_3d() -> None:
    g = torch.Generator().manual_seed(99)
    B, N, shape = 3, 3, (40, 40, 40)
    centres = 13.0 + 14.0 * torch.rand(B, N, 3, generator=g, dtype=torch.float64)
    images = render_blobs(centres, shape, sigma=1.2)
    cfg = AugmentConfig(intensity_shift=0.0, rotate_deg=15.0, elastic_grid=5, elastic_magnitude=2.0)
    out, moved = augment_batch(images, centres.float(), cfg, generator=g)
    err = (peak_centroids(out, radius=3) - moved.double()).norm(dim=-1)
    assert err.max() < 0.5, f"max peak/landmark distance {err.max():.3f} px"


# --------------------------------------------------------------------------
# 2. identity
# --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(37, 50), (9, 12, 15)])
def test_identity_config_returns_input(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(0)
    n = len(shape)
    images = torch.rand((3, 2) + shape, generator=g)
    landmarks = torch.rand(3, 4, n, generator=g) * torch.tensor(list(reversed(shape))) - 0.5
    out, moved = augment_batch(images, landmarks, AugmentConfig.identity(), generator=g)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert torch.allclose(out, images, atol=1e-5, rtol=0)
    assert torch.allclose(moved, landmarks, atol=1e-5, rtol=0)


def test_intensity_is_scale_then_shift_per_image() -> None:
    cfg = AugmentConfig(
        intensity_shift=0.3, intensity_scale=0.5, translate=0, rotate_deg=0, scale=0, aniso_scale=0,
        elastic_magnitude=0,
    )
    images = torch.rand(6, 2, 20, 24, generator=torch.Generator().manual_seed(3))
    out, _ = augment_batch(images, torch.zeros(6, 0, 2), cfg, generator=torch.Generator().manual_seed(4))
    p = sample_params(6, (20, 24), cfg, generator=torch.Generator().manual_seed(4))
    expected = images * p.intensity_scale.float().view(-1, 1, 1, 1) + p.intensity_shift.float().view(-1, 1, 1, 1)
    assert torch.allclose(out, expected, atol=1e-5)
    assert p.intensity_scale.min() >= 0.5 and p.intensity_scale.max() <= 1.5
    assert p.intensity_shift.abs().max() <= 0.3 and p.intensity_shift.std() > 0.05


# --------------------------------------------------------------------------
# 3. known transforms in closed form
# --------------------------------------------------------------------------


def _params(shape, rot, scale, trans, control=None) -> AugmentParams:
    A, b = affine_from_parameters(shape, rot, scale, trans)
    B = A.shape[0]
    one = torch.ones(B, dtype=torch.float64)
    return AugmentParams(tuple(shape), A, b, control, one, one * 0)


def test_translation_moves_points_and_image_by_t() -> None:
    shape = (30, 40)
    t = torch.tensor([[3.0, -5.0], [0.25, 1.5]], dtype=torch.float64)
    p = _params(shape, torch.zeros(2), 1.0, t)
    pts = torch.rand(2, 7, 2, generator=torch.Generator().manual_seed(0)) * 30
    assert torch.allclose(transform_points(p, pts), pts + t.float().unsqueeze(1), atol=1e-5)
    assert torch.allclose(inverse_transform_points(p, pts + t.float().unsqueeze(1)), pts, atol=1e-5)
    img = torch.rand(2, 1, *shape, generator=torch.Generator().manual_seed(1))
    out = warp(p, img)
    # integer shift (3, -5): out[y, x] = img[y + 5, x - 3]
    assert torch.allclose(out[0, 0, 0:25, 3:], img[0, 0, 5:, :37], atol=1e-5)
    # zeros padding (up to float32 rounding of the grid at the border)
    assert out[0, 0, 25:].abs().max() < 1e-5 and out[0, 0, :, :3].abs().max() < 1e-5


def test_translation_only_config_is_a_common_shift() -> None:
    cfg = AugmentConfig(intensity_shift=0, intensity_scale=0, translate=0.1, rotate_deg=0, scale=0,
                        aniso_scale=0, elastic_magnitude=0)
    pts = torch.rand(8, 5, 2, generator=torch.Generator().manual_seed(0)) * 50
    _, moved = augment_batch(torch.rand(8, 1, 50, 60), pts, cfg, generator=torch.Generator().manual_seed(1))
    d = moved - pts
    assert torch.allclose(d, d[:, :1].expand_as(d), atol=1e-5)
    assert (d[:, 0].abs() <= torch.tensor([6.0, 5.0]) + 1e-5).all() and d.abs().max() > 1.0


def test_rotation_by_90_degrees_matches_rot90() -> None:
    shape = (33, 33)
    p = _params(shape, 90.0, 1.0, [0.0, 0.0])
    img = torch.rand(1, 2, *shape, generator=torch.Generator().manual_seed(5))
    out = warp(p, img)
    # positive angles turn content clockwise on screen = rot90 with k = -1
    assert torch.allclose(out, torch.rot90(img, k=-1, dims=(-2, -1)), atol=1e-5)
    assert not torch.allclose(out, torch.rot90(img, k=1, dims=(-2, -1)), atol=1e-2)
    c = 16.0
    pts = torch.tensor([[[0.0, 0.0], [32.0, 0.0], [10.5, 20.25], [16.0, 16.0]]])
    expected = torch.stack([c - (pts[..., 1] - c), c + (pts[..., 0] - c)], dim=-1)
    assert torch.allclose(transform_points(p, pts), expected, atol=1e-5)
    # a feature keeps its value: out at the mapped point equals img at the point
    q = transform_points(p, pts[:, :2]).round().long()
    for (x, y), (qx, qy) in zip(pts[0, :2].long().tolist(), q[0].tolist()):
        assert torch.allclose(out[0, :, qy, qx], img[0, :, y, x], atol=1e-5)


def test_scale_about_centre() -> None:
    shape = (21, 41)
    p = _params(shape, 0.0, torch.tensor([[2.0, 0.5]], dtype=torch.float64), [0.0, 0.0])
    pts = torch.tensor([[[20.0, 10.0], [0.0, 0.0], [30.0, 14.0]]])
    expected = torch.tensor([[[20.0, 10.0], [-20.0, 5.0], [40.0, 12.0]]])
    assert torch.allclose(transform_points(p, pts), expected, atol=1e-5)


def test_3d_rotation_about_z_acts_like_2d() -> None:
    p3 = _params((5, 33, 33), torch.tensor([[0.0, 0.0, 90.0]]), 1.0, [0.0, 0.0, 0.0])
    img = torch.rand(1, 1, 5, 33, 33, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(warp(p3, img), torch.rot90(img, k=-1, dims=(-2, -1)), atol=1e-5)


# --------------------------------------------------------------------------
# B-spline field
# --------------------------------------------------------------------------


def test_bspline_basis_partition_of_unity_and_linear_reproduction() -> None:
    x = torch.linspace(0, 63, 500, dtype=torch.float64)
    h = control_spacing((10, 64), 8)[0]
    w = bspline_basis(x, h, 8)
    assert torch.allclose(w.sum(-1), torch.ones_like(x), atol=1e-12)
    # coefficients c_i = position of control i reproduce the identity x -> x
    pos = (torch.arange(8, dtype=torch.float64) - 1) * h
    assert torch.allclose(w @ pos, x, atol=1e-10)
    # known values of the centred cubic B-spline at a knot: 1/6, 2/3, 1/6
    w0 = bspline_basis(torch.tensor([0.0], dtype=torch.float64), h, 8)[0]
    assert torch.allclose(w0[:3], torch.tensor([1 / 6, 2 / 3, 1 / 6], dtype=torch.float64))


def test_bspline_points_match_dense_field_and_jacobian() -> None:
    g = torch.Generator().manual_seed(11)
    shape = (30, 45)
    control = torch.randn(2, 2, 7, 7, generator=g, dtype=torch.float64)
    dense = bspline_displacement(control, shape)
    ys, xs = torch.meshgrid(torch.arange(30.0), torch.arange(45.0), indexing="ij")
    pts = torch.stack([xs, ys], -1).reshape(1, -1, 2).expand(2, -1, -1).double()
    assert torch.allclose(bspline_evaluate(control, pts, shape), dense.flatten(2).transpose(1, 2), atol=1e-12)
    # sub-pixel values are the smooth spline, not a pixel lookup: check the Jacobian by finite differences
    sub = torch.rand(2, 20, 2, generator=g, dtype=torch.float64) * 40
    _, jac = bspline_evaluate(control, sub, shape, jacobian=True)
    eps = 1e-6
    for j in range(2):
        e = torch.zeros(2, dtype=torch.float64)
        e[j] = eps
        fd = (bspline_evaluate(control, sub + e, shape) - bspline_evaluate(control, sub - e, shape)) / (2 * eps)
        assert torch.allclose(jac[..., j], fd, atol=1e-7)
    lip = bspline_lipschitz_bound(control, shape)
    assert (jac.flatten(-2).norm(dim=-1).amax(-1) <= lip).all()


def test_sampled_fields_respect_lipschitz_cap() -> None:
    cfg = AugmentConfig(elastic_grid=8, elastic_magnitude=5.0, elastic_max_lipschitz=0.4)
    p = sample_params(20, (64, 64), cfg, generator=torch.Generator().manual_seed(0))
    assert (bspline_lipschitz_bound(p.control, (64, 64)) <= 0.4 + 1e-12).all()


# --------------------------------------------------------------------------
# 4. forward / backward consistency
# --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(64, 80), (20, 24, 28)])
def test_forward_backward_roundtrip(shape: tuple[int, ...]) -> None:
    n = len(shape)
    cfg = AugmentConfig(rotate_deg=30.0, elastic_grid=5, elastic_magnitude=4.0, elastic_max_lipschitz=0.9)
    g = torch.Generator().manual_seed(21)
    p = sample_params(8, shape, cfg, generator=g)
    sizes = torch.tensor(list(reversed(shape)), dtype=torch.float64)
    pts = torch.rand(8, 30, n, generator=g, dtype=torch.float64) * (sizes + 20) - 10  # also outside the image
    q = transform_points(p, pts)
    assert (inverse_transform_points(p, q) - pts).norm(dim=-1).max() < 1e-3
    assert (transform_points(p, inverse_transform_points(p, pts)) - pts).norm(dim=-1).max() < 1e-3
    # the elastic part is non-trivial here
    assert (transform_points(affine_only(p), pts) - q).norm(dim=-1).mean() > 0.3


def test_folding_field_raises_inversion_error() -> None:
    shape = (32, 32)
    g = torch.Generator().manual_seed(0)
    control = torch.randn(4, 2, 5, 5, generator=g, dtype=torch.float64) * 40.0  # folds heavily
    p = _params(shape, torch.zeros(4), 1.0, [0.0, 0.0], control=control)
    assert (bspline_lipschitz_bound(control, shape) > 5).all()
    pts = torch.rand(4, 40, 2, generator=g, dtype=torch.float64) * 31
    with pytest.raises(InversionError, match="did not converge"):
        transform_points(p, pts)


# --------------------------------------------------------------------------
# 5. determinism
# --------------------------------------------------------------------------


def test_same_seed_bit_identical_different_seed_differs() -> None:
    images = torch.rand(4, 1, 48, 40, generator=torch.Generator().manual_seed(0))
    pts = torch.rand(4, 6, 2, generator=torch.Generator().manual_seed(1)) * 39
    cfg = AugmentConfig()
    a = augment_batch(images, pts, cfg, generator=torch.Generator().manual_seed(42))
    b = augment_batch(images, pts, cfg, generator=torch.Generator().manual_seed(42))
    c = augment_batch(images, pts, cfg, generator=torch.Generator().manual_seed(43))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.allclose(a[0], c[0]) and not torch.allclose(a[1], c[1])
    # images in one batch get different transforms
    assert not torch.allclose(a[1][0] - pts[0], a[1][1] - pts[1])


# --------------------------------------------------------------------------
# 6. missing landmarks, dtypes and errors
# --------------------------------------------------------------------------


def test_nan_landmarks_stay_nan_others_unaffected() -> None:
    images = torch.rand(2, 1, 40, 40)
    pts = torch.rand(2, 4, 2, generator=torch.Generator().manual_seed(0)) * 39
    pts_nan = pts.clone()
    pts_nan[0, 1] = float("nan")
    pts_nan[1, 3, 0] = float("nan")  # one NaN coordinate marks the whole landmark missing
    _, a = augment_batch(images, pts, AugmentConfig(), generator=torch.Generator().manual_seed(3))
    _, b = augment_batch(images, pts_nan, AugmentConfig(), generator=torch.Generator().manual_seed(3))
    assert torch.isnan(b[0, 1]).all() and torch.isnan(b[1, 3]).all()
    ok = ~torch.isnan(pts_nan).any(-1)
    assert torch.equal(a[ok], b[ok]) and not torch.isnan(b[ok]).any()


def test_dtypes_preserved() -> None:
    images = torch.rand(2, 3, 20, 20, dtype=torch.float64)
    pts = torch.rand(2, 2, 2) * 19
    out, moved = augment_batch(images, pts, AugmentConfig(), generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float64 and moved.dtype == torch.float32
    out16, _ = augment_batch(images.half(), pts, AugmentConfig(), generator=torch.Generator().manual_seed(0))
    assert out16.dtype == torch.float16 and torch.allclose(out16.double(), out, atol=2e-2)


@pytest.mark.parametrize(
    ("images", "landmarks", "match"),
    [
        (torch.rand(2, 20, 20), torch.zeros(2, 1, 2), r"\(B, C, H, W\).*got \(2, 20, 20\)"),
        (torch.rand(2, 1, 20, 20), torch.zeros(3, 1, 2), r"batch sizes differ.*B = 2.*B = 3"),
        (torch.randint(0, 5, (2, 1, 20, 20)), torch.zeros(2, 1, 2), r"floating-point.*torch.int64"),
        (torch.rand(2, 1, 20, 20), torch.zeros(2, 1, 3), r"\(B, N, 2\).*got \(2, 1, 3\)"),
        (torch.rand(2, 1, 4, 20, 20), torch.zeros(2, 1, 2), r"\(B, N, 3\).*got \(2, 1, 2\)"),
        (torch.rand(2, 1, 20, 20), torch.zeros(2, 1, 2, dtype=torch.long), r"landmarks.*floating-point"),
        (torch.rand(2, 1, 20, 20), torch.full((2, 1, 2), float("inf")), r"infinite"),
    ],
)
def test_input_errors(images, landmarks, match) -> None:
    with pytest.raises(ValueError, match=match):
        augment_batch(images, landmarks, AugmentConfig())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rotate_deg": 200.0}, r"rotate_deg.*<= 180.*200"),
        ({"scale": 1.0}, r"scale must be < 1.*1\.0"),
        ({"translate": -0.1}, r"translate.*>= 0.*-0\.1"),
        ({"elastic_magnitude": float("nan")}, r"elastic_magnitude.*nan"),
        ({"elastic_grid": 3}, r"elastic_grid.*>= 4.*3"),
        ({"elastic_grid": 8.0}, r"elastic_grid must be an int.*8\.0"),
        ({"intensity_scale": 1.5}, r"intensity_scale.*1\.5"),
        ({"padding_mode": "wrap"}, r"padding_mode.*'wrap'"),
        ({"elastic_max_lipschitz": 1.0}, r"elastic_max_lipschitz.*< 1"),
    ],
)
def test_config_validation(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        AugmentConfig(**kwargs)
    assert issubclass(ConfigError, ValueError)


def test_no_elastic_when_magnitude_zero_allows_small_grid() -> None:
    cfg = AugmentConfig(elastic_grid=0, elastic_magnitude=0.0)
    assert sample_params(2, (10, 10), cfg).control is None


def test_warp_rejects_mismatched_tensor() -> None:
    p = sample_params(2, (16, 16), AugmentConfig(), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"\(2, C, 16, 16\), got \(2, 1, 16, 17\)"):
        warp(p, torch.rand(2, 1, 16, 17))
    # the same transform applies to a second tensor (e.g. heatmaps)
    heat = torch.rand(2, 3, 16, 16)
    assert warp(p, heat).shape == heat.shape
    assert math.isfinite(float(warp(p, heat).sum()))
