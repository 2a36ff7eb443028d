"""K-fold cross-validation: one experiment per fold, and the folds' predictions pooled into one result.

A record's CV folds are split pairs ``cv1/train``, ``cv1/val``, ``cv2/train``... (ISBI 2015: the 4 folds of
``setup_ann/all_landmarks/cv``, 300 train / 100 val over all 400 images; the synthetic data has the same
layout; the ISBI 11-observer folds are ``obs_cv1/train``...). Each fold is an ordinary
:func:`~lmkcore.runs.experiment.run_experiment` with ``train_split``/``eval_split`` replaced, so every fold's
model and result are cached by the run store like any other experiment. The pooled result predicts every
image exactly once (the fold that held it out) and behaves like any
:class:`~lmkcore.runs.experiment.ExperimentResult` (``errors_mm``, ``rows``, ``ids``...): Thaler et al.
(2021) report "CV jun." (Table 2, Fig. 3, Fig. 9) over the pooled validation images of 4 folds.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from lmkcore.data.records import LandmarkDataset, cv_folds, has_cv_folds
from lmkcore.errors import ConfigError
from lmkcore.runs.experiment import ExperimentConfig, ExperimentResult, run_experiment
from lmkcore.runs.store import RunStore

__all__ = ["cv_folds", "has_cv_folds", "cv_junior_skip_reason", "CrossValidation", "pool_results",
           "run_cross_validation"]

#: Per-image fields of :class:`ExperimentResult` (first axis = evaluated images), concatenated when pooling:
#: the stored arrays except the one per-model array (the learned Sigma), and the calibration fields.
_PER_IMAGE = tuple(a for a in ExperimentResult._ARRAYS if a != "learned_cov_mm") + (
    "ere_mm", "ere_ts_mm", "softmax_confidence", "hottest_px")


def cv_junior_skip_reason(record: LandmarkDataset) -> str | None:
    """Why Thaler et al.'s (2021) "CV jun." experiments (4-fold CV trained and evaluated on the junior
    annotations: Table 2 rows, Fig. 3, Fig. 9) cannot run on ``record``; None when they can.

    They need ``record.reference == "junior"`` (``--param reference=junior``) and CV folds ``cv1``...
    """
    reasons = []
    if record.reference != "junior":
        reasons.append(f"the reference annotation set is {record.reference!r}; CV jun. trains and evaluates on "
                       "the junior annotations")
    if not has_cv_folds(record):
        reasons.append(f"{record.name} has no cv1/train, cv1/val... folds")
    return "; ".join(reasons) or None


def pool_results(results: list[ExperimentResult], folds: list[tuple[str, str]] | None = None) -> ExperimentResult:
    """One :class:`ExperimentResult` over the union of the folds' evaluated images.

    Parameters
    ----------
    results : list of ExperimentResult
        One per fold, each predicting that fold's val split (disjoint image ids).
    folds : list of (str, str), optional
        The folds' ``(train, val)`` split names, recorded in the pooled ``config``.

    Returns
    -------
    ExperimentResult
        Per-image arrays (predictions, Σ̂, crops, spacings, MC samples...) concatenated in fold order,
        so ``ids`` = fold 1's val ids, then fold 2's... Per-model fields, one value per fold in the
        folds' results, are combined as follows:

        * ``learned_cov_mm`` ``(N, 2, 2)``: the **mean over folds** of the learned Σ (mm²); each fold's own
          Σ stays in ``results[k].learned_cov_mm``;
        * ``history``: the folds' training logs one after the other, every entry a copy with ``"fold"``
          (1-based) added;
        * ``train_seconds``: the sum over folds (total training time);
        * ``key``: a hash of the folds' keys; ``config``: fold 1's config with ``train_split`` and
          ``eval_split`` the folds' split names joined by ``"+"`` and ``"folds"`` the list of pairs.

        An optional per-image field (truth, MC dropout, calibration) is None unless every fold has it.

    Raises
    ------
    ConfigError
        When ``results`` is empty, two folds evaluated the same image, or the folds differ in landmarks
        or working size.
    """
    if not results:
        raise ConfigError("pool_results: no fold results to pool")
    ids = [i for r in results for i in r.ids]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ConfigError(f"pool_results: image {dup!r} was evaluated by more than one fold; "
                          "the folds' val splits must be disjoint")
    first = results[0]
    for k, r in enumerate(results[1:], start=2):
        if list(r.landmark_names) != list(first.landmark_names):
            raise ConfigError(f"pool_results: fold {k} has other landmarks than fold 1")
        if tuple(r.work_size) != tuple(first.work_size):
            raise ConfigError(f"pool_results: fold {k} ran at working size {tuple(r.work_size)}, "
                              f"fold 1 at {tuple(first.work_size)}")
    arrays = {}
    for name in _PER_IMAGE:
        parts = [getattr(r, name) for r in results]
        arrays[name] = None if any(p is None for p in parts) else np.concatenate(parts, axis=0)
    history = [dict(h, fold=k) for k, r in enumerate(results, start=1) for h in r.history]
    config = dict(first.config)
    if folds is not None:
        config["train_split"] = "+".join(tr for tr, _ in folds)
        config["eval_split"] = "+".join(va for _, va in folds)
        config["folds"] = [list(f) for f in folds]
    key = "cv-" + hashlib.sha256("+".join(r.key for r in results).encode()).hexdigest()[:16]
    return ExperimentResult(key=key, config=config, ids=ids, landmark_names=list(first.landmark_names),
                            learned_cov_mm=np.mean([r.learned_cov_mm for r in results], axis=0),
                            work_size=tuple(first.work_size), history=history,
                            train_seconds=float(sum(r.train_seconds for r in results)), **arrays)


@dataclass
class CrossValidation:
    """The results of a K-fold cross-validation.

    Attributes
    ----------
    folds : list of (str, str)
        ``(train split, val split)`` per fold (:func:`cv_folds`).
    results : list of ExperimentResult
        One per fold, each predicting its val split (arrays over that fold's ``M_k`` val images).
    """

    folds: list[tuple[str, str]]
    results: list[ExperimentResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.folds) != len(self.results):
            raise ConfigError(f"CrossValidation: {len(self.folds)} folds but {len(self.results)} results")

    @cached_property
    def pooled(self) -> ExperimentResult:
        """One result over the union of the val splits (``M = sum M_k`` images, each once); see
        :func:`pool_results` for how per-model fields (learned Σ: mean over folds) are combined."""
        return pool_results(self.results, self.folds)

    def fold_of(self, image_id: str) -> int:
        """1-based number of the fold whose val split holds ``image_id`` (ConfigError if none)."""
        for k, r in enumerate(self.results, start=1):
            if image_id in r.ids:
                return k
        raise ConfigError(f"image {image_id!r} is in no fold's val split")


def run_cross_validation(record: LandmarkDataset, config: ExperimentConfig, cache_dir: str | Path | RunStore,
                         folds: list[tuple[str, str]] | None = None, device: str = "cpu", progress: bool = True,
                         label: str = "") -> CrossValidation:
    """Train (or load) one model per fold and predict its val split.

    Parameters
    ----------
    record : LandmarkDataset
    config : ExperimentConfig
        Used for every fold with ``train_split``/``eval_split`` replaced by the fold's splits (its own
        splits are ignored); ``reference`` is the annotation set used as ground truth.
    cache_dir : path or RunStore
        Models and results are cached per fold (:func:`~lmkcore.runs.experiment.run_experiment`).
    folds : list of (str, str), optional
        Default :func:`cv_folds` of ``record``.
    device, progress, label
        As for :func:`~lmkcore.runs.experiment.run_experiment`; each fold's label ends in ``fold k/K``.

    Returns
    -------
    CrossValidation
    """
    folds = cv_folds(record) if folds is None else [tuple(f) for f in folds]
    for tr, va in folds:
        for s in (tr, va):
            if s not in record.splits:
                raise ConfigError(f"{record.name}: no split {s!r}; available: {', '.join(sorted(record.splits))}")
    results = []
    for k, (tr, va) in enumerate(folds, start=1):
        fold_config = replace(config, train_split=tr, eval_split=va)
        results.append(run_experiment(record, fold_config, cache_dir, device=device, progress=progress,
                                      label=f"{label or 'CV'} fold {k}/{len(folds)}"))
    return CrossValidation(list(folds), results)
