"""Dataset-level statistics: sizes, splits, inter-observer spread per landmark."""
from __future__ import annotations

import numpy as np
import pandas as pd

from lmkcore.analysis.covariance import axis_angle_difference, cov_to_params, empirical_cov
from lmkcore.analysis.metrics import point_errors
from lmkcore.data.records import LandmarkDataset


def dataset_summary(record: LandmarkDataset) -> pd.DataFrame:
    """One-column table: images, landmarks, observers, sizes, spacing and split sizes."""
    rows = {
        "images": len(record.ids),
        "landmarks": len(record.landmark_names),
        "observers": ", ".join(record.observers),
        "reference": record.reference,
        "image size (W x H px)": " / ".join(sorted({f"{w} x {h}" for w, h in record.image_size.astype(int)})),
        "spacing (mm/px, x)": f"{np.min(record.spacing[:, 0]):.4g} - {np.max(record.spacing[:, 0]):.4g}",
        "spacing (mm/px, y)": f"{np.min(record.spacing[:, 1]):.4g} - {np.max(record.spacing[:, 1]):.4g}",
    }
    for name, ids in record.splits.items():
        rows[f"split {name}"] = len(ids)
    df = pd.DataFrame({"value": [str(v) for v in rows.values()]}, index=list(rows))
    df.index.name = record.name
    return df


def observer_offsets_mm(record: LandmarkDataset, observers: list[str] | None = None) -> np.ndarray:
    """Offsets of each observer from the per-image observer mean, in mm.

    Returns
    -------
    ndarray
        ``(M, K, N, 2)`` ``(x, y)`` offsets in mm; NaN where an observer did not
        annotate that image/landmark.
    """
    observers = observers or record.annotators
    pts = np.stack([record.annotations[k] for k in observers], axis=1)  # (M, K, N, 2) px
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(pts, axis=1, keepdims=True)
    return (pts - mean) * record.spacing[:, None, None, :]


def pooled_observer_cov_mm(record: LandmarkDataset, observers: list[str] | None = None, min_observers: int = 3) -> np.ndarray:
    """Per-landmark covariance of observer offsets pooled over images, mm^2, ``(N, 2, 2)``.

    For each image and landmark with at least ``min_observers`` annotations the
    unbiased sample covariance of the annotations is computed; these are then
    averaged over images (NaN where no image qualifies).
    """
    observers = observers or record.annotators
    pts = np.stack([record.annotations[k] for k in observers], axis=1) * record.spacing[:, None, None, :]
    count = (~np.isnan(pts).any(-1)).sum(axis=1)  # (M, N)
    cov = empirical_cov(np.moveaxis(pts, 1, 2), axis=-2)  # (M, N, 2, 2)
    ok = count >= min_observers
    cov = np.where(ok[..., None, None], cov, np.nan)
    with np.errstate(invalid="ignore"):
        return np.nanmean(cov, axis=0)


def observer_statistics(record: LandmarkDataset) -> pd.DataFrame:
    """Per-landmark inter-observer spread, and the declared truth where known.

    Columns (mm and degrees; angles in the image frame, y down, axis modulo 180):
    ``senior-junior (mm)`` mean distance between senior and junior (if both exist);
    ``obs sigma_maj``, ``obs sigma_min``, ``obs theta`` from the pooled observer
    covariance (:func:`pooled_observer_cov_mm`, needs >= 3 observers); and for
    synthetic data ``true sigma_maj``, ``true sigma_min``, ``true theta`` from the
    mean declared annotation covariance, with ``angle error (deg)`` between the
    observed and declared major axes.
    """
    df = pd.DataFrame(index=pd.Index(record.landmark_names, name="landmark"))
    if {"senior", "junior"} <= set(record.annotations):
        d = point_errors(record.annotations["senior"], record.annotations["junior"], record.spacing,
                         missing_prediction="ignore")
        df["senior-junior (mm)"] = np.nanmean(d, axis=0)
    if len(record.annotators) >= 3:
        th, s1, s2 = cov_to_params(pooled_observer_cov_mm(record))
        df["obs sigma_maj"], df["obs sigma_min"], df["obs theta"] = s1, s2, np.degrees(th)
    if "annotation_cov" in record.truth:
        sp = record.spacing[:, None, :]
        cov_mm = record.truth["annotation_cov"] * sp[..., :, None] * sp[..., None, :]
        th_t, t1, t2 = cov_to_params(cov_mm.mean(axis=0))
        df["true sigma_maj"], df["true sigma_min"], df["true theta"] = t1, t2, np.degrees(th_t)
        if "obs theta" in df:
            df["angle error (deg)"] = np.degrees(axis_angle_difference(np.radians(df["obs theta"]), th_t))
    return df
