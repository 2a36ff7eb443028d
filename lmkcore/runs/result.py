"""The result type every run returns: what the notebooks, tables and the explorer read.

:class:`LandmarkResult` is the protocol (structural type); :class:`PointResult` is the base
class that implements its methods once, so point errors are computed in one place
(:func:`lmkcore.analysis.metrics.point_errors`). Results of heatmap experiments
(:class:`lmkcore.runs.experiment.ExperimentResult`) and of PHD-Net
(:class:`lmkcore.runs.phdnet.PHDNetResult`) derive from it.

Conventions: ``M`` evaluated images, ``N`` landmarks; coordinates ``(x, y)`` in pixels of the
original images; spacing ``(M, 2)`` mm/px; covariances in mm^2; errors in mm.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping, Protocol, runtime_checkable

import numpy as np

from lmkcore.analysis.metrics import point_errors
from lmkcore.data.records import row_indices
from lmkcore.errors import ConfigError

__all__ = ["LandmarkResult", "PointResult", "REFERENCES"]

#: What predictions are compared with: the reference annotation set, or the known truth (synthetic).
REFERENCES = ("reference", "truth")


@runtime_checkable
class LandmarkResult(Protocol):
    """What every cached run provides (fields and methods).

    Attributes
    ----------
    key : str
        Cache key of the run.
    ids : list of str
        ``M`` evaluated image ids.
    landmark_names : list of str
    spacing : ndarray ``(M, 2)``
        mm per original pixel.
    reference_px : ndarray ``(M, N, 2)``
        The annotation set used as ground truth (the config's ``reference``).
    truth_px : ndarray ``(M, N, 2)`` or None
        Known true positions (synthetic data only).
    predictions : mapping
        Decoding strategy -> ``(M, N, 2)`` px; ``default_prediction`` names the main one and
        ``alternative_prediction`` a simpler one shown beside it (heatmap argmax, PHD-Net's
        "simple" decoding).
    confidence(prediction) : ndarray ``(M, N)``
        Confidence of a prediction (heatmap maximum; PHD-Net's vote peak).
    fit_cov_mm, fit_ok, learned_cov_mm, heatmap_crops, crop_origin, mc_fit_cov_mm
        Gaussian-heatmap uncertainty; ``None`` (or all-NaN) for methods without Gaussian heatmaps.
    work_size, work_spacing
        Working resolution ``(W, H)`` the network saw and its ``(M, 2)`` mm per working px.
    """

    key: str
    ids: list
    landmark_names: list
    spacing: np.ndarray
    reference_px: np.ndarray
    truth_px: np.ndarray | None
    work_size: tuple
    work_spacing: np.ndarray

    @property
    def predictions(self) -> Mapping[str, np.ndarray]: ...

    def rows(self, ids: list[str] | None) -> np.ndarray: ...

    def errors_mm(self, prediction: str | None = None, against: str = "reference",
                  ids: list[str] | None = None) -> np.ndarray: ...

    def confidence(self, prediction: str | None = None) -> np.ndarray: ...

    def optional_numbers(self, prediction: str | None = None) -> dict[str, np.ndarray]: ...


class PointResult:
    """Methods shared by every result (mixin for the result dataclasses).

    Subclasses define the fields of :class:`LandmarkResult`, the class attributes
    ``DEFAULT_PREDICTION`` and ``ALTERNATIVE_PREDICTION`` and the property ``predictions``.
    """

    DEFAULT_PREDICTION: ClassVar[str] = ""
    ALTERNATIVE_PREDICTION: ClassVar[str] = ""

    @property
    def default_prediction(self) -> str:
        return self.DEFAULT_PREDICTION

    @property
    def alternative_prediction(self) -> str:
        return self.ALTERNATIVE_PREDICTION

    @property
    def predictions(self) -> Mapping[str, np.ndarray]:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def rows(self, ids: list[str] | None) -> np.ndarray:
        """Row indices of ``ids`` (all rows if None); ids not in this result are ignored."""
        return row_indices(self.ids, ids)  # type: ignore[attr-defined]

    def prediction(self, name: str | None = None) -> np.ndarray:
        """``(M, N, 2)`` px of decoding strategy ``name`` (default :attr:`default_prediction`)."""
        name = name or self.default_prediction
        preds = self.predictions
        if name not in preds or preds[name] is None:
            have = [k for k, v in preds.items() if v is not None]
            raise ConfigError(f"no prediction {name!r} in this result; available: {', '.join(have)}")
        return preds[name]

    def reference_points(self, against: str = "reference") -> np.ndarray:
        """``(M, N, 2)`` px of ``against``: ``"reference"`` (the annotation) or ``"truth"`` (synthetic)."""
        if against not in REFERENCES:
            raise ConfigError(f"errors against {against!r}: use one of {REFERENCES}")
        ref = self.reference_px if against == "reference" else self.truth_px  # type: ignore[attr-defined]
        if ref is None:
            raise ConfigError("no known truth in this result (only synthetic data has one)")
        return ref

    def errors_mm(self, prediction: str | None = None, against: str = "reference",
                  ids: list[str] | None = None) -> np.ndarray:
        """``(M, N)`` point errors in mm (Payer et al. 2019, Eq. 5; :func:`~lmkcore.analysis.metrics.point_errors`)
        of ``prediction`` against ``against`` (``"reference"`` or ``"truth"``), for ``ids`` (default all).

        A NaN prediction or reference gives a NaN error.
        """
        pred = self.prediction(prediction)
        ref = self.reference_points(against)
        r = self.rows(ids)
        return point_errors(pred[r], ref[r], self.spacing[r], missing_prediction="ignore")  # type: ignore[attr-defined]

    def offsets_mm(self, prediction: str | None = None, against: str = "reference") -> np.ndarray:
        """``(M, N, 2)`` signed offsets ``prediction - reference`` in mm."""
        return (self.prediction(prediction) - self.reference_points(against)) * self.spacing[:, None, :]  # type: ignore[attr-defined]

    def optional_numbers(self, prediction: str | None = None) -> dict[str, np.ndarray]:
        """Display name -> ``(M, N)`` per-prediction numbers this result has besides errors (ERE,
        PHD-Net confidence...); empty by default."""
        return {}


def as_float_or_none(value: Any) -> np.ndarray | None:
    """``value`` as a float64 array, or None."""
    return None if value is None else np.asarray(value, dtype=np.float64)
