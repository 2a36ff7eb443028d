"""Cubic Hermite curves through knots, with known tangents and sharp corners.

A :class:`Curve` passes exactly through its knots. Each knot has an incoming
and an outgoing unit tangent; they are equal on a smooth knot and differ on a
corner. The synthetic anatomy places landmarks on knots, so the tangent of the
rendered contour at a landmark is known exactly. Coordinates are ``(x, y)`` in
any unit (the anatomy uses mm).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np


def unit(v: np.ndarray) -> np.ndarray:
    """``v / |v|`` along the last axis."""
    v = np.asarray(v, dtype=np.float64)
    if v.shape == (2,):
        return v / max(math.hypot(v[0], v[1]), 1e-12)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def perp(v: np.ndarray) -> np.ndarray:
    """``v`` rotated by 90 deg to ``(v_y, -v_x)``: with y down, rightwards becomes upwards."""
    v = np.asarray(v, dtype=np.float64)
    return np.stack([v[..., 1], -v[..., 0]], axis=-1)


def rotate(v: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate ``v`` by ``degrees``; positive turns rightwards into upwards (y down)."""
    a = np.radians(degrees)
    c, s = np.cos(a), np.sin(a)
    v = np.asarray(v, dtype=np.float64)
    return np.stack([c * v[..., 0] + s * v[..., 1], -s * v[..., 0] + c * v[..., 1]], axis=-1)


class Frame:
    """A local frame: ``frame(a, b) = origin + a * d + b * perp(d)``.

    ``d`` is a unit direction; with y down and ``d`` pointing right, ``+b``
    points up on screen. ``scale`` multiplies both coordinates (e.g. a length
    to express knots in units of a landmark distance).
    """

    def __init__(self, origin: np.ndarray, direction: np.ndarray, scale: float = 1.0):
        self.origin = np.asarray(origin, dtype=np.float64)
        self.d = unit(direction)
        self.n = perp(self.d)
        self.scale = float(scale)

    def __call__(self, a: float, b: float) -> np.ndarray:
        return self.origin + self.scale * (a * self.d + b * self.n)

    def vec(self, a: float, b: float) -> np.ndarray:
        """A displacement (no origin)."""
        return self.scale * (a * self.d + b * self.n)

    def local(self, p: np.ndarray) -> np.ndarray:
        """Coordinates ``(a, b)`` of point ``p`` in this frame."""
        q = (np.asarray(p, dtype=np.float64) - self.origin) / self.scale
        return np.array([q @ self.d, q @ self.n])


@dataclass(frozen=True)
class Curve:
    """Piecewise cubic Hermite curve.

    Attributes
    ----------
    points : ndarray
        ``(K, 2)`` knots.
    t_in, t_out : ndarray
        ``(K, 2)`` unit tangents arriving at / leaving each knot.
    closed : bool
        Whether the last knot connects back to the first.
    """

    points: np.ndarray
    t_in: np.ndarray
    t_out: np.ndarray
    closed: bool

    def direction(self, i: int) -> np.ndarray:
        """Unit tangent at knot ``i`` (mean of incoming and outgoing)."""
        return unit(self.t_in[i] + self.t_out[i])

    def sample(self, step: float) -> np.ndarray:
        """Polyline ``(S, 2)`` with about one vertex per ``step``; knots are included exactly."""
        p = self.points
        k = len(p)
        n_seg = k if self.closed else k - 1
        i0 = np.arange(n_seg)
        i1 = (i0 + 1) % k
        chord = np.linalg.norm(p[i1] - p[i0], axis=1)
        counts = np.maximum(2, np.ceil(chord / step).astype(np.int64))
        seg = np.repeat(i0, counts)
        u = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        u = (u / np.repeat(counts, counts))[:, None]
        u2, u3 = u * u, u * u * u
        h00, h10, h01, h11 = 2 * u3 - 3 * u2 + 1, u3 - 2 * u2 + u, -2 * u3 + 3 * u2, u3 - u2
        c = chord[seg][:, None]
        out = h00 * p[seg] + h10 * c * self.t_out[seg] + h01 * p[i1[seg]] + h11 * c * self.t_in[i1[seg]]
        if not self.closed:
            out = np.concatenate([out, p[-1:]])
        return out


def spline(
    points: Sequence[np.ndarray],
    closed: bool = False,
    corners: Sequence[int] = (),
    tangents: Mapping[int, np.ndarray] | None = None,
) -> Curve:
    """A :class:`Curve` through ``points``.

    Parameters
    ----------
    points : sequence of (2,) arrays
        The knots, in order.
    closed : bool
        Closed loop.
    corners : sequence of int
        Knots that are sharp corners: incoming tangent from the previous knot,
        outgoing tangent towards the next one.
    tangents : mapping of int to (2,) array
        Prescribed tangent direction at a knot (smooth knot; normalised here).

    Other knots get Catmull-Rom tangents ``unit(P[i+1] - P[i-1])``.
    """
    p = np.asarray(np.stack([np.asarray(q, dtype=np.float64) for q in points]))
    k = len(p)
    if closed:
        prev, nxt = np.roll(p, 1, axis=0), np.roll(p, -1, axis=0)
    else:
        prev = np.concatenate([p[:1], p[:-1]])
        nxt = np.concatenate([p[1:], p[-1:]])
    t = unit(nxt - prev)
    t_in, t_out = t.copy(), t.copy()
    for i in corners:
        i %= k
        t_in[i] = unit(p[i] - prev[i]) if (closed or i > 0) else unit(nxt[i] - p[i])
        t_out[i] = unit(nxt[i] - p[i]) if (closed or i < k - 1) else unit(p[i] - prev[i])
    for i, v in (tangents or {}).items():
        t_in[i % k] = t_out[i % k] = unit(v)
    return Curve(p, t_in, t_out, closed)


def ellipse(center: np.ndarray, frame_d: np.ndarray, ra: float, rb: float, n: int = 16) -> Curve:
    """Closed ellipse with semi-axes ``ra`` along ``frame_d`` and ``rb`` along ``perp(frame_d)``.

    Knot 0 is at angle 0 (``center + ra * d``); knot ``3 n / 4`` is the point
    ``center - rb * perp(d)`` (the bottom when ``d`` points right).
    """
    f = Frame(center, frame_d)
    ang = 2 * np.pi * np.arange(n) / n
    pts = [f(ra * np.cos(a), rb * np.sin(a)) for a in ang]
    tans = {i: f.vec(-ra * np.sin(a), rb * np.cos(a)) for i, a in enumerate(ang)}
    return spline(pts, closed=True, tangents=tans)
