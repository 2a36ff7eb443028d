"""Landmark coordinates from heatmaps: arg-max with sub-pixel refinement.

Conventions
-----------
Heatmaps are ``(B, N, H, W)`` tensors (``B`` images, ``N`` landmarks).
Coordinates are ``(x, y)`` in **pixels**, x = column (last axis), y = row
(downwards); integer coordinates are pixel centres, so ``(0, 0)`` is the
centre of the top-left pixel (see :mod:`lmkcore.data.landmarks`).

Sub-pixel refinement
--------------------
Around the arg-max pixel ``p`` the 3x3 neighbourhood ``g`` is approximated by
the quadratic ``g(p + d) ~ g0 + grad . d + 0.5 d^T Hs d`` with central finite
differences (``grad_x = (g[0, 1] - g[0, -1]) / 2``, ``Hs_xx = g[0, 1] - 2 g0 +
g[0, -1]``, ``Hs_xy = (g[1, 1] - g[1, -1] - g[-1, 1] + g[-1, -1]) / 4``, indices
``[dy, dx]``) and the peak is its vertex ``d = -Hs^{-1} grad`` (one Newton step).

``method="gaussian"`` (default) applies this to ``log g``: the logarithm of
any (anisotropic, rotated) Gaussian is an exact quadratic, so the vertex is
the exact centre of a sampled noise-free Gaussian. It needs all nine values
``> 0``; otherwise (or with ``method="quadratic"``) the raw values are used.
If the 2D Hessian is not negative definite, or the peak lies on the image
border (neighbours missing along an axis), each axis falls back to the 1D
parabola ``d = -grad / Hs`` through its three samples, and to ``d = 0`` along
an axis without a full 3-sample stencil or with non-negative curvature.

Each component of ``d`` is finally clamped to ``[-2, 2]`` px
(:data:`MAX_OFFSET`), so the result is always finite. Not to ``[-0.5, 0.5]``:
the brightest sample of a rotated anisotropic peak is the pixel nearest to
its centre in the peak's Mahalanobis metric, which can be further away along
x or y -- at worst (over angles and sub-pixel positions) about 0.65, 0.83,
1.1, 1.4 and 1.9 px for axis ratios 1.5, 2, 3, 4 and 6. The 1D fall-back
parabola through a maximum never leaves ``[-0.5, 0.5]``.

Degenerate heatmaps
-------------------
A heatmap that is flat (all values equal, e.g. all zero) or holds a NaN or
infinite value has no meaningful maximum: :func:`argmax_subpixel` returns NaN
coordinates for it, and :func:`flag_degenerate` marks a Gaussian fit of it as
not usable (NaN parameters, ``converged=False``). :func:`degenerate_heatmaps`
is the one test both use.

Only nine samples are used, so with noise the refinement degrades quickly for
broad peaks (the curvature estimate is ``~ 1/sigma^2``); for those, fit the
whole peak with :func:`lmkcore.analysis.fitting.fit_gaussians`.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import Tensor

from lmkcore.errors import ConfigError

__all__ = ["argmax_subpixel", "argmax_pixel", "subpixel_offset", "MAX_OFFSET", "degenerate_heatmaps", "flag_degenerate",
           "degenerate_fit_dict"]

#: Largest sub-pixel offset (px, per axis) from the arg-max pixel (see module doc).
MAX_OFFSET: float = 2.0


def degenerate_heatmaps(heatmaps: Tensor) -> Tensor:
    """Which heatmaps have no usable maximum: flat (max == min, e.g. all zero) or any NaN/inf value.

    Parameters
    ----------
    heatmaps : Tensor or ndarray
        ``(..., H, W)``.

    Returns
    -------
    Tensor
        ``(...)`` bool, on the input's device.
    """
    hm = torch.as_tensor(heatmaps)
    flat = hm.flatten(-2)
    if not flat.is_floating_point():
        return flat.amax(-1) == flat.amin(-1)
    finite = torch.isfinite(flat).all(-1)
    safe = torch.where(torch.isfinite(flat), flat, torch.zeros_like(flat))
    return ~finite | (safe.amax(-1) == safe.amin(-1))


def flag_degenerate(fit, heatmaps: Tensor):
    """A copy of a :class:`~lmkcore.analysis.fitting.GaussianFit` with the fits of degenerate heatmaps
    (:func:`degenerate_heatmaps`) set to NaN parameters and ``converged=False``.

    ``heatmaps`` is the ``(B, N, H, W)`` batch the fit was computed from.
    """
    bad = degenerate_heatmaps(heatmaps).to(fit.converged.device)
    if not bool(bad.any()):
        return fit
    out = {}
    for f in dataclasses.fields(fit):
        v = getattr(fit, f.name)
        if f.name == "converged":
            out[f.name] = v & ~bad
        else:
            mask = bad.reshape(bad.shape + (1,) * (v.ndim - bad.ndim))
            out[f.name] = torch.where(mask, torch.full_like(v, float("nan")), v)
    return dataclasses.replace(fit, **out)


def degenerate_fit_dict() -> dict:
    """The result of :func:`lmkcore.analysis.fitting.fit_gaussian_scipy` for a degenerate heatmap:
    NaN parameters, ``converged=False``, ``nfev=0``."""
    nan = math.nan
    return {"amplitude": nan, "center": np.full(2, nan), "theta": nan, "sigma_major": nan, "sigma_minor": nan,
            "cov": np.full((2, 2), nan), "residual_rms": nan, "converged": False, "nfev": 0, "params": np.full(6, nan)}


def argmax_pixel(heatmaps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Integer arg-max of each heatmap.

    Parameters
    ----------
    heatmaps : Tensor
        ``(B, N, H, W)``.

    Returns
    -------
    ix, iy : Tensor
        ``(B, N)`` int64 column and row of the maximum (first one on ties).
    values : Tensor
        ``(B, N)`` heatmap value there (dtype of the input).
    """
    if heatmaps.ndim != 4:
        raise ConfigError(f"heatmaps must be (B, N, H, W), got shape {tuple(heatmaps.shape)}")
    w = heatmaps.shape[-1]
    values, flat = heatmaps.flatten(-2).max(dim=-1)
    return flat % w, torch.div(flat, w, rounding_mode="floor"), values


def _neighbourhood(heatmaps: Tensor, ix: Tensor, iy: Tensor) -> Tensor:
    """3x3 values ``(B, N, 3, 3)`` around ``(ix, iy)``, indexed ``[dy + 1, dx + 1]``; edges replicated."""
    h, w = heatmaps.shape[-2:]
    off = torch.arange(-1, 2, device=heatmaps.device)
    rows = (iy[..., None] + off).clamp(0, h - 1)  # (B, N, 3)
    cols = (ix[..., None] + off).clamp(0, w - 1)
    flat_idx = (rows[..., :, None] * w + cols[..., None, :]).flatten(-2)  # (B, N, 9)
    return heatmaps.flatten(-2).gather(-1, flat_idx).unflatten(-1, (3, 3))


def _quadratic_vertex(g: Tensor, valid_x: Tensor, valid_y: Tensor) -> tuple[Tensor, Tensor]:
    """Vertex offset ``(dx, dy)`` of the finite-difference quadratic of 3x3 ``g`` (see module doc).

    Returns the offset (unclamped, zero where undefined) and a bool mask of
    where it is defined.
    """
    gx = 0.5 * (g[..., 1, 2] - g[..., 1, 0])
    gy = 0.5 * (g[..., 2, 1] - g[..., 0, 1])
    hxx = g[..., 1, 2] - 2.0 * g[..., 1, 1] + g[..., 1, 0]
    hyy = g[..., 2, 1] - 2.0 * g[..., 1, 1] + g[..., 0, 1]
    hxy = 0.25 * (g[..., 2, 2] - g[..., 2, 0] - g[..., 0, 2] + g[..., 0, 0])
    det = hxx * hyy - hxy * hxy
    full = valid_x & valid_y & (hxx < 0) & (det > 0)
    safe_det = torch.where(full, det, torch.ones_like(det))
    dx2 = -(hyy * gx - hxy * gy) / safe_det
    dy2 = -(hxx * gy - hxy * gx) / safe_det
    ok_x, ok_y = valid_x & (hxx < 0), valid_y & (hyy < 0)
    dx1 = torch.where(ok_x, -gx / torch.where(ok_x, hxx, -torch.ones_like(hxx)), torch.zeros_like(gx))
    dy1 = torch.where(ok_y, -gy / torch.where(ok_y, hyy, -torch.ones_like(hyy)), torch.zeros_like(gy))
    return torch.stack([torch.where(full, dx2, dx1), torch.where(full, dy2, dy1)], -1), full


def argmax_subpixel(heatmaps: Tensor, method: str = "gaussian") -> tuple[Tensor, Tensor]:
    """Arg-max of each heatmap refined to sub-pixel precision.

    Parameters
    ----------
    heatmaps : Tensor
        ``(B, N, H, W)`` real tensor, any device.
    method : {"gaussian", "quadratic"}
        Fit the 3x3 quadratic to ``log`` values (exact for Gaussian peaks;
        raw values where any of the nine is ``<= 0``) or to the raw values.
        See the module docstring for the fall-backs at borders.

    Returns
    -------
    coords : Tensor
        ``(B, N, 2)`` ``(x, y)`` in pixels, floating dtype of the input
        (float32 for integer input), on the input's device. NaN for a
        degenerate heatmap (flat, or any NaN/inf value: :func:`degenerate_heatmaps`);
        otherwise finite and within :data:`MAX_OFFSET` px of the arg-max pixel per axis.
    values : Tensor
        ``(B, N)`` the heatmap value at the arg-max pixel (not interpolated).
    """
    if not heatmaps.is_floating_point():
        heatmaps = heatmaps.float()
    ix, iy, values = argmax_pixel(heatmaps)
    base = torch.stack([ix, iy], -1).to(heatmaps.dtype)
    coords = base + subpixel_offset(heatmaps, ix, iy, method)
    bad = degenerate_heatmaps(heatmaps)
    return torch.where(bad[..., None], torch.full_like(coords, float("nan")), coords), values


def subpixel_offset(heatmaps: Tensor, ix: Tensor, iy: Tensor, method: str = "gaussian") -> Tensor:
    """Sub-pixel offset ``(B, N, 2)`` ``(dx, dy)`` px of the peak near pixel ``(ix, iy)``.

    The refinement step of :func:`argmax_subpixel` (see the module doc), for
    callers that already have the arg-max pixel ``ix, iy`` ``(B, N)``.
    """
    if method not in ("gaussian", "quadratic"):
        raise ConfigError(f"method must be 'gaussian' or 'quadratic', got {method!r}")
    h, w = heatmaps.shape[-2:]
    valid_x, valid_y = (ix > 0) & (ix < w - 1), (iy > 0) & (iy < h - 1)
    g = _neighbourhood(heatmaps, ix, iy)
    offset, _ = _quadratic_vertex(g, valid_x, valid_y)
    if method == "gaussian":
        positive = (g > 0).flatten(-2).all(-1)
        log_g = torch.log(torch.where(g > 0, g, torch.ones_like(g)))
        log_offset, log_full = _quadratic_vertex(log_g, valid_x, valid_y)
        use_log = positive & (log_full | ~(valid_x & valid_y))
        offset = torch.where(use_log[..., None], log_offset, offset)
    return offset.clamp(-MAX_OFFSET, MAX_OFFSET)
