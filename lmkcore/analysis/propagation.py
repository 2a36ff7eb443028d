"""Propagate landmark uncertainty into clinical classes by sampling (Thaler et al. 2021, Sec. 5.5).

For every image, ``S`` landmark sets are drawn from each landmark's predicted
distribution, every set is classified with the 8 ISBI measures
(:mod:`lmkcore.analysis.clinical`), and the class frequencies give per image and measure
the class probabilities, the most probable class and the entropy of the class
distribution.

Two per-landmark distributions are provided, both in **millimetres** in the
image frame (x right, y down):

* :class:`GaussianLandmarks`: a 2-D Gaussian per landmark (mean, covariance
  in mm / mm^2), e.g. the fitted Sigma-hat of a heatmap network;
* :class:`HeatmapLandmarks`: a non-negative heatmap (crop) per landmark,
  normalised to a probability mass over its pixels and sampled directly
  (pixel by inverse CDF, then uniform within the pixel).

Undefined landmarks (a degenerate heatmap: flat, all-zero or non-finite, so
its prediction is NaN) are carried as NaN samples; every measure that uses
them is then undefined for that image (:data:`lmkcore.analysis.clinical.UNDEFINED`),
never a confident class: :class:`ClassUncertainty` holds the fraction of
undefined samples, most probable class -1 and entropy NaN where a measure is
undefined for all samples, and :meth:`ClassUncertainty.undefined_counts` counts them.

Any object with ``n_images``, ``n_landmarks`` and ``sample(index, n_samples,
rng) -> (S, N, 2) mm`` can be passed to :func:`propagate`.

Determinism: image ``i`` always uses the ``i``-th child of
``np.random.SeedSequence(seed)``, so its samples (and probabilities) do not
depend on the chunk size or on which other images are processed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Protocol, Sequence

import numpy as np

from lmkcore.analysis.clinical import MEASURES, N_CLASSES, UNDEFINED, class_entropy, class_probabilities
from lmkcore.errors import ConfigError

__all__ = [
    "LandmarkDistribution",
    "GaussianLandmarks",
    "HeatmapLandmarks",
    "ClassUncertainty",
    "gaussian_from_result",
    "heatmap_from_result",
    "image_rngs",
    "sample_landmarks",
    "propagate",
    "cholesky_2x2",
]

#: Sample-instances (samples x images) per chunk handed to the classifier.
_CHUNK = 1 << 17


class LandmarkDistribution(Protocol):
    """A per-image, per-landmark distribution of 2-D positions in mm."""

    n_images: int
    n_landmarks: int

    def sample(self, index: int, n_samples: int, rng: np.random.Generator) -> np.ndarray:
        """``(n_samples, n_landmarks, 2)`` positions in mm of image ``index``."""


# --------------------------------------------------------------------------------------
# Gaussian
# --------------------------------------------------------------------------------------
def cholesky_2x2(cov: np.ndarray) -> np.ndarray:
    """Lower-triangular factor ``L`` with ``L L^T = cov`` for PSD 2x2 matrices ``(..., 2, 2)``.

    Closed form, vectorised, and defined for singular (e.g. zero) covariances,
    where ``numpy.linalg.cholesky`` fails: ``l11 = sqrt(a)``, ``l21 = b / l11``
    (0 when ``a == 0``), ``l22 = sqrt(max(c - l21^2, 0))``. Units: sqrt of the
    input's (mm for mm^2).
    """
    cov = np.asarray(cov, dtype=np.float64)
    a, b, c = cov[..., 0, 0], 0.5 * (cov[..., 0, 1] + cov[..., 1, 0]), cov[..., 1, 1]
    l11 = np.sqrt(np.maximum(a, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        l21 = np.where(l11 > 0, b / np.where(l11 > 0, l11, 1.0), 0.0)
    l22 = np.sqrt(np.maximum(c - l21**2, 0.0))
    out = np.zeros(cov.shape, dtype=np.float64)
    out[..., 0, 0], out[..., 1, 0], out[..., 1, 1] = l11, l21, l22
    return out


@dataclass
class GaussianLandmarks:
    """One 2-D Gaussian per image and landmark, in mm.

    Attributes
    ----------
    mean_mm : ndarray
        ``(M, N, 2)`` means ``(x, y)`` in mm; a NaN mean marks an undefined
        landmark (its samples are NaN and its covariance is ignored).
    cov_mm : ndarray
        ``(M, N, 2, 2)`` covariances in mm^2; symmetric positive semi-definite
        (zero allowed: every sample is then the mean).
    """

    mean_mm: np.ndarray
    cov_mm: np.ndarray

    def __post_init__(self) -> None:
        self.mean_mm = np.asarray(self.mean_mm, dtype=np.float64)
        self.cov_mm = np.asarray(self.cov_mm, dtype=np.float64)
        m = self.mean_mm
        if m.ndim != 3 or m.shape[-1] != 2:
            raise ConfigError(f"GaussianLandmarks.mean_mm must have shape (M, N, 2); got {m.shape}")
        if self.cov_mm.shape != m.shape + (2,):
            raise ConfigError(
                f"GaussianLandmarks.cov_mm must have shape {m.shape + (2,)} (M, N, 2, 2); got {self.cov_mm.shape}"
            )
        undefined = np.isnan(m).any(-1)
        if undefined.any():
            self.mean_mm = m = np.where(undefined[..., None], np.nan, m)
            self.cov_mm = np.where(undefined[..., None, None], 0.0, self.cov_mm)
        for name, arr in (("mean_mm", np.where(undefined[..., None], 0.0, m)), ("cov_mm", self.cov_mm)):
            if not np.isfinite(arr).all():
                bad = np.argwhere(~np.isfinite(arr).reshape(arr.shape[0], arr.shape[1], -1).all(-1))[0]
                raise ConfigError(
                    f"GaussianLandmarks.{name} is not finite at image {bad[0]}, landmark {bad[1]} "
                    "(replace unusable fits first, e.g. gaussian_from_result)"
                )
        c = self.cov_mm
        scale = np.maximum(np.abs(c).max(axis=(-2, -1)), 1e-12)
        asym = np.abs(c[..., 0, 1] - c[..., 1, 0]) / scale
        det = c[..., 0, 0] * c[..., 1, 1] - c[..., 0, 1] * c[..., 1, 0]
        bad = (asym > 1e-6) | (c[..., 0, 0] < 0) | (c[..., 1, 1] < 0) | (det < -1e-9 * scale**2)
        if bad.any():
            i, k = np.argwhere(bad)[0]
            raise ConfigError(
                f"GaussianLandmarks.cov_mm[{i}, {k}] is not a symmetric positive semi-definite 2x2 "
                f"matrix: {c[i, k].tolist()}"
            )
        self._chol = cholesky_2x2(c)

    @property
    def n_images(self) -> int:
        return self.mean_mm.shape[0]

    @property
    def n_landmarks(self) -> int:
        return self.mean_mm.shape[1]

    def sample(self, index: int, n_samples: int, rng: np.random.Generator) -> np.ndarray:
        """``(n_samples, N, 2)`` draws in mm for image ``index``: ``mean + L z``, z standard normal."""
        z = rng.standard_normal((n_samples, self.n_landmarks, 2))
        L = self._chol[index]
        out = np.empty_like(z)
        out[..., 0] = self.mean_mm[index, :, 0] + L[:, 0, 0] * z[..., 0]
        out[..., 1] = self.mean_mm[index, :, 1] + L[:, 1, 0] * z[..., 0] + L[:, 1, 1] * z[..., 1]
        return out


# --------------------------------------------------------------------------------------
# Heatmap
# --------------------------------------------------------------------------------------
@dataclass
class HeatmapLandmarks:
    """One heatmap (crop) per image and landmark, sampled as a probability mass.

    Pixel ``(col c, row r)`` of ``heatmaps[i, k]`` is centred at heatmap pixel
    ``origin_px[i, k] + (c, r)``; a heatmap position ``p`` (px) maps to
    ``p * scale_mm[i] + offset_mm[i]`` mm. Weights are the heatmap values
    clipped at 0 and normalised to sum 1 per landmark; a heatmap without a
    positive value (all zero, flat at <= 0, or all NaN) is undefined: its samples are NaN.

    Attributes
    ----------
    heatmaps : ndarray
        ``(M, N, H, W)`` values (any float dtype; negatives are clipped to 0).
    origin_px : ndarray
        ``(M, N, 2)`` ``(x, y)`` heatmap pixel of each crop's top-left element.
    scale_mm : ndarray
        ``(M, 2)`` mm per heatmap pixel ``(x, y)``.
    offset_mm : ndarray, optional
        ``(M, 2)`` mm added after scaling (default 0).
    jitter : bool
        Draw uniformly within the sampled pixel (a piecewise-constant density,
        default) instead of returning pixel centres.
    """

    heatmaps: np.ndarray
    origin_px: np.ndarray
    scale_mm: np.ndarray
    offset_mm: np.ndarray | None = None
    jitter: bool = True

    def __post_init__(self) -> None:
        h = np.asarray(self.heatmaps)
        if h.ndim != 4:
            raise ConfigError(f"HeatmapLandmarks.heatmaps must have shape (M, N, H, W); got {h.shape}")
        m, n, hh, ww = h.shape
        w = np.clip(np.nan_to_num(h.astype(np.float64), nan=0.0), 0.0, None).reshape(m, n, hh * ww)
        total = w.sum(-1)
        self._undefined = ~(total > 0)
        self._prob = w / np.where(self._undefined, 1.0, total)[..., None]
        cdf = np.cumsum(self._prob, axis=-1)
        cdf[..., -1] = 1.0
        self._cdf = cdf
        self._shape = (hh, ww)
        self.origin_px = np.asarray(self.origin_px, dtype=np.float64)
        if self.origin_px.shape != (m, n, 2):
            raise ConfigError(f"HeatmapLandmarks.origin_px must have shape {(m, n, 2)}; got {self.origin_px.shape}")
        self.scale_mm = np.broadcast_to(np.asarray(self.scale_mm, dtype=np.float64), (m, 2)).copy()
        if self.offset_mm is None:
            self.offset_mm = np.zeros((m, 2))
        self.offset_mm = np.broadcast_to(np.asarray(self.offset_mm, dtype=np.float64), (m, 2)).copy()
        if not (self.scale_mm > 0).all():
            raise ConfigError("HeatmapLandmarks.scale_mm must be positive (mm per heatmap pixel)")

    @property
    def n_images(self) -> int:
        return self._prob.shape[0]

    @property
    def n_landmarks(self) -> int:
        return self._prob.shape[1]

    def sample(self, index: int, n_samples: int, rng: np.random.Generator) -> np.ndarray:
        """``(n_samples, N, 2)`` draws in mm for image ``index``."""
        n = self.n_landmarks
        hh, ww = self._shape
        u = rng.random((n, n_samples))
        flat = np.empty((n, n_samples), dtype=np.int64)
        cdf = self._cdf[index]
        for k in range(n):
            flat[k] = np.searchsorted(cdf[k], u[k], side="right")
        np.minimum(flat, hh * ww - 1, out=flat)
        px = np.empty((n_samples, n, 2))
        px[..., 0] = (flat % ww).T
        px[..., 1] = (flat // ww).T
        if self.jitter:
            px += rng.random((n_samples, n, 2)) - 0.5
        px += self.origin_px[index]
        out = px * self.scale_mm[index] + self.offset_mm[index]
        out[:, self._undefined[index]] = np.nan  # no positive heatmap value: undefined landmark
        return out

    def moments_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean ``(M, N, 2)`` mm and covariance ``(M, N, 2, 2)`` mm^2 of the sampled density.

        Computed from the normalised pixel masses; with ``jitter`` the
        within-pixel uniform variance ``scale^2 / 12`` is added on the diagonal.
        """
        hh, ww = self._shape
        rows, cols = np.divmod(np.arange(hh * ww), ww)
        p = self._prob
        mx = p @ cols.astype(np.float64)
        my = p @ rows.astype(np.float64)
        dx = cols[None, None, :] - mx[..., None]
        dy = rows[None, None, :] - my[..., None]
        cov = np.empty(p.shape[:2] + (2, 2))
        cov[..., 0, 0] = (p * dx * dx).sum(-1)
        cov[..., 1, 1] = (p * dy * dy).sum(-1)
        cov[..., 0, 1] = cov[..., 1, 0] = (p * dx * dy).sum(-1)
        if self.jitter:
            cov[..., 0, 0] += 1 / 12
            cov[..., 1, 1] += 1 / 12
        mean_px = np.stack([mx, my], -1) + self.origin_px
        s = self.scale_mm[:, None, :]
        mean = mean_px * s + self.offset_mm[:, None, :]
        return mean, cov * s[..., :, None] * s[..., None, :]


# --------------------------------------------------------------------------------------
# from an ExperimentResult
# --------------------------------------------------------------------------------------
def gaussian_from_result(result, fallback_sd_mm: float = 0.5) -> tuple[GaussianLandmarks, np.ndarray]:
    """The fitted-Gaussian (Sigma-hat) distribution of an :class:`~lmkcore.runs.experiment.ExperimentResult`.

    Mean = ``result.pred_fit_px * spacing`` (mm), covariance = ``result.fit_cov_mm``.
    Where the fit is unusable (``fit_ok`` False or a non-finite covariance) the
    mean is the argmax point and the covariance ``fallback_sd_mm^2 * I``.

    Returns
    -------
    (GaussianLandmarks, fallback)
        ``fallback`` is the ``(M, N)`` bool mask of landmarks that fell back.
    """
    if not (fallback_sd_mm >= 0):
        raise ConfigError(f"fallback_sd_mm must be >= 0 (mm); got {fallback_sd_mm!r}")
    sp = np.asarray(result.spacing, dtype=np.float64)[:, None, :]
    cov = np.asarray(result.fit_cov_mm, dtype=np.float64)
    ok = np.asarray(result.fit_ok, dtype=bool) & np.isfinite(cov).all(axis=(-2, -1))
    mean = np.where(ok[..., None], result.pred_fit_px, result.pred_argmax_px) * sp
    cov = np.where(ok[..., None, None], np.nan_to_num(cov), fallback_sd_mm**2 * np.eye(2))
    return GaussianLandmarks(mean, cov), ~ok


def heatmap_from_result(result, jitter: bool = True) -> HeatmapLandmarks:
    """The stored heatmap crops of an ExperimentResult as a :class:`HeatmapLandmarks` in mm.

    Crops are in working pixels; a working pixel ``w`` maps to the original
    pixel ``(w + 0.5) * W / W_work - 0.5`` (:func:`lmkcore.data.image_cache.resize_landmarks`),
    i.e. to ``w * work_spacing + 0.5 * (work_spacing - spacing)`` mm.
    """
    ws = np.asarray(result.work_spacing, dtype=np.float64)
    sp = np.asarray(result.spacing, dtype=np.float64)
    return HeatmapLandmarks(result.heatmap_crops, result.crop_origin, ws, 0.5 * (ws - sp), jitter=jitter)


# --------------------------------------------------------------------------------------
# sampling and propagation
# --------------------------------------------------------------------------------------
def image_rngs(seed, n_images: int) -> list[np.random.Generator]:
    """One independent Generator per image: children of ``SeedSequence(seed)``.

    ``seed`` may be an int, a ``SeedSequence`` or a ``Generator`` (its
    ``spawn`` is used; that advances the generator's spawn counter).
    """
    if isinstance(seed, np.random.Generator):
        return seed.spawn(n_images)
    if isinstance(seed, np.random.SeedSequence):
        seq = seed
    elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0:
        seq = np.random.SeedSequence(int(seed))
    else:
        raise ConfigError(f"seed must be a non-negative int, SeedSequence or Generator; got {seed!r}")
    return [np.random.default_rng(s) for s in seq.spawn(n_images)]


def _check_samples(n_samples) -> int:
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ConfigError(f"n_samples must be a positive integer; got {n_samples!r}")
    return int(n_samples)


def sample_landmarks(distribution: LandmarkDistribution, n_samples: int, seed=0,
                     images: Sequence[int] | None = None) -> np.ndarray:
    """``(S, len(images), N, 2)`` samples in mm (all images by default).

    Image ``i`` uses the ``i``-th child generator of ``seed`` (see
    :func:`image_rngs`), so the draws for an image are the same whichever
    ``images`` are asked for and in :func:`propagate`.
    """
    n_samples = _check_samples(n_samples)
    idx = np.arange(distribution.n_images) if images is None else np.asarray(images, dtype=np.int64)
    rngs = image_rngs(seed, distribution.n_images)
    out = np.empty((n_samples, len(idx), distribution.n_landmarks, 2))
    for j, i in enumerate(idx):
        out[:, j] = distribution.sample(int(i), n_samples, rngs[int(i)])
    return out


@dataclass
class ClassUncertainty:
    """Per image and measure: class probabilities, most probable class, entropy.

    Attributes
    ----------
    probabilities : dict
        measure -> ``(M, K)`` float64 class frequencies over the samples
        (``K = N_CLASSES[measure]``: 3, or 4 for MW).
    most_probable : dict
        measure -> ``(M,)`` int8, the argmax of the probabilities (ties: the
        lower class index, i.e. "normal" first).
    entropy : dict
        measure -> ``(M,)`` Shannon entropy of the probabilities in nats
        (over the samples where the measure is defined; NaN if it is defined
        for none).
    n_samples : int
    undefined : dict
        measure -> ``(M,)`` fraction of samples for which the measure is
        undefined (coincident or NaN defining landmarks); the probabilities
        sum to ``1 - undefined``. Where it exceeds every class probability the
        most probable class is :data:`~lmkcore.analysis.clinical.UNDEFINED` (-1).
    """

    probabilities: Dict[str, np.ndarray]
    most_probable: Dict[str, np.ndarray]
    entropy: Dict[str, np.ndarray]
    n_samples: int
    undefined: Dict[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.undefined is None:
            self.undefined = {m: np.clip(1.0 - p.sum(-1), 0.0, 1.0) for m, p in self.probabilities.items()}

    @classmethod
    def from_probabilities(cls, probabilities: Dict[str, np.ndarray], n_samples: int,
                           undefined: Dict[str, np.ndarray] | None = None) -> "ClassUncertainty":
        if undefined is None:
            undefined = {m: np.clip(1.0 - p.sum(-1), 0.0, 1.0) for m, p in probabilities.items()}
        most, ent = {}, {}
        for m, p in probabilities.items():
            u = np.asarray(undefined[m], dtype=np.float64)
            c = np.argmax(p, axis=-1).astype(np.int8)
            most[m] = np.where(u > p.max(axis=-1), np.int8(UNDEFINED), c).astype(np.int8)
            defined = u < 1.0
            e = np.full(u.shape, np.nan)
            e[defined] = class_entropy(p[defined] / (1.0 - u[defined])[..., None])
            ent[m] = e
        return cls(dict(probabilities), most, ent, int(n_samples), dict(undefined))

    def subset(self, rows) -> "ClassUncertainty":
        """The same for image rows ``rows`` (indices or a bool mask)."""
        return ClassUncertainty({m: p[rows] for m, p in self.probabilities.items()},
                                {m: c[rows] for m, c in self.most_probable.items()},
                                {m: e[rows] for m, e in self.entropy.items()}, self.n_samples,
                                {m: u[rows] for m, u in self.undefined.items()})

    def undefined_counts(self) -> Dict[str, int]:
        """measure -> number of images whose most probable class is undefined (for reports)."""
        return {m: int(np.count_nonzero(c == UNDEFINED)) for m, c in self.most_probable.items()}


def propagate(distribution: LandmarkDistribution, n_samples: int = 10_000, seed=0,
              chunk_images: int | None = None, mw_edge_tol: float = 0.0) -> ClassUncertainty:
    """Class probabilities, most probable class and entropy of the 8 ISBI measures per image.

    Parameters
    ----------
    distribution : LandmarkDistribution
        Per-image distributions of the 19 ISBI landmarks (ISBI order), in mm.
    n_samples : int
        Landmark sets drawn per image (Thaler et al. 2021: 10,000).
    seed : int, SeedSequence or Generator
        See :func:`image_rngs`; results per image do not depend on ``chunk_images``.
    chunk_images : int, optional
        Images sampled at once; the sample buffer is ``S x chunk x N x 2``
        float64. Default: about ``2**17`` sample-instances per chunk (~40 MB
        for S = 10,000).
    mw_edge_tol : float
        Passed to :func:`lmkcore.analysis.clinical.class_probabilities` (mm).
    """
    n_samples = _check_samples(n_samples)
    if distribution.n_landmarks != 19:
        raise ConfigError(f"clinical measures need the 19 ISBI landmarks; the distribution has {distribution.n_landmarks}")
    n_img = distribution.n_images
    if chunk_images is None:
        chunk_images = max(1, _CHUNK // n_samples)
    if isinstance(chunk_images, bool) or not isinstance(chunk_images, (int, np.integer)) or chunk_images < 1:
        raise ConfigError(f"chunk_images must be a positive integer; got {chunk_images!r}")
    rngs = image_rngs(seed, n_img)
    probs = {m: np.empty((n_img, N_CLASSES[m])) for m in MEASURES}
    undefined = {m: np.empty(n_img) for m in MEASURES}
    buf = np.empty((n_samples, min(chunk_images, max(n_img, 1)), distribution.n_landmarks, 2))
    for start in range(0, n_img, chunk_images):
        stop = min(start + chunk_images, n_img)
        part = buf[:, : stop - start]
        for j, i in enumerate(range(start, stop)):
            part[:, j] = distribution.sample(i, n_samples, rngs[i])
        p, u = class_probabilities(part, mw_edge_tol=mw_edge_tol, return_undefined=True)
        for m in MEASURES:
            probs[m][start:stop] = p[m]
            undefined[m][start:stop] = u[m]
    return ClassUncertainty.from_probabilities(probs, n_samples, undefined)
