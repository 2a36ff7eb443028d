"""Landmark localisation metrics of Payer et al. (2019) and Thaler et al. (2021).

Conventions
-----------
Landmarks are ``(M, N, d)`` arrays (``M`` images, ``N`` landmarks, ``d = 2``
for ``(x, y)`` or ``3`` for ``(x, y, z)``) in **pixels**. ``spacing`` is mm/px
per image and axis in the same ``(x, y[, z])`` order, broadcastable to
``(M, d)``: a scalar, ``(d,)``, ``(M, d)``, or ``(M,)`` for one isotropic factor
per image (a 1D array with ``M == d`` is ambiguous and rejected: pass
``(M, 1)`` or ``(1, d)``).
Errors are in **mm**. A missing ground-truth landmark is NaN in ``true_px``;
its error is NaN and it is left out of every statistic (and counted as
``n missing``).

Definitions (Payer et al. 2019, Sec. 3.2)
-----------------------------------------
* Point-to-point error, Eq. (5): ``PE_i^(j) = s^(j) || x_i^*(j) - x_hat_i^(j) ||_2``.
  Here the difference is scaled per axis, ``|| spacing * (x* - x_hat) ||``,
  which equals Eq. (5) for isotropic spacing ``s`` (e.g. the hand dataset's
  ``s = 50 mm / wrist width``, see :func:`normalisation_spacing`).
* ``PE_all``: median, mean and SD over all images and landmarks (SD with
  ``ddof=0``).
* Outliers, Eq. (6): "the number of predicted landmarks L_i that are outside
  a certain point-to-point error radius r for all images",
  ``#O_r = |{(j, i) | PE_i^(j) > r}|`` (also as % of the evaluated landmarks,
  as in Payer's Tables 1-4, e.g. "1659 (5.01%)").
* Success detection rate (Thaler et al. 2021, Tables 1-2): "the percentage of
  predicted landmarks within a certain PE radius r"; "within" is ``PE <= r``
  as in the ISBI 2015 challenge protocol (Wang et al. 2016), so
  ``SDR_r = 100 - %O_r``.
* Image-specific error, Eq. (7): ``IPE^(j) = 1/N sum_i PE_i^(j)`` (mean over the
  landmarks with ground truth) and its cumulative distribution.
* Identification rate, Eq. (8): see :func:`identified`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from lmkcore.errors import ConfigError

__all__ = [
    "SDR_RADII",
    "OUTLIER_RADII",
    "point_errors",
    "normalisation_spacing",
    "summary",
    "image_errors",
    "cumulative_curve",
    "per_landmark_table",
    "summary_table",
    "identified",
    "identification_rate",
]

#: Radii (mm) of the success detection rates in Thaler et al. (2021), Tables 1-2.
SDR_RADII: tuple[float, ...] = (2.0, 2.5, 3.0, 4.0)
#: Radii (mm) of the outlier counts in Payer et al. (2019), Table 1.
OUTLIER_RADII: tuple[float, ...] = (2.0, 4.0, 10.0)


def _spacing(spacing, m: int, d: int) -> np.ndarray:
    """``spacing`` broadcast to ``(M, d)`` (``(M,)`` is read as one isotropic factor per image)."""
    s = np.asarray(spacing, dtype=np.float64)
    if s.ndim == 1 and s.shape[0] == m == d and m > 1:
        raise ConfigError(f"spacing of shape ({m},) is ambiguous with M == d == {m}: pass (M, 1) per image or (1, d) per axis")
    if s.ndim == 1 and s.shape[0] == m:
        s = s[:, None]
    try:
        return np.broadcast_to(s, (m, d))
    except ValueError:
        raise ConfigError(f"spacing of shape {s.shape} does not broadcast to (M, d) = {(m, d)}") from None


def point_errors(pred_px, true_px, spacing=1.0, missing_prediction: str = "raise") -> np.ndarray:
    """Point-to-point errors (Payer et al. 2019, Eq. 5) in mm.

    Parameters
    ----------
    pred_px, true_px : array_like
        ``(M, N, d)`` predicted and ground-truth coordinates ``(x, y[, z])`` in
        pixels. NaN in ``true_px`` marks a missing ground truth.
    spacing : array_like
        mm per pixel, broadcastable to ``(M, d)`` (see module doc); ``1``
        gives errors in pixels.
    missing_prediction : {"raise", "inf", "ignore"}
        What to do with a NaN prediction whose ground truth exists: raise a
        :class:`ConfigError`, count it as an infinite error (a failure in
        every rate and outlier count), or leave it out like a missing truth.

    Returns
    -------
    np.ndarray
        ``(M, N)`` errors in mm; NaN where the ground truth is missing.
    """
    pred, true = np.asarray(pred_px, dtype=np.float64), np.asarray(true_px, dtype=np.float64)
    if pred.shape != true.shape or pred.ndim != 3:
        raise ConfigError(f"pred_px and true_px must both be (M, N, d); got {pred.shape} and {true.shape}")
    s = _spacing(spacing, pred.shape[0], pred.shape[2])
    err = np.sqrt(np.sum(((pred - true) * s[:, None, :]) ** 2, axis=-1))
    lost = np.isnan(pred).any(-1) & ~np.isnan(true).any(-1)
    if lost.any():
        if missing_prediction == "raise":
            raise ConfigError(f"{int(lost.sum())} predictions are NaN where ground truth exists (see missing_prediction)")
        if missing_prediction == "inf":
            err[lost] = np.inf
        elif missing_prediction != "ignore":
            raise ConfigError(f"missing_prediction must be 'raise', 'inf' or 'ignore', got {missing_prediction!r}")
    return err


def normalisation_spacing(true_px, index_a: int, index_b: int, distance_mm: float = 50.0) -> np.ndarray:
    """Per-image isotropic factor ``s^(j) = distance_mm / ||x_a^* - x_b^*||`` (mm/px), shape ``(M, 1)``.

    Payer et al. (2019), hand radiographs: "we assume a wrist width of 50 mm
    determined by two of the annotated landmarks at the wrist, i.e.
    s^(j) = 50 / ||x*_wrist - x*_r.wrist||". Use as ``spacing`` in
    :func:`point_errors`.
    """
    true = np.asarray(true_px, dtype=np.float64)
    return distance_mm / np.linalg.norm(true[:, index_a] - true[:, index_b], axis=-1, keepdims=True)


def summary(errors, sdr_radii: Sequence[float] = SDR_RADII, outlier_radii: Sequence[float] = OUTLIER_RADII) -> dict:
    """PE statistics, success detection rates and outlier counts of an error array.

    Parameters
    ----------
    errors : array_like
        Errors in mm, any shape (typically ``(M, N)``); NaN = not evaluated.
    sdr_radii, outlier_radii : sequence of float
        Radii ``r`` in mm.

    Returns
    -------
    dict
        ``"n"`` (evaluated landmarks), ``"n missing"`` (NaN), ``"PE mean"``,
        ``"PE SD"`` (ddof 0), ``"PE median"`` (mm), ``"SDR {r}mm"`` (% with
        ``PE <= r``), ``"#O {r}mm"`` (count with ``PE > r``) and ``"#O {r}mm %"``.
        Statistics of an empty selection are NaN.
    """
    e = np.asarray(errors, dtype=np.float64).ravel()
    valid = e[~np.isnan(e)]
    n = valid.size
    out = {"n": n, "n missing": int(e.size - n)}
    if n:
        out.update({"PE mean": float(valid.mean()), "PE SD": float(valid.std()), "PE median": float(np.median(valid))})
    else:
        out.update({"PE mean": np.nan, "PE SD": np.nan, "PE median": np.nan})
    for r in sdr_radii:
        out[f"SDR {r:g}mm"] = 100.0 * np.count_nonzero(valid <= r) / n if n else np.nan
    for r in outlier_radii:
        count = int(np.count_nonzero(valid > r))
        out[f"#O {r:g}mm"] = count
        out[f"#O {r:g}mm %"] = 100.0 * count / n if n else np.nan
    return out


def image_errors(errors) -> np.ndarray:
    """Image-specific point error IPE (Payer et al. 2019, Eq. 7), mm, shape ``(M,)``.

    Mean over the landmarks of each image that have ground truth (NaN if none).
    """
    e = np.asarray(errors, dtype=np.float64)
    valid = ~np.isnan(e)
    count = valid.sum(-1)
    total = np.where(valid, e, 0.0).sum(-1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def cumulative_curve(values, grid=None) -> tuple[np.ndarray, np.ndarray]:
    """Empirical cumulative distribution: fraction of (non-NaN) values ``<= x``.

    Parameters
    ----------
    values : array_like
        E.g. IPE per image (mm); NaN values are left out.
    grid : array_like, optional
        Where to evaluate; default: the sorted values themselves (a step curve).

    Returns
    -------
    x : np.ndarray
        Sorted values, or ``grid``.
    fraction : np.ndarray
        Fraction in ``[0, 1]`` of values ``<= x`` (for the default ``x``:
        ``k / n`` for the ``k``-th smallest, ties resolved to the last).
    """
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    v = v[~np.isnan(v)]
    x = v if grid is None else np.asarray(grid, dtype=np.float64)
    if v.size == 0:
        return x, np.full(x.shape, np.nan)
    return x, np.searchsorted(v, x, side="right") / v.size


def per_landmark_table(errors, names: Sequence[str] | None = None, **radii) -> pd.DataFrame:
    """One row of :func:`summary` per landmark (column of ``errors (M, N)``), indexed by ``names``."""
    e = np.asarray(errors, dtype=np.float64)
    names = list(names) if names is not None else [f"L{i + 1}" for i in range(e.shape[1])]
    if len(names) != e.shape[1]:
        raise ConfigError(f"{len(names)} names for {e.shape[1]} landmarks")
    return pd.DataFrame([summary(e[:, i], **radii) for i in range(e.shape[1])], index=pd.Index(names, name="landmark"))


def summary_table(errors_by_method: Mapping[str, np.ndarray], **radii) -> pd.DataFrame:
    """One row of :func:`summary` per method (like Table 1 of both papers), indexed by method name."""
    rows = [summary(e, **radii) for e in errors_by_method.values()]
    return pd.DataFrame(rows, index=pd.Index(list(errors_by_method), name="method"))


def identified(pred_px, true_px, spacing=1.0, radius: float = 20.0) -> np.ndarray:
    """Correct identification of each landmark (Payer et al. 2019, Eq. 8).

    The paper (after Glocker et al. 2013): "a predicted landmark is correctly
    identified, if the closest groundtruth landmark is the correct one, and
    the distance from predicted to groundtruth position is less than 20 mm",
    i.e. ``#ID = |{(j, i) | argmin_k ||x_k^*(j) - x_hat_i^(j)||_2 = i and
    PE_i^(j) <= 20}|``. Distances are physical (spacing applied per axis);
    the candidates ``k`` are the image's landmarks with ground truth. (The
    text says "less than", Eq. 8 ``<=``; the equation is implemented.)

    Parameters
    ----------
    pred_px, true_px : array_like
        ``(M, N, d)`` pixel coordinates; NaN truth = landmark absent.
    spacing : array_like
        mm/px, broadcastable to ``(M, d)``.
    radius : float
        mm.

    Returns
    -------
    np.ndarray
        ``(M, N)`` bool; False where the truth is missing (use
        ``~isnan(true).any(-1)`` as the denominator) or the prediction is NaN.
    """
    pred, true = np.asarray(pred_px, dtype=np.float64), np.asarray(true_px, dtype=np.float64)
    s = _spacing(spacing, pred.shape[0], pred.shape[2])[:, None, None, :]
    dist = np.sqrt(np.sum(((pred[:, :, None, :] - true[:, None, :, :]) * s) ** 2, axis=-1))  # (M, N_pred, N_true)
    dist = np.where(np.isnan(dist), np.inf, dist)
    closest = np.argmin(dist, axis=-1)
    own = np.diagonal(dist, axis1=1, axis2=2)
    return (closest == np.arange(pred.shape[1])) & (own <= radius)


def identification_rate(pred_px, true_px, spacing=1.0, radius: float = 20.0) -> dict:
    """``ID_rate``: percentage of correctly identified landmarks over all landmarks with ground truth.

    Returns
    -------
    dict
        ``"#ID"`` (count), ``"n"`` (landmarks with ground truth) and
        ``"ID rate"`` (%), see :func:`identified`.
    """
    ok = identified(pred_px, true_px, spacing, radius)
    n = int((~np.isnan(np.asarray(true_px, dtype=np.float64)).any(-1)).sum())
    count = int(ok.sum())
    return {"#ID": count, "n": n, "ID rate": 100.0 * count / n if n else np.nan}
