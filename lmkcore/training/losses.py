"""Heatmaps as classifications over pixels (McCouat & Voiculescu 2022): 2D softmax and the
one-hot / Gaussian-target negative log-likelihood losses.

Conventions: logits and probability maps are ``(B, N, H, W)`` tensors on a pixel grid (working
pixels); landmarks ``(B, N, 2)`` ``(x, y)`` in the same pixels (x = column, y = row down); pixel
``(i, j)`` is the pixel whose centre is at ``x = i, y = j``. A sub-pixel landmark is assigned to its
**nearest pixel** (``round``) for the one-hot target. Landmarks that are missing (NaN) or whose
nearest pixel lies outside the grid are masked out.
"""
from __future__ import annotations

import torch
from torch import Tensor

from lmkcore.errors import ConfigError

__all__ = ["log_softmax_2d", "softmax_2d", "pixel_index", "onehot_targets", "onehot_nll", "gaussian_nll",
           "nll_per_landmark"]


def _temperature(t: Tensor | float | None, logits: Tensor) -> Tensor | float:
    if t is None:
        return 1.0
    t = torch.as_tensor(t, dtype=logits.dtype, device=logits.device)
    return t.reshape(1, -1, 1, 1) if t.dim() == 1 else t


def log_softmax_2d(logits: Tensor, temperature: Tensor | float | None = None) -> Tensor:
    """Log of the 2D softmax over every channel of ``(B, N, H, W)`` logits divided by ``temperature``
    (scalar or ``(N,)``; paper Eq. 3)."""
    b, n, h, w = logits.shape
    z = logits / _temperature(temperature, logits)
    return torch.log_softmax(z.reshape(b, n, h * w), -1).reshape(b, n, h, w)


def softmax_2d(logits: Tensor, temperature: Tensor | float | None = None) -> Tensor:
    """2D softmax of every channel (paper Eq. 1 / Eq. 3): each ``(H, W)`` map sums to 1."""
    return log_softmax_2d(logits, temperature).exp()


def pixel_index(landmarks_px: Tensor, size: tuple[int, int], rounding: str = "round") -> tuple[Tensor, Tensor]:
    """Flat index ``y * W + x`` of the pixel of each landmark and its validity.

    Parameters
    ----------
    landmarks_px : Tensor ``(B, N, 2)``
        ``(x, y)`` working px.
    size : (W, H)
    rounding : ``"round"`` or ``"floor"``
        ``"round"``: the nearest pixel (pixel centres at integers; the paper text's "ground-truth
        pixel"); ``"floor"``: the authors' code (coordinates truncated with ``astype(int)``).

    Returns
    -------
    index : LongTensor ``(B, N)`` (0 where invalid); valid : BoolTensor ``(B, N)``
    """
    if rounding not in ("round", "floor"):
        raise ConfigError(f"rounding must be 'round' or 'floor', got {rounding!r}")
    w, h = size
    finite = torch.isfinite(landmarks_px).all(-1)
    to_int = torch.round if rounding == "round" else torch.floor
    r = to_int(torch.nan_to_num(landmarks_px.detach(), nan=-1.0)).long()
    valid = finite & (r[..., 0] >= 0) & (r[..., 0] < w) & (r[..., 1] >= 0) & (r[..., 1] < h)
    index = torch.where(valid, r[..., 1] * w + r[..., 0], torch.zeros_like(r[..., 0]))
    return index, valid


def onehot_targets(landmarks_px: Tensor, size: tuple[int, int], rounding: str = "round") -> Tensor:
    """``(B, N, H, W)`` one-hot heatmaps (paper Eq. 2): 1 at the landmark's pixel (nearest with
    ``rounding="round"``, truncated with ``"floor"`` as in the authors' code), 0 elsewhere (all 0 for
    a missing / outside landmark)."""
    w, h = size
    b, n, _ = landmarks_px.shape
    index, valid = pixel_index(landmarks_px, size, rounding)
    out = torch.zeros(b, n, h * w, device=landmarks_px.device)
    out.scatter_(-1, index[..., None], valid[..., None].float())
    return out.reshape(b, n, h, w)


def nll_per_landmark(logits: Tensor, landmarks_px: Tensor, temperature: Tensor | float | None = None,
                     rounding: str = "round") -> tuple[Tensor, Tensor]:
    """``(B, N)`` negative log-likelihood of the ground-truth pixel (see :func:`pixel_index` for
    ``rounding``) under the 2D softmax, and the ``(B, N)`` validity mask (invalid entries are 0)."""
    b, n, h, w = logits.shape
    logp = log_softmax_2d(logits, temperature).reshape(b, n, h * w)
    index, valid = pixel_index(landmarks_px, (w, h), rounding)
    nll = -logp.gather(-1, index[..., None])[..., 0]
    return torch.where(valid, nll, torch.zeros_like(nll)), valid


def onehot_nll(logits: Tensor, landmarks_px: Tensor, temperature: Tensor | float | None = None,
               rounding: str = "round") -> Tensor:
    """Mean one-hot NLL over valid landmarks (the paper's training loss; = cross-entropy with the
    one-hot target of :func:`onehot_targets`)."""
    nll, valid = nll_per_landmark(logits, landmarks_px, temperature, rounding)
    return nll.sum() / valid.sum().clamp_min(1)


def gaussian_nll(logits: Tensor, landmarks_px: Tensor, sigma: float) -> Tensor:
    """Cross-entropy ``-sum_p q(p) log softmax(p)`` with a normalised Gaussian target ``q`` of std
    ``sigma`` (working px) around the (sub-pixel) landmark, mean over valid landmarks: the
    "Gaussian heatmap" model of the paper's Fig. 4a trained with the same softmax output."""
    b, n, h, w = logits.shape
    logp = log_softmax_2d(logits)
    ys = torch.arange(h, device=logits.device, dtype=logits.dtype)
    xs = torch.arange(w, device=logits.device, dtype=logits.dtype)
    lm = torch.nan_to_num(landmarks_px.to(logits.dtype), nan=-1e4)
    d2 = (xs.view(1, 1, 1, w) - lm[..., 0, None, None]) ** 2 + (ys.view(1, 1, h, 1) - lm[..., 1, None, None]) ** 2
    q = torch.exp(-0.5 * d2 / sigma**2)
    mass = q.sum((-2, -1))
    valid = torch.isfinite(landmarks_px).all(-1) & (mass > 1e-6)
    q = q / mass.clamp_min(1e-12)[..., None, None]
    ce = -(q * logp).sum((-2, -1))
    return torch.where(valid, ce, torch.zeros_like(ce)).sum() / valid.sum().clamp_min(1)
