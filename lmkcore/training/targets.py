"""Gaussian target heatmaps with fixed or learned (an)isotropic covariances.

References
----------
Payer et al. (2019), Eq. (1)-(2): isotropic target ``g_i(x) = gamma / ((2 pi)^(d/2) sigma_i^d)
exp(-||x - x_i||^2 / (2 sigma_i^2))`` with learned ``sigma_i`` and the regulariser
``alpha ||sigma||_2^2 = alpha sum_i sigma_i^2``.
Thaler et al. (2021), Eq. (1), (3)-(7): anisotropic target ``h_i(x) = gamma / (2 pi sqrt|Sigma_i|)
exp(-(x - x_i)^T Sigma_i^-1 (x - x_i) / 2)`` with ``Sigma_i = R(theta_i) diag(s_maj^2, s_min^2)
R(theta_i)^T`` and the regulariser ``alpha sum_i s_maj,i s_min,i``; gamma = 100, init
``s_maj = s_min = 3``, ``theta = 0``, alpha = 5.

Conventions
-----------
Landmarks ``(B, N, 2)`` are ``(x, y)`` pixel coordinates of the heatmap grid (x = column, y = row,
down); integer coordinates are pixel centres, so the heatmap is evaluated at ``x = 0..W-1``,
``y = 0..H-1``. 3D landmarks ``(B, N, 3)`` are ``(x, y, z)`` and heatmaps ``(B, N, D, H, W)``.
``theta`` is the major-axis angle from +x towards +y (image frame), see
:mod:`lmkcore.analysis.covariance`. Covariances are in px^2. A landmark with any NaN coordinate is
"missing": its heatmap is all zero and :func:`valid_mask` is False.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "gaussian_heatmaps",
    "valid_mask",
    "aniso_cov",
    "wrap_axis_angle",
    "HeatmapTarget",
    "heatmap_loss",
    "DEFAULT_ALPHA",
]

#: Default alpha per (mode, spatial_dims): Payer et al. 2019 (alpha = 20 in 2D, 1000 in 3D for the
#: learned isotropic sigma) and Thaler et al. 2021 (alpha = 5 for the anisotropic Gaussian).
DEFAULT_ALPHA = {("learned_iso", 2): 20.0, ("learned_iso", 3): 1000.0, ("learned_aniso", 2): 5.0}

ArrayLike = Union[Tensor, np.ndarray, float, Sequence[float]]


def valid_mask(landmarks: ArrayLike) -> Tensor:
    """``(B, N)`` bool: True where all coordinates of a landmark ``(B, N, d)`` are finite."""
    lm = torch.as_tensor(landmarks)
    return torch.isfinite(lm).all(dim=-1)


def aniso_cov(theta: Tensor, sigma_major: Tensor, sigma_minor: Tensor) -> Tensor:
    """Differentiable ``Sigma = R(theta) diag(s_maj^2, s_min^2) R(theta)^T`` (Thaler Eq. 5-6).

    Parameters
    ----------
    theta : Tensor
        ``(...)`` major-axis angle in rad, from +x towards +y (image frame).
    sigma_major, sigma_minor : Tensor
        ``(...)`` standard deviations along the (first) axis at ``theta`` and the one
        perpendicular to it, in px.

    Returns
    -------
    Tensor
        ``(..., 2, 2)`` covariance in px^2; same as :func:`lmkcore.analysis.covariance.params_to_cov`.
    """
    theta, s1, s2 = torch.broadcast_tensors(theta, sigma_major, sigma_minor)
    c, s = torch.cos(theta), torch.sin(theta)
    v1, v2 = s1 * s1, s2 * s2
    xx = c * c * v1 + s * s * v2
    yy = s * s * v1 + c * c * v2
    xy = c * s * (v1 - v2)
    return torch.stack([torch.stack([xx, xy], -1), torch.stack([xy, yy], -1)], -2)


def wrap_axis_angle(theta):
    """Wrap an axis angle (rad) to ``(-pi/2, pi/2]`` (numpy or torch)."""
    if isinstance(theta, Tensor):
        return math.pi / 2 - torch.remainder(math.pi / 2 - theta, math.pi)
    return np.pi / 2 - np.mod(np.pi / 2 - np.asarray(theta, dtype=np.float64), np.pi)


def _to_tensor(value: ArrayLike, ref: Tensor) -> Tensor:
    if isinstance(value, Tensor):
        return value.to(device=ref.device, dtype=ref.dtype)
    return torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=ref.dtype, device=ref.device)


def _per_landmark(value: Tensor, batch: int, num: int, extra: int, what: str) -> Tensor:
    """Broadcast ``value`` of shape ``()``, ``(N, *e)`` or ``(B, N, *e)`` to ``(B, N, *e)``."""
    core = value.dim() - extra
    if core == 0:
        value = value.reshape((1, 1) + value.shape)
    elif core == 1:
        value = value.unsqueeze(0)
    elif core != 2:
        raise ValueError(f"{what} has shape {tuple(value.shape)}; expected (), (N, ...) or (B, N, ...)")
    try:
        return value.expand((batch, num) + value.shape[2:])
    except RuntimeError as err:
        raise ValueError(f"{what} of shape {tuple(value.shape)} does not fit B={batch}, N={num}") from err


def gaussian_heatmaps(
    landmarks: ArrayLike,
    size: Sequence[int],
    cov: Optional[ArrayLike] = None,
    sigma: Optional[ArrayLike] = None,
    gamma: float = 100.0,
    normalise: bool = True,
    return_mask: bool = False,
):
    """Gaussian target heatmaps evaluated at pixel centres (Payer Eq. 1, Thaler Eq. 1 / Eq. 4).

    Parameters
    ----------
    landmarks : Tensor or array
        ``(B, N, d)`` coordinates in px, ``(x, y)`` for d = 2, ``(x, y, z)`` for d = 3; NaN marks a
        missing landmark. The heatmaps are created on the device and with the (floating) dtype of
        this tensor (float32 for non-tensors).
    size : sequence of int
        Grid size ``(W, H)`` (2D) or ``(W, H, D)`` (3D), in the order of the coordinates.
    cov : Tensor or array, optional
        Covariances in px^2, ``(d, d)``, ``(N, d, d)`` or ``(B, N, d, d)``.
    sigma : float, Tensor or array, optional
        Isotropic standard deviation(s) in px, scalar, ``(N,)`` or ``(B, N)``. Exactly one of
        ``cov`` / ``sigma`` must be given. Both may require grad: the result is differentiable
        w.r.t. them (and w.r.t. the landmarks).
    gamma : float
        Scale factor (100 in 2D per both papers; Payer et al. use 1000 in 3D).
    normalise : bool
        True: ``gamma * N(x; x_i, Sigma_i)`` (density with ``1 / ((2 pi)^(d/2) sqrt|Sigma|)``,
        sums to ~gamma over a large grid). False: peak value ``gamma`` (no determinant factor).
    return_mask : bool
        Also return :func:`valid_mask` of the landmarks.

    Returns
    -------
    heatmaps : Tensor
        ``(B, N, H, W)`` (3D: ``(B, N, D, H, W)``); all zeros for missing landmarks.
    mask : Tensor
        ``(B, N)`` bool, only if ``return_mask``.
    """
    lm = landmarks if isinstance(landmarks, Tensor) else torch.as_tensor(np.asarray(landmarks, dtype=np.float32))
    if not lm.is_floating_point():
        lm = lm.float()
    if lm.dim() != 3 or lm.shape[-1] not in (2, 3):
        raise ValueError(f"landmarks must be (B, N, 2) or (B, N, 3), got {tuple(lm.shape)}")
    batch, num, d = lm.shape
    size = tuple(int(s) for s in size)
    if len(size) != d:
        raise ValueError(f"size must have {d} entries (W, H{', D' if d == 3 else ''}), got {size}")
    if (cov is None) == (sigma is None):
        raise ValueError("give exactly one of cov= or sigma=")

    mask = valid_mask(lm)
    lm0 = torch.where(mask.unsqueeze(-1), lm, torch.zeros((), dtype=lm.dtype, device=lm.device))
    # per-axis offsets, axis k (0 = x) lives at output dim 2 + (d - 1 - k)
    offsets = []
    for k in range(d):
        shape = [1] * d
        shape[d - 1 - k] = size[k]
        grid = torch.arange(size[k], dtype=lm.dtype, device=lm.device).reshape([1, 1] + shape)
        offsets.append(grid - lm0[..., k].reshape(batch, num, *([1] * d)))
    expand = (batch, num) + (1,) * d
    log_norm_const = -0.5 * d * math.log(2.0 * math.pi)

    if sigma is not None:
        s = _per_landmark(_to_tensor(sigma, lm), batch, num, 0, "sigma")
        var = (s * s).reshape(expand)
        sq = offsets[0] ** 2
        for o in offsets[1:]:
            sq = sq + o**2
        q = sq / var
        log_det_half = d * torch.log(s).reshape(expand)
    else:
        c = _per_landmark(_to_tensor(cov, lm), batch, num, 2, "cov")
        if c.shape[-2:] != (d, d):
            raise ValueError(f"cov must end in ({d}, {d}), got {tuple(c.shape)}")
        if d == 2:
            a, b, dd = c[..., 0, 0], 0.5 * (c[..., 0, 1] + c[..., 1, 0]), c[..., 1, 1]
            det = a * dd - b * b
            pa, pb, pd = (dd / det).reshape(expand), (-b / det).reshape(expand), (a / det).reshape(expand)
            ox, oy = offsets
            q = pa * ox * ox + 2.0 * pb * ox * oy + pd * oy * oy
        else:
            c = 0.5 * (c + c.transpose(-1, -2))
            det = torch.linalg.det(c)
            prec = torch.linalg.inv(c)
            q = 0
            for i in range(d):
                for j in range(i, d):
                    w = prec[..., i, j].reshape(expand) * (1.0 if i == j else 2.0)
                    q = q + w * offsets[i] * offsets[j]
        log_det_half = 0.5 * torch.log(det).reshape(expand)

    log_h = -0.5 * q
    if normalise:
        log_h = log_h + log_norm_const - log_det_half
    heat = gamma * torch.exp(log_h)
    heat = torch.where(mask.reshape(expand), heat, torch.zeros((), dtype=heat.dtype, device=heat.device))
    return (heat, mask) if return_mask else heat


def heatmap_loss(pred: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Sum of squared differences per image, averaged over the batch (Thaler Eq. 7 / Payer Eq. 2).

    ``L = (1/B) sum_b sum_i sum_x (pred - target)^2`` over the landmarks ``i`` with ``mask`` True.
    The papers sum over landmarks and pixels with a mini-batch of 1; averaging over the batch keeps
    that per-image scale (and the meaning of alpha) for any batch size. The alpha-regulariser
    (:meth:`HeatmapTarget.regularization`) is added separately, once per step.

    Parameters
    ----------
    pred, target : Tensor
        ``(B, N, *S)`` heatmaps.
    mask : Tensor, optional
        ``(B, N)`` bool; False entries (missing landmarks) contribute nothing.

    Returns
    -------
    Tensor
        Scalar loss (heatmap units squared).
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    sq = (pred - target) ** 2
    if mask is not None:
        m = mask.to(torch.bool).reshape(mask.shape + (1,) * (pred.dim() - 2))
        sq = torch.where(m, sq, torch.zeros((), dtype=sq.dtype, device=sq.device))
    return sq.sum() / pred.shape[0]


class HeatmapTarget(nn.Module):
    """Target heatmap generator with fixed or learned per-landmark Gaussian shapes.

    Modes
    -----
    ``"fixed"``
        Isotropic, fixed ``sigma = init_sigma`` (a buffer); regulariser 0.
    ``"learned_iso"``
        One learned isotropic ``sigma_i`` per landmark (Payer et al. 2019);
        regulariser ``alpha * sum_i sigma_i^2`` (Payer Eq. 2 "alpha ||sigma||_2^2" = Thaler Eq. 3).
    ``"learned_aniso"`` (2D only)
        Learned ``theta_i, sigma_a,i, sigma_b,i`` (Thaler et al. 2021, Eq. 4-7);
        ``Sigma_i = R(theta_i) diag(sigma_a^2, sigma_b^2) R(theta_i)^T``; regulariser
        ``alpha * sum_i sigma_a,i sigma_b,i`` (Eq. 7). Init ``sigma_a = sigma_b = init_sigma``,
        ``theta = 0`` (Thaler Sec. 4.1). The raw axes are not ordered during training (no
        constraint needed, the covariance is invariant to swapping the axes together with a 90 deg
        rotation); :meth:`parameters_table` reports ``sigma_major >= sigma_minor`` and ``theta`` of
        the major axis wrapped to ``(-pi/2, pi/2]``. Note: at the paper's isotropic init the loss
        does not depend on ``theta`` (zero gradient); the sigma gradients first make the
        Gaussian anisotropic (along x/y), after which ``theta`` rotates it.

    Positivity: ``parameterization="log"`` (default) learns ``log sigma`` (sigma = exp(raw));
    ``"direct"`` learns sigma itself (as a plain variable like Payer's TensorFlow code), used as
    ``|raw|`` clamped at ``min_sigma``.

    Parameters
    ----------
    num_landmarks : int
    mode : {"fixed", "learned_iso", "learned_aniso"}
    init_sigma : float or array
        Initial (or fixed) sigma in px, scalar or ``(N,)`` (papers: 3 for the anisotropic init).
    gamma : float
        Heatmap scale (100 in 2D; Payer et al. use 1000 in 3D).
    alpha : float, optional
        Regulariser weight; None -> :data:`DEFAULT_ALPHA` (20 iso 2D, 1000 iso 3D, 5 aniso).
    spatial_dims : {2, 3}
        3D supports "fixed" and "learned_iso".
    normalise : bool
        See :func:`gaussian_heatmaps`.
    parameterization : {"log", "direct"}
    min_sigma : float
        Lower clamp for the ``"direct"`` parameterisation (px).
    """

    def __init__(
        self,
        num_landmarks: int,
        mode: str = "learned_aniso",
        init_sigma: ArrayLike = 3.0,
        gamma: float = 100.0,
        alpha: Optional[float] = None,
        spatial_dims: int = 2,
        normalise: bool = True,
        parameterization: str = "log",
        min_sigma: float = 1e-2,
    ) -> None:
        super().__init__()
        if mode not in ("fixed", "learned_iso", "learned_aniso"):
            raise ValueError(f"mode must be 'fixed', 'learned_iso' or 'learned_aniso', got {mode!r}")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        if mode == "learned_aniso" and spatial_dims != 2:
            raise ValueError("learned_aniso is implemented for 2D only")
        if parameterization not in ("log", "direct"):
            raise ValueError(f"parameterization must be 'log' or 'direct', got {parameterization!r}")
        self.num_landmarks = int(num_landmarks)
        self.mode = mode
        self.gamma = float(gamma)
        self.spatial_dims = spatial_dims
        self.normalise = normalise
        self.parameterization = parameterization
        self.min_sigma = float(min_sigma)
        self.alpha = float(alpha if alpha is not None else DEFAULT_ALPHA.get((mode, spatial_dims), 0.0))
        sig = torch.as_tensor(np.broadcast_to(np.asarray(init_sigma, dtype=np.float64), (self.num_landmarks,)).copy(),
                              dtype=torch.float32)
        if torch.any(sig <= 0):
            raise ValueError("init_sigma must be > 0")
        raw = torch.log(sig) if parameterization == "log" else sig.clone()
        if mode == "fixed":
            self.register_buffer("fixed_sigma", sig)
        elif mode == "learned_iso":
            self.raw_sigma = nn.Parameter(raw)
        else:
            self.theta = nn.Parameter(torch.zeros(self.num_landmarks))
            self.raw_sigma_a = nn.Parameter(raw.clone())
            self.raw_sigma_b = nn.Parameter(raw.clone())

    # -- parameters ---------------------------------------------------------------------------
    def _sigma(self, raw: Tensor) -> Tensor:
        if self.parameterization == "log":
            return torch.exp(raw)
        return raw.abs().clamp_min(self.min_sigma)

    def sigmas(self) -> Tensor:
        """Isotropic sigmas ``(N,)`` in px (fixed / learned_iso; for learned_aniso sqrt(s_a s_b))."""
        if self.mode == "fixed":
            return self.fixed_sigma
        if self.mode == "learned_iso":
            return self._sigma(self.raw_sigma)
        return torch.sqrt(self._sigma(self.raw_sigma_a) * self._sigma(self.raw_sigma_b))

    def axis_sigmas(self) -> tuple[Tensor, Tensor, Tensor]:
        """Unordered ``(theta, sigma_a, sigma_b)`` tensors ``(N,)`` as used in the covariance."""
        if self.mode != "learned_aniso":
            s = self.sigmas()
            return torch.zeros_like(s), s, s
        return self.theta, self._sigma(self.raw_sigma_a), self._sigma(self.raw_sigma_b)

    def covariances(self) -> Tensor:
        """``(N, d, d)`` covariances in px^2 (differentiable w.r.t. the learned parameters)."""
        if self.mode == "learned_aniso":
            return aniso_cov(*self.axis_sigmas())
        s2 = self.sigmas() ** 2
        eye = torch.eye(self.spatial_dims, dtype=s2.dtype, device=s2.device)
        return s2[:, None, None] * eye

    def regularization(self) -> Tensor:
        """Scalar regulariser: 0 (fixed), ``alpha sum sigma^2`` (iso), ``alpha sum s_maj s_min`` (aniso)."""
        if self.mode == "fixed":
            return torch.zeros((), device=self.fixed_sigma.device)
        if self.mode == "learned_iso":
            return self.alpha * (self.sigmas() ** 2).sum()
        _, sa, sb = self.axis_sigmas()
        return self.alpha * (sa * sb).sum()

    @torch.no_grad()
    def parameters_table(self) -> dict[str, np.ndarray]:
        """Per-landmark Gaussian parameters for logging, float64 numpy ``(N,)`` each.

        Returns
        -------
        dict
            ``theta`` (rad, major-axis angle in ``(-pi/2, pi/2]``, 0 for isotropic modes),
            ``sigma_major`` >= ``sigma_minor`` (px).
        """
        theta, sa, sb = (t.detach().double().cpu().numpy() for t in self.axis_sigmas())
        swap = sb > sa
        theta = wrap_axis_angle(np.where(swap, theta + np.pi / 2, theta))
        if self.mode != "learned_aniso":
            theta = np.zeros_like(theta)
        return {"theta": theta, "sigma_major": np.maximum(sa, sb), "sigma_minor": np.minimum(sa, sb)}

    # -- heatmaps -----------------------------------------------------------------------------
    def forward(self, landmarks: ArrayLike, size: Sequence[int], return_mask: bool = False):
        """Target heatmaps ``(B, N, *S)`` for landmarks ``(B, N, d)``; see :func:`gaussian_heatmaps`.

        ``size`` is ``(W, H)`` (3D ``(W, H, D)``). Computed in the landmarks' dtype/device.
        """
        kw = dict(gamma=self.gamma, normalise=self.normalise, return_mask=return_mask)
        if self.mode == "learned_aniso":
            return gaussian_heatmaps(landmarks, size, cov=self.covariances(), **kw)
        return gaussian_heatmaps(landmarks, size, sigma=self.sigmas(), **kw)

    def extra_repr(self) -> str:
        return (f"num_landmarks={self.num_landmarks}, mode={self.mode!r}, gamma={self.gamma}, alpha={self.alpha}, "
                f"spatial_dims={self.spatial_dims}, parameterization={self.parameterization!r}")
