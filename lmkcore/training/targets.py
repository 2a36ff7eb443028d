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

Target conventions (:data:`CONVENTIONS`, ``HeatmapTarget(convention=...)``)
---------------------------------------------------------------------------
``"authors_code"`` (default in 2D): what Thaler et al.'s public code computes and what produced their
tables (Table 4's fixed "sigma = 3" row has sigma_maj * sigma_min = 0.66 mm^2 = 3 px^2 x
(0.46875 mm/px)^2, true only if 3 is a variance). The learned parameters are per-landmark
*variances* ``(v_a, v_b)`` in px^2 (init ``init_sigma`` = 3 px^2) and an angle,
``Sigma = R(theta) diag(v_a, v_b) R(theta)^T``; penalty ``alpha * sum_i v_a,i v_b,i`` (alpha = 5);
data term ``0.5 * sum (pred - target)^2 / B``. sigma-target (``learned_iso``) learns one variance
``v`` (penalty ``alpha * sum_i v_i^2``, alpha = 5); ``fixed`` is the variance ``init_sigma`` px^2.
``"paper_text"``: Thaler's Eq. 5-7 read literally (sigmas are standard deviations in px, penalty
``alpha * sum s_maj s_min``, ``learned_iso`` penalty ``alpha * sum sigma^2`` with alpha = 20, full
squared error); lmkcore's behaviour before the change.
``"payer"`` (default in 3D): Payer et al. 2019, text and code agree: isotropic standard deviations
``sigma`` (px), penalty ``(alpha / 2) sum sigma^2`` beside the data term ``0.5 * sum (pred - target)^2 / B``
(the code's ``l2_loss`` halves both; Eq. 2 up to that common factor), alpha = 20 (2D) / 1000 (3D).
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
    "aniso_cov_from_variances",
    "wrap_axis_angle",
    "HeatmapTarget",
    "heatmap_loss",
    "DEFAULT_ALPHA",
    "CONVENTIONS",
    "DATA_TERM_FACTOR",
    "default_alpha",
    "resolve_convention",
]

#: Target conventions (module doc): Thaler et al.'s code, Thaler's text, Payer et al. 2019.
CONVENTIONS: tuple[str, ...] = ("authors_code", "paper_text", "payer")

#: Default alpha per (convention, mode, spatial_dims). Thaler et al. 2021 code: ``sigma_regularization
#: = 5`` for Sigma- and sigma-target; Payer et al. 2019: alpha = 20 (2D), 1000 (3D).
DEFAULT_ALPHA = {
    ("authors_code", "learned_iso", 2): 5.0, ("authors_code", "learned_aniso", 2): 5.0,
    ("paper_text", "learned_iso", 2): 20.0, ("paper_text", "learned_iso", 3): 1000.0,
    ("paper_text", "learned_aniso", 2): 5.0,
    ("payer", "learned_iso", 2): 20.0, ("payer", "learned_iso", 3): 1000.0,
}

#: Factor of the summed squared error in the data term per convention (the authors' code uses
#: TensorFlow's ``l2_loss`` = half the sum of squares).
DATA_TERM_FACTOR = {"authors_code": 0.5, "paper_text": 1.0, "payer": 0.5}


def resolve_convention(convention: Optional[str], spatial_dims: int = 2) -> str:
    """``convention`` checked against :data:`CONVENTIONS`; None -> ``"authors_code"`` (2D) / ``"payer"`` (3D).

    Thaler et al.'s code is 2D only; in 3D the authors' code is Payer et al.'s (``"payer"``).
    """
    if convention is None:
        return "authors_code" if spatial_dims == 2 else "payer"
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if convention == "authors_code" and spatial_dims != 2:
        raise ValueError("convention 'authors_code' (Thaler et al.'s code) is 2D only; use 'payer' in 3D")
    return convention


def default_alpha(mode: str, spatial_dims: int = 2, convention: Optional[str] = None) -> float:
    """The papers' alpha for a target ``mode`` (0 for ``"fixed"``), see :data:`DEFAULT_ALPHA`."""
    return DEFAULT_ALPHA.get((resolve_convention(convention, spatial_dims), mode, spatial_dims), 0.0)

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
    return aniso_cov_from_variances(theta, s1 * s1, s2 * s2)


def aniso_cov_from_variances(theta: Tensor, var_a: Tensor, var_b: Tensor) -> Tensor:
    """``Sigma = R(theta) diag(v_a, v_b) R(theta)^T`` from variances (Thaler et al.'s code).

    Parameters
    ----------
    theta : Tensor
        ``(...)`` angle in rad of the ``v_a`` axis, from +x towards +y (image frame).
    var_a, var_b : Tensor
        ``(...)`` variances in px^2 along that axis and perpendicular to it.

    Returns
    -------
    Tensor
        ``(..., 2, 2)`` covariance in px^2, ``(x, y)`` order.
    """
    theta, v1, v2 = torch.broadcast_tensors(theta, var_a, var_b)
    c, s = torch.cos(theta), torch.sin(theta)
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


def heatmap_loss(pred: Tensor, target: Tensor, mask: Optional[Tensor] = None, factor: float = 1.0) -> Tensor:
    """Sum of squared differences per image, averaged over the batch (Thaler Eq. 7 / Payer Eq. 2).

    ``L = (factor/B) sum_b sum_i sum_x (pred - target)^2`` over the landmarks ``i`` with ``mask`` True;
    ``factor`` = 0.5 is the authors' code (``tf.nn.l2_loss``), 1 the papers' text
    (:data:`DATA_TERM_FACTOR`; :meth:`HeatmapTarget.data_loss` picks it from the convention).
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
    return sq.sum() * float(factor) / pred.shape[0]


class HeatmapTarget(nn.Module):
    """Target heatmap generator with fixed or learned per-landmark Gaussian shapes.

    Modes (the regulariser and the meaning of the parameters depend on ``convention``, see the
    module doc)
    -----------------------------------------------------------------------------------------
    ``"fixed"``
        Isotropic, fixed (a buffer); regulariser 0. ``init_sigma`` is a variance in px^2
        (``"authors_code"``: Thaler's "sigma = 3" = 3 px^2) or a standard deviation in px.
    ``"learned_iso"``
        One learned isotropic value per landmark: Thaler's sigma-target (``"authors_code"``: a
        variance ``v_i``, penalty ``alpha sum v_i^2``), Payer et al. 2019 (``"payer"``: a standard
        deviation, penalty ``(alpha / 2) sum sigma_i^2``) or ``"paper_text"`` (``alpha sum sigma_i^2``).
    ``"learned_aniso"`` (2D only; not with ``"payer"``)
        Learned ``theta_i`` and two axis values per landmark (Thaler et al. 2021, Eq. 4-7):
        ``"authors_code"``: variances, ``Sigma_i = R diag(v_a, v_b) R^T``, penalty
        ``alpha sum v_a v_b``; ``"paper_text"``: standard deviations, ``Sigma_i = R diag(s_a^2, s_b^2)
        R^T``, penalty ``alpha sum s_a s_b``. Init both axes at ``init_sigma``, ``theta = 0``
        (Thaler Sec. 4.1). The raw axes are not ordered during training (the covariance is invariant
        to swapping the axes together with a 90 deg rotation); :meth:`parameters_table` reports
        ``sigma_major >= sigma_minor`` (standard deviations, px) and ``theta`` of the major axis
        wrapped to ``(-pi/2, pi/2]``. At the isotropic init the loss does not depend on ``theta``
        (zero gradient); the axis gradients first make the Gaussian anisotropic, then ``theta``
        rotates it.

    Positivity: ``parameterization="log"`` (default) learns the log of the (variance or standard
    deviation) parameter; ``"direct"`` learns it as a plain variable (like the authors' TensorFlow
    code), used as ``|raw|`` clamped at ``min_sigma`` (``min_sigma^2`` for variances).

    Parameters
    ----------
    num_landmarks : int
    mode : {"fixed", "learned_iso", "learned_aniso"}
    init_sigma : float or array
        Initial (or fixed) value of the papers' "sigma" parameter, scalar or ``(N,)``: a variance
        in px^2 under ``"authors_code"``, a standard deviation in px otherwise (papers: 3).
    gamma : float
        Heatmap scale (100 in 2D; Payer et al. use 1000 in 3D).
    alpha : float, optional
        Regulariser weight; None -> :func:`default_alpha` of the mode and convention.
    spatial_dims : {2, 3}
        3D supports "fixed" and "learned_iso" with the ``"payer"`` or ``"paper_text"`` convention.
    normalise : bool
        See :func:`gaussian_heatmaps`.
    parameterization : {"log", "direct"}
    min_sigma : float
        Lower clamp for the ``"direct"`` parameterisation (px).
    convention : {"authors_code", "paper_text", "payer"}, optional
        None -> ``"authors_code"`` in 2D, ``"payer"`` in 3D (:func:`resolve_convention`).
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
        convention: Optional[str] = None,
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
        self.convention = resolve_convention(convention, spatial_dims)
        if mode == "learned_aniso" and self.convention == "payer":
            raise ValueError("Payer et al. 2019 have no anisotropic target: use convention 'authors_code' or 'paper_text'")
        #: True when the parameters are variances (px^2; Thaler et al.'s code), False for standard deviations (px)
        self.variance_params = self.convention == "authors_code"
        self.num_landmarks = int(num_landmarks)
        self.mode = mode
        self.gamma = float(gamma)
        self.spatial_dims = spatial_dims
        self.normalise = normalise
        self.parameterization = parameterization
        self.min_sigma = float(min_sigma)
        self.alpha = float(alpha if alpha is not None else default_alpha(mode, spatial_dims, self.convention))
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
    def _value(self, raw: Tensor) -> Tensor:
        """Positive parameter value (variance px^2 or standard deviation px) of a raw variable."""
        if self.parameterization == "log":
            return torch.exp(raw)
        floor = self.min_sigma**2 if self.variance_params else self.min_sigma
        return raw.abs().clamp_min(floor)

    def _std(self, value: Tensor) -> Tensor:
        return torch.sqrt(value) if self.variance_params else value

    def values(self) -> tuple[Tensor, ...]:
        """The learned (or fixed) parameters as used by the convention.

        Returns
        -------
        tuple of Tensor
            ``(value,)`` ``(N,)`` for fixed / learned_iso, ``(theta, value_a, value_b)`` ``(N,)`` each
            for learned_aniso; values are variances (px^2) under ``"authors_code"``, standard
            deviations (px) otherwise.
        """
        if self.mode == "fixed":
            return (self.fixed_sigma,)
        if self.mode == "learned_iso":
            return (self._value(self.raw_sigma),)
        return self.theta, self._value(self.raw_sigma_a), self._value(self.raw_sigma_b)

    def sigmas(self) -> Tensor:
        """Isotropic standard deviations ``(N,)`` in px (learned_aniso: ``sqrt(std_a std_b)``)."""
        if self.mode != "learned_aniso":
            return self._std(self.values()[0])
        _, sa, sb = self.axis_sigmas()
        return torch.sqrt(sa * sb)

    def axis_sigmas(self) -> tuple[Tensor, Tensor, Tensor]:
        """Unordered ``(theta, std_a, std_b)`` tensors ``(N,)`` (rad, px, px) of the covariance."""
        if self.mode != "learned_aniso":
            s = self.sigmas()
            return torch.zeros_like(s), s, s
        theta, a, b = self.values()
        return theta, self._std(a), self._std(b)

    def covariances(self) -> Tensor:
        """``(N, d, d)`` covariances in px^2 (differentiable w.r.t. the learned parameters)."""
        if self.mode == "learned_aniso":
            theta, a, b = self.values()
            if self.variance_params:
                return aniso_cov_from_variances(theta, a, b)
            return aniso_cov(theta, a, b)
        s2 = self.sigmas() ** 2
        eye = torch.eye(self.spatial_dims, dtype=s2.dtype, device=s2.device)
        return s2[:, None, None] * eye

    def regularization(self) -> Tensor:
        """Scalar alpha-regulariser of the convention (module doc), once per step.

        ``"authors_code"``: ``alpha sum_i v_a v_b`` (aniso) / ``alpha sum_i v_i^2`` (iso), px^4;
        ``"paper_text"``: ``alpha sum_i s_a s_b`` / ``alpha sum_i sigma_i^2``, px^2;
        ``"payer"``: ``(alpha / 2) sum_i sigma_i^2``; 0 for ``"fixed"``. The authors divide the sum
        over the batch's images by the batch size: with every landmark present that is this value.
        """
        if self.mode == "fixed":
            return torch.zeros((), device=self.fixed_sigma.device)
        if self.mode == "learned_iso":
            (v,) = self.values()
            scale = 0.5 if self.convention == "payer" else 1.0
            return scale * self.alpha * (v * v).sum()
        _, a, b = self.values()
        return self.alpha * (a * b).sum()

    def data_loss(self, pred: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """:func:`heatmap_loss` with the convention's factor (:data:`DATA_TERM_FACTOR`)."""
        return heatmap_loss(pred, target, mask, factor=DATA_TERM_FACTOR[self.convention])

    def loss(self, pred: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """The full objective of one step: :meth:`data_loss` + :meth:`regularization`."""
        return self.data_loss(pred, target, mask) + self.regularization()

    @torch.no_grad()
    def parameters_table(self) -> dict[str, np.ndarray]:
        """Per-landmark Gaussian parameters for logging, float64 numpy ``(N,)`` each.

        Returns
        -------
        dict
            ``theta`` (rad, major-axis angle in ``(-pi/2, pi/2]``, 0 for isotropic modes),
            ``sigma_major`` >= ``sigma_minor`` (standard deviations, px, in every convention).
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
        return (f"num_landmarks={self.num_landmarks}, mode={self.mode!r}, convention={self.convention!r}, "
                f"gamma={self.gamma}, alpha={self.alpha}, spatial_dims={self.spatial_dims}, "
                f"parameterization={self.parameterization!r}")
