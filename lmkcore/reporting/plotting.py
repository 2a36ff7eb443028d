"""Small plotting helpers shared by notebooks (matplotlib axes in, artists out).

Images are shown with ``origin="upper"`` so that the ``(x, y)`` pixel
coordinates used everywhere plot directly (y down).
"""
from __future__ import annotations

import numpy as np
from matplotlib.patches import Ellipse

from lmkcore.analysis.covariance import cov_to_params
from lmkcore.reporting.style import COLORS


def show_image(ax, image: np.ndarray, **kw):
    """Show a ``(H, W)`` grey image with pixel centres at integer ``(x, y)``."""
    kw.setdefault("cmap", "gray")
    ax.imshow(image, origin="upper", interpolation="nearest", **kw)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def plot_landmarks(ax, landmarks: np.ndarray, labels: bool = True, color: str = COLORS["truth"], **kw):
    """Scatter ``(N, 2)`` ``(x, y)`` landmarks, optionally numbered 1..N (the papers' L1..LN)."""
    kw.setdefault("s", 12)
    ax.scatter(landmarks[:, 0], landmarks[:, 1], c=color, **kw)
    if labels:
        for k, (x, y) in enumerate(landmarks):
            if np.isfinite(x) and np.isfinite(y):
                ax.annotate(str(k + 1), (x, y), xytext=(3, 3), textcoords="offset points", fontsize=6, color=color)
    return ax


def draw_covariance_ellipse(ax, center, cov, n_std=(1.0, 2.0), color: str = COLORS["declared"], **kw):
    """Draw the ``n_std``-sigma ellipses of a 2x2 covariance (same units as the axes)."""
    theta, s1, s2 = cov_to_params(np.asarray(cov))
    kw.setdefault("lw", 1.0)
    artists = []
    for k in np.atleast_1d(n_std):
        e = Ellipse(tuple(center), 2 * k * float(s1), 2 * k * float(s2), angle=float(np.degrees(theta)),
                    fill=False, edgecolor=color, **kw)
        ax.add_patch(e)
        artists.append(e)
    return artists


def crop(image: np.ndarray, center, half_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop a ``(2h+1)``-pixel square around ``center`` ``(x, y)``, zero-padded at borders.

    Returns the crop and the ``(x, y)`` offset to subtract from image coordinates
    to get crop coordinates.
    """
    cx, cy = int(round(center[0])), int(round(center[1]))
    h = int(half_size)
    out = np.zeros((2 * h + 1, 2 * h + 1), dtype=image.dtype)
    y0, y1 = max(cy - h, 0), min(cy + h + 1, image.shape[0])
    x0, x1 = max(cx - h, 0), min(cx + h + 1, image.shape[1])
    if y0 < y1 and x0 < x1:
        out[y0 - (cy - h): y1 - (cy - h), x0 - (cx - h): x1 - (cx - h)] = image[y0:y1, x0:x1]
    return out, np.array([cx - h, cy - h], dtype=np.float64)


def plot_observer_crop(ax, image: np.ndarray, observers: np.ndarray, center, half_size: int,
                       cov: np.ndarray | None = None, truth=None, title: str = ""):
    """One landmark's neighbourhood: image crop, every observer's annotation, optional ellipse.

    Parameters
    ----------
    image : ndarray
        ``(H, W)`` image.
    observers : ndarray
        ``(K, 2)`` ``(x, y)`` pixel annotations of one landmark (NaN rows skipped).
    center : (x, y)
        Crop centre in pixels.
    half_size : int
        Half crop size in pixels.
    cov : ndarray, optional
        ``(2, 2)`` covariance in px^2 drawn at 1 and 2 sigma around ``truth``
        (or the observers' mean).
    truth : (x, y), optional
        True position (synthetic data), drawn as a cross.
    """
    patch, off = crop(image, center, half_size)
    show_image(ax, patch)
    pts = observers[~np.isnan(observers).any(-1)] - off
    ax.scatter(pts[:, 0], pts[:, 1], s=10, c=COLORS["observer"], edgecolors="white", linewidths=0.3, zorder=3)
    centre = (np.asarray(truth) - off) if truth is not None else pts.mean(0)
    if truth is not None:
        ax.scatter([centre[0]], [centre[1]], marker="x", s=30, c=COLORS["truth"], zorder=4)
    if cov is not None:
        draw_covariance_ellipse(ax, centre, cov, n_std=(1.0, 2.0))
    ax.set_xlim(-0.5, patch.shape[1] - 0.5)
    ax.set_ylim(patch.shape[0] - 0.5, -0.5)
    if title:
        ax.set_title(title, fontsize=7)
    return ax


def grid_axes(n: int, ncols: int, size: float = 1.8):
    """A figure with ``n`` axes in rows of ``ncols`` (extra axes hidden)."""
    import matplotlib.pyplot as plt

    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    flat = axes.ravel()
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]
