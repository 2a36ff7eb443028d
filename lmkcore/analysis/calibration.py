"""Calibration of heatmaps read as classifications over pixels (McCouat & Voiculescu 2022):
temperature scaling, Expected Radial Error, reliability diagrams / ECE, and ROC analysis.

Conventions: logits and probability maps are ``(B, N, H, W)`` tensors on a pixel grid (working
pixels); landmarks ``(B, N, 2)`` ``(x, y)`` in the same pixels (x = column, y = row down); pixel
``(i, j)`` is the pixel whose centre is at ``x = i, y = j``. Landmarks that are missing (NaN) or whose
pixel lies outside the grid are masked out.

Two definitions (:data:`DEFINITIONS`, selected by name everywhere a choice matters):

``"paper_text"`` (the paper, Secs. 3-5)
    ECE over 10 equal bins on ``[0, max confidence]``, as a fraction; correct = the hottest pixel is
    the ground-truth pixel (**nearest** pixel, ``round``); ROC positives = error > 2 mm; threshold =
    first ROC point with TPR >= 0.5; temperatures minimise the NLL (L-BFGS, :func:`fit_temperature`).
``"authors_code"`` (the public code of McCouat & Voiculescu)
    bins ``0, 0.015, ..., 0.135`` plus a catch-all ``[0.135, 1.1]``; correct = radial error <
    ``pixel size / sqrt(pi)`` (radius of a disc with one pixel's area); ECE reported x100; one-hot
    pixel = **floor** of the coordinate; ROC positives = error > 4 mm; threshold = first ROC point
    with TPR > 0.5; temperatures by Adam (lr 0.01, T starting at 1) keeping the epoch with the lowest
    ECE on a selection set (:func:`fit_temperature_best_ece`).

The paper's "ECE 0.7" (Fig. 4c) is on the x100 scale of the code definition.

The 2D softmax and the NLL losses live in :mod:`lmkcore.training.losses`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lmkcore.errors import ConfigError
from lmkcore.training.losses import nll_per_landmark, pixel_index, softmax_2d

__all__ = [
    "CalibrationDefinition", "DEFINITIONS", "calibration_definition", "correct_predictions", "roc_positive",
    "fit_temperature", "fit_temperature_best_ece", "expected_radial_error", "ere_from_heatmaps",
    "ReliabilityDiagram", "reliability_diagram", "roc_curve", "roc_auc", "threshold_at_tpr",
    "binned_means", "spearman", "compare_definitions",
]


# ----------------------------------------------------------------------------- the two definitions
@dataclass(frozen=True)
class CalibrationDefinition:
    """One definition of the calibration analysis (see the module docstring).

    Attributes
    ----------
    name : str
        ``"paper_text"`` or ``"authors_code"``.
    rounding : str
        Ground-truth pixel of the one-hot target: ``"round"`` (nearest) or ``"floor"`` (truncated).
    fixed_edges : tuple of float or None
        Reliability bin edges, or None for ``n_bins`` equal bins on ``[0, max confidence]``.
    ece_scale : float
        Factor of the reported ECE (1: a fraction; 100: the code's scale).
    correct : str
        ``"same_pixel"`` (hottest pixel == ground-truth pixel) or ``"disc"`` (error < pixel size / sqrt(pi)).
    roc_error_mm : float
        ROC positives ("erroneous") are landmarks with error > this (mm).
    tpr_strict : bool
        The flagging threshold is the first ROC point with TPR > target (True) or >= target (False).
    temperature_fit : str
        ``"nll_lbfgs"`` (:func:`fit_temperature`) or ``"adam_best_ece"`` (:func:`fit_temperature_best_ece`).
    """

    name: str
    rounding: str
    fixed_edges: tuple | None
    ece_scale: float
    correct: str
    roc_error_mm: float
    tpr_strict: bool
    temperature_fit: str

    def bin_edges(self, confidence: np.ndarray | None = None, n_bins: int = 10) -> np.ndarray:
        """Reliability bin edges ``(K + 1,)``: fixed, or ``n_bins`` equal bins on ``[0, max(confidence)]``."""
        if self.fixed_edges is not None:
            return np.asarray(self.fixed_edges, dtype=np.float64)
        conf = np.asarray(confidence if confidence is not None else [], dtype=np.float64).ravel()
        conf = conf[np.isfinite(conf)]
        return np.linspace(0.0, float(conf.max()) if conf.size else 1.0, n_bins + 1)


def _code_edges() -> tuple:
    edges = np.linspace(0.0, 0.15, 11)
    edges[-1] = 1.1
    return tuple(float(e) for e in edges)


DEFINITIONS: dict[str, CalibrationDefinition] = {
    "paper_text": CalibrationDefinition("paper_text", rounding="round", fixed_edges=None, ece_scale=1.0,
                                        correct="same_pixel", roc_error_mm=2.0, tpr_strict=False,
                                        temperature_fit="nll_lbfgs"),
    "authors_code": CalibrationDefinition("authors_code", rounding="floor", fixed_edges=_code_edges(), ece_scale=100.0,
                                          correct="disc", roc_error_mm=4.0, tpr_strict=True,
                                          temperature_fit="adam_best_ece"),
}


def calibration_definition(definition: str | CalibrationDefinition) -> CalibrationDefinition:
    """The :class:`CalibrationDefinition` called ``definition`` (a definition passes through);
    :class:`~lmkcore.errors.ConfigError` naming the choices otherwise."""
    if isinstance(definition, CalibrationDefinition):
        return definition
    try:
        return DEFINITIONS[definition]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown calibration definition {definition!r}; choose one of: "
                          f"{', '.join(DEFINITIONS)}") from None


def correct_predictions(argmax_px: np.ndarray, landmarks_px: np.ndarray, spacing: np.ndarray | None = None,
                        definition: str | CalibrationDefinition = "paper_text") -> np.ndarray:
    """Whether each hottest pixel counts as a correct prediction (reliability diagram / ECE).

    Parameters
    ----------
    argmax_px : array ``(M, N, 2)``
        Hottest pixel ``(x, y)`` (integers), working px.
    landmarks_px : array ``(M, N, 2)``
        Ground truth ``(x, y)``, working px (sub-pixel; NaN = missing -> False).
    spacing : array ``(M, 2)`` mm per working px ``(x, y)``
        Needed by ``"authors_code"``: correct if the radial error (mm) is below ``sqrt(sx * sy / pi)``
        (the radius of a disc with one pixel's area; ``0.30234 / sqrt(pi) = 0.1706`` mm in the paper).
    definition : ``"paper_text"`` (hottest pixel == the nearest pixel of the ground truth) or
        ``"authors_code"``.

    Returns
    -------
    ndarray ``(M, N)`` bool
    """
    d = calibration_definition(definition)
    am = np.asarray(argmax_px, dtype=np.float64)
    lm = np.asarray(landmarks_px, dtype=np.float64)
    finite = np.isfinite(lm).all(-1)
    if d.correct == "same_pixel":
        with np.errstate(invalid="ignore"):
            return finite & (np.round(np.nan_to_num(lm, nan=-1e9)) == am).all(-1)
    if spacing is None:
        raise ConfigError("calibration definition 'authors_code' needs the pixel spacing (mm per px)")
    sp = np.asarray(spacing, dtype=np.float64).reshape(-1, 1, 2)
    err = np.sqrt((((am - lm) * sp) ** 2).sum(-1))
    radius = np.sqrt(sp[..., 0] * sp[..., 1] / np.pi)
    with np.errstate(invalid="ignore"):
        return finite & (err < radius)


def roc_positive(errors_mm: np.ndarray, definition: str | CalibrationDefinition = "paper_text") -> np.ndarray:
    """ROC ground truth: ``error > 2 mm`` (paper text) or ``> 4 mm`` (authors' code); NaN -> False."""
    d = calibration_definition(definition)
    with np.errstate(invalid="ignore"):
        return np.asarray(errors_mm, dtype=np.float64) > d.roc_error_mm


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


def fit_temperature_best_ece(fit_logits: Tensor, fit_landmarks_px: Tensor, select_logits: Tensor,
                             select_landmarks_px: Tensor, select_spacing: np.ndarray, epochs: int = 15,
                             batch_size: int = 4, lr: float = 0.01, seed: int = 0,
                             definition: str | CalibrationDefinition = "authors_code"
                             ) -> tuple[Tensor, np.ndarray]:
    """Per-landmark temperatures as in the authors' code: Adam on ``T`` (``(N,)``, start 1) minimising
    the mean one-hot NLL over shuffled mini-batches of ``fit_logits``; after each epoch the ECE of
    ``select_logits`` is computed and the temperatures of the epoch with the lowest ECE are kept.

    The one-hot pixel, the correctness rule and the bins follow ``definition`` (default
    ``"authors_code"``: floor, error < pixel size / sqrt(pi), bins to 0.15). The network is frozen, so
    logits are computed once (the authors re-ran the augmented network on every batch). ``T`` is
    kept >= 1e-2 after each step. Deterministic for a given ``seed``.

    Parameters
    ----------
    fit_logits : Tensor ``(B, N, H, W)``
        Raw outputs on the fitting half.
    fit_landmarks_px : Tensor ``(B, N, 2)``
        Ground truth, working px ``(x, y)``.
    select_logits, select_landmarks_px : Tensor ``(S, N, H, W)``, ``(S, N, 2)``
        The selection half.
    select_spacing : array ``(S, 2)``
        mm per working px of the selection images.

    Returns
    -------
    temperature : Tensor ``(N,)`` float64 (CPU)
    ece_per_epoch : ndarray ``(epochs,)`` ECE on the selection half (the definition's scale)
    """
    d = calibration_definition(definition)
    if epochs < 1 or batch_size < 1:
        raise ConfigError(f"epochs and batch_size must be >= 1, got {epochs!r}, {batch_size!r}")
    fit_logits = fit_logits.detach().double()
    sel = select_logits.detach().double()
    n = fit_logits.shape[1]
    t = torch.ones(n, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([t], lr=lr)
    gen = torch.Generator().manual_seed(int(seed))
    b, _, h, w = sel.shape
    flat = sel.reshape(b, n, h * w)
    idx = flat.argmax(-1)
    argmax = torch.stack([idx % w, idx // w], -1).numpy()
    correct = correct_predictions(argmax, select_landmarks_px.numpy(), select_spacing, d)
    valid_sel = torch.isfinite(select_landmarks_px).all(-1).numpy()
    best, best_t, history = np.inf, t.detach().clone(), []
    for _ in range(int(epochs)):
        order = torch.randperm(fit_logits.shape[0], generator=gen)
        for start in range(0, len(order), batch_size):
            rows = order[start: start + batch_size]
            nll, valid = nll_per_landmark(fit_logits[rows], fit_landmarks_px[rows], t, d.rounding)
            loss = nll.sum() / valid.sum().clamp_min(1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                t.clamp_(min=1e-2)
        with torch.no_grad():
            conf = softmax_2d(sel, t.detach()).reshape(b, n, h * w).amax(-1).numpy()
        conf = np.where(valid_sel, conf, np.nan)
        ece = reliability_diagram(conf, correct, definition=d).ece_reported
        history.append(ece)
        if ece < best:
            best, best_t = ece, t.detach().clone()
    return best_t, np.asarray(history)


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
    """Confidence bins with ``edges`` ``(K + 1,)``: half-open ``[e_k, e_k+1)``, the last one closed.

    ``count``, ``confidence`` (mean confidence, NaN if empty) and ``accuracy`` (fraction correct, NaN
    if empty) per bin; ``ece = sum_b n_b / n |accuracy_b - confidence_b|`` (a fraction; empty bins
    add 0). ``ece_reported = ece x ece_scale`` is the number on the definition's scale (x100 for the
    authors' code).
    """

    edges: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    ece: float
    definition: str = "paper_text"
    ece_scale: float = 1.0

    @property
    def ece_reported(self) -> float:
        return self.ece * self.ece_scale


def reliability_diagram(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10,
                        max_confidence: float | None = None,
                        definition: str | CalibrationDefinition = "paper_text") -> ReliabilityDiagram:
    """Reliability diagram and ECE (McCouat & Voiculescu 2022, Sec. 5.2; Guo et al. 2017).

    Parameters
    ----------
    confidence : array
        Probability at the predicted (hottest) pixel, any shape; NaNs are ignored.
    correct : array of bool, same shape
        Whether each prediction is correct (:func:`correct_predictions` under the same definition).
    n_bins : int
        Bins of the ``"paper_text"`` definition (ignored by ``"authors_code"``'s fixed edges).
    max_confidence : float, optional
        ``"paper_text"``: upper end ``M`` of the last bin (default: the largest confidence).
    definition : str or CalibrationDefinition
        ``"paper_text"``: ``n_bins`` equal bins on ``[0, M]``; ``"authors_code"``: edges
        ``0, 0.015, ..., 0.135, 1.1`` (values above 1.1 are dropped), ECE reported x100.
    """
    d = calibration_definition(definition)
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    corr = np.asarray(correct, dtype=bool).ravel()
    keep = np.isfinite(conf)
    conf, corr = conf[keep], corr[keep]
    if d.fixed_edges is None:
        top = float(max_confidence if max_confidence is not None else (conf.max() if conf.size else 1.0))
        edges = np.linspace(0.0, top, n_bins + 1)
        which = (np.clip(np.floor(conf / top * n_bins).astype(np.int64), 0, n_bins - 1) if top > 0
                 else np.zeros(conf.size, np.int64))
    else:
        edges = d.bin_edges()
        inside = (conf >= edges[0]) & (conf <= edges[-1])
        conf, corr = conf[inside], corr[inside]
        which = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, edges.size - 2)
    k = edges.size - 1
    count = np.bincount(which, minlength=k).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, conf, minlength=k) / count
        acc = np.bincount(which, corr.astype(np.float64), minlength=k) / count
    ece = float(np.nansum(count / max(conf.size, 1) * np.abs(acc - mean_conf)))
    return ReliabilityDiagram(edges, count, mean_conf, acc, ece, d.name, d.ece_scale)


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


def threshold_at_tpr(scores: np.ndarray, positive: np.ndarray, tpr: float = 0.5,
                     definition: str | CalibrationDefinition = "paper_text") -> float:
    """The largest threshold ``t`` whose classifier ``score >= t`` reaches a true positive rate ``>= tpr``
    (``"paper_text"``: TPR 0.5 for ERE flagging errors > 2 mm) or ``> tpr`` (``"authors_code"``)."""
    d = calibration_definition(definition)
    _, rates, thresholds = roc_curve(scores, positive)
    hit = np.nonzero(rates > tpr if d.tpr_strict else rates >= tpr)[0]
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
    """Spearman rank correlation over finite pairs (``+inf`` allowed in ``x``: ranked last); see
    :func:`lmkcore.analysis.uncertainty.correlation`."""
    from lmkcore.analysis.uncertainty import correlation

    return correlation(x, y, keep_inf=True).spearman_rho


# ----------------------------------------------------------------------------- both definitions side by side
def compare_definitions(confidence: np.ndarray, errors_mm: np.ndarray, same_pixel: np.ndarray, pixel_mm,
                        ere: np.ndarray | None = None, roc_rows: np.ndarray | None = None, tpr: float = 0.5):
    """ECE, accuracy and the ERE flagging threshold under both definitions, one row each.

    Parameters
    ----------
    confidence : array ``(M, N)``
        Probability at the hottest pixel (after temperature scaling, as in the paper's Fig. 4c).
    errors_mm : array ``(M, N)``
        Radial error of the hottest pixel (mm).
    same_pixel : array ``(M, N)`` bool
        Hottest pixel == nearest pixel of the ground truth (the text's "correct").
    pixel_mm : float or array ``(M,)``
        Working pixel size (mm); the code's "correct" is ``error < pixel_mm / sqrt(pi)``.
    ere : array ``(M, N)``, optional
        Expected Radial Error (mm); with it, the ROC AUC and the threshold at ``tpr`` for each
        definition's "erroneous" label (> 2 mm text, > 4 mm code), on ``roc_rows`` (``(M,)`` bool; all rows
        by default).

    Returns
    -------
    pandas.DataFrame indexed by definition name, columns ``ECE`` (on the definition's scale), ``ECE scale``,
    ``accuracy``, ``erroneous if error > (mm)``, ``ROC AUC``, ``ERE threshold (mm)``.
    """
    import pandas as pd

    conf = np.asarray(confidence, dtype=np.float64)
    err = np.asarray(errors_mm, dtype=np.float64)
    pix = np.broadcast_to(np.asarray(pixel_mm, dtype=np.float64).reshape(-1, *([1] * (err.ndim - 1))), err.shape)
    with np.errstate(invalid="ignore"):
        correct = {"paper_text": np.asarray(same_pixel, dtype=bool),
                   "authors_code": np.isfinite(err) & (err < pix / np.sqrt(np.pi))}
    rows = {}
    for name, d in DEFINITIONS.items():
        rd = reliability_diagram(conf, correct[name], definition=d)
        row = {"ECE": rd.ece_reported, "ECE scale": "x100 (code)" if d.ece_scale == 100 else "fraction (text)",
               "accuracy": float(np.mean(correct[name][np.isfinite(conf)])) if np.isfinite(conf).any() else np.nan,
               "erroneous if error > (mm)": d.roc_error_mm, "ROC AUC": np.nan, "ERE threshold (mm)": np.nan}
        if ere is not None:
            e = np.asarray(ere, dtype=np.float64)
            sel = np.ones(e.shape[0], bool) if roc_rows is None else np.asarray(roc_rows, bool)
            scores, positive = e[sel], roc_positive(err[sel], d)
            row["ROC AUC"] = roc_auc(scores, positive)
            row["ERE threshold (mm)"] = threshold_at_tpr(scores, positive, tpr, d)
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("definition")
