"""Heatmap uncertainty vs localisation error (Thaler et al. 2021, Sec. 5.2, Figs. 3-5).

* dataset-based uncertainty: the learned target covariance Sigma (one per landmark);
* sample-based uncertainty: the covariance Sigma-hat of the Gaussian fitted to
  each predicted heatmap.

Their *size* is ``sigma_maj * sigma_min`` (= sqrt(det), mm^2), compared per
landmark with the mean point error (Pearson and Spearman correlation, Fig. 3).
The prediction-groundtruth offsets ``x_pred - x_gt`` (mm) of all images get a
Gaussian fitted to them (Fig. 4/5 "offsets" column), and on synthetic data
every orientation is compared with the declared annotation covariance.

Arrays: ``(M, N, 2)`` ``(x, y)`` pixel coordinates of M images and N landmarks;
covariances in mm^2 unless stated; angles in radians in the image frame (y down,
:mod:`lmkcore.analysis.covariance`) inside, degrees in tables.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from lmkcore.analysis.covariance import axis_angle_difference, cov_to_params
from lmkcore.data.records import LandmarkDataset


def gaussian_size(cov) -> np.ndarray:
    """``sigma_maj * sigma_min`` of covariances ``(..., 2, 2)`` (= sqrt(det); unit of cov)."""
    _, s1, s2 = cov_to_params(cov)
    return s1 * s2


@dataclass
class Correlation:
    """Pearson and Spearman correlation of two per-landmark quantities."""

    pearson_r: float
    pearson_p: float
    spearman_rho: float
    spearman_p: float
    n: int

    def __str__(self) -> str:
        return (f"Pearson r = {self.pearson_r:.3f} (p = {self.pearson_p:.2g}), "
                f"Spearman rho = {self.spearman_rho:.3f} (p = {self.spearman_p:.2g}), n = {self.n}")


def correlation(x, y, keep_inf: bool = False) -> Correlation:
    """Pearson and Spearman correlation (scipy.stats) of ``x`` and ``y`` over finite pairs.

    With ``keep_inf`` an infinite ``x`` stays in (ranked last or first by Spearman; Pearson is then NaN),
    e.g. the unbounded uncertainty of an empty heatmap; NaN pairs are always dropped. Fewer than 3 pairs
    or a constant variable give NaN coefficients.
    """
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    ok = (~np.isnan(x) if keep_inf else np.isfinite(x)) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or len(np.unique(x)) == 1 or np.ptp(y) == 0:
        return Correlation(np.nan, np.nan, np.nan, np.nan, int(len(x)))
    pr = stats.pearsonr(x, y) if np.isfinite(x).all() else (np.nan, np.nan)
    sr = stats.spearmanr(x, y)
    return Correlation(float(pr[0]), float(pr[1]), float(sr[0]), float(sr[1]), int(len(x)))


def size_error_table(learned_cov_mm, fit_cov_mm, errors_mm, landmark_names) -> pd.DataFrame:
    """Per-landmark sizes and mean PE (Fig. 3).

    Parameters
    ----------
    learned_cov_mm : ndarray
        ``(N, 2, 2)`` Sigma (mm^2).
    fit_cov_mm : ndarray
        ``(M, N, 2, 2)`` Sigma-hat (mm^2, NaN where the fit failed).
    errors_mm : ndarray
        ``(M, N)`` point errors (mm).

    Returns
    -------
    DataFrame
        Columns ``Σ size (mm²)``, ``Σ̂ size (mm²)`` (mean over images of the
        per-image size), ``Σ̂ fits``, ``PE mean (mm)``; one row per landmark.
    """
    fit_size = gaussian_size(fit_cov_mm)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # landmarks without any usable fit -> NaN
        return pd.DataFrame({
            "Σ size (mm²)": gaussian_size(learned_cov_mm),
            "Σ̂ size (mm²)": np.nanmean(np.where(np.isfinite(fit_size), fit_size, np.nan), axis=0),
            "Σ̂ fits": np.isfinite(fit_size).sum(0),
            "PE mean (mm)": np.nanmean(errors_mm, axis=0),
        }, index=pd.Index(list(landmark_names), name="landmark"))


def prediction_offsets_mm(pred_px, target_px, spacing) -> np.ndarray:
    """``(M, N, 2)`` offsets ``pred - target`` in mm (``spacing`` ``(M, 2)`` mm/px)."""
    return (np.asarray(pred_px) - np.asarray(target_px)) * np.asarray(spacing)[:, None, :]


def fit_offsets_gaussian(offsets_mm, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian (mean ``(N, 2)`` mm, covariance ``(N, 2, 2)`` mm^2) fitted to ``(M, N, 2)`` offsets.

    NaN offsets are skipped; ``ddof`` 1 = unbiased sample covariance, 0 = ML.
    Landmarks with fewer than ``ddof + 2`` offsets get NaN.
    """
    off = np.asarray(offsets_mm, dtype=np.float64)
    valid = ~np.isnan(off).any(-1)
    n = valid.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(np.where(valid[..., None], off, 0.0), 0) / n[:, None]
        d = np.where(valid[..., None], off - mean, 0.0)
        cov = np.einsum("mni,mnj->nij", d, d) / (n - ddof)[:, None, None]
    bad = n < ddof + 2
    mean[bad] = np.nan
    cov[bad] = np.nan
    return mean, cov


def declared_cov_mm(record: LandmarkDataset, ids=None) -> np.ndarray:
    """Declared annotation covariance of synthetic data, px^2 -> mm^2: ``(M, N, 2, 2)``.

    Raises ``KeyError`` when the record has no known truth.
    """
    idx = record.index_of(list(ids)) if ids is not None else np.arange(len(record.ids))
    sp = record.spacing[idx][:, None, :]
    return record.truth["annotation_cov"][idx] * sp[..., :, None] * sp[..., None, :]


def anisotropic_selection(cov, n_most: int = 3, n_least: int = 2) -> list[int]:
    """Landmark indices to show: the ``n_most`` most anisotropic (largest ``sigma_maj / sigma_min``, most
    first) followed by the ``n_least`` least anisotropic (least first) of ``(N, 2, 2)`` covariances.

    The selection of Thaler et al. (2021)-style figures (Figs. 4-6, Table 4 subsets) in notebooks 02-04.
    """
    _, s1, s2 = cov_to_params(np.asarray(cov, dtype=np.float64))
    order = np.argsort(s1 / s2)
    return [int(k) for k in order[::-1][:n_most]] + [int(k) for k in order[:n_least]]


def mean_fit_cov(fit_cov_mm) -> np.ndarray:
    """Mean over images of Sigma-hat ``(M, N, 2, 2)`` -> ``(N, 2, 2)`` mm^2 (NaN fits skipped)."""
    c = np.asarray(fit_cov_mm, dtype=np.float64)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # landmarks without any usable fit -> NaN
        return np.nanmean(np.where(np.isfinite(c).all((-1, -2))[..., None, None], c, np.nan), axis=0)


def angle_agreement(declared_mm, estimates: dict[str, np.ndarray], landmark_names,
                    min_ratio: float = 2.0) -> pd.DataFrame:
    """Angle errors (deg) of covariance estimates against the declared covariance.

    Parameters
    ----------
    declared_mm : ndarray
        ``(N, 2, 2)`` or ``(M, N, 2, 2)`` (averaged over images) declared covariance, mm^2.
    estimates : dict
        label -> ``(N, 2, 2)`` covariance estimate (mm^2), e.g. Sigma-target, mean Sigma-hat,
        the offsets' Gaussian.
    min_ratio : float
        Landmarks with a declared ``sigma_maj / sigma_min >= min_ratio`` are marked anisotropic.

    Returns
    -------
    DataFrame
        One row per landmark: declared theta (deg, image frame, y down), declared
        ratio, ``anisotropic``, and per estimate its theta, ratio and ``<label> angle error (deg)``
        (axis difference modulo 180, in [0, 90]).
    """
    d = np.asarray(declared_mm, dtype=np.float64)
    if d.ndim == 4:
        d = d.mean(0)
    dth, d1, d2 = cov_to_params(d)
    df = pd.DataFrame({"declared θ (deg)": np.degrees(dth), "declared ratio": d1 / d2},
                      index=pd.Index(list(landmark_names), name="landmark"))
    df["anisotropic"] = df["declared ratio"] >= min_ratio
    for label, c in estimates.items():
        th, s1, s2 = cov_to_params(c)
        df[f"{label} θ (deg)"] = np.degrees(th)
        df[f"{label} ratio"] = s1 / s2
        df[f"{label} angle error (deg)"] = np.degrees(axis_angle_difference(th, dth))
    return df


# --------------------------------------------------------------------------------------
# MC dropout (Thaler et al. 2021, Sec. 4.3 / Table 4: MCD-x-max and MCD-h)
# --------------------------------------------------------------------------------------

def mcd_point_distribution(mc_points_px, spacing, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """MCD-x-max: mean and covariance of the ``K`` MC-dropout argmax points.

    Parameters
    ----------
    mc_points_px : ndarray
        ``(M, K, N, 2)`` argmax of every dropout pass (original px).
    spacing : ndarray
        ``(M, 2)`` mm per px.
    ddof : int
        1: unbiased sample covariance.

    Returns
    -------
    mean_px : ndarray
        ``(M, N, 2)`` mean point (px), the MCD-x-max prediction.
    cov_mm : ndarray
        ``(M, N, 2, 2)`` covariance (mm^2).
    """
    pts = np.asarray(mc_points_px, dtype=np.float64) * np.asarray(spacing)[:, None, None, :]
    valid = ~np.isnan(pts).any(-1)
    n = valid.sum(1)  # (M, N)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(np.where(valid[..., None], pts, 0.0), 1) / n[..., None]
        d = np.where(valid[..., None], pts - mean[:, None], 0.0)
        cov = np.einsum("mkni,mknj->mnij", d, d) / np.maximum(n - ddof, 1)[..., None, None]
    cov = np.where((n > ddof)[..., None, None], cov, np.nan)
    return mean / np.asarray(spacing)[:, None, :], cov
