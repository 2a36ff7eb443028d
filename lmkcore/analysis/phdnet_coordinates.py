"""From PHD-Net outputs to coordinates and confidence (Schobs et al. 2021, Sec. 2.2).

Inputs are network outputs on one whole image: ``heat`` ``(B, N, gh, gw)`` patch
heatmaps and ``disp`` ``(B, N, 2, gh, gw)`` log displacements. Coordinates
returned are ``(x, y)`` in input (working) pixels. Everything is batched torch;
there are no Python loops over patches or pixels.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from lmkcore.errors import ConfigError
from lmkcore.training.phdnet_targets import decode_displacement, patch_centres
from lmkcore.models.phdnet import PATCH


def candidates(disp: torch.Tensor) -> torch.Tensor:
    """``(B, N, gh, gw, 2)`` candidate positions (px): patch centre + decoded displacement."""
    grid = tuple(disp.shape[-2:])
    c = patch_centres(grid, disp.device, disp.dtype)
    return c + decode_displacement(disp).permute(0, 1, 3, 4, 2)


def simple_coordinates(heat: torch.Tensor, disp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Noothout et al.'s strategy: the candidate of the patch with the highest heatmap value.

    Returns ``(xy (B, N, 2) px, peak (B, N))`` where ``peak`` is that heatmap value.
    """
    b, n, gh, gw = heat.shape
    peak, idx = heat.reshape(b, n, -1).max(-1)
    cand = candidates(disp).reshape(b, n, gh * gw, 2)
    return torch.gather(cand, 2, idx[..., None, None].expand(b, n, 1, 2))[:, :, 0], peak


def _gaussian_kernel(sigma: float, dtype, device) -> torch.Tensor:
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=dtype, device=device)
    k = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return k / k.sum()


def upsampled_heatmap(heat: torch.Tensor, smooth_px: float = 4.0) -> torch.Tensor:
    """``(B, N, 8 gh, 8 gw)`` patch heatmap upsampled to pixels and smoothed.

    Bilinear upsampling by the patch size (``align_corners=False``: patch values sit at
    the patch centres), negative values clipped to 0, then a Gaussian blur of
    ``smooth_px`` pixels (kernel radius ``ceil(3 sigma)``, normalised; edges repeated;
    0 disables it).
    """
    b, n, gh, gw = heat.shape
    up = F.interpolate(heat.reshape(b * n, 1, gh, gw), scale_factor=PATCH, mode="bilinear",
                       align_corners=False).clamp_min(0)
    if smooth_px > 0:
        k = _gaussian_kernel(smooth_px, up.dtype, up.device)
        r = (len(k) - 1) // 2
        up = F.conv2d(F.pad(up, (r, r, 0, 0), mode="replicate"), k.reshape(1, 1, 1, -1))
        up = F.conv2d(F.pad(up, (0, 0, r, r), mode="replicate"), k.reshape(1, 1, -1, 1))
    return up.reshape(b, n, gh * PATCH, gw * PATCH)


def best_region(heat: torch.Tensor, region_patches: tuple[int, int]) -> torch.Tensor:
    """``(B, N, 2)`` top-left patch ``(x0, y0)`` of the ``(rh, rw)``-patch window with the
    highest summed heatmap (first one in row-major order on ties)."""
    b, n, gh, gw = heat.shape
    rh, rw = region_patches
    sums = F.avg_pool2d(heat.reshape(b * n, 1, gh, gw), (rh, rw), stride=1).reshape(b, n, -1)
    idx = sums.argmax(-1)
    ow = gw - rw + 1
    return torch.stack([idx % ow, idx // ow], -1)


def candidate_smoothing(heat: torch.Tensor, disp: torch.Tensor, region_px: int = 128, blob_sigma: float = 1.0,
                        smooth_px: float = 4.0, return_maps: bool = False):
    """PHD-Net's candidate smoothing (Eqs. 2-3).

    1. The ``region_px`` x ``region_px`` window (in whole patches, clipped to the image)
       with the highest summed patch heatmap.
    2. Every patch in it votes with a Gaussian blob (``blob_sigma`` px, peak 1) at its
       candidate (centre + decoded displacement); votes add: ``M^c`` (Eq. 2).
    3. ``M^s = M^c * H`` with ``H`` the upsampled, smoothed heatmap
       (:func:`upsampled_heatmap`) (Eq. 3); the prediction is the peak pixel of ``M^s``.

    Returns
    -------
    xy : Tensor ``(B, N, 2)``
        Predicted pixel ``(x, y)`` (integer-valued, working px).
    peak : Tensor ``(B, N)``
        Maximum of ``M^s``: the confidence.
    maps : dict, only with ``return_maps``
        ``"candidate"`` ``M^c`` and ``"smoothed"`` ``M^s``, ``(B, N, Rh, Rw)``, and ``"origin"``
        ``(B, N, 2)`` pixel ``(x, y)`` of their top-left element.
    """
    b, n, gh, gw = heat.shape
    rp = max(1, int(region_px) // PATCH)
    rh, rw = min(rp, gh), min(rp, gw)
    origin_p = best_region(heat, (rh, rw))  # (B, N, 2) patches
    jy = origin_p[..., 1, None] + torch.arange(rh, device=heat.device)  # (B, N, rh)
    ix = origin_p[..., 0, None] + torch.arange(rw, device=heat.device)  # (B, N, rw)
    bi = torch.arange(b, device=heat.device)[:, None, None, None]
    ni = torch.arange(n, device=heat.device)[None, :, None, None]
    cand = candidates(disp)[bi, ni, jy[..., :, None], ix[..., None, :]]  # (B, N, rh, rw, 2)
    origin_px = (origin_p * PATCH).to(heat.dtype)
    cand = (cand - origin_px[:, :, None, None, :]).reshape(b, n, rh * rw, 2)
    u = torch.arange(rw * PATCH, device=heat.device, dtype=heat.dtype)
    v = torch.arange(rh * PATCH, device=heat.device, dtype=heat.dtype)
    gx = torch.exp(-(u - cand[..., 0:1]) ** 2 / (2 * blob_sigma ** 2))  # (B, N, P, Rw)
    gy = torch.exp(-(v - cand[..., 1:2]) ** 2 / (2 * blob_sigma ** 2))  # (B, N, P, Rh)
    m_c = torch.einsum("bnph,bnpw->bnhw", gy, gx)
    up = upsampled_heatmap(heat, smooth_px)
    py = (origin_p[..., 1, None] * PATCH + torch.arange(rh * PATCH, device=heat.device))
    px = (origin_p[..., 0, None] * PATCH + torch.arange(rw * PATCH, device=heat.device))
    h_region = up[bi, ni, py[..., :, None], px[..., None, :]]
    m_s = m_c * h_region
    peak, idx = m_s.reshape(b, n, -1).max(-1)
    xy = torch.stack([idx % (rw * PATCH), idx // (rw * PATCH)], -1).to(heat.dtype) + origin_px
    if return_maps:
        return xy, peak, {"candidate": m_c, "smoothed": m_s, "origin": origin_px}
    return xy, peak


# --------------------------------------------------------------------------------------------
# confidence
# --------------------------------------------------------------------------------------------


def confidence_threshold(errors, peaks, fraction: float = 0.1) -> float:
    """Schobs et al.'s threshold: the error-weighted mean peak value of the ``fraction``
    least accurate predictions (``ceil(fraction * n)``, at least 1) of a validation set.

    ``errors`` and ``peaks`` are 1D (any error unit); NaN pairs are ignored.
    """
    e = np.asarray(errors, dtype=np.float64).ravel()
    p = np.asarray(peaks, dtype=np.float64).ravel()
    if e.shape != p.shape:
        raise ConfigError(f"errors and peaks must have the same size, got {e.shape} and {p.shape}")
    ok = np.isfinite(e) & np.isfinite(p)
    e, p = e[ok], p[ok]
    if len(e) == 0:
        raise ConfigError("confidence_threshold: no finite (error, peak) pairs")
    if not 0 < fraction <= 1:
        raise ConfigError(f"fraction must be in (0, 1], got {fraction!r}")
    k = max(1, int(math.ceil(fraction * len(e))))
    worst = np.argsort(-e, kind="stable")[:k]
    w = e[worst]
    return float(np.average(p[worst], weights=w) if w.sum() > 0 else p[worst].mean())


def landmark_thresholds(errors, peaks, fraction: float = 0.1) -> np.ndarray:
    """``(N,)`` per-landmark thresholds from validation ``(M, N)`` errors and peaks."""
    e, p = np.asarray(errors), np.asarray(peaks)
    return np.array([confidence_threshold(e[:, i], p[:, i], fraction) for i in range(e.shape[1])])


def cross_fitted_high_confidence(errors, peaks, folds, fraction: float = 0.1) -> np.ndarray:
    """High-confidence mask ``(M, N)`` when no separate validation set exists.

    Each fold's per-landmark threshold comes from the other folds' ``(M, N)`` errors and
    peaks (``folds``: ``(M,)`` fold label per image); a prediction is high confidence when
    its peak is >= that threshold.
    """
    e, p, f = np.asarray(errors), np.asarray(peaks), np.asarray(folds)
    out = np.zeros(e.shape, dtype=bool)
    for k in np.unique(f):
        fit, use = f != k, f == k
        if not fit.any():
            raise ConfigError("cross_fitted_high_confidence needs at least two folds")
        out[use] = p[use] >= landmark_thresholds(e[fit], p[fit], fraction)[None, :]
    return out
