"""Landmark coordinates from 3D heatmaps: arg-max with per-axis sub-voxel refinement.

Conventions: heatmaps ``(B, N, D, H, W)``; coordinates ``(x, y, z)`` in voxels, x = last axis,
integer = voxel centre (as :mod:`lmkcore.analysis.decoding` in 2D).
"""
from __future__ import annotations

import torch
from torch import Tensor

from lmkcore.errors import ConfigError

__all__ = ["argmax_subpixel_3d"]


def argmax_subpixel_3d(heatmaps: Tensor) -> tuple[Tensor, Tensor]:
    """Arg-max of each 3D heatmap refined per axis to sub-voxel precision.

    Around the arg-max voxel each axis gets the 1D parabola through its three samples, fitted to the
    ``log`` values where all three are ``> 0`` (exact for a separable, e.g. isotropic, Gaussian peak),
    else to the raw values; ``d = -g' / g''`` with central differences, 0 where the stencil leaves the
    volume or the curvature is not negative. A parabola through a maximum keeps ``|d| <= 0.5`` voxel.
    (Payer et al.'s code refines each axis with such a quadratic, ``find_quadratic_subpixel_maximum``.)

    Parameters
    ----------
    heatmaps : Tensor
        ``(B, N, D, H, W)``.

    Returns
    -------
    coords : Tensor
        ``(B, N, 3)`` ``(x, y, z)`` voxels (x = last axis), floating dtype of the input.
        NaN for a degenerate heatmap (flat, or holding a NaN/inf value): it has no maximum.
    values : Tensor
        ``(B, N)`` value at the arg-max voxel.
    """
    if heatmaps.ndim != 5:
        raise ConfigError(f"heatmaps must be (B, N, D, H, W), got shape {tuple(heatmaps.shape)}")
    if not heatmaps.is_floating_point():
        heatmaps = heatmaps.float()
    b, n, d, h, w = heatmaps.shape
    flat = heatmaps.reshape(b, n, -1)
    values, idx = flat.max(dim=-1)
    iz = torch.div(idx, h * w, rounding_mode="floor")
    iy = torch.div(idx % (h * w), w, rounding_mode="floor")
    ix = idx % w
    centre = torch.stack([ix, iy, iz], -1)  # (B, N, 3)
    sizes = torch.tensor([w, h, d], device=heatmaps.device)
    strides = torch.tensor([1, w, h * w], device=heatmaps.device)
    offsets = []
    for k in range(3):
        ok = (centre[..., k] > 0) & (centre[..., k] < sizes[k] - 1)
        lo = flat.gather(-1, (idx - strides[k] * ok).unsqueeze(-1)).squeeze(-1)
        hi = flat.gather(-1, (idx + strides[k] * ok).unsqueeze(-1)).squeeze(-1)
        positive = (lo > 0) & (hi > 0) & (values > 0)
        safe = lambda t: torch.log(torch.where(positive, t, torch.ones_like(t)))  # noqa: E731
        g_lo = torch.where(positive, safe(lo), lo)
        g_c = torch.where(positive, safe(values), values)
        g_hi = torch.where(positive, safe(hi), hi)
        grad, curv = 0.5 * (g_hi - g_lo), g_hi - 2.0 * g_c + g_lo
        good = ok & (curv < 0)
        offsets.append(torch.where(good, -grad / torch.where(good, curv, -torch.ones_like(curv)),
                                   torch.zeros_like(grad)))
    coords = centre.to(heatmaps.dtype) + torch.stack(offsets, -1).clamp(-0.5, 0.5)
    safe = torch.where(torch.isfinite(flat), flat, torch.zeros_like(flat))
    degenerate = ~torch.isfinite(flat).all(-1) | (safe.amax(-1) == safe.amin(-1))
    return torch.where(degenerate[..., None], torch.full_like(coords, float("nan")), coords), values
