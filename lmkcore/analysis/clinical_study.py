"""Clinical-classification studies of notebook 05 (Thaler et al. 2021, Sec. 5.5, Fig. 9).

* :func:`accuracy_vs_fraction`: accuracy over the images kept when they are
  sorted by classification entropy (the Fig. 9 curves).
* :func:`fig9_summary`: per-measure summary of those curves.
* :func:`find_real_annotations`: the 400 real ISBI senior/junior annotations and
  the 11-observer set, from a loaded ``isbi2015`` record or from the shared
  annotation files (no images needed).
* :func:`observer_spread_gaussians`: per-image landmark Gaussians implied by the
  observers' spread, for a pure annotation uncertainty study.

Coordinates are ``(x, y)`` in mm unless a name says ``_px``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Sequence

import numpy as np

from lmkcore.analysis.clinical import MEASURES, UNDEFINED, classify_all
from lmkcore.analysis.covariance import empirical_cov
from lmkcore.errors import ConfigError, DataError
from lmkcore.data.landmarks import ISBI_LANDMARK_NAMES, ISBI_OBSERVER_LANDMARKS, ISBI_SPACING_MM
from lmkcore.analysis.propagation import GaussianLandmarks

__all__ = [
    "entropy_order",
    "accuracy_vs_fraction",
    "fig9_summary",
    "agreement_table",
    "RealAnnotations",
    "shared_annotation_dir",
    "find_real_annotations",
    "observer_spread_gaussians",
    "pair_pooled_cov",
    "classes_of",
    "is_isbi_layout",
    "fig9_figure",
]


# --------------------------------------------------------------------------------------
# Fig. 9 curves
# --------------------------------------------------------------------------------------
def entropy_order(entropy: np.ndarray) -> np.ndarray:
    """Image indices from the lowest to the highest entropy (stable: ties keep image order)."""
    return np.argsort(np.asarray(entropy, dtype=np.float64), kind="stable")


def accuracy_vs_fraction(correct: np.ndarray, entropy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fig. 9 curve: accuracy (%) of the ``k`` least uncertain images, ``k = 1..M``.

    Parameters
    ----------
    correct : ndarray
        ``(M,)`` bool, the classification of each image is right.
    entropy : ndarray
        ``(M,)`` classification entropy (any unit) giving the order.

    Returns
    -------
    (fraction, accuracy)
        ``fraction[k-1] = k / M`` (images considered, 0..1) and
        ``accuracy[k-1]`` = 100 x mean of ``correct`` over the ``k`` images of
        lowest entropy.
    """
    correct = np.asarray(correct, dtype=bool)
    entropy = np.asarray(entropy)
    if correct.shape != entropy.shape or correct.ndim != 1 or correct.size == 0:
        raise ConfigError(f"correct and entropy must be 1-D of the same non-zero length; got {correct.shape}, {entropy.shape}")
    order = entropy_order(entropy)
    k = np.arange(1, correct.size + 1)
    return k / correct.size, 100.0 * np.cumsum(correct[order]) / k


def _at(frac: np.ndarray, acc: np.ndarray, f: float) -> float:
    k = max(int(np.ceil(f * len(frac))), 1)
    return float(acc[k - 1])


def fig9_summary(predicted: Dict[str, np.ndarray], reference: Dict[str, np.ndarray], entropy: Dict[str, np.ndarray],
                 other: Dict[str, np.ndarray] | None = None, fractions: Sequence[float] = (0.25, 0.5, 1.0),
                 other_label: str = "junior", label: str = "model"):
    """Per-measure summary of the Fig. 9 curves as a DataFrame (accuracies in %).

    Columns ``<label> acc @f`` (``predicted`` vs ``reference`` over the fraction
    ``f`` of images with the lowest entropy), ``<other_label> acc @f`` (``other``
    vs ``reference`` in the same order), ``mean entropy`` (nats, over the
    images where it is defined), ``entropy AUC`` (probability that a
    misclassified image has a higher entropy than a correct one; 0.5 =
    uninformative, NaN if all are right or all wrong) and ``undefined`` (images
    whose predicted class is undefined, e.g. a degenerate landmark; they count
    as wrong and sort last).
    """
    import pandas as pd

    rows = {}
    for m in MEASURES:
        if m not in predicted:
            continue
        ok = np.asarray(predicted[m]) == np.asarray(reference[m])
        frac, acc = accuracy_vs_fraction(ok, entropy[m])
        row = {f"{label} acc @{f:g}": _at(frac, acc, f) for f in fractions}
        if other is not None:
            ok_o = np.asarray(other[m]) == np.asarray(reference[m])
            _, acc_o = accuracy_vs_fraction(ok_o, entropy[m])
            row.update({f"{other_label} acc @{f:g}": _at(frac, acc_o, f) for f in fractions})
        ent = np.asarray(entropy[m], dtype=np.float64)
        fin = np.isfinite(ent)
        row["mean entropy"] = float(np.mean(ent[fin])) if fin.any() else float("nan")
        row["entropy AUC"] = _auc(ent[~ok & fin], ent[ok & fin])
        row["undefined"] = int(np.count_nonzero(np.asarray(predicted[m]) == UNDEFINED))
        rows[m] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "measure"
    return df


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(pos > neg) + 0.5 P(pos == neg) (Mann-Whitney; :func:`lmkcore.analysis.calibration.roc_auc`), NaN if
    either group is empty."""
    from lmkcore.analysis.calibration import roc_auc

    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    scores = np.concatenate([np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)])
    return roc_auc(scores, np.arange(scores.size) < len(pos))


def agreement_table(classes: Dict[str, Dict[str, np.ndarray]], reference: str):
    """Class agreement (%) of every annotation set with ``reference``, per measure.

    ``classes``: label -> {measure: (M,) int}. Rows: measures; columns: the
    labels other than ``reference`` (agreement over the images where both
    classes are defined). ``df.attrs["undefined"]`` counts, per measure, the
    images where some label's class is :data:`~lmkcore.analysis.clinical.UNDEFINED`
    (:func:`lmkcore.analysis.clinical.class_count_table` shows them per label).
    """
    import pandas as pd

    ref = classes[reference]
    data: dict = {}
    undefined = {m: np.asarray(ref[m]) == UNDEFINED for m in MEASURES}
    for lab, c in classes.items():
        if lab == reference:
            continue
        row = {}
        for m in MEASURES:
            a, b = np.asarray(c[m]), np.asarray(ref[m])
            both = (a != UNDEFINED) & (b != UNDEFINED)
            undefined[m] = undefined[m] | (a == UNDEFINED)
            row[m] = 100.0 * float(np.mean(a[both] == b[both])) if both.any() else float("nan")
        data[lab] = row
    df = pd.DataFrame(data)
    df.attrs["undefined"] = {m: int(np.count_nonzero(u)) for m, u in undefined.items()}
    df.index.name = f"measure (agreement with {reference}, %)"
    return df


# --------------------------------------------------------------------------------------
# real annotations without images
# --------------------------------------------------------------------------------------
@dataclass
class RealAnnotations:
    """Real ISBI 2015 annotations in mm (no images).

    Attributes
    ----------
    ids : list of str
        The images with both senior and junior annotations.
    senior_mm, junior_mm : ndarray
        ``(M, 19, 2)`` mm.
    observer_ids : list of str
        The (100) images of the 11-observer set (empty if absent).
    observers_mm : ndarray or None
        ``(len(observer_ids), 11, 5, 2)`` mm; observers senior, junior, ann1..ann9;
        landmarks :data:`~lmkcore.data.landmarks.ISBI_OBSERVER_LANDMARKS`.
    landmark_indices : tuple of int
        0-based ISBI indices of the observer set's 5 landmarks.
    source : str
        Where they came from.
    """

    ids: list
    senior_mm: np.ndarray
    junior_mm: np.ndarray
    observer_ids: list = field(default_factory=list)
    observers_mm: np.ndarray | None = None
    landmark_indices: tuple = tuple(ISBI_OBSERVER_LANDMARKS)
    source: str = ""

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        pos = {i: k for k, i in enumerate(self.ids)}
        return np.array([pos[i] for i in ids], dtype=np.int64)


def shared_annotation_dir() -> list[Path]:
    """Candidate ``setup_ann`` folders: ``$LMKCORE_SHARED_DATA/HeatmapUncertainty/setup_ann``
    (the variable names the shared ``data`` folder; ``run_all.sh`` sets it to ``../shared/data`` beside
    the checkout when unset). Never looked up relative to the installed package."""
    out = []
    env = os.environ.get("LMKCORE_SHARED_DATA")
    if env:
        out.append(Path(env).expanduser() / "HeatmapUncertainty" / "setup_ann")
    return out


def _from_record(record) -> RealAnnotations | None:
    ann = record.annotations
    if not {"senior", "junior"} <= set(ann):
        return None
    both = ~(np.isnan(ann["senior"]).any(axis=(1, 2)) | np.isnan(ann["junior"]).any(axis=(1, 2)))
    sp = record.spacing[:, None, :]
    ids = [i for i, b in zip(record.ids, both) if b]
    senior, junior = (ann["senior"] * sp)[both], (ann["junior"] * sp)[both]
    names = [f"ann{k}" for k in range(1, 10)]
    obs_ids, obs = [], None
    if all(n in ann for n in names):
        idx = list(ISBI_OBSERVER_LANDMARKS)
        stack = np.stack([ann[o][:, idx] * sp for o in ["senior", "junior"] + names], 1)  # (M, 11, 5, 2)
        have = ~np.isnan(stack).any(axis=(1, 2, 3))
        obs_ids = [i for i, h in zip(record.ids, have) if h]
        obs = stack[have] if have.any() else None
    return RealAnnotations(ids, senior, junior, obs_ids, obs, tuple(ISBI_OBSERVER_LANDMARKS),
                           f"record {record.name!r}")


def _from_files(setup_ann: Path) -> RealAnnotations | None:
    from lmkcore.data.datasets.isbi import find_observer_folder, load_isbi_observers, read_csv_setup

    folder = setup_ann / "all_landmarks"
    if not ((folder / "all_senior.csv").is_file() and (folder / "all_junior.csv").is_file()):
        return None
    sets = read_csv_setup(folder, spacing=ISBI_SPACING_MM)
    (ids_s, sen), (ids_j, jun) = sets["senior"], sets["junior"]
    pos_j = {i: k for k, i in enumerate(ids_j)}
    ids = [i for k, i in enumerate(ids_s) if i in pos_j and not np.isnan(sen[k]).any() and not np.isnan(jun[pos_j[i]]).any()]
    ks = {i: k for k, i in enumerate(ids_s)}
    senior = sen[[ks[i] for i in ids]] * ISBI_SPACING_MM
    junior = jun[[pos_j[i] for i in ids]] * ISBI_SPACING_MM
    obs_ids, obs, lms = [], None, tuple(ISBI_OBSERVER_LANDMARKS)
    if find_observer_folder(setup_ann) is not None:
        o = load_isbi_observers(setup_ann)
        obs_ids, obs, lms = list(o.ids), o.observers * ISBI_SPACING_MM, tuple(o.landmark_indices)
    return RealAnnotations(ids, senior, junior, obs_ids, obs, lms, str(setup_ann))


def find_real_annotations(dataset: str, record=None, annotations_dir: str | os.PathLike | None = None
                          ) -> RealAnnotations | None:
    """The real ISBI 2015 senior/junior (and 11-observer) annotations, or None when absent.

    ``annotations_dir`` (a ``setup_ann`` folder holding ``all_landmarks/all_senior.csv``
    and ``all_junior.csv``, e.g. ``HeatmapUncertainty/setup_ann``): read from there; a
    folder without those files is a :class:`~lmkcore.errors.DataError`. Otherwise, for
    ``dataset == "isbi2015"`` they are taken from the loaded ``record``, else from the
    first of :func:`shared_annotation_dir` that holds them (the 11-observer set from its
    ``5_landmarks``).
    """
    if annotations_dir is not None:
        folder = Path(annotations_dir).expanduser()
        found = _from_files(folder) if folder.is_dir() else None
        if found is None:
            raise DataError(f"{folder}: not a 'setup_ann' folder with all_landmarks/all_senior.csv and "
                            f"all_landmarks/all_junior.csv (the ISBI 2015 annotations of Thaler et al.)")
        return found
    if dataset == "isbi2015" and record is not None:
        return _from_record(record)
    for cand in shared_annotation_dir():
        if cand.is_dir():
            found = _from_files(cand)
            if found is not None:
                return found
    return None


def observer_spread_gaussians(observers_mm: np.ndarray, senior_mm: np.ndarray, junior_mm: np.ndarray,
                              landmark_indices: Sequence[int], min_sd_mm: float = 0.0,
                              other_cov_mm: np.ndarray | None = None) -> GaussianLandmarks:
    """Per-image Gaussians of all 19 landmarks implied by the observers' spread (mm).

    * The landmarks of the observer set (``landmark_indices``, 5 on ISBI):
      mean and unbiased covariance of the ``K`` observers
      (``observers_mm`` ``(M, K, L, 2)``).
    * Every other landmark: mean of senior and junior, isotropic covariance
      ``|s - j|^2 / 4 * I``: the unbiased per-axis variance of the two points,
      averaged over x and y (a 2-point estimate has a single direction, so a
      full covariance would be rank 1; the isotropic form keeps the observed
      magnitude without inventing a direction). It is 0 where the two agree.

    ``other_cov_mm`` ``(19, 2, 2)`` mm^2, if given, replaces the per-image
    2-point covariance of the other landmarks by a per-landmark one (e.g.
    :func:`pair_pooled_cov`), so that their uncertainty no longer depends on
    whether senior and junior happen to disagree on this image.
    ``min_sd_mm`` adds ``min_sd_mm^2 * I`` everywhere (default 0).
    """
    observers_mm = np.asarray(observers_mm, dtype=np.float64)
    senior_mm, junior_mm = np.asarray(senior_mm, np.float64), np.asarray(junior_mm, np.float64)
    m = senior_mm.shape[0]
    if observers_mm.shape[0] != m or junior_mm.shape != senior_mm.shape:
        raise ConfigError("observers_mm, senior_mm and junior_mm must cover the same images")
    mean = 0.5 * (senior_mm + junior_mm)
    d2 = np.sum((senior_mm - junior_mm) ** 2, -1)
    cov = (d2 / 4.0)[..., None, None] * np.eye(2)
    if other_cov_mm is not None:
        cov = np.broadcast_to(np.asarray(other_cov_mm, dtype=np.float64), cov.shape).copy()
    idx = list(landmark_indices)
    mean[:, idx] = observers_mm.mean(1)
    cov[:, idx] = empirical_cov(observers_mm, axis=1)
    cov = cov + min_sd_mm**2 * np.eye(2)
    return GaussianLandmarks(mean, cov)


def pair_pooled_cov(senior_mm: np.ndarray, junior_mm: np.ndarray) -> np.ndarray:
    """Per-landmark covariance (mm^2) of ONE observer implied by senior-junior differences.

    ``Cov(s - j) / 2`` over the images (unbiased; the mean offset between the
    two observers is removed): for two independent observers with the same
    covariance Sigma around the truth, ``Cov(s - j) = 2 Sigma``. Input
    ``(M, N, 2)`` mm, output ``(N, 2, 2)``.
    """
    d = np.asarray(senior_mm, np.float64) - np.asarray(junior_mm, np.float64)
    return empirical_cov(d, axis=0) / 2.0


def classes_of(landmarks_mm: np.ndarray) -> Dict[str, np.ndarray]:
    """Classes of ``(M, 19, 2)`` mm landmark sets (thin wrapper of :func:`lmkcore.analysis.clinical.classify_all`)."""
    return classify_all(landmarks_mm)


def is_isbi_layout(landmark_names: Sequence[str]) -> bool:
    """True when the landmarks are the 19 ISBI landmarks in ISBI order (clinical measures apply)."""
    return tuple(landmark_names) == tuple(ISBI_LANDMARK_NAMES)


def fig9_figure(lines: Dict[str, tuple], entropy: Dict[str, np.ndarray], title: str = ""):
    """Fig. 9 analogue: one panel per measure, accuracy (%) vs fraction of images (%) sorted by entropy.

    Parameters
    ----------
    lines : dict
        label -> ``(correct, style)`` or ``(correct, style, entropy)``: ``correct``
        maps measure -> ``(M,)`` bool, ``style`` a dict of matplotlib line
        keywords (e.g. ``{"ls": "--"}``); a third element gives that line its
        own ordering.
    entropy : dict
        measure -> ``(M,)`` entropy giving the (shared) order of the lines.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(12, 5.5), sharex=True)
    for ax, m in zip(axes.ravel(), MEASURES):
        for label, spec in lines.items():
            correct, style = spec[0], spec[1]
            order_by = spec[2] if len(spec) > 2 else entropy
            frac, acc = accuracy_vs_fraction(correct[m], order_by[m])
            ax.plot(100 * frac, acc, label=label, lw=1.2, **style)
        ax.set_title(m)
        ax.set_ylim(max(0, ax.get_ylim()[0]), 101)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("images considered (%)")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (%)")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
