"""Vectorised 2D rasterisation: anti-aliased polygon coverage and curve helpers.

Pixel convention (as everywhere in the package): pixel ``(row, col)`` has its
centre at ``(x, y) = (col, row)`` and covers ``[col - 0.5, col + 0.5] x
[row - 0.5, row + 0.5]``. Coordinates are ``(x, y)`` pixels unless a function
says otherwise.

Coverage is computed by a scanline method: every polygon edge is intersected
with ``sub`` horizontal sub-scanlines per pixel row; each crossing adds its
signed (winding) contribution to a difference array, split between the two
pixels around the crossing so that the horizontal coverage is exact; a
cumulative sum along x then gives the winding number. Cost is proportional to
the number of crossings plus the polygon's bounding box, not to
edges x pixels.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def polygon_coverage(
    loops: Sequence[np.ndarray], shape: tuple[int, int], sub: int = 4
) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Fraction of each pixel covered by a polygon made of one or more loops.

    Parameters
    ----------
    loops : sequence of ndarray
        Closed loops, each ``(K, 2)`` vertices ``(x, y)`` in pixels (the last
        vertex connects back to the first). Loops combine by the non-zero
        winding rule with ``|winding|`` clipped to 1, so a loop traversed in the
        opposite direction inside another one cuts a hole (e.g. an annulus).
    shape : (int, int)
        Image shape ``(H, W)``.
    sub : int
        Sub-scanlines per pixel row (vertical anti-aliasing).

    Returns
    -------
    coverage : ndarray
        float32 coverage in ``[0, 1]`` of the bounding-box window.
    window : (slice, slice)
        Where ``coverage`` goes in the ``(H, W)`` image (empty if the polygon
        misses the image).
    """
    h, w = shape
    edges = []
    for loop in loops:
        loop = np.asarray(loop, dtype=np.float64)
        if len(loop) >= 3:
            edges.append(np.concatenate([loop, np.roll(loop, -1, axis=0)], axis=1))
    if not edges:
        return np.zeros((0, 0), np.float32), (slice(0, 0), slice(0, 0))
    e = np.concatenate(edges)  # (E, 4): x0, y0, x1, y1
    ys = np.concatenate([e[:, 1], e[:, 3]])
    r0 = max(0, int(np.floor(ys.min() + 0.5)))
    r1 = min(h, int(np.ceil(ys.max() + 0.5)) + 1)
    xs = np.concatenate([e[:, 0], e[:, 2]])
    c0 = max(0, int(np.floor(xs.min() + 0.5)))
    c1 = min(w, int(np.ceil(xs.max() + 0.5)) + 1)
    if r0 >= r1 or c0 >= c1:
        return np.zeros((0, 0), np.float32), (slice(0, 0), slice(0, 0))
    # Sub-scanline j (0-based within the window) lies at y = r0 - 0.5 + (j + 0.5) / sub.
    y0, y1 = e[:, 1], e[:, 3]
    lo, hi = np.minimum(y0, y1), np.maximum(y0, y1)
    to_j = lambda y: np.ceil((y - r0 + 0.5) * sub - 0.5)  # noqa: E731  first sub-line with y_line >= y
    j_lo = np.clip(to_j(lo), 0, (r1 - r0) * sub).astype(np.int64)
    j_hi = np.clip(to_j(hi), 0, (r1 - r0) * sub).astype(np.int64)  # half-open [lo, hi)
    counts = j_hi - j_lo
    keep = counts > 0
    if not keep.any():
        return np.zeros((r1 - r0, c1 - c0), np.float32), (slice(r0, r1), slice(c0, c1))
    e, j_lo, counts = e[keep], j_lo[keep], counts[keep]
    idx = np.repeat(np.arange(len(e)), counts)
    start = np.repeat(np.cumsum(counts) - counts, counts)
    j = j_lo[idx] + (np.arange(len(idx)) - start)
    yl = r0 - 0.5 + (j + 0.5) / sub
    x0, ey0, x1, ey1 = e[idx, 0], e[idx, 1], e[idx, 2], e[idx, 3]
    x = x0 + (yl - ey0) * (x1 - x0) / (ey1 - ey0)
    sign = np.where(ey1 > ey0, 1.0, -1.0)
    # Crossing at x inside column k = floor(x + 0.5): pixel k gets (k + 0.5 - x), the rest 1.
    ncol = c1 - c0
    k = np.floor(x + 0.5) - c0
    frac = (k + 0.5) - (x - c0)
    left = k < 0
    k = np.where(left, -1, k)
    frac = np.where(left, 1.0, frac)
    right = k >= ncol
    k = np.clip(k, -1, ncol).astype(np.int64)
    width = ncol + 2
    base = j * width + (k + 1)
    n = (r1 - r0) * sub * width
    diff = np.bincount(base[~right], weights=(sign * frac)[~right], minlength=n)
    nxt = ~right & (k + 1 < ncol)
    diff += np.bincount(base[nxt] + 1, weights=(sign * (1.0 - frac))[nxt], minlength=n)
    wind = np.cumsum(diff.reshape((r1 - r0) * sub, width), axis=1)[:, 1 : ncol + 1]
    cov = np.clip(np.abs(wind), 0.0, 1.0).reshape(r1 - r0, sub, ncol).mean(axis=1)
    return cov.astype(np.float32), (slice(r0, r1), slice(c0, c1))


def add_polygon(image: np.ndarray, loops: Sequence[np.ndarray], value: float, sub: int = 4) -> None:
    """Add ``value * coverage(loops)`` to ``image`` (``(H, W)`` float) in place."""
    cov, win = polygon_coverage(loops, image.shape, sub)
    if cov.size:
        image[win] += value * cov


def normals(poly: np.ndarray, closed: bool) -> np.ndarray:
    """Unit normals ``(K, 2)`` of a polyline: the tangent rotated by +90 deg, ``(t_y, -t_x)``.

    For y pointing down this is the left-hand side of the direction of travel
    as seen on screen (a rightward tangent gives an upward normal).
    """
    if closed:
        t = np.roll(poly, -1, axis=0) - np.roll(poly, 1, axis=0)
    else:
        t = np.gradient(poly, axis=0)
    t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    return np.stack([t[:, 1], -t[:, 0]], axis=1)


def ribbon(poly: np.ndarray, half_width: float | np.ndarray, closed: bool = False) -> list[np.ndarray]:
    """Loops of a stroke of ``half_width`` (scalar or ``(K,)``) around a polyline.

    An open polyline gives one loop; a closed one gives an annulus (two loops of
    opposite orientation).
    """
    poly = np.asarray(poly, dtype=np.float64)
    hw = np.broadcast_to(np.asarray(half_width, dtype=np.float64), (len(poly),))[:, None]
    n = normals(poly, closed)
    a, b = poly + n * hw, poly - n * hw
    if closed:
        return [a, b[::-1]]
    return [np.concatenate([a, b[::-1]])]


def signed_area(loop: np.ndarray) -> float:
    """Shoelace area of a closed loop (positive when counter-clockwise in (x, y) maths axes)."""
    x, y = loop[:, 0], loop[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def inset(loop: np.ndarray, distance: float) -> np.ndarray:
    """The closed ``loop`` moved ``distance`` inwards along its vertex normals.

    Good for smooth loops and small distances (cortical bone bands); sharp
    corners may self-intersect slightly, which the winding fill tolerates.
    """
    n = normals(loop, closed=True)
    # The normal (t_y, -t_x) points outwards for a loop of positive
    # shoelace area and inwards otherwise.
    inward = -1.0 if signed_area(loop) > 0 else 1.0
    return loop + inward * distance * n
