"""PHD-Net labels and loss (Schobs et al. 2021, Sec. 2.1; Noothout et al. 2018).

All coordinates are ``(x, y)`` in pixels of the network input (working px),
integer values at pixel centres. Patch ``(i, j)`` (column ``i``, row ``j``) of an
output grid covers pixels ``8 i .. 8 i + 7`` and has its centre at
``(8 i + 3.5, 8 j + 3.5)``.
"""
from __future__ import annotations

import torch

from lmkcore.errors import ConfigError
from lmkcore.models.phdnet import PATCH


def patch_centres(grid: tuple[int, int], device=None, dtype=torch.float32) -> torch.Tensor:
    """``(gh, gw, 2)`` pixel ``(x, y)`` centres of the patches of a ``grid = (gh, gw)`` output."""
    gh, gw = grid
    ys = torch.arange(gh, device=device, dtype=dtype) * PATCH + (PATCH - 1) / 2
    xs = torch.arange(gw, device=device, dtype=dtype) * PATCH + (PATCH - 1) / 2
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)


def encode_displacement(d_px: torch.Tensor) -> torch.Tensor:
    """Log transform of displacements (px) per component: ``sign(d) log(1 + |d|)``."""
    return torch.sign(d_px) * torch.log1p(d_px.abs())


def decode_displacement(t: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode_displacement`: ``sign(t) (exp|t| - 1)`` in px."""
    return torch.sign(t) * torch.expm1(t.abs())


def displacement_targets(landmarks_px: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``(B, N, 2, gh, gw)`` log-transformed displacement from every patch centre to the landmark.

    ``landmarks_px`` is ``(B, N, 2)`` working px; NaN landmarks give NaN targets.
    """
    c = patch_centres(grid, landmarks_px.device, landmarks_px.dtype)  # (gh, gw, 2)
    d = landmarks_px[:, :, None, None, :] - c  # (B, N, gh, gw, 2)
    return encode_displacement(d).permute(0, 1, 4, 2, 3)


def patch_heatmaps(landmarks_px: torch.Tensor, grid: tuple[int, int], sigma: float = 2.0,
                   kind: str = "gaussian") -> torch.Tensor:
    """``(B, N, gh, gw)`` patch heatmap centred on the patch containing each landmark.

    ``kind="gaussian"``: ``exp(-|p - p_l|^2 / (2 sigma^2))`` over patch indices ``p`` with
    ``sigma`` in patches (paper: 2), peak 1 on the containing patch ``p_l = floor(l / 8)``.
    ``kind="binary"``: 1 on the containing patch, 0 elsewhere (Noothout et al.). Landmarks
    outside the grid give a Gaussian tail (or all zeros); NaN landmarks give NaN maps.
    """
    if kind not in ("gaussian", "binary"):
        raise ConfigError(f"heatmap kind must be 'gaussian' or 'binary', got {kind!r}")
    if not sigma > 0:
        raise ConfigError(f"heatmap sigma (patches) must be > 0, got {sigma!r}")
    gh, gw = grid
    cell = torch.floor((landmarks_px + 0.5) / PATCH)  # pixel centre x covers [x - 0.5, x + 0.5)
    ys = torch.arange(gh, device=landmarks_px.device, dtype=landmarks_px.dtype)
    xs = torch.arange(gw, device=landmarks_px.device, dtype=landmarks_px.dtype)
    dy = ys[None, None, :, None] - cell[..., 1, None, None]
    dx = xs[None, None, None, :] - cell[..., 0, None, None]
    if kind == "binary":
        return ((dx == 0) & (dy == 0)).to(landmarks_px.dtype) + 0 * (dx + dy)  # keeps NaN
    return torch.exp(-(dx ** 2 + dy ** 2) / (2 * sigma ** 2))


def phdnet_loss(disp: torch.Tensor, heat: torch.Tensor, landmarks_px: torch.Tensor, sigma: float = 2.0,
                kind: str = "gaussian") -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_d, L_h)`` of Schobs et al. Eq. (1) for network outputs on one input.

    ``L_d``: squared error of the log displacement of every patch, weighted by a Gaussian
    (``sigma`` patches) around the landmark's patch, averaged over patches; ``L_h``: MSE of
    the patch heatmap (``kind`` label). Missing (NaN) landmarks are left out.
    """
    grid = tuple(heat.shape[-2:])
    valid = torch.isfinite(landmarks_px).all(-1)  # (B, N)
    lm = torch.where(valid[..., None], landmarks_px, torch.zeros_like(landmarks_px))
    t_disp = displacement_targets(lm, grid)
    t_heat = patch_heatmaps(lm, grid, sigma, kind)
    weight = patch_heatmaps(lm, grid, sigma, "gaussian")
    v = valid.to(heat.dtype)
    n = v.sum().clamp_min(1) * grid[0] * grid[1]
    l_d = ((weight * ((disp - t_disp) ** 2).sum(2)) * v[..., None, None]).sum() / n
    l_h = (((heat - t_heat) ** 2) * v[..., None, None]).sum() / n
    return l_d, l_h
