"""Coordinate and unit conversions between original pixels, working pixels and millimetres.

Conventions: a landmark array is ``(..., D)`` in ``(x, y[, z])`` pixel order, integer
coordinates are pixel centres (the image edges are at ``-0.5`` and ``W - 0.5``); a size is
``(W, H[, D])``; spacing is mm per pixel along ``(x, y[, z])``. Covariances of points are
``(..., D, D)`` in the same axis order (px^2 or mm^2).
"""
from __future__ import annotations

import numpy as np

from lmkcore.errors import ConfigError

__all__ = ["resize_landmarks", "working_size", "working_spacing", "cov_px2_to_mm2", "cov_mm2_to_px2"]


def resize_landmarks(landmarks_px: np.ndarray, from_size, to_size) -> np.ndarray:
    """Map pixel coordinates between two resolutions of the same image.

    ``x' = (x + 0.5) * W' / W - 0.5`` per axis (integer coordinates are pixel
    centres; the image edges ``-0.5`` and ``W - 0.5`` map onto each other).

    Parameters
    ----------
    landmarks_px : ndarray
        ``(..., D)`` coordinates ``(x, y[, z])``; NaN stays NaN.
    from_size, to_size : sequence or ndarray
        ``(D,)`` sizes ``(W, H[, D])``, or ``(M, D)`` per image when
        ``landmarks_px`` is ``(M, N, D)``.

    Returns
    -------
    ndarray
        float64, same shape as ``landmarks_px``.
    """
    lm = np.asarray(landmarks_px, dtype=np.float64)
    f = np.asarray(from_size, dtype=np.float64)
    t = np.asarray(to_size, dtype=np.float64)
    if lm.ndim == 3:
        f = f[:, None, :] if f.ndim == 2 else f
        t = t[:, None, :] if t.ndim == 2 else t
    if np.any(f <= 0) or np.any(t <= 0):
        raise ConfigError(f"resize_landmarks: sizes must be positive, got {from_size} -> {to_size}")
    return (lm + 0.5) * (t / f) - 0.5


def working_size(record, width: int) -> tuple[int, int]:
    """Working ``(W, H)`` px for ``width`` pixels, keeping ``record``'s median aspect ratio
    (``record.image_size`` ``(M, 2)`` ``(W, H)``)."""
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width <= 0:
        raise ConfigError(f"working width must be a positive integer, got {width!r}")
    aspect = float(np.median(record.image_size[:, 1] / record.image_size[:, 0]))
    return int(width), max(1, int(round(width * aspect)))


def working_spacing(spacing, image_size, work_size) -> np.ndarray:
    """``(M, D)`` mm per working px of images of ``image_size`` ``(M, D)`` px and ``spacing`` ``(M, D)``
    mm/px resampled to ``work_size`` ``(D,)`` px."""
    return (np.asarray(spacing, dtype=np.float64) * np.asarray(image_size, dtype=np.float64)
            / np.asarray(work_size, dtype=np.float64))


def cov_px2_to_mm2(cov_px2, spacing) -> np.ndarray:
    """Covariances ``(..., D, D)`` in px^2 to mm^2: ``C_mm[i, j] = C_px[i, j] s_i s_j``.

    ``spacing`` (mm/px) broadcasts against the leading axes: ``(D,)`` for all, or ``(M, D)``
    for ``(M, N, D, D)`` covariances of ``M`` images.
    """
    c = np.asarray(cov_px2, dtype=np.float64)
    s = np.asarray(spacing, dtype=np.float64)
    if s.ndim == 2 and c.ndim == 4:
        s = s[:, None, :]
    return c * s[..., :, None] * s[..., None, :]


def cov_mm2_to_px2(cov_mm2, spacing) -> np.ndarray:
    """Inverse of :func:`cov_px2_to_mm2`."""
    c = np.asarray(cov_mm2, dtype=np.float64)
    s = np.asarray(spacing, dtype=np.float64)
    if s.ndim == 2 and c.ndim == 4:
        s = s[:, None, :]
    return c / (s[..., :, None] * s[..., None, :])
