"""Calibration of heatmaps read as classifications over pixels (McCouat & Voiculescu 2022):
temperature scaling, Expected Radial Error, reliability diagrams / ECE, and ROC analysis.

Conventions: logits and probability maps are ``(B, N, H, W)`` tensors on a pixel grid (working
pixels); landmarks ``(B, N, 2)`` ``(x, y)`` in the same pixels (x = column, y = row down); pixel
``(i, j)`` is the pixel whose centre is at ``x = i, y = j``. A sub-pixel landmark is assigned to its
**nearest pixel** (``round``) for the one-hot target and for the "correct prediction" of the
reliability diagram (paper: correct = hottest pixel equals the ground-truth pixel). Landmarks that
are missing (NaN) or whose nearest pixel lies outside the grid are masked out.

The 2D softmax and the NLL losses live in :mod:`lmkcore.training.losses`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lmkcore.training.losses import nll_per_landmark, pixel_index, softmax_2d

__all__ = [
    "fit_temperature", "expected_radial_error", "ere_from_heatmaps",
    "ReliabilityDiagram", "reliability_diagram", "roc_curve", "roc_auc", "threshold_at_tpr",
    "binned_means", "spearman",
]


# ----------------------------------------------------------------------------- temperature scaling
def fit_temperature(logits: Tensor, landmarks_px: Tensor, max_iter: int = 100, bounds: tuple[float, float] = (1e-2, 1e3)
                    ) -> Tensor:
    """One temperature per landmark minimising the mean NLL of the held-out ``logits`` (network frozen).

    Optimises ``log T`` (``(N,)``, start 0) with L-BFGS (strong-Wolfe line search). Landmarks with no
    valid target keep ``T = 1``. Dividing logits by ``T > 0`` keeps every argmax, so accuracy is
    unchanged (McCouat & Voiculescu 2022, Sec. 3.3).

    Parameters
    ----------
    logits : Tensor ``(B, N, H, W)``
        Raw network outputs on the calibration split (no gradient needed).
    landmarks_px : Tensor ``(B, N, 2)``
        Ground truth, working px.

    Returns
    -------
    Tensor ``(N,)`` temperatures (float64 on CPU).
    """
    logits = logits.detach().double()
    n = logits.shape[1]
    log_t = torch.zeros(n, dtype=torch.float64, device=logits.device, requires_grad=True)
    _, valid = pixel_index(landmarks_px, (logits.shape[-1], logits.shape[-2]))
    count = valid.sum(0).clamp_min(1).double()
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")
    lo, hi = np.log(bounds[0]), np.log(bounds[1])

    def closure():
        opt.zero_grad()
        nll, _ = nll_per_landmark(logits, landmarks_px, torch.exp(log_t.clamp(lo, hi)))
        loss = (nll.sum(0) / count).sum()  # separable: each T_l minimises its landmark's mean NLL
        loss.backward()
        return loss

    opt.step(closure)
    t = torch.exp(log_t.detach().clamp(lo, hi))
    t[valid.sum(0) == 0] = 1.0
    return t.cpu()


# ----------------------------------------------------------------------------- expected radial error
def expected_radial_error(probs: Tensor, spacing: Tensor | np.ndarray | None = None, threshold: float = 0.05
                          ) -> tuple[Tensor, Tensor]:
    """Expected Radial Error (McCouat & Voiculescu 2022, Eq. 4 with the Sec. 3.4 pre-processing).

    Values below ``threshold`` x the map's maximum are set to 0, the map is renormalised to sum 1,
    and ERE is the expected distance of that distribution to its hottest pixel.

    Parameters
    ----------
    probs : Tensor ``(B, N, H, W)``
        Non-negative maps (softmax output; any non-negative heatmap works, it is renormalised).
    spacing : ``(B, 2)`` mm per pixel ``(x, y)``, optional
        Distances in mm when given, else in pixels.
    threshold : float
        Fraction of the maximum below which values are zeroed (paper: 5 %).

    Returns
    -------
    ere : Tensor ``(B, N)`` (mm or px; NaN for an all-zero map)
    argmax : LongTensor ``(B, N, 2)`` ``(x, y)`` of the hottest pixel.
    """
    b, n, h, w = probs.shape
    flat = probs.reshape(b, n, h * w).double()
    peak, idx = flat.max(-1)
    kept = torch.where(flat >= threshold * peak[..., None], flat, torch.zeros_like(flat))
    kept = kept / kept.sum(-1, keepdim=True)
    ax, ay = idx % w, idx // w
    xs = torch.arange(w, device=probs.device, dtype=torch.float64)
    ys = torch.arange(h, device=probs.device, dtype=torch.float64)
    dx = xs.view(1, 1, 1, w) - ax[..., None, None].double()
    dy = ys.view(1, 1, h, 1) - ay[..., None, None].double()
    if spacing is not None:
        sp = torch.as_tensor(np.asarray(spacing), dtype=torch.float64, device=probs.device)
        dx = dx * sp[:, 0].view(b, 1, 1, 1)
        dy = dy * sp[:, 1].view(b, 1, 1, 1)
    dist = torch.sqrt(dx**2 + dy**2).reshape(b, n, h * w)
    ere = (kept * dist).sum(-1)
    ere = torch.where(peak > 0, ere, torch.full_like(ere, float("nan")))
    return ere, torch.stack([ax, ay], -1)


def ere_from_heatmaps(heatmaps: Tensor | np.ndarray, spacing: Tensor | np.ndarray | None = None,
                      threshold: float = 0.05) -> np.ndarray:
    """ERE of arbitrary regression heatmaps (e.g. the SCN's 31x31 crops): negative values are clipped
    to 0, each map normalised to sum 1, then :func:`expected_radial_error`. ``(M, N, h, w)`` ->
    ``(M, N)`` numpy (mm with ``spacing`` ``(M, 2)``, else px)."""
    hm = torch.as_tensor(np.asarray(heatmaps, dtype=np.float64)).clamp_min(0.0)
    hm = hm / hm.sum((-2, -1), keepdim=True).clamp_min(1e-300)
    return expected_radial_error(hm, spacing, threshold)[0].numpy()


# ----------------------------------------------------------------------------- calibration
@dataclass
class ReliabilityDiagram:
    """Equal-width confidence bins ``[0, M/K), ..., [(K-1)M/K, M]`` with ``M`` the maximum confidence.

    ``count``, ``confidence`` (mean confidence, NaN if empty) and ``accuracy`` (fraction correct, NaN
    if empty) per bin; ``ece = sum_b n_b / n |accuracy_b - confidence_b|`` (fraction, not %).
    """

    edges: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    ece: float


def reliability_diagram(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10,
                        max_confidence: float | None = None) -> ReliabilityDiagram:
    """Reliability diagram and ECE (McCouat & Voiculescu 2022, Sec. 5.2; Guo et al. 2017).

    Parameters
    ----------
    confidence : array
        Probability at the predicted (hottest) pixel, any shape; NaNs are ignored.
    correct : array of bool
        Hottest pixel == ground-truth pixel.
    n_bins : int
    max_confidence : float, optional
        Upper end ``M`` of the last bin (default: the largest confidence).
    """
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    corr = np.asarray(correct, dtype=bool).ravel()
    keep = np.isfinite(conf)
    conf, corr = conf[keep], corr[keep]
    top = float(max_confidence if max_confidence is not None else (conf.max() if conf.size else 1.0))
    edges = np.linspace(0.0, top, n_bins + 1)
    which = np.clip(np.floor(conf / top * n_bins).astype(np.int64), 0, n_bins - 1) if top > 0 else np.zeros(conf.size, np.int64)
    count = np.bincount(which, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, conf, minlength=n_bins) / count
        acc = np.bincount(which, corr.astype(np.float64), minlength=n_bins) / count
    ece = float(np.nansum(count / max(conf.size, 1) * np.abs(acc - mean_conf)))
    return ReliabilityDiagram(edges, count, mean_conf, acc, ece)


# ----------------------------------------------------------------------------- ROC
def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of the classifier ``score >= threshold`` -> positive.

    Returns ``fpr, tpr, thresholds`` with thresholds decreasing (the first is ``+inf``: nothing
    flagged), one point per distinct score. NaN scores are dropped.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(positive, dtype=bool).ravel()
    keep = ~np.isnan(s)
    s, y = s[keep], y[keep]
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(s[1:] != s[:-1])[0], s.size - 1] if s.size else np.array([], dtype=np.int64)
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    p, n = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fp / n], np.r_[0.0, tp / p], np.r_[np.inf, s[last]]


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under :func:`roc_curve` (trapezoid; ties count 1/2). NaN if a class is empty."""
    y = np.asarray(positive, dtype=bool).ravel()[~np.isnan(np.asarray(scores, dtype=np.float64).ravel())]
    if y.all() or not y.any():
        return float("nan")
    fpr, tpr, _ = roc_curve(scores, positive)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def threshold_at_tpr(scores: np.ndarray, positive: np.ndarray, tpr: float = 0.5) -> float:
    """The largest threshold ``t`` whose classifier ``score >= t`` reaches a true positive rate ``>= tpr``
    (paper: TPR 0.5 for ERE flagging errors > 2 mm)."""
    _, rates, thresholds = roc_curve(scores, positive)
    hit = np.nonzero(rates >= tpr)[0]
    return float(thresholds[hit[0]]) if hit.size else float("nan")


# ----------------------------------------------------------------------------- summaries
def binned_means(x: np.ndarray, y: np.ndarray, bin_size: int = 36) -> tuple[np.ndarray, np.ndarray]:
    """Sort by ``x`` and average ``x`` and ``y`` over consecutive groups of ``bin_size`` (the last,
    smaller group is kept if at least half full): the paper's Fig. 5 (bins of 36 landmarks)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    order = np.argsort(x, kind="mergesort")
    x, y = x[order], y[order]
    starts = list(range(0, x.size, bin_size))
    if starts and x.size - starts[-1] < bin_size / 2 and len(starts) > 1:
        starts = starts[:-1]
    ends = starts[1:] + [x.size]
    return (np.array([x[a:b].mean() for a, b in zip(starts, ends)]),
            np.array([y[a:b].mean() for a, b in zip(starts, ends)]))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation over finite pairs (``+inf`` allowed in ``x``: ranked last)."""
    from scipy.stats import spearmanr

    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    keep = ~np.isnan(x) & np.isfinite(y)
    return float(spearmanr(x[keep], y[keep]).statistic)
