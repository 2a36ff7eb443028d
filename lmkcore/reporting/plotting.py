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


# ----------------------------------------------------------------------------------------------------------
# Offset panels (Thaler et al. Figs. 4-6 and 8): offsets and covariance ellipses in mm around the origin
# ----------------------------------------------------------------------------------------------------------

#: Axis labels of an offset panel: mm, x to the right, y down (the image frame).
OFFSET_XLABEL = "x offset (mm)"
OFFSET_YLABEL = "y offset (mm, down)"
#: Smallest tick label size (pt) of the figure helpers.
TICK_SIZE = 7


def ellipse_extent(cov, n_std: float = 1.0) -> float:
    """Half length of the major axis of the ``n_std``-sigma ellipse of a ``(2, 2)`` covariance (its units' sqrt);
    NaN for a non-finite covariance."""
    c = np.asarray(cov, dtype=np.float64)
    if c.shape != (2, 2) or not np.isfinite(c).all():
        return float("nan")
    return float(n_std * np.sqrt(max(np.linalg.eigvalsh(c).max(), 0.0)))


def panel_limit(offsets=None, covs=None, mean_cov=None, center=(0.0, 0.0), margin: float = 1.15,
                ellipse_quantile: float = 90.0) -> float:
    """Half width (mm) of a square offset panel that shows all its content.

    Covers the 95th percentile of ``|offset|`` (per axis), the 1-sigma ellipses of
    ``ellipse_quantile`` % of ``covs`` and the whole 2-sigma ellipse of ``mean_cov``
    around ``center``, times ``margin``; 1 mm when there is nothing finite.

    Parameters
    ----------
    offsets : ndarray, optional
        ``(..., 2)`` offsets in mm.
    covs : ndarray, optional
        ``(..., 2, 2)`` covariances in mm^2 (drawn as 1-sigma ellipses at the origin).
    mean_cov : ndarray, optional
        ``(2, 2)`` in mm^2, drawn at 1 sigma around ``center``.
    center : (x, y)
        Centre of the mean ellipse (mm).
    """
    vals = []
    if offsets is not None:
        o = np.abs(np.asarray(offsets, dtype=np.float64).reshape(-1, 2))
        o = o[np.isfinite(o).all(1)]
        if len(o):
            vals.append(float(np.percentile(o, 95)))
    if covs is not None:
        ext = np.array([ellipse_extent(c) for c in np.asarray(covs, dtype=np.float64).reshape(-1, 2, 2)])
        ext = ext[np.isfinite(ext)]
        if len(ext):
            vals.append(float(np.percentile(ext, ellipse_quantile)))
    if mean_cov is not None and np.isfinite(ellipse_extent(mean_cov)):
        vals.append(ellipse_extent(mean_cov, 2.0) + float(np.max(np.abs(center))))
    return margin * max(vals) if vals and max(vals) > 0 else 1.0


def offsets_panel(ax, offsets=None, covs=None, mean_cov=None, center=(0.0, 0.0), limit: float | None = None,
                  color: str = COLORS["prediction"], ellipse_color: str = COLORS["fitted"], mean_color: str = "k",
                  labels: bool = True, max_ellipses: int = 200) -> float:
    """One offset panel of Thaler et al. Figs. 4-6 / 8 in mm (y down), with axis labels and readable ticks.

    Draws offset dots, thin 1-sigma ellipses of per-image covariances, the mean
    covariance's 1-sigma ellipse (thick) and its major axis (dashed), all in a
    square view of half width ``limit`` (default :func:`panel_limit` of the same content).

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    offsets : ndarray, optional
        ``(P, 2)`` offsets (mm), e.g. prediction minus target.
    covs : ndarray, optional
        ``(..., 2, 2)`` per-image covariances (mm^2), centred at the origin.
    mean_cov : ndarray, optional
        ``(2, 2)`` mean covariance (mm^2), centred at ``center``.
    center : (x, y)
        Centre (mm) of the mean ellipse, e.g. the offsets' mean.
    limit : float, optional
        Half width of the view (mm).
    labels : bool
        Label the axes (``x offset (mm)`` / ``y offset (mm, down)``).

    Returns
    -------
    float
        The half width used (mm).
    """
    limit = panel_limit(offsets, covs, mean_cov, center) if limit is None else float(limit)
    has_data = (offsets is not None and np.isfinite(np.asarray(offsets, dtype=np.float64)).all(-1).any()) or \
        (covs is not None and np.isfinite(np.asarray(covs, dtype=np.float64).reshape(-1, 4)).all(-1).any()) or \
        (mean_cov is not None and np.isfinite(ellipse_extent(mean_cov)))
    if not has_data and (offsets is not None or covs is not None or mean_cov is not None):
        ax.text(0.5, 0.5, "no finite values\n(e.g. no usable Σ̂ fit)", transform=ax.transAxes, ha="center",
                va="center", fontsize=TICK_SIZE, color="0.4")
    if offsets is not None:
        o = np.asarray(offsets, dtype=np.float64).reshape(-1, 2)
        ax.scatter(o[:, 0], o[:, 1], s=3, c=color, alpha=0.6, lw=0, zorder=2)
    if covs is not None:
        c = np.asarray(covs, dtype=np.float64).reshape(-1, 2, 2)
        for m in c[np.isfinite(c).all((1, 2))][:max_ellipses]:
            draw_covariance_ellipse(ax, (0.0, 0.0), m, n_std=(1.0,), color=ellipse_color, alpha=0.3, lw=0.6)
    if mean_cov is not None and np.isfinite(ellipse_extent(mean_cov)):
        draw_covariance_ellipse(ax, tuple(center), mean_cov, n_std=(1.0,), color=mean_color, lw=1.3)
        theta, _, _ = cov_to_params(np.asarray(mean_cov, dtype=np.float64))
        if np.isfinite(theta):
            dx, dy = 2 * limit * np.cos(theta), 2 * limit * np.sin(theta)
            ax.plot([center[0] - dx, center[0] + dx], [center[1] - dy, center[1] + dy], color="0.5", lw=0.8, ls="--")
    ax.set_xlim(-limit, limit)
    ax.set_ylim(limit, -limit)
    ax.set_aspect("equal")
    ax.axhline(0, color="0.85", lw=0.5, zorder=0)
    ax.axvline(0, color="0.85", lw=0.5, zorder=0)
    ax.tick_params(labelsize=TICK_SIZE)
    if labels:
        ax.set_xlabel(OFFSET_XLABEL, fontsize=TICK_SIZE)
        ax.set_ylabel(OFFSET_YLABEL, fontsize=TICK_SIZE)
    return limit


def legend_handles(items):
    """Proxy artists for a legend: ``items`` is a list of ``(label, kind, color)`` with kind ``"dots"``,
    ``"ellipse"`` (thin), ``"mean"`` (thick), ``"axis"`` (dashed), ``"x"`` or any matplotlib marker."""
    from matplotlib.lines import Line2D

    out = []
    for label, kind, color in items:
        if kind == "dots":
            h = Line2D([], [], ls="", marker="o", ms=4, color=color, label=label)
        elif kind == "ellipse":
            h = Line2D([], [], lw=0.8, color=color, alpha=0.6, label=label)
        elif kind == "mean":
            h = Line2D([], [], lw=1.6, color=color, label=label)
        elif kind == "axis":
            h = Line2D([], [], lw=0.8, ls="--", color=color, label=label)
        else:
            h = Line2D([], [], ls="", marker=kind, ms=6, color=color, label=label)
        out.append(h)
    return out


def figure_legend(fig, items, ncol: int | None = None):
    """One legend for the whole figure, below the panels (see :func:`legend_handles` for ``items``)."""
    handles = legend_handles(items)
    return fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol or len(handles),
                      fontsize=8, frameon=False)


# ----------------------------------------------------------------------------------------------------------
# Learned target parameters over training; parameter sweeps
# ----------------------------------------------------------------------------------------------------------

def unwrap_orientation(theta_rad: np.ndarray, axis: int = 0) -> np.ndarray:
    """Ellipse orientations (radians, defined modulo pi) made continuous along ``axis`` (no +-90 degree jumps)."""
    t = np.asarray(theta_rad, dtype=np.float64)
    return np.unwrap(2.0 * t, axis=axis) / 2.0


def plot_sigma_history(axes, iterations, history: dict, spacing_mm: float, names=None, colors=None):
    """Learned anisotropic target parameters over training (Thaler et al. Eq. 7), one line per landmark.

    Parameters
    ----------
    axes : three matplotlib axes
        For ``theta`` (deg), ``sigma_major`` and ``sigma_minor`` (mm).
    iterations : ``(T,)`` training iterations.
    history : dict
        ``"theta"`` (radians), ``"sigma_major"``, ``"sigma_minor"`` (px of the network input), each ``(T, N)``.
    spacing_mm : float
        mm per px of the network input, to report sigmas in mm.
    names : list of str, optional
        Landmark names (legend ``L1 name``...).

    Returns
    -------
    list
        The line artists of the last panel (for a legend).
    """
    import matplotlib.pyplot as plt

    its = np.asarray(iterations)
    n = np.asarray(history["theta"]).shape[1]
    colors = colors if colors is not None else plt.cm.tab20(np.linspace(0, 1, 20))[:n] if n <= 20 else \
        plt.cm.viridis(np.linspace(0, 1, n))
    names = names if names is not None else [str(k + 1) for k in range(n)]
    series = {
        "theta": (np.degrees(unwrap_orientation(history["theta"])), "θ (deg, unwrapped)"),
        "sigma_major": (np.asarray(history["sigma_major"], dtype=np.float64) * spacing_mm, "σ major (mm)"),
        "sigma_minor": (np.asarray(history["sigma_minor"], dtype=np.float64) * spacing_mm, "σ minor (mm)"),
    }
    lines = []
    for ax, (key, (vals, label)) in zip(axes, series.items()):
        lines = [ax.plot(its, vals[:, k], lw=0.8, color=colors[k], label=f"L{k + 1} {names[k]}")[0] for k in range(n)]
        ax.set_xlabel("iteration")
        ax.set_ylabel(label)
        ax.tick_params(labelsize=TICK_SIZE)
        finite = vals[np.isfinite(vals)]
        if finite.size:
            lo, hi = float(finite.min()), float(finite.max())
            pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi) * 0.05, 1e-3)
            ax.set_ylim(lo - pad, hi + pad)
    return lines


def plot_sweep(ax, labels, values, groups, ylabel: str, xlabel: str = "", colors=None):
    """A parameter sweep drawn per group: points of one group joined, groups never joined to each other.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    labels : sequence of str
        Tick label of each setting, in plotting order.
    values : sequence of float
        The measured value of each setting (e.g. mean PE in mm).
    groups : sequence of str
        The group of each setting (e.g. ``"learned σ"`` / ``"fixed σ"``); one line and
        legend entry per group.
    ylabel, xlabel : str
        Axis labels, with units.
    """
    labels, values, groups = list(map(str, labels)), np.asarray(values, dtype=np.float64), list(map(str, groups))
    order = list(dict.fromkeys(groups))
    markers = "osD^v<>"
    for g_i, g in enumerate(order):
        idx = [i for i, gg in enumerate(groups) if gg == g]
        kw = {"color": colors[g_i]} if colors is not None else {}
        ax.plot(idx, values[idx], marker=markers[g_i % len(markers)], ls="-", label=g if len(order) > 1 else None, **kw)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=TICK_SIZE)
    ax.set_xlim(-0.5, len(labels) - 0.5)
    finite = values[np.isfinite(values)]
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        pad = 0.1 * (hi - lo) if hi > lo else max(abs(hi) * 0.1, 1e-3)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_ylabel(ylabel)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.tick_params(axis="y", labelsize=TICK_SIZE)
    if len(order) > 1:
        ax.legend(fontsize=7)
    return ax
