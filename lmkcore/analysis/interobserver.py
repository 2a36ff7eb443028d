"""Inter-observer annotation distributions (Thaler et al. 2021, Sec. 5.3, Table 3 "Ann." row, Fig. 6).

For every image and landmark a Gaussian is fitted to the ``K`` observers'
annotations; the per-image Gaussians are then aggregated over the images into
one distribution per landmark, described by the ratio
``sigma_maj : sigma_min``, the product ``sigma_maj * sigma_min`` (mm^2) and the
major-axis angle ``theta`` (degrees).

How the paper's Table 3 "Ann." row is computed (maximum-likelihood per-image covariance of the 11
annotations in mm, averaged over the images, angle with y up; :func:`ann_row`) was found by a
search over conventions (:func:`search_ann_conventions`); the search and its result are recorded in
``docs/research/interobserver_ann_row.md`` and asserted in ``tests/test_interobserver.py``. The
paper's numbers are in :data:`lmkcore.reporting.references.THALER_TABLE3_ANN`.

Arrays: points ``(M, K, N, 2)`` ``(x, y)`` (M images, K observers, N
landmarks) in mm unless stated; covariances ``(..., 2, 2)`` in mm^2;
internal angles in radians in the image frame (y down, see
:mod:`lmkcore.analysis.covariance`); angles in tables in degrees as stated per column.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lmkcore.analysis.covariance import cov_to_params
from lmkcore.errors import DataError
from lmkcore.data.landmarks import ISBI_LANDMARK_NAMES, ISBI_OBSERVER_LANDMARKS
from lmkcore.data.records import LandmarkDataset, cv_folds

AGGREGATIONS = ("mean_cov", "mean_params", "ratio_of_means", "median_params")


@dataclass
class ObserverFit:
    """Per-image Gaussians fitted to the observers' annotations.

    Attributes
    ----------
    mean : ndarray
        ``(M, N, 2)`` mean of the annotations (units of the input points).
    cov : ndarray
        ``(M, N, 2, 2)`` covariance (input units squared); NaN where fewer than
        ``min_observers`` annotations exist.
    count : ndarray
        ``(M, N)`` number of annotations used.
    theta, sigma_major, sigma_minor : ndarray
        ``(M, N)`` ellipse parameters of ``cov`` (theta: radians, image frame, y down).
    """

    mean: np.ndarray
    cov: np.ndarray
    count: np.ndarray
    theta: np.ndarray
    sigma_major: np.ndarray
    sigma_minor: np.ndarray


def fit_observer_gaussians(points, ddof: int = 0, min_observers: int = 3) -> ObserverFit:
    """Fit a Gaussian to the ``K`` annotations of every image and landmark.

    Parameters
    ----------
    points : array_like
        ``(M, K, N, 2)`` annotations ``(x, y)`` (mm or px); NaN rows are skipped.
    ddof : int
        0: maximum-likelihood covariance (divide by the count; reproduces the paper),
        1: unbiased sample covariance.
    min_observers : int
        Images/landmarks with fewer annotations get NaN.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 4 or pts.shape[-1] != 2:
        raise DataError(f"points must be (M, K, N, 2), got shape {pts.shape}")
    valid = ~np.isnan(pts).any(-1)  # (M, K, N)
    count = valid.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count[..., None] > 0, np.nansum(pts, 1) / np.maximum(count, 1)[..., None], np.nan)
        d = np.where(valid[..., None], pts - mean[:, None], 0.0)
        cov = np.einsum("mkni,mknj->mnij", d, d) / np.maximum(count - ddof, 1)[..., None, None]
    cov = np.where((count >= max(min_observers, ddof + 1))[..., None, None], cov, np.nan)
    theta, s1, s2 = cov_to_params(cov)
    return ObserverFit(mean, cov, count, theta, s1, s2)


def paper_angle_deg(theta) -> np.ndarray:
    """Image-frame angle (radians, y down) -> the paper's Table 3 angle: degrees, y up, in (-90, 90]."""
    deg = -np.degrees(np.asarray(theta, dtype=np.float64))
    return np.where(deg <= -90.0, deg + 180.0, deg)


def aggregate(cov, how: str = "mean_cov") -> dict[str, np.ndarray]:
    """Aggregate per-image covariances ``(M, N, 2, 2)`` (mm^2) into one row per landmark.

    Parameters
    ----------
    how : str
        ``"mean_cov"`` (the paper's Ann. row: parameters of the mean covariance),
        ``"mean_params"`` (mean of per-image ratio/product/angle), ``"ratio_of_means"``
        (mean sigma_maj / mean sigma_min; product of the means; mean angle),
        ``"median_params"``. NaN images are ignored.

    Returns
    -------
    dict
        ``ratio``, ``product`` (mm^2) and ``theta`` (radians, image frame), each ``(N,)``.
    """
    cov = np.asarray(cov, dtype=np.float64)
    if how not in AGGREGATIONS:
        raise DataError(f"unknown aggregation {how!r}; choose one of {', '.join(AGGREGATIONS)}")
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # landmarks without any image -> NaN
        if how == "mean_cov":
            th, s1, s2 = cov_to_params(np.nanmean(cov, axis=0))
            return {"ratio": s1 / s2, "product": s1 * s2, "theta": th}
        th, s1, s2 = cov_to_params(cov)
        if how == "mean_params":
            return {"ratio": np.nanmean(s1 / s2, 0), "product": np.nanmean(s1 * s2, 0), "theta": np.nanmean(th, 0)}
        if how == "median_params":
            return {"ratio": np.nanmedian(s1 / s2, 0), "product": np.nanmedian(s1 * s2, 0),
                    "theta": np.nanmedian(th, 0)}
        m1, m2 = np.nanmean(s1, 0), np.nanmean(s2, 0)
        return {"ratio": m1 / m2, "product": m1 * m2, "theta": np.nanmean(th, 0)}


def ann_row(points_mm, ddof: int = 0, how: str = "mean_cov") -> pd.DataFrame:
    """Table 3 "Ann." row: ratio, product (mm^2) and theta (deg, y up) per landmark.

    Parameters
    ----------
    points_mm : array_like
        ``(M, K, N, 2)`` annotations in mm.

    Returns
    -------
    DataFrame
        Index ``ratio``, ``product (mm^2)``, ``theta (deg)``; columns ``L1..LN``.
    """
    fit = fit_observer_gaussians(points_mm, ddof=ddof)
    agg = aggregate(fit.cov, how)
    n = agg["ratio"].shape[0]
    return pd.DataFrame([agg["ratio"], agg["product"], paper_angle_deg(agg["theta"])],
                        index=["ratio", "product (mm^2)", "theta (deg)"], columns=[f"L{k + 1}" for k in range(n)])


def search_ann_conventions(points_mm, reference: dict, spacing_mm: float = 0.1) -> pd.DataFrame:
    """Try every candidate convention for the Ann. row against ``reference`` (e.g. the paper's,
    :data:`lmkcore.reporting.references.THALER_TABLE3_ANN`: keys ``ratio``, ``product``, ``theta``).

    Candidates: ``ddof`` in (0, 1) x aggregation in :data:`AGGREGATIONS` x unit
    (mm, px = mm / ``spacing_mm``) x angle frame (y up, y down). For each, the
    number of the 15 printed values reproduced after rounding to 2 decimals and
    the largest absolute deviation are listed, best first.

    Parameters
    ----------
    points_mm : array_like
        ``(M, K, N, 2)`` annotations in mm.
    """
    ref = reference
    pts = np.asarray(points_mm, dtype=np.float64)
    rows = []
    for ddof in (0, 1):
        for unit, scale in (("mm", 1.0), ("px", 1.0 / spacing_mm)):
            cov = fit_observer_gaussians(pts * scale, ddof=ddof).cov
            for how in AGGREGATIONS:
                agg = aggregate(cov, how)
                for frame in ("y up", "y down"):
                    theta = paper_angle_deg(agg["theta"]) if frame == "y up" else -paper_angle_deg(agg["theta"])
                    ours = np.concatenate([agg["ratio"], agg["product"], theta])
                    want = np.concatenate([ref["ratio"], ref["product"], ref["theta"]])
                    dev = np.abs(ours - want)
                    rows.append({"ddof": ddof, "unit": unit, "aggregation": how, "angle frame": frame,
                                 "matches (of 15)": int(np.sum(np.round(ours, 2) == np.round(want, 2))),
                                 "max |dev|": float(dev.max()),
                                 "max |dev| ratio": float(dev[:len(ref["ratio"])].max()),
                                 "max |dev| product": float(dev[len(ref["ratio"]):-len(ref["theta"])].max()),
                                 "max |dev| theta": float(dev[-len(ref["theta"]):].max())})
    return pd.DataFrame(rows).sort_values(["matches (of 15)", "max |dev|"], ascending=[False, True],
                                          ignore_index=True)


def record_observer_points_mm(record: LandmarkDataset, observers: list[str] | None = None,
                              complete: bool = True) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Stack the observers' annotations of a record, in mm.

    Parameters
    ----------
    observers : list of str, optional
        Default: the record's :attr:`~lmkcore.data.records.LandmarkDataset.annotators`.
    complete : bool
        Keep only images and landmarks annotated by every observer (ISBI: the 100
        images x 5 landmarks of the 11-observer set).

    Returns
    -------
    points : ndarray
        ``(M', K, N', 2)`` mm.
    ids : list of str
        The ``M'`` image ids.
    landmarks : ndarray
        ``(N',)`` indices into ``record.landmark_names``.
    """
    observers = list(observers or record.annotators)
    pts = np.stack([record.annotations[k] for k in observers], axis=1) * record.spacing[:, None, None, :]
    valid = ~np.isnan(pts).any(-1)  # (M, K, N)
    if complete:
        lm = np.flatnonzero(valid.all(1).any(0))
        img = np.flatnonzero(valid[:, :, lm].all((1, 2)))
    else:
        lm, img = np.arange(pts.shape[2]), np.arange(pts.shape[0])
    if len(img) == 0 or len(lm) == 0:
        raise DataError(f"{record.name}: no image/landmark is annotated by all of {observers}")
    return pts[img][:, :, lm], [record.ids[i] for i in img], lm


def observer_mean_cv_record(record: LandmarkDataset, landmarks=None) -> tuple[LandmarkDataset, str]:
    """The setting of Thaler et al.'s inter-observer model (Sec. 5.3, Tables 3-4): the landmarks annotated
    by every observer, the mean of all observers as ground truth, 4-fold CV over the images they annotated.

    ISBI 2015: the 5 landmarks of the 11-observer set (``record.extras["observer_landmarks"]``, i.e.
    :data:`~lmkcore.data.landmarks.ISBI_OBSERVER_LANDMARKS`, in the paper's order L1..L5), the 100 images
    of the observer CV folds ``obs_cv1..4/train|val`` (75/25). Synthetic data (every image annotated by
    all 11 simulated observers, the ISBI landmark names): the same 5 landmark indices and the CV folds
    ``cv1..4`` over all images.

    Parameters
    ----------
    record : LandmarkDataset
        With at least 3 observers (:attr:`~lmkcore.data.records.LandmarkDataset.annotators`).
    landmarks : sequence of int, optional
        Landmark indices to keep (default: ``record.extras["observer_landmarks"]``, else
        :data:`~lmkcore.data.landmarks.ISBI_OBSERVER_LANDMARKS` when the record has the ISBI landmarks).

    Returns
    -------
    record : LandmarkDataset
        ``N' = len(landmarks)`` landmarks (:meth:`~lmkcore.data.records.LandmarkDataset.select_landmarks`),
        only the images of the CV folds, reference ``"all_mean"`` (``(M', N', 2)`` px, no NaN); the other
        splits are kept where they hold these images.
    prefix : str
        Split prefix of the CV folds, ``"obs_cv"`` or ``"cv"`` (for
        :func:`lmkcore.data.records.cv_folds`).

    Raises
    ------
    DataError
        No default landmark set, fewer than 3 observers, or an observer missing on a fold image.
    ConfigError
        No CV folds (from :func:`~lmkcore.data.records.cv_folds`).
    """

    if landmarks is None:
        landmarks = record.extras.get("observer_landmarks")
    if landmarks is None:
        if tuple(record.landmark_names) != tuple(ISBI_LANDMARK_NAMES):
            raise DataError(f"{record.name}: no 11-observer landmark set (extras['observer_landmarks']) and not the "
                            f"ISBI 2015 landmarks; pass landmarks= explicitly")
        landmarks = ISBI_OBSERVER_LANDMARKS
    prefix = "obs_cv" if "obs_cv1/train" in record.splits else "cv"
    folds = cv_folds(record, prefix)
    in_folds = {i for pair in folds for s in pair for i in record.splits[s]}
    keep = [i for i in record.ids if i in in_folds]
    sub = record.select_landmarks(list(landmarks)).with_reference("all_mean")
    splits = {k: [i for i in v if i in in_folds] for k, v in sub.splits.items()}
    sub = sub.subset(keep).with_splits({k: v for k, v in splits.items() if v})
    missing = np.isnan(sub.landmarks).any(-1)  # (M', N')
    if missing.any():
        m, n = np.argwhere(missing)[0]
        absent = [o for o in sub.annotators if np.isnan(sub.annotations[o][m, n]).any()]
        raise DataError(f"{record.name}: the mean of all observers is undefined on {int(missing.sum())} image/landmark "
                        f"pairs of the {prefix} folds, e.g. image {sub.ids[m]!r} landmark {sub.landmark_names[n]!r} "
                        f"(not annotated by {', '.join(absent)})")
    return sub, prefix


def per_image_summary(cov, angle: str = "paper") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Mean and SD over images of the per-image ratio, product (mm^2) and angle (deg).

    The paper's Sigma-hat-fit rows of Table 3 ("mean +- SD"). ``cov``: ``(M, N, 2, 2)``
    mm^2, NaN images ignored. ``angle``: ``"paper"`` (deg, y up) or ``"image"`` (deg, y down).
    The angle mean is the plain arithmetic mean of angles in (-90, 90], as printed by
    the paper (e.g. -0.88 +- 35.90 for an isotropic landmark).
    """
    th, s1, s2 = cov_to_params(cov)
    deg = paper_angle_deg(th) if angle == "paper" else np.degrees(th)
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for key, v in (("ratio", s1 / s2), ("product", s1 * s2), ("theta", deg)):
            ok = np.isfinite(v)
            out[key] = (np.nanmean(np.where(ok, v, np.nan), 0), np.nanstd(np.where(ok, v, np.nan), 0))
    return out


def table3(ann_cov, fit_cov, target_cov, landmark_names, extra: dict | None = None) -> pd.DataFrame:
    """Table 3 analogue: ratio, product (mm^2), theta (deg, y up) for Ann., Sigma-hat-fit and Sigma-target.

    Parameters
    ----------
    ann_cov : ndarray
        ``(M, N, 2, 2)`` per-image observer covariances (mm^2), aggregated with ``"mean_cov"``.
    fit_cov : ndarray
        ``(M', N, 2, 2)`` Sigma-hat (mm^2), reported as mean +- SD over images.
    target_cov : ndarray
        ``(N, 2, 2)`` learned Sigma (mm^2).
    extra : dict, optional
        More single-covariance rows: label -> ``(N, 2, 2)`` mm^2 (e.g. the declared covariance).

    Returns
    -------
    DataFrame
        MultiIndex rows ``(metric, method)``, string cells (``"m +- s"`` where applicable).
    """
    names = [f"L{k + 1} {n}" for k, n in enumerate(landmark_names)]
    ann = aggregate(ann_cov, "mean_cov")
    fit = per_image_summary(fit_cov)
    singles = {"Ann.": ann}
    th, s1, s2 = cov_to_params(target_cov)
    singles_after = {"Σ-target": {"ratio": s1 / s2, "product": s1 * s2, "theta": th}}
    for label, c in (extra or {}).items():
        th, s1, s2 = cov_to_params(c)
        singles_after[label] = {"ratio": s1 / s2, "product": s1 * s2, "theta": th}
    rows, index = [], []
    for metric, key in (("ratio σmaj:σmin", "ratio"), ("product σmaj·σmin (mm²)", "product"), ("θ (deg)", "theta")):
        def fmt(v):
            return [f"{x:.2f}" for x in v]
        for label, d in singles.items():
            v = paper_angle_deg(d["theta"]) if key == "theta" else d[key]
            rows.append(fmt(v)); index.append((metric, label))
        m, s = fit[key]
        rows.append([f"{a:.2f} ± {b:.2f}" for a, b in zip(m, s)]); index.append((metric, "Σ̂-fit"))
        for label, d in singles_after.items():
            v = paper_angle_deg(d["theta"]) if key == "theta" else d[key]
            rows.append(fmt(v)); index.append((metric, label))
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["metric", "method"]), columns=names)


def parameter_table(entries: dict, landmark_names) -> pd.DataFrame:
    """Table 4 layout: per method, ratio, product (mm^2), theta (deg, y up) and optionally PE (mm).

    Parameters
    ----------
    entries : dict
        label -> ``{"cov": ..., "pe": ..., "aggregate": bool}``. ``cov`` ``(N, 2, 2)`` gives single
        values; ``(M, N, 2, 2)`` gives mean +- SD over images of the per-image values, or -- with
        ``"aggregate": True`` -- the parameters of the mean covariance (the Ann. convention).
        ``pe`` ``(M, N)`` mm (optional) gives a ``PE (mm)`` row, mean +- SD.

    Returns
    -------
    DataFrame
        MultiIndex rows ``(method, metric)``, string cells.
    """
    rows, index = [], []
    for label, e in entries.items():
        cov = np.asarray(e["cov"], dtype=np.float64)
        if cov.ndim == 3 or e.get("aggregate"):
            agg = aggregate(cov, "mean_cov") if cov.ndim == 4 else dict(zip(("theta", "s1", "s2"), cov_to_params(cov)))
            if "s1" in agg:
                agg = {"ratio": agg["s1"] / agg["s2"], "product": agg["s1"] * agg["s2"], "theta": agg["theta"]}
            vals = {"ratio": agg["ratio"], "product": agg["product"], "theta": paper_angle_deg(agg["theta"])}
            cells = {k: [f"{x:.2f}" for x in v] for k, v in vals.items()}
        else:
            s = per_image_summary(cov)
            cells = {k: [f"{a:.2f} ± {b:.2f}" for a, b in zip(*s[k])] for k in ("ratio", "product", "theta")}
        for key, metric in (("ratio", "σmaj:σmin"), ("product", "σmaj·σmin (mm²)"), ("theta", "θ (deg)")):
            rows.append(cells[key]); index.append((label, metric))
        if e.get("pe") is not None:
            pe = np.asarray(e["pe"], dtype=np.float64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                rows.append([f"{a:.2f} ± {b:.2f}" for a, b in zip(np.nanmean(pe, 0), np.nanstd(pe, 0))])
            index.append((label, "PE (mm)"))
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["method", "metric"]),
                        columns=list(landmark_names))
