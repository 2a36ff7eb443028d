"""Anisotropic Gaussian fitting of predicted heatmaps, Sigma-hat (Thaler et al. 2021, Sec. 3.2).

Every heatmap ``h`` of a ``(B, N, H, W)`` batch is fitted, on a
``window x window`` pixel window centred on its arg-max pixel, by

    f(x) = A * exp(-0.5 * (x - mu)^T Sigma^{-1} (x - mu))

with one of two amplitude models (``model=``, presets in :data:`FIT_PRESETS`):

``"tied"`` (default, preset ``"eq4"``)
    Thaler's Eq. 4 as written: ``A = gamma / (2 pi sqrt|Sigma|)`` (``gamma`` =
    100, the scale of the training targets), five free parameters ``(mu, Sigma)``,
    fitted by plain least squares (``loss="linear"``) as the paper's "robust least
    squares (Branch et al. 1999)" = the trust-region-reflective solver of
    ``scipy.optimize.least_squares(method="trf")``, which names no robust loss.
``"free"`` (preset ``"free_soft_l1"``: the fit lmkcore used before)
    ``A`` is a sixth free parameter (the normalisation folded into it), usually
    with the robust ``soft_l1`` loss, ``f_scale = 0.1``.

Both minimise the (robust) cost of ``scipy.optimize.least_squares``

    F(p) = 0.5 * sum_k C^2 * rho((r_k / C)^2),   r_k = f(x_k; p) - h(x_k),

over the window pixels ``x_k`` that lie inside the image (pixels outside are
*masked*, i.e. left out, not zero-padded). ``rho`` is one of scipy's losses
(``linear``, ``soft_l1``, ``huber``, ``cauchy``, ``arctan``, same formulas) and
``C = f_scale * |h(argmax)|``, i.e. ``f_scale`` is *relative to the peak
value* of each heatmap (scipy's absolute ``f_scale`` is this ``C``).

Parameterisation (keeps ``Sigma`` symmetric positive definite): the precision
``Sigma^{-1} = L L^T`` with lower-triangular ``L = [[e^u, 0], [w, e^v]]``, so
``p = (A, mu_x, mu_y, u, w, v)`` and
``(x - mu)^T Sigma^{-1} (x - mu) = (e^u dx + w dy)^2 + (e^v dy)^2``.
Coordinates inside the solver are relative to the arg-max pixel. In the tied
model ``A = gamma / (2 pi) * e^(u + v)`` (``det L = |Sigma|^(-1/2)``) is not free:
the solver works on ``q = (mu_x, mu_y, u, w, v)`` with the Jacobian ``J M``,
``M = d p / d q`` (``dA/du = dA/dv = A``), i.e. ``J^T W J`` and ``J^T W r`` of
the six-parameter model reduced by ``M``.

Initialisation ("at the maximum", as in the paper), from the window around
the arg-max pixel: ``A`` = peak value; with weights ``max(h - A/2, 0)`` (the
half-maximum region), ``mu`` = their centroid, or the 3x3 sub-pixel arg-max
(:func:`lmkcore.analysis.decoding.subpixel_offset`) where the centroid is more than
1 px away from it (distractors); ``Sigma`` = ``init_sigma^2 I`` if given
(px), else the weighted second moments about ``mu`` divided by
:data:`HALF_MAX_MOMENT` (for a Gaussian those moments are exactly
``0.2172 * Sigma``), with sigmas clipped to ``[0.5, window / 2]`` px.

Optimiser (:func:`fit_gaussians`): Levenberg-Marquardt on all ``B * N``
6-parameter problems at once, in torch on the input's device; Python loops
run only over iterations. Each iteration uses the analytic Jacobian ``J``
(``(P, K, 6)``; tied: reduced to five parameters) and iteratively re-weighted least squares weights
``W = diag(rho'(z_k))``, ``z_k = (r_k / C)^2`` (the gradient of ``F`` is
``J^T W r``), solves ``(J^T W J + lambda diag(J^T W J)) delta = -J^T W r`` with
one batched ``torch.linalg.solve_ex`` on ``(P, 6, 6)``, and accepts the step
per problem iff ``F`` decreases (then ``lambda /= 3``, else ``lambda *= 10``;
``lambda`` starts at ``1e-3``). A problem has *converged* (and is dropped from
the working set) once the proposed step is below ``xtol`` in natural units
(``|dA| / |A|``, ``|d mu|`` in px, relative changes of the precision factor,
see :func:`_natural_step`; this last step is taken without evaluating it) or
an accepted step lowered ``F`` by at most ``ftol * F``; both tolerances are
floored at ``100 * eps`` of the working dtype (1.2e-5 in float32). As the
iteration contracts ~30x per step and the last step is taken, the default
``xtol = 1e-4`` leaves the result within ~1e-5 px (centre) and ~1e-5
(relative; sigmas, amplitude) of the fully converged optimum -- measured on
1,000 noisy test heatmaps, i.e. ~1000x below their statistical error.
The loop ends when all problems converged or after ``iterations``.

The minimised function and hence the optimum are those of scipy's
``least_squares`` with the same loss and ``f_scale = C`` (scipy rescales
``J`` and ``r`` with ``rho'`` and ``rho''`` instead of plain IRLS weights, which
changes the path, not the stationary points), so :func:`fit_gaussian_scipy`
(``method="trf"``, same window, model, initialisation, loss and ``C``) is a
reference for it. Only 2D heatmaps are supported.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from lmkcore.analysis.covariance import cov_to_params
from lmkcore.analysis.decoding import argmax_pixel, degenerate_fit_dict, degenerate_heatmaps, flag_degenerate, subpixel_offset
from lmkcore.errors import ConfigError

__all__ = [
    "GaussianFit",
    "LOSSES",
    "FIT_MODELS",
    "FIT_PRESETS",
    "HALF_MAX_MOMENT",
    "fit_gaussians",
    "fit_gaussian_scipy",
    "fit_gaussians_scipy",
    "gaussian_model",
    "robust_loss",
]

#: Loss names accepted (scipy.optimize.least_squares' ``loss``).
LOSSES: tuple[str, ...] = ("linear", "soft_l1", "huber", "cauchy", "arctan")

#: Amplitude models (module doc): Eq. 4's ``gamma / (2 pi sqrt|Sigma|)`` or a free amplitude.
FIT_MODELS: tuple[str, ...] = ("tied", "free")

#: Named fits (keyword arguments of :func:`fit_gaussians`): ``"eq4"`` is the default (Thaler Eq. 4 by
#: plain trust-region least squares), ``"free_soft_l1"`` lmkcore's earlier free-amplitude robust fit.
FIT_PRESETS: dict[str, dict] = {
    "eq4": {"model": "tied", "loss": "linear"},
    "free_soft_l1": {"model": "free", "loss": "soft_l1", "f_scale": 0.1},
}

_L = math.log(2.0)
#: Weighted variance (per axis, in units of Sigma) of a Gaussian with weights
#: ``max(g - 1/2, 0)``: ``(1/2 - L/2 - L^2/4) / (1/2 - L/2)`` with ``L = ln 2``.
HALF_MAX_MOMENT: float = (0.5 - _L / 2 - _L**2 / 4) / (0.5 - _L / 2)


@dataclass
class GaussianFit:
    """Fitted Gaussians of a ``(B, N, H, W)`` heatmap batch (tensors on the input's device).

    Attributes
    ----------
    amplitude : Tensor
        ``(B, N)`` peak value ``A`` (heatmap units).
    center : Tensor
        ``(B, N, 2)`` ``(x, y)`` centre ``mu`` in pixels (image coordinates).
    theta : Tensor
        ``(B, N)`` major-axis angle in radians, from +x towards +y (image
        frame, clockwise on screen), in ``(-pi/2, pi/2]``.
    sigma_major, sigma_minor : Tensor
        ``(B, N)`` standard deviations along the axes, pixels.
    cov : Tensor
        ``(B, N, 2, 2)`` covariance ``Sigma`` in px^2, ``(x, y)`` order.
    residual_rms : Tensor
        ``(B, N)`` root-mean-square of ``f - h`` over the in-image window
        pixels (heatmap units).
    converged : Tensor
        ``(B, N)`` bool, a convergence criterion was met (see module doc).
    """

    amplitude: Tensor
    center: Tensor
    theta: Tensor
    sigma_major: Tensor
    sigma_minor: Tensor
    cov: Tensor
    residual_rms: Tensor
    converged: Tensor

    def numpy(self) -> dict[str, np.ndarray]:
        """All fields as NumPy arrays (copied to the CPU)."""
        return {f.name: getattr(self, f.name).detach().cpu().numpy() for f in fields(self)}


# --------------------------------------------------------------------------- loss


def robust_loss(z: Tensor, loss: str) -> tuple[Tensor, Tensor]:
    """``rho(z)`` and ``rho'(z)`` of scipy's robust losses, ``z = (r / C)^2 >= 0``.

    ``linear``: ``z``; ``soft_l1``: ``2 (sqrt(1 + z) - 1)``; ``huber``: ``z`` if
    ``z <= 1`` else ``2 sqrt(z) - 1``; ``cauchy``: ``ln(1 + z)``; ``arctan``:
    ``arctan(z)``.
    """
    if loss == "linear":
        return z, torch.ones_like(z)
    if loss == "soft_l1":
        t = (z + 1.0).sqrt_()
        return (t - 1.0).mul_(2.0), t.reciprocal_()
    if loss == "huber":
        sq = torch.sqrt(z.clamp_min(1.0))
        return torch.where(z <= 1.0, z, 2.0 * sq - 1.0), torch.where(z <= 1.0, torch.ones_like(z), 1.0 / sq)
    if loss == "cauchy":
        return torch.log1p(z), (z + 1.0).reciprocal_()
    if loss == "arctan":
        return torch.arctan(z), (z * z).add_(1.0).reciprocal_()
    raise ConfigError(f"loss must be one of {LOSSES}, got {loss!r}")


# ---------------------------------------------------------------------- model


def gaussian_model(p: Tensor, xs: Tensor, ys: Tensor, jacobian: bool = True) -> tuple[Tensor, Tensor | None]:
    """Gaussian values and analytic Jacobian for parameters ``p = (A, mu_x, mu_y, u, w, v)``.

    Parameters
    ----------
    p : Tensor
        ``(P, 6)`` parameters (see module doc; ``mu`` in px, same frame as ``xs``).
    xs, ys : Tensor
        ``(K,)`` pixel x (column) and y (row) coordinates.
    jacobian : bool
        Also return ``df/dp``.

    Returns
    -------
    f : Tensor
        ``(P, K)`` model values.
    jac : Tensor or None
        ``(P, K, 6)`` derivatives.
    """
    amp, mx, my = p[:, 0:1], p[:, 1:2], p[:, 2:3]
    l11, l21, l22 = torch.exp(p[:, 3:4]), p[:, 4:5], torch.exp(p[:, 5:6])
    dx, dy = xs - mx, ys - my
    z1, z2 = l11 * dx + l21 * dy, l22 * dy
    g = torch.exp(-0.5 * (z1 * z1 + z2 * z2))
    f = amp * g
    if not jacobian:
        return f, None
    fz1, fz2 = f * z1, f * z2
    # stacked along dim 1 (contiguous (P, K) blocks), transposed to (P, K, 6) as a view
    jac = torch.stack([g, fz1 * l11, fz1 * l21 + fz2 * l22, -(fz1 * dx) * l11, -(fz1 * dy), -(fz2 * z2)], 1)
    return f, jac.transpose(1, 2)


def _params_to_cov(p: Tensor) -> Tensor:
    """Covariance ``(P, 2, 2)`` = inverse of the precision ``L L^T`` of parameters ``(P, 6)``."""
    l11, l21, l22 = torch.exp(p[:, 3]), p[:, 4], torch.exp(p[:, 5])
    det_l = l11 * l22  # det(L); Sigma = L^{-T} L^{-1}
    inv = torch.stack([torch.stack([1 / l11, torch.zeros_like(l11)], -1), torch.stack([-l21 / det_l, 1 / l22], -1)], -2)
    return inv.transpose(-1, -2) @ inv


def _cov_to_cholesky_params(cov: Tensor) -> Tensor:
    """``(u, w, v)`` ``(P, 3)`` with ``L L^T = cov^{-1}`` for SPD ``cov (P, 2, 2)``."""
    prec = torch.linalg.inv(cov)
    l11 = torch.sqrt(prec[:, 0, 0])
    l21 = prec[:, 1, 0] / l11
    l22 = torch.sqrt((prec[:, 1, 1] - l21 * l21).clamp_min(1e-12 * prec[:, 1, 1]))
    return torch.stack([torch.log(l11), l21, torch.log(l22)], -1)


# ------------------------------------------------------------- windows & init


def _window_offsets(window: int, device, dtype) -> tuple[Tensor, Tensor]:
    """Flattened ``(window^2,)`` x and y offsets (px) of the window pixels around its centre, row-major."""
    off = torch.arange(window, device=device, dtype=dtype) - (window // 2)
    return off.repeat(window), off.repeat_interleave(window)


def _extract_windows(hm: Tensor, ix: Tensor, iy: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """Window values and in-image mask, both ``(P, window^2)`` (row-major), of ``hm (P, H, W)``."""
    h, w = hm.shape[-2:]
    off = torch.arange(window, device=hm.device) - (window // 2)
    rows, cols = iy[:, None] + off, ix[:, None] + off  # (P, window)
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    idx = rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]
    vals = hm.flatten(-2).gather(-1, idx.flatten(-2))
    inside = inside.flatten(-2)
    return torch.where(inside, vals, torch.zeros_like(vals)), inside


def _initial_shape(vals: Tensor, mask: Tensor, peak: Tensor, mu: Tensor, xs: Tensor, ys: Tensor, window: int):
    """Initial centre ``(P, 2)`` and covariance ``(P, 2, 2)`` from half-maximum moments (module doc).

    The weighted moments of all problems come from one ``(P, K) @ (K, 6)``
    product with the monomials ``1, x, y, x^2, y^2, x y`` of the window pixels.
    The centroid replaces the sub-pixel arg-max ``mu`` where it lies within
    1 px of it (per axis); the covariance is taken about the chosen centre.
    """
    wgt = (vals - 0.5 * peak[:, None]).clamp_min_(0.0).mul_(mask)
    mom = wgt @ torch.stack([torch.ones_like(xs), xs, ys, xs * xs, ys * ys, xs * ys], -1)
    mx, my, mxx, myy, mxy = (mom[:, 1:] / mom[:, :1].clamp_min(torch.finfo(vals.dtype).tiny)).unbind(-1)
    centroid = torch.stack([mx, my], -1)
    mu = torch.where(((centroid - mu).abs() <= 1.0).all(-1, keepdim=True), centroid, mu)
    cx, cy = mu.unbind(-1)
    sxx, syy, sxy = mxx - 2 * cx * mx + cx * cx, myy - 2 * cy * my + cy * cy, mxy - cx * my - cy * mx + cx * cy
    cov = torch.stack([torch.stack([sxx, sxy], -1), torch.stack([sxy, syy], -1)], -2) / HALF_MAX_MOMENT
    evals, evecs = torch.linalg.eigh(cov)
    evals = evals.nan_to_num(1.0).clamp(0.25, (window / 2.0) ** 2)
    return mu, (evecs * evals[:, None, :]) @ evecs.transpose(-1, -2)


def _tie(p: Tensor, tied: float | None) -> Tensor:
    """``p (P, 6)`` with the amplitude set to ``tied * e^(u + v)`` (Eq. 4, ``tied = gamma / (2 pi)``); unchanged if None."""
    if tied is None:
        return p
    p = p.clone()
    p[:, 0] = tied * torch.exp(p[:, 3] + p[:, 5])
    return p


def _prepare(heatmaps: Tensor, window: int, f_scale: float, init_sigma: float | None, dtype,
             tied: float | None = None) -> dict:
    """Windows, mask, pixel offsets, initial parameters ``(P, 6)`` and loss scale ``C (P,)``."""
    if heatmaps.ndim != 4:
        raise ConfigError(f"heatmaps must be (B, N, H, W), got shape {tuple(heatmaps.shape)}")
    if window < 3 or window % 2 == 0:
        raise ConfigError(f"window must be an odd integer >= 3, got {window}")
    hm = heatmaps.detach() if heatmaps.is_floating_point() else heatmaps.detach().float()
    ix, iy, peak = argmax_pixel(hm)
    mu = subpixel_offset(hm, ix, iy).reshape(-1, 2).to(dtype)
    ix, iy, peak = ix.flatten(), iy.flatten(), peak.flatten().to(dtype)
    vals, mask = _extract_windows(hm.flatten(0, 1), ix, iy, window)
    vals = vals.to(dtype)
    xs, ys = _window_offsets(window, hm.device, dtype)
    mu, cov0 = _initial_shape(vals, mask.to(dtype), peak, mu, xs, ys, window)
    if init_sigma is not None:
        cov0 = torch.eye(2, device=hm.device, dtype=dtype).expand(len(ix), 2, 2) * float(init_sigma) ** 2
    p0 = _tie(torch.cat([peak[:, None], mu, _cov_to_cholesky_params(cov0)], -1), tied)
    scale = (f_scale * peak.abs()).clamp_min(torch.finfo(dtype).tiny ** 0.25)
    return {"vals": vals, "mask": mask.to(dtype), "xs": xs, "ys": ys, "p0": p0, "scale": scale, "ix": ix, "iy": iy}


# ----------------------------------------------------------------- LM solver


def _normal_equations(p: Tensor, data: tuple, loss: str) -> tuple[Tensor, Tensor, Tensor]:
    """Robust cost ``(P,)``, ``J^T W J`` ``(P, 6, 6)`` and gradient ``J^T W r`` ``(P, 6)`` at ``p (P, 6)``.

    ``data = (vals, mask, scale, xs, ys)``; ``mask`` may be ``None`` (all
    pixels inside). ``W = diag(rho'((r / C)^2))``, zero for masked pixels.
    Same model and Jacobian as :func:`gaussian_model`, written for speed on
    the ``(P, K)`` arrays: ``sqrt(W) J^T = T B`` with the six pixel functions
    ``B = s * (1, z1, z2, z1 dx, z1 dy, z2^2)``, ``s = sqrt(w) g``, and a small
    per-problem ``T (P, 6, 6)`` holding ``A``, ``e^u``, ``w``, ``e^v`` and the
    signs, so ``J^T W J = T (B B^T) T^T`` costs one batched matrix product over
    pixels. Temporaries are updated in place.
    """
    vals, mask, scale, xs, ys = data
    amp, l11, l21, l22 = p[:, 0:1], torch.exp(p[:, 3:4]), p[:, 4:5], torch.exp(p[:, 5:6])
    dx, dy = xs - p[:, 1:2], ys - p[:, 2:3]
    z1 = (dx * l11).addcmul_(dy, l21)
    z2 = dy * l22
    g = (z1 * z1).addcmul_(z2, z2).mul_(-0.5).exp_()
    r = (g * amp).sub_(vals)
    rho, drho = robust_loss((r / scale[:, None]).square_(), loss)
    if mask is not None:
        rho, drho = rho * mask, drho * mask
    cost = 0.5 * scale * scale * rho.sum(-1)
    sw = drho.sqrt_()
    basis = torch.empty((len(p), 6, len(xs)), dtype=p.dtype, device=p.device)
    s = torch.mul(sw, g, out=basis[:, 0])
    sz1, sz2 = torch.mul(s, z1, out=basis[:, 1]), torch.mul(s, z2, out=basis[:, 2])
    torch.mul(sz1, dx, out=basis[:, 3])
    torch.mul(sz1, dy, out=basis[:, 4])
    torch.mul(sz2, z2, out=basis[:, 5])
    amp, l11, l21, l22 = amp[:, 0], l11[:, 0], l21[:, 0], l22[:, 0]
    t = torch.zeros((len(p), 6, 6), dtype=p.dtype, device=p.device)
    t[:, 0, 0] = 1.0
    t[:, 1, 1], t[:, 2, 1], t[:, 2, 2] = amp * l11, amp * l21, amp * l22
    t[:, 3, 3], t[:, 4, 4], t[:, 5, 5] = -amp * l11, -amp, -amp
    hess = t @ (basis @ basis.transpose(1, 2)) @ t.transpose(1, 2)
    grad = (t @ (basis @ r.mul_(sw)[:, :, None]))[..., 0]
    return cost, hess, grad


def _reduce_tied(p: Tensor, state: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Normal equations of the six-parameter model reduced to the tied model's ``q = p[1:]``.

    ``M (P, 6, 5)``: identity on ``q`` plus the amplitude row ``(0, 0, A, 0, A)``;
    returns ``(cost, M^T H M, M^T g)``.
    """
    cost, hess, grad = state
    m = torch.zeros((len(p), 6, 5), dtype=p.dtype, device=p.device)
    m[:, 1:, :] = torch.eye(5, dtype=p.dtype, device=p.device)
    m[:, 0, 2] = p[:, 0]
    m[:, 0, 4] = p[:, 0]
    mt = m.transpose(1, 2)
    return cost, mt @ hess @ m, (mt @ grad[..., None])[..., 0]


def _damped_step(hess: Tensor, grad: Tensor, lam: Tensor) -> tuple[Tensor, Tensor]:
    """Solve ``(H + lam diag(H)) step = -grad`` batched; returns ``step (P, 6)`` and a bool ``ok (P,)``."""
    diag = hess.diagonal(dim1=1, dim2=2)
    diag = diag.clamp_min(1e-12 * diag.amax(-1, keepdim=True) + torch.finfo(hess.dtype).tiny)
    step, info = torch.linalg.solve_ex(hess + torch.diag_embed(lam[:, None] * diag), -grad)
    return step, (info == 0) & torch.isfinite(step).all(-1)


def _levenberg_marquardt(prep: dict, loss: str, iterations: int, xtol: float, ftol: float,
                         tied: float | None = None) -> tuple[Tensor, Tensor]:
    """Batched robust LM (module doc). Returns parameters ``(P, 6)`` and converged ``(P,)``.

    Each iteration evaluates the model, Jacobian and normal equations once, at
    the trial point; they are kept if the trial is accepted and discarded (the
    previous ones are reused) otherwise. A problem whose next step is already
    below ``xtol`` takes it and finishes without evaluating it. Finished problems are
    dropped from the working set, so later iterations only touch the problems
    still running.
    """
    p_out = prep["p0"].clone()
    done_out = torch.zeros(len(p_out), dtype=torch.bool, device=p_out.device)
    eps = torch.finfo(p_out.dtype).eps
    xtol, ftol = max(xtol, 100 * eps), max(ftol, 100 * eps)
    work = {
        "idx": torch.arange(len(p_out), device=p_out.device),
        "p": p_out.clone(),
        "lam": torch.full_like(prep["scale"], 1e-3),
        "data": (prep["vals"], None if bool(prep["mask"].all()) else prep["mask"], prep["scale"]),
    }
    xs, ys = prep["xs"], prep["ys"]

    def equations(p: Tensor, data: tuple) -> tuple[Tensor, Tensor, Tensor]:
        state = _normal_equations(p, data + (xs, ys), loss)
        return state if tied is None else _reduce_tied(p, state)

    def advance(p: Tensor, step: Tensor) -> Tensor:
        return p + step if tied is None else _tie(p + step, tied)

    work["state"] = equations(work["p"], work["data"])  # (cost, hess, grad) at p
    for _ in range(iterations):
        step, ok = _damped_step(work["state"][1], work["state"][2], work["lam"])
        if tied is not None:  # steps of q = p[1:]; the amplitude follows in advance()
            step = torch.cat([torch.zeros_like(step[:, :1]), step], -1)
        tiny = ok & (_natural_step(work["p"], step) <= xtol)
        p_out[work["idx"][tiny]] = advance(work["p"], step)[tiny]  # the last, tiny step is taken unchecked
        done_out[work["idx"][tiny]] = True
        work, step = _drop(work, tiny, step)
        if work is None:
            break
        p, state, lam = work["p"], work["state"], work["lam"]
        p_trial = advance(p, step)
        trial = equations(p_trial, work["data"])
        accept = ok[~tiny] & torch.isfinite(trial[0]) & (trial[0] < state[0])
        small_gain = accept & (state[0] - trial[0] <= ftol * state[0])
        work["p"] = torch.where(accept[:, None], p_trial, p)
        work["state"] = tuple(torch.where(accept.view(-1, *[1] * (t.ndim - 1)), t, s) for t, s in zip(trial, state))
        work["lam"] = torch.where(accept, (lam / 3.0).clamp_min(1e-9), (lam * 10.0).clamp_max(1e12))
        p_out[work["idx"]] = work["p"]
        done_out[work["idx"][small_gain]] = True
        work, _ = _drop(work, small_gain)
        if work is None:
            break
    return p_out, done_out


def _natural_step(p: Tensor, step: Tensor) -> Tensor:
    """Largest step component in natural units ``(P,)``: ``dA / |A|``, ``d mu`` (px), ``du``, ``dw / e^v``, ``dv``.

    ``du`` and ``dv`` are relative changes of the precision's Cholesky factor
    (i.e. of ~1/sigma); ``w`` is compared with ``e^v``, the factor it sits beside.
    """
    scale = torch.ones_like(p)
    scale[:, 0] = p[:, 0].abs()
    scale[:, 4] = torch.exp(p[:, 5])
    return (step.abs() / scale.clamp_min(torch.finfo(p.dtype).tiny)).amax(-1)


def _drop(work: dict, finished: Tensor, step: Tensor | None = None):
    """Remove the ``finished`` problems from the working set (``None`` when none is left)."""
    if not bool(finished.any()):
        return work, step
    keep = ~finished
    if not bool(keep.any()):
        return None, None
    out = {k: v[keep] for k, v in work.items() if k in ("idx", "p", "lam")}
    out["state"] = tuple(s[keep] for s in work["state"])
    out["data"] = tuple(None if d is None else d[keep] for d in work["data"])
    return out, None if step is None else step[keep]


def fit_gaussians(
    heatmaps: Tensor,
    window: int = 15,
    iterations: int = 30,
    loss: str = "linear",
    f_scale: float = 0.1,
    init_sigma: float | None = None,
    dtype: torch.dtype | None = torch.float64,
    xtol: float = 1e-4,
    ftol: float = 1e-10,
    model: str = "tied",
    gamma: float = 100.0,
) -> GaussianFit:
    """Fit an anisotropic Gaussian (Thaler Eq. 4) to every heatmap of a batch (batched torch).

    Parameters
    ----------
    heatmaps : Tensor
        ``(B, N, H, W)`` predicted heatmaps, any device (the fit runs there);
        a NumPy array is converted.
    window : int
        Odd side length (px) of the square window around each arg-max pixel;
        window pixels outside the image are left out of the fit.
    iterations : int
        Maximum Levenberg-Marquardt iterations (early exit when all converged).
    loss : str
        Robust loss, one of :data:`LOSSES` (scipy's definitions).
    f_scale : float
        Soft inlier margin *relative to each heatmap's peak value*: the loss is
        ``C^2 rho((r / C)^2)`` with ``C = f_scale * |h(argmax)|``.
    init_sigma : float, optional
        Isotropic initial sigma (px); default: half-maximum moments.
    dtype : torch.dtype, optional
        Precision of the computation (default float64; ``None`` keeps the
        input's floating dtype). Results are returned in the input's floating
        dtype.
    xtol, ftol : float
        Convergence tolerances: largest proposed step in natural units
        (centre in px, amplitude and sigmas roughly relative) and relative
        decrease of the robust cost (see the module doc).
    model : {"tied", "free"}
        ``"tied"``: amplitude ``gamma / (2 pi sqrt|Sigma|)`` (Eq. 4); ``"free"``: fitted.
    gamma : float
        Heatmap scale of the tied model (the networks' training targets: 100).

    Returns
    -------
    GaussianFit
        Tensors on the input's device (see :class:`GaussianFit`).
    """
    if loss not in LOSSES:
        raise ConfigError(f"loss must be one of {LOSSES}, got {loss!r}")
    tied = _tied_constant(model, gamma)
    heatmaps = torch.as_tensor(heatmaps)
    out_dtype = heatmaps.dtype if heatmaps.is_floating_point() else torch.float32
    prep = _prepare(heatmaps, window, f_scale, init_sigma, dtype or out_dtype, tied)
    p, converged = _levenberg_marquardt(prep, loss, iterations, xtol, ftol, tied)
    f, _ = gaussian_model(p, prep["xs"], prep["ys"], jacobian=False)
    ssq = f.sub_(prep["vals"]).square_().mul_(prep["mask"]).sum(-1)
    rms = torch.sqrt(ssq / prep["mask"].sum(-1).clamp_min(1.0))
    base = torch.stack([prep["ix"], prep["iy"]], -1).to(p.dtype)
    fit = _assemble(heatmaps.shape[:2], p[:, 0], p[:, 1:3] + base, _params_to_cov(p), rms, converged, out_dtype)
    return flag_degenerate(fit, heatmaps)  # flat / non-finite heatmaps: NaN, converged=False


def _tied_constant(model: str, gamma: float) -> float | None:
    """``gamma / (2 pi)`` for the tied model, None for the free one."""
    if model not in FIT_MODELS:
        raise ConfigError(f"model must be one of {FIT_MODELS}, got {model!r}")
    if model == "free":
        return None
    if not gamma > 0:
        raise ConfigError(f"gamma must be > 0, got {gamma!r}")
    return float(gamma) / (2.0 * math.pi)


def _assemble(bn, amp: Tensor, center: Tensor, cov: Tensor, rms: Tensor, converged: Tensor, dtype) -> GaussianFit:
    """Build a :class:`GaussianFit` (ellipse parameters via :func:`lmkcore.analysis.covariance.cov_to_params`)."""
    theta, s_maj, s_min = (torch.as_tensor(a, dtype=dtype, device=cov.device) for a in cov_to_params(cov.detach().cpu().numpy()))
    b, n = bn
    return GaussianFit(
        amplitude=amp.to(dtype).reshape(b, n),
        center=center.to(dtype).reshape(b, n, 2),
        theta=theta.reshape(b, n),
        sigma_major=s_maj.reshape(b, n),
        sigma_minor=s_min.reshape(b, n),
        cov=cov.to(dtype).reshape(b, n, 2, 2),
        residual_rms=rms.to(dtype).reshape(b, n),
        converged=converged.reshape(b, n),
    )


# -------------------------------------------------------------- scipy reference


def _model_np(p: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NumPy model ``(K,)`` and Jacobian ``(K, 6)`` for one parameter vector (same as :func:`gaussian_model`)."""
    amp, mx, my, u, w, v = p
    l11, l22 = np.exp(u), np.exp(v)
    dx, dy = xs - mx, ys - my
    z1, z2 = l11 * dx + w * dy, l22 * dy
    g = np.exp(-0.5 * (z1 * z1 + z2 * z2))
    f = amp * g
    jac = np.stack([g, f * z1 * l11, f * (z1 * w + z2 * l22), -f * z1 * dx * l11, -f * z1 * dy, -f * z2 * z2], -1)
    return f, jac


def fit_gaussian_scipy(
    heatmap: np.ndarray,
    window: int = 15,
    loss: str = "linear",
    f_scale: float = 0.1,
    init_sigma: float | None = None,
    model: str = "tied",
    gamma: float = 100.0,
    **lsq_kwargs,
) -> dict:
    """Reference fit of one heatmap with ``scipy.optimize.least_squares(method="trf")``.

    Same window, model, parameterisation, initialisation and robust loss as
    :func:`fit_gaussians` (the initial guess is computed by the same code);
    the optimisation itself is scipy's trust-region-reflective solver with the
    analytic Jacobian.

    Parameters
    ----------
    heatmap : np.ndarray
        ``(H, W)`` heatmap.
    window, loss, f_scale, init_sigma, model, gamma
        As in :func:`fit_gaussians` (``f_scale`` relative to the peak value).
    **lsq_kwargs
        Passed to ``least_squares`` (e.g. ``ftol``, ``xtol``, ``gtol``).

    Returns
    -------
    dict
        ``amplitude``, ``center`` ``(2,)`` ``(x, y)`` px, ``theta``,
        ``sigma_major``, ``sigma_minor`` (px), ``cov`` ``(2, 2)`` px^2,
        ``residual_rms``, ``converged`` (scipy's ``success``), ``nfev``,
        ``params`` ``(6,)`` (internal parameterisation, relative to the arg-max pixel).
    """
    from scipy.optimize import least_squares

    hm = torch.as_tensor(np.asarray(heatmap, dtype=np.float64))
    if hm.ndim != 2:
        raise ConfigError(f"heatmap must be (H, W), got shape {tuple(hm.shape)}")
    if degenerate_heatmaps(hm):  # flat / non-finite: no fit (scipy would raise on NaN residuals)
        return degenerate_fit_dict()
    tied = _tied_constant(model, gamma)
    prep = _prepare(hm[None, None], window, f_scale, init_sigma, torch.float64, tied)
    keep = prep["mask"][0].numpy() > 0
    vals, xs, ys = prep["vals"][0].numpy()[keep], prep["xs"].numpy()[keep], prep["ys"].numpy()[keep]
    if tied is None:
        full = lambda x: x  # noqa: E731
        reduce = lambda x, jac: jac  # noqa: E731
        x0 = prep["p0"][0].numpy()
    else:  # Eq. 4: A = gamma / (2 pi) e^(u + v); solve for (mu_x, mu_y, u, w, v)
        full = lambda x: np.concatenate([[tied * np.exp(x[2] + x[4])], x])  # noqa: E731

        def reduce(x, jac):
            return jac[:, 1:] + jac[:, :1] * full(x)[0] * np.array([0.0, 0.0, 1.0, 0.0, 1.0])

        x0 = prep["p0"][0].numpy()[1:]
    res = least_squares(
        lambda x: _model_np(full(x), xs, ys)[0] - vals,
        x0,
        jac=lambda x: reduce(x, _model_np(full(x), xs, ys)[1]),
        method="trf",
        loss=loss,
        f_scale=float(prep["scale"][0]),
        **lsq_kwargs,
    )
    res.x = full(res.x)
    p = torch.as_tensor(res.x)[None]
    cov = _params_to_cov(p)[0].numpy()
    theta, s_maj, s_min = cov_to_params(cov)
    base = np.array([prep["ix"][0].item(), prep["iy"][0].item()], dtype=np.float64)
    return {
        "amplitude": float(res.x[0]),
        "center": res.x[1:3] + base,
        "theta": float(theta),
        "sigma_major": float(s_maj),
        "sigma_minor": float(s_min),
        "cov": cov,
        "residual_rms": float(np.sqrt(np.mean(res.fun**2))),
        "converged": bool(res.success),
        "nfev": int(res.nfev),
        "params": res.x,
    }


def fit_gaussians_scipy(heatmaps, window: int = 15, loss: str = "linear", f_scale: float = 0.1, init_sigma=None,
                        model: str = "tied", gamma: float = 100.0, **lsq_kwargs) -> GaussianFit:
    """:func:`fit_gaussian_scipy` looped over a ``(B, N, H, W)`` array; returns a float64 CPU :class:`GaussianFit`."""
    arr = heatmaps.detach().cpu().numpy() if isinstance(heatmaps, Tensor) else np.asarray(heatmaps)
    b, n = arr.shape[:2]
    fits = [fit_gaussian_scipy(h, window, loss, f_scale, init_sigma, model, gamma, **lsq_kwargs) for h in arr.reshape(b * n, *arr.shape[2:])]
    stack = lambda key, dt=torch.float64: torch.as_tensor(np.array([f[key] for f in fits]), dtype=dt)  # noqa: E731
    return GaussianFit(
        amplitude=stack("amplitude").reshape(b, n),
        center=stack("center").reshape(b, n, 2),
        theta=stack("theta").reshape(b, n),
        sigma_major=stack("sigma_major").reshape(b, n),
        sigma_minor=stack("sigma_minor").reshape(b, n),
        cov=stack("cov").reshape(b, n, 2, 2),
        residual_rms=stack("residual_rms").reshape(b, n),
        converged=stack("converged", torch.bool).reshape(b, n),
    )
