"""The in-memory record every dataset loader produces.

One record describes a whole dataset without pixel data: image paths, ids,
every observer's annotations, spacing, splits and (for synthetic data) the
known ground truth. Every notebook and the torch pipeline consume this record,
so the synthetic data and the real datasets share one code path.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lmkcore.errors import ConfigError, DataError


#: Annotation keys that are derived from other annotations rather than made by an observer.
DERIVED_REFERENCES: tuple[str, ...] = ("mean", "challenge", "all_mean")


#: Where the landmark axis lies in the known :attr:`LandmarkDataset.truth` and
#: :attr:`LandmarkDataset.extras` arrays (None: the entry has no landmark axis), used by
#: :meth:`LandmarkDataset.select_landmarks`. Truth entries not listed follow the record's convention
#: that per-image arrays are ``(M, N, ...)``; extras not listed are kept unchanged.
LANDMARK_AXIS: dict[str, int | None] = {
    # truth (synthetic generator)
    "landmarks": 1, "annotation_cov": 1, "landmarks_mm": 1, "tangent_angle": 1, "shape_mm": 1,
    "observer_bias": 2,  # (M, K, N, 2)
    "pose_rotation_deg": None, "pose_scale": None, "pose_translation_mm": None, "edge_to_edge": None,
    # extras
    "annotation_sigma_mm": 0, "annotation_cov_mm": 0, "landmark_kind": 0,  # (N, ...)
    "observer_bias_mm": 1,  # (K, N, 2)
    "challenge_annotations": 1,  # ISBI: (M, N, 2) px
}


def row_indices(all_ids: Sequence[str], ids: Sequence[str] | None) -> np.ndarray:
    """Positions in ``all_ids`` of those ``ids`` that occur there, in the order of ``ids``
    (``None``: every position). Unknown ids are skipped, not an error (cf.
    :meth:`LandmarkDataset.index_of`)."""
    if ids is None:
        return np.arange(len(all_ids))
    pos = {i: k for k, i in enumerate(all_ids)}
    return np.array([pos[i] for i in ids if i in pos], dtype=np.int64)


@dataclass
class LandmarkDataset:
    """A landmark dataset: annotations, geometry and splits (no pixels).

    Attributes
    ----------
    name : str
        Dataset name, e.g. ``"synthetic"``, ``"isbi2015"``, ``"hand"``.
    ids : list of str
        ``M`` image ids, in a fixed order used by every array below.
    image_paths : list of Path
        ``M`` image files, any format SimpleITK (or the loader) reads.
    landmark_names : tuple of str
        ``N`` landmark names, in file order.
    annotations : dict of str to ndarray
        Observer name to ``(M, N, D)`` landmark coordinates in **pixels** of the
        original image, ``(x, y)`` (``(x, y, z)`` in 3D) order, origin at the
        centre of the first pixel. NaN marks a missing landmark (or an image that
        observer did not annotate). Always holds the key :attr:`reference`.
    reference : str
        Key of :attr:`annotations` used as ground truth (``"senior"``,
        ``"junior"``, ``"mean"``, ``"challenge"``...).
    spacing : ndarray
        ``(M, D)`` pixel spacing in mm per pixel along ``(x, y[, z])``.
    image_size : ndarray
        ``(M, D)`` image size in pixels along ``(x, y[, z])``, i.e. width first.
    splits : dict of str to list of str
        Named id lists: ``"train"``, ``"test1"``, ``"test2"``, and for k-fold
        cross-validation ``"cv1/train"``, ``"cv1/val"``, ...
    truth : dict of str to ndarray
        Known ground truth, present for synthetic data only:
        ``"landmarks"`` ``(M, N, D)`` true positions in pixels and
        ``"annotation_cov"`` ``(M, N, D, D)`` declared annotation covariance in
        pixels squared (image frame), plus generator-specific entries.
    extras : dict
        Loader-specific additions (e.g. clinical class labels), documented by
        the loader that sets them.
    """

    name: str
    ids: list[str]
    image_paths: list[Path]
    landmark_names: tuple[str, ...]
    annotations: dict[str, np.ndarray]
    reference: str
    spacing: np.ndarray
    image_size: np.ndarray
    splits: dict[str, list[str]] = field(default_factory=dict)
    truth: dict[str, np.ndarray] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        m, n = len(self.ids), len(self.landmark_names)
        if len(self.image_paths) != m:
            raise DataError(f"{self.name}: {len(self.image_paths)} image paths for {m} ids")
        if len(set(self.ids)) != m:
            raise DataError(f"{self.name}: duplicate image ids")
        if self.reference not in self.annotations:
            raise DataError(
                f"{self.name}: reference {self.reference!r} not among annotations "
                f"{sorted(self.annotations)}"
            )
        d = self.annotations[self.reference].shape[-1]
        for key, arr in self.annotations.items():
            if arr.shape != (m, n, d):
                raise DataError(f"{self.name}: annotations[{key!r}] has shape {arr.shape}, expected {(m, n, d)}")
        for key in ("spacing", "image_size"):
            if np.shape(getattr(self, key)) != (m, d):
                raise DataError(f"{self.name}: {key} has shape {np.shape(getattr(self, key))}, expected {(m, d)}")
        known = set(self.ids)
        for split, split_ids in self.splits.items():
            missing = [i for i in split_ids if i not in known]
            if missing:
                raise DataError(f"{self.name}: split {split!r} names ids without an image: {missing[:5]}")

    @property
    def ndim(self) -> int:
        """Spatial dimension ``D`` (2 or 3)."""
        return self.annotations[self.reference].shape[-1]

    @property
    def landmarks(self) -> np.ndarray:
        """``(M, N, D)`` ground-truth landmarks in pixels (the reference annotation set)."""
        return self.annotations[self.reference]

    @property
    def observers(self) -> list[str]:
        """Names of all annotation sets, reference first."""
        return [self.reference] + sorted(k for k in self.annotations if k != self.reference)

    @property
    def annotators(self) -> list[str]:
        """Annotation sets made by a person (or a simulated one): :attr:`observers` without the
        derived ground-truth variants ``"mean"`` and ``"challenge"``. Inter-observer statistics
        pool these."""
        return [k for k in self.observers if k not in DERIVED_REFERENCES]

    def index_of(self, ids: list[str]) -> np.ndarray:
        """Row indices of ``ids`` in this record."""
        pos = {i: k for k, i in enumerate(self.ids)}
        try:
            return np.array([pos[i] for i in ids], dtype=np.int64)
        except KeyError as err:
            raise DataError(f"{self.name}: unknown image id {err.args[0]!r}") from None

    def subset(self, ids: list[str]) -> "LandmarkDataset":
        """A record holding only ``ids`` (in that order); splits are dropped."""
        idx = self.index_of(list(ids))
        return replace(
            self,
            ids=[self.ids[k] for k in idx],
            image_paths=[self.image_paths[k] for k in idx],
            annotations={k: v[idx] for k, v in self.annotations.items()},
            spacing=self.spacing[idx],
            image_size=self.image_size[idx],
            splits={},
            truth={k: (v[idx] if np.ndim(v) and len(v) == len(self.ids) else v) for k, v in self.truth.items()},
        )

    def select_landmarks(self, indices: Sequence[int]) -> "LandmarkDataset":
        """A record holding only the landmarks ``indices`` (in that order); ``self`` is not changed.

        Parameters
        ----------
        indices : sequence of int
            ``N'`` distinct positions in :attr:`landmark_names` (e.g. the 5 landmarks of the ISBI
            11-observer set, :data:`lmkcore.data.landmarks.ISBI_OBSERVER_LANDMARKS`, which puts them in
            the order L1..L5 of Thaler et al. 2021).

        Returns
        -------
        LandmarkDataset
            ``landmark_names`` ``(N',)``; every annotation set ``(M, N', D)`` px; truth and extras arrays
            with a landmark axis (:data:`LANDMARK_AXIS`; unlisted truth arrays shaped ``(M, N, ...)``)
            cut along it, e.g. ``truth["annotation_cov"]`` ``(M, N', D, D)`` px^2,
            ``truth["observer_bias"]`` ``(M, K, N', 2)``, ``extras["annotation_cov_mm"]`` ``(N', 2, 2)``;
            ``extras["observer_landmarks"]`` re-indexed to the new positions (landmarks not selected
            dropped). Images, spacing, splits and the other extras are kept.

        Raises
        ------
        DataError
            An index outside ``0..N-1``, a repeated index or an empty selection.
        """
        n = len(self.landmark_names)
        idx = [int(i) for i in indices]
        if not idx:
            raise DataError(f"{self.name}: select_landmarks needs at least one landmark index")
        bad = [i for i in idx if not 0 <= i < n]
        if bad:
            raise DataError(f"{self.name}: landmark index {bad[0]} out of range 0..{n - 1} "
                            f"({n} landmarks: {', '.join(self.landmark_names[:5])}...)")
        if len(set(idx)) != len(idx):
            raise DataError(f"{self.name}: repeated landmark index in {idx}")
        sel = np.asarray(idx, dtype=np.int64)
        m = len(self.ids)

        def cut(key: str, value: Any, per_image_default: bool) -> Any:
            if not isinstance(value, np.ndarray):
                return value
            axis = LANDMARK_AXIS.get(key, -1)
            if axis == -1:  # not listed
                axis = 1 if per_image_default and value.ndim >= 2 and value.shape[:2] == (m, n) else None
            if axis is None or value.ndim <= axis or value.shape[axis] != n:
                return value
            return np.take(value, sel, axis=axis)

        extras = {k: cut(k, v, False) for k, v in self.extras.items()}
        if "observer_landmarks" in self.extras:
            new_pos = {old: new for new, old in enumerate(idx)}
            extras["observer_landmarks"] = tuple(new_pos[k] for k in self.extras["observer_landmarks"] if k in new_pos)
        return replace(
            self,
            landmark_names=tuple(self.landmark_names[i] for i in idx),
            annotations={k: v[:, sel] for k, v in self.annotations.items()},
            truth={k: cut(k, v, True) for k, v in self.truth.items()},
            extras=extras,
        )

    def split(self, name: str) -> "LandmarkDataset":
        """The subset named by split ``name`` (e.g. ``"train"``, ``"cv2/val"``)."""
        if name not in self.splits:
            raise DataError(f"{self.name}: unknown split {name!r}; known: {', '.join(sorted(self.splits))}")
        return self.subset(self.splits[name])

    def with_reference(self, reference: str) -> "LandmarkDataset":
        """A new record with another annotation set as ground truth (``self`` is not changed).

        ``"mean"`` is computed on the fly as the mean of ``senior`` and ``junior`` when not stored;
        ``"all_mean"`` as the mean of every observer (:attr:`annotators`, e.g. the 11 of Thaler et al.),
        NaN wherever one of them did not annotate the landmark (ISBI: defined on 100 images x 5
        landmarks only), so it is never a mean of fewer observers than it names.
        """
        annotations = dict(self.annotations)
        if reference == "mean" and "mean" not in annotations:
            if not {"senior", "junior"} <= set(annotations):
                raise DataError(f"{self.name}: reference 'mean' needs senior and junior annotations")
            annotations["mean"] = 0.5 * (annotations["senior"] + annotations["junior"])
        if reference == "all_mean" and "all_mean" not in annotations:
            names = [o for o in self.annotators if o in annotations]
            if len(names) < 3:
                raise DataError(f"{self.name}: reference 'all_mean' (mean of all observers) needs at least 3 "
                                f"observers; this record has {len(names)} ({', '.join(names) or 'none'})")
            annotations["all_mean"] = np.mean(np.stack([annotations[o] for o in names], 0), axis=0)
        if reference not in annotations:
            raise DataError(f"{self.name}: unknown reference annotation set {reference!r}; "
                            f"known: {', '.join(sorted(annotations))}")
        return replace(self, annotations=annotations, reference=reference)

    def with_reference_annotations(self, name: str, points_px: np.ndarray) -> "LandmarkDataset":
        """A new record with one more annotation set ``name`` (``(M, N, D)`` px) used as the reference;
        ``self`` is not changed (e.g. the mean of all observers as ground truth)."""
        annotations = {**self.annotations, name: np.asarray(points_px, dtype=np.float64)}
        return replace(self, annotations=annotations, reference=name)

    def with_splits(self, splits: dict[str, list[str]]) -> "LandmarkDataset":
        """A new record with ``splits`` (name -> ids) added or replaced; ``self`` is not changed."""
        return replace(self, splits={**self.splits, **{k: list(v) for k, v in splits.items()}})


def cv_folds(record: LandmarkDataset, prefix: str = "cv") -> list[tuple[str, str]]:
    """The cross-validation folds of ``record``: ``[("cv1/train", "cv1/val"), ("cv2/train", "cv2/val"), ...]``.

    Folds are numbered from 1 and taken while both ``{prefix}{k}/train`` and ``{prefix}{k}/val`` exist.

    Parameters
    ----------
    record : LandmarkDataset
    prefix : str
        Split name prefix: ``"cv"`` (19-landmark folds) or ``"obs_cv"`` (ISBI 11-observer folds).

    Returns
    -------
    list of (str, str)
        ``(train split, val split)`` per fold, in fold order.

    Raises
    ------
    ConfigError
        When the record has no such fold (the message lists the available splits), when two val splits
        share an image, or when a val image is also in its own fold's train split.
    """
    folds = []
    k = 1
    while f"{prefix}{k}/train" in record.splits and f"{prefix}{k}/val" in record.splits:
        folds.append((f"{prefix}{k}/train", f"{prefix}{k}/val"))
        k += 1
    if not folds:
        raise ConfigError(f"{record.name}: no cross-validation folds {prefix}1/train, {prefix}1/val; "
                          f"available splits: {', '.join(sorted(record.splits)) or 'none'}")
    seen: dict[str, str] = {}
    for tr, va in folds:
        val_ids = record.splits[va]
        leaked = sorted(set(val_ids) & set(record.splits[tr]))
        if leaked:
            raise ConfigError(f"{record.name}: {len(leaked)} images of {va!r} are also in {tr!r} "
                              f"(e.g. {leaked[0]!r}); a fold must not train on its own val images")
        for i in val_ids:
            if i in seen:
                raise ConfigError(f"{record.name}: val splits {seen[i]!r} and {va!r} overlap (e.g. image {i!r}); "
                                  "every image must be held out by one fold only")
            seen[i] = va
    return folds


def has_cv_folds(record: LandmarkDataset, prefix: str = "cv") -> bool:
    """Whether ``record`` has a first fold ``{prefix}1/train`` + ``{prefix}1/val`` (no consistency check;
    :func:`cv_folds` checks)."""
    return f"{prefix}1/train" in record.splits and f"{prefix}1/val" in record.splits
