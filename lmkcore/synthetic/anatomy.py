"""Lateral-skull anatomy built around the 19 ISBI landmarks (geometry only, mm).

:func:`build_anatomy` turns one landmark configuration (canonical frame, mm,
``(x, y)``, y down, patient facing right) plus a few nuisance parameters into
X-ray "layers": filled regions with an attenuation value, each a list of
closed polylines in mm. Every contour is a :class:`~lmkcore.synthetic.curves.Curve`
whose knots include the landmarks, so each landmark lies *on* its structure
and the contour direction there is known exactly
(:attr:`Anatomy.directions`). Rendering (pose, pixels, blur, noise) lives in
:mod:`lmkcore.synthetic.render`.

Landmark kinds (:data:`LANDMARK_KIND`):

``corner``
    A well-defined point: a tooth tip, a spine tip, the corner where two
    contours meet, the centre of the sella. Its direction is the axis of the
    tip (or the contour through the corner).
``edge``
    A point on a smooth edge ("most anterior", "deepest concavity"): ambiguous
    along the edge. Its direction is the contour tangent.

Low-contrast landmarks (faint or overlapped structures) are listed in
:data:`LOW_CONTRAST`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmkcore.synthetic.curves import Curve, Frame, ellipse, perp, rotate, spline, unit
from lmkcore.synthetic.raster import inset, ribbon

(S, N, OR, PO, A, B, POG, ME, GN, GO, LI, UI, UL, LL, SN, SPOG, PNS, ANS, AR) = range(19)

#: Kind of each landmark ("corner" or "edge"), in ISBI order.
LANDMARK_KIND: tuple[str, ...] = (
    "corner",  # sella: centre of the saddle
    "edge",  # nasion: deepest point of the fronto-nasal concavity
    "edge",  # orbitale: lowest point of the (faint) orbit rim
    "edge",  # porion: top of the (faint) ear canal
    "edge",  # subspinale (A): deepest point of the maxillary concavity
    "edge",  # supramentale (B): deepest point of the mandibular concavity
    "edge",  # pogonion: most anterior point of the chin
    "corner",  # menton: lowest point of the symphysis, where the chin meets the lower border
    "edge",  # gnathion: on the chin curve between pogonion and menton
    "edge",  # gonion: on the rounded mandibular angle
    "corner",  # lower incisal incision: tooth tip
    "corner",  # upper incisal incision: tooth tip
    "edge",  # upper lip: most anterior point
    "edge",  # lower lip: most anterior point
    "corner",  # subnasale: junction of columella and upper lip
    "edge",  # soft tissue pogonion: most anterior point of the soft chin
    "corner",  # posterior nasal spine: tip of the palate (overlapped by pterygoid plates)
    "corner",  # anterior nasal spine: tip of the spine
    "corner",  # articulare: crossing of ramus and cranial-base contours
)

#: Landmarks in faint or overlapped regions (rendered with low local contrast).
LOW_CONTRAST: tuple[str, ...] = ("orbitale", "porion", "posterior_nasal_spine", "articulare")

#: Names of the nuisance parameters drawn by :func:`sample_anatomy_params`, with
#: their (low, high) uniform ranges. Lengths in mm, angles in degrees, others
#: dimensionless factors.
PARAM_RANGES: dict[str, tuple[float, float]] = {
    "vault_a": (0.95, 1.05),  # posterior extent of the cranial vault
    "vault_b": (0.94, 1.06),  # height of the cranial vault
    "vault_thick": (5.0, 8.0),
    "sinus": (0.6, 1.3),  # frontal sinus size
    "nasal_len": (17.0, 24.0),
    "nasal_angle": (28.0, 42.0),
    "sella_r": (4.0, 6.0),
    "sella_k": (0.8, 1.15),
    "orbit_ra": (12.0, 15.0),
    "orbit_rb": (14.0, 17.0),
    "meatus_r": (3.5, 5.0),
    "rod_r": (5.0, 6.5),
    "nose_fwd": (12.0, 18.0),
    "nose_up": (5.0, 10.0),
    "soft_nasion": (5.5, 8.0),
    "soft_menton": (6.0, 9.0),
    "spine_tilt": (-12.0, 4.0),
    "spine_gap": (9.0, 13.0),
    "ghost_scale": (1.02, 1.07),
    "bone": (0.85, 1.15),  # bone density factor
    "soft": (0.8, 1.2),  # soft tissue density factor
}
#: Nuisance parameters drawn from a standard normal (scaled where used).
PARAM_NORMAL: tuple[str, ...] = (
    "rod1_x", "rod1_y", "rod2_x", "rod2_y", "ghost_rot", "ghost_x", "ghost_y",
    "orbit2_x", "orbit2_y", "molar_shift",
)


def sample_anatomy_params(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Draw the nuisance parameters of ``n`` subjects: ``{name: (n,) array}``."""
    params = {k: rng.uniform(lo, hi, n) for k, (lo, hi) in PARAM_RANGES.items()}
    params.update({k: rng.standard_normal(n) for k in PARAM_NORMAL})
    return params


@dataclass
class Layer:
    """One radiographic layer: a filled region in mm and its attenuation.

    ``loops`` are closed polylines ``(K, 2)`` in mm (canonical frame) combined
    by the non-zero winding rule. ``textured`` layers get a bone texture.
    """

    name: str
    loops: list[np.ndarray]
    attenuation: float
    textured: bool = False


@dataclass
class Anatomy:
    """Output of :func:`build_anatomy`.

    Attributes
    ----------
    layers : list of Layer
        In drawing order (attenuations add up, so order does not matter).
    directions : ndarray
        ``(19, 2)`` unit direction at each landmark, canonical frame: the
        contour tangent for edges, the tip/corner axis for corners.
    """

    layers: list[Layer]
    directions: np.ndarray


class _Builder:
    """Collects layers; small helpers for fills, cortices and strokes."""

    def __init__(self, step: float):
        self.step = step
        self.layers: list[Layer] = []

    def fill(self, name: str, curve: Curve, att: float, textured: bool = False) -> np.ndarray:
        poly = curve.sample(self.step)
        self.layers.append(Layer(name, [poly], att, textured))
        return poly

    def cortex(self, name: str, poly: np.ndarray, thickness: float, att: float) -> None:
        # Band between the outline and its inset: outline minus reversed inset.
        self.layers.append(Layer(name, [poly, inset(poly, thickness)[::-1]], att))

    def stroke(self, name: str, curve: Curve, width: float, att: float) -> None:
        poly = curve.sample(self.step)
        self.layers.append(Layer(name, ribbon(poly, 0.5 * width, curve.closed), att))

    def blob(self, name: str, center, d, ra, rb, att, textured=False) -> None:
        self.fill(name, ellipse(np.asarray(center), d, ra, rb), att, textured)

    def ring(self, name: str, center, d, ra, rb, width, att) -> None:
        """A band of ``width`` just outside the ellipse ``(ra, rb)``."""
        inner = ellipse(np.asarray(center), d, ra, rb).sample(self.step)
        outer = ellipse(np.asarray(center), d, ra + width, rb + width).sample(self.step)
        self.layers.append(Layer(name, [outer, inner[::-1]], att))


class _Scaffold:
    """Frames, key points and the landmark-carrying curves of one subject.

    Shared by :func:`landmark_directions` (cheap) and :func:`build_anatomy`, so
    the directions and the rendered contours come from the same curves.
    """

    def __init__(self, lm: np.ndarray, prm: dict[str, float]):
        self.lm = lm = np.asarray(lm, dtype=np.float64)
        dirs = np.zeros((19, 2))
        self.sn_len = float(np.linalg.norm(lm[N] - lm[S]))
        self.fwd = fwd = unit(lm[N] - lm[S])  # anterior along S-N
        self.up = up = perp(fwd)
        self.F = F = Frame(lm[S], fwd)  # mm, a forward, b up
        self.Fu = Fu = Frame(lm[S], fwd, self.sn_len)  # in units of |SN|
        dirs[S] = fwd
        dirs[OR] = fwd
        # Cranial vault: nasion is the deepest point between glabella and the nasal bones.
        a = np.radians(prm["nasal_angle"])
        self.nasal_dir = F.vec(np.sin(a), -np.cos(a))
        self.t_n = dirs[N] = unit(up - self.nasal_dir)
        va, vb = prm["vault_a"], prm["vault_b"]
        self.vault_pts = [lm[N]] + [Fu(x * (va if x < 0 else 1.0), y * vb) for x, y in _VAULT]
        self.vault_center = Fu(0.0, 0.45)
        self.fh = dirs[PO] = unit(lm[OR] - lm[PO])
        # Maxilla: ANS and PNS are the tips of the palate, A the deepest point in front.
        self.pal = dirs[PNS] = dirs[ANS] = unit(lm[ANS] - lm[PNS])
        self.pl = pl = float(np.linalg.norm(lm[ANS] - lm[PNS]))
        self.P = P = Frame(lm[PNS], self.pal)
        u_apex = lm[A] + P.vec(-6.0, 1.0)
        self.u_axis = dirs[UI] = unit(u_apex - lm[UI])
        self.u_len = float(np.linalg.norm(u_apex - lm[UI]))
        self.u_lab = _labial(self.u_axis, self.pal)
        pr = lm[UI] + self.u_axis * min(0.42 * self.u_len, 11.0) + self.u_lab * 1.6
        lingual = lm[UI] + self.u_axis * min(0.5 * self.u_len, 13.0) - self.u_lab * 3.5
        self.maxilla = spline([lm[ANS], lm[ANS] + P.vec(-5.0, -2.5), lm[A], pr, lingual, P(0.72 * pl, -7.5),
                               P(0.35 * pl, -5.0), P(0.08 * pl, -2.2), lm[PNS], P(0.3 * pl, 0.8), P(0.7 * pl, 0.7),
                               P(0.88 * pl, 1.0)], closed=True, corners=(0, 3, 8))
        dirs[A] = self.maxilla.direction(2)
        # Mandible: gonion on the rounded angle, menton a corner, chin points on the curve.
        self.r = r = dirs[AR] = unit(lm[GO] - lm[AR])  # down the ramus
        self.lr = lr = float(np.linalg.norm(lm[GO] - lm[AR]))
        self.R = R = Frame(lm[AR], r)  # a down the ramus, b forwards
        self.m = m = unit(lm[ME] - lm[GO])  # forwards along the mandibular plane
        self.lmp = lmp = float(np.linalg.norm(lm[ME] - lm[GO]))
        Mf = Frame(lm[GO], m)  # a forwards, b up
        t_go = dirs[GO] = unit(r + m)
        l_apex = 0.5 * (lm[B] + lm[POG]) - 7.0 * m
        self.l_axis = dirs[LI] = unit(l_apex - lm[LI])
        self.l_len = float(np.linalg.norm(l_apex - lm[LI]))
        self.l_lab = _labial(self.l_axis, m)
        idp = lm[LI] + self.l_axis * min(0.4 * self.l_len, 10.0) + self.l_lab * 1.5
        l_ling = lm[LI] + self.l_axis * min(0.5 * self.l_len, 12.0) - self.l_lab * 3.5
        ip = 0.5 * (lm[UI] + lm[LI])
        op = P(6.0, -21.0)
        self.o = unit(ip - op)
        self.lo = lo = float(np.linalg.norm(ip - op))
        self.O = O = Frame(op, self.o)  # occlusal plane: a forwards, b up
        self.mandible = spline(
            [R(-13.0, 2.5), R(-8.5, -2.5), lm[AR], R(0.6 * lr, -0.6), lm[GO], Mf(0.3 * lmp, 0.8), Mf(0.7 * lmp, -0.4),
             lm[ME], lm[GN], lm[POG], lm[B], idp, l_ling, O(0.55 * lo, -8.5), O(-2.0, -8.5), R(0.45 * lr, 24.0),
             R(-3.0, 27.0), R(4.0, 15.0), R(-7.0, 7.0)],
            closed=True, corners=(7, 11, 16), tangents={2: r, 3: r, 4: t_go, 5: m, 6: m})
        for i, k in ((7, ME), (8, GN), (9, POG), (10, B)):
            dirs[k] = self.mandible.direction(i)
        # Soft tissue profile, scalp and neck.
        down_m = -perp(m)
        sme = lm[ME] + down_m * prm["soft_menton"]
        prn = lm[SN] + F.vec(prm["nose_fwd"], prm["nose_up"])
        col = lm[SN] + F.vec(0.5 * prm["nose_fwd"], 0.45 * prm["nose_up"])
        ns = lm[N] + fwd * prm["soft_nasion"]
        st = 0.5 * (lm[UL] + lm[LL]) - fwd * 4.5
        c = self.vault_center
        scalp = [c + (p - c) * (1.0 + 6.0 / np.linalg.norm(p - c)) for p in self.vault_pts[1:]]
        occ = scalp[-1]
        cerv = lm[GO] + m * 0.12 * lmp + down_m * 22.0
        profile = [ns, ns + 0.5 * (prn - ns) - perp(unit(prn - ns)), prn, col, lm[SN],
                   0.5 * (lm[SN] + lm[UL]) - fwd * 2.0, lm[UL], st, lm[LL], 0.5 * (lm[LL] + lm[SPOG]) - fwd * 4.0,
                   lm[SPOG], 0.5 * (lm[SPOG] + sme) + 1.5 * fwd - 1.5 * up, sme,
                   lm[GO] + m * 0.55 * lmp + down_m * 14.0,
                   cerv, np.array([cerv[0] + 4.0, 320.0]), np.array([-60.0, 320.0]), occ + np.array([-25.0, 20.0])]
        self.silhouette = spline(profile + scalp[::-1], closed=True, corners=(4, 7, 15, 16))
        for i, k in ((4, SN), (6, UL), (8, LL), (10, SPOG)):
            dirs[k] = self.silhouette.direction(i)
        self.directions = unit(dirs)


_VAULT = [(1.05, 0.16), (1.03, 0.48), (0.89, 0.86), (0.6, 1.18), (0.22, 1.34), (-0.18, 1.34),
          (-0.55, 1.19), (-0.88, 0.9), (-1.08, 0.5), (-1.13, 0.06), (-1.03, -0.32), (-0.8, -0.56)]


def _labial(axis: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """The normal of a tooth ``axis`` on the ``forward`` side."""
    n = perp(axis)
    return n if n @ forward > 0 else -n


def landmark_directions(lm: np.ndarray, prm: dict[str, float]) -> np.ndarray:
    """``(19, 2)`` unit landmark directions (canonical frame) without building the layers.

    Identical to ``build_anatomy(lm, prm).directions``.
    """
    return _Scaffold(lm, prm).directions


def build_anatomy(lm: np.ndarray, prm: dict[str, float], step: float = 0.5) -> Anatomy:
    """Build the layers of one subject.

    Parameters
    ----------
    lm : ndarray
        ``(19, 2)`` landmarks in mm, canonical frame ``(x, y)``, y down,
        patient facing right.
    prm : dict of str to float
        One subject's nuisance parameters (see :func:`sample_anatomy_params`).
    step : float
        Polyline vertex spacing in mm (use about half a pixel).

    Returns
    -------
    Anatomy
    """
    sc = _Scaffold(lm, prm)
    lm = sc.lm
    bld = _Builder(step)
    bone, soft = prm["bone"], prm["soft"]
    F, Fu, P, R, O = sc.F, sc.Fu, sc.P, sc.R, sc.O
    fwd, up, pal, m, pl = sc.fwd, sc.up, sc.pal, sc.m, sc.pl

    # ---------------------------------------------------------------- cranium
    base_pts = [Fu(-0.55, -0.5), Fu(-0.3, -0.4), Fu(-0.02, -0.24), Fu(0.4, -0.1), Fu(0.78, -0.06)]
    bld.fill("cranium", spline(sc.vault_pts + base_pts, closed=True, tangents={0: sc.t_n}), 0.42 * bone, True)
    vpoly = spline(sc.vault_pts, tangents={0: sc.t_n}).sample(step)
    thick = prm["vault_thick"]
    hw = np.full(len(vpoly), thick)
    ramp = max(2, len(vpoly) // 12)
    hw[:ramp] = np.linspace(2.0, thick, ramp)
    _inner_band(bld, "vault", vpoly, hw, 0.75 * bone, center=sc.vault_center)
    _inner_band(bld, "vault_walls", vpoly, np.minimum(3.0 * hw, 18.0), 0.15 * bone, center=sc.vault_center)
    bld.blob("frontal_sinus", lm[N] + F.vec(-6.0, 13.0), rotate(fwd, 75), 8.0 * prm["sinus"], 3.5 * prm["sinus"],
             -0.35 * bone)
    nasal_end = lm[N] + prm["nasal_len"] * sc.nasal_dir
    bld.stroke("nasal_bone", spline([lm[N], nasal_end]), 1.8, 0.55 * bone)
    bld.stroke("cranial_base", spline([F(5, 5.5), F(18, 7.5), F(34, 6), F(sc.sn_len - 12, 9)]), 1.6, 0.5 * bone)
    bld.stroke("orbital_roof", spline([F(26, 7), F(40, 15), F(sc.sn_len - 6, 13)]), 1.2, 0.3 * bone)

    # ------------------------------------------------------ sella and clivus
    rs, ks = prm["sella_r"], prm["sella_k"]
    arc = [F(rs * np.cos(a), rs * ks * np.sin(a)) for a in np.radians(np.linspace(25, -205, 11))]
    tub = F(rs + 2.5, 0.5 * rs * ks + 1.0)
    bld.stroke("sella", spline([tub] + arc + [F(-0.9 * rs + 1.8, 0.42 * rs * ks + 5.5)]), 1.3, 0.7 * bone)
    bld.stroke("clinoid", spline([tub + F.vec(1.0, 1.0), F(0.4 * rs, 0.6 * rs * ks + 1.6)]), 1.1, 0.45 * bone)
    # Sphenoid body and clivus; the inferior contour passes through articulare.
    fa = Frame(lm[AR], fwd)
    sph = fa(14.0, 5.0)
    floor = [F(1.15 * rs * np.cos(a), rs * ks * np.sin(a) - 0.8) for a in np.radians([-20, -90, -160])]
    clivus = spline([F(rs + 3.0, 1.0), F(rs + 8.0, -7.0), sph, lm[AR], fa(-6.0, -6.0), F(-rs - 2.5, -1.0),
                     floor[2], floor[1], floor[0]], closed=True, corners=(3,))
    bld.fill("clivus", clivus, 0.45 * bone, textured=True)

    # ---------------------------------------------------------------- orbit
    # Orbitale is the lowest point of the orbit: the edge between the (darker)
    # orbit and the faint bony rim around it.
    orb_c = lm[OR] + up * prm["orbit_rb"]
    bld.blob("orbit", orb_c, fwd, prm["orbit_ra"], prm["orbit_rb"], -0.08 * bone)
    bld.ring("orbit_rim", orb_c, fwd, prm["orbit_ra"], prm["orbit_rb"], 1.5, 0.2 * bone)
    orb2 = orb_c + 1.5 * np.array([prm["orbit2_x"], prm["orbit2_y"]])
    bld.stroke("orbit_far", ellipse(orb2, fwd, prm["orbit_ra"] * 1.04, prm["orbit_rb"] * 1.04), 1.0, 0.14 * bone)

    # ------------------------------------------------------------------ ear
    fh = sc.fh
    E = Frame(lm[PO], fh)
    rm = prm["meatus_r"]
    meat_c = E(0.0, -rm)
    bld.blob("petrous", E(-6.0, 3.0), rotate(fh, 35), 15.0, 9.0, 0.3 * bone, True)
    bld.blob("mastoid", E(-9.0, -14.0), rotate(fh, -70), 11.0, 7.0, 0.25 * bone, True)
    bld.blob("meatus", meat_c, fh, rm, rm, -0.4 * bone)  # porion: top of the canal's edge
    bld.ring("meatus_rim", meat_c, fh, rm, rm, 1.0, 0.18 * bone)
    for i, (kx, ky, scl) in enumerate(((prm["rod1_x"], prm["rod1_y"], 1.0), (prm["rod2_x"], prm["rod2_y"], 1.06))):
        c = meat_c + 2.0 * np.array([kx, ky]) + E.vec(-1.0, -3.5)
        bld.stroke(f"ear_rod{i + 1}", ellipse(c, fh, prm["rod_r"] * scl, prm["rod_r"] * scl), 1.0, 0.55)

    # --------------------------------------------------------------- maxilla
    mpoly = bld.fill("maxilla", sc.maxilla, 0.4 * bone, textured=True)
    bld.cortex("maxilla_cortex", mpoly, 1.2, 0.3 * bone)
    face = spline([F(rs + 4.0, 3.0), F(0.5 * sc.sn_len, 5.0), lm[N] + F.vec(-6.0, 2.0), lm[N],
                   lm[N] + 0.8 * prm["nasal_len"] * sc.nasal_dir, lm[ANS] + P.vec(-5.0, 14.0),
                   lm[ANS] + P.vec(-4.0, 1.5), P(0.0, 1.5), P(-6.0, 6.0), sph, F(rs + 7.0, -6.0)],
                  closed=True, corners=(3, 4, 6, 7))
    bld.fill("face_bones", face, 0.3 * bone, textured=True)
    bld.blob("max_sinus", P(0.5 * pl, 13.0), pal, 12.0, 7.0, -0.12 * bone)
    bld.stroke("key_ridge", spline([lm[OR] + F.vec(-3, -7), P(0.55 * pl, 10.0), P(0.45 * pl, 3.0)]), 1.8, 0.22 * bone)
    ptm = spline([P(-0.5, 2.5), P(2.5, 10.0), P(0.0, 19.0), P(-4.5, 10.0)], closed=True, corners=(0,))
    bld.stroke("ptm", ptm, 1.0, 0.25 * bone)
    bld.blob("pterygoid", P(-6.0, 6.0), rotate(pal, 75), 12.0, 4.0, 0.2 * bone, True)

    # -------------------------------------------------------------- mandible
    mandpoly = sc.mandible.sample(step)
    bld.layers.append(Layer("mandible", [mandpoly], 0.38 * bone, True))
    bld.cortex("mandible_cortex", mandpoly, 2.2, 0.5 * bone)
    # The far-side mandible: magnified and slightly rotated about pogonion.
    g = np.radians(1.5 * prm["ghost_rot"])
    rot = np.array([[np.cos(g), -np.sin(g)], [np.sin(g), np.cos(g)]])
    ghost_shift = 1.5 * np.array([prm["ghost_x"], prm["ghost_y"]])
    ghost = (mandpoly - lm[POG]) @ rot.T * prm["ghost_scale"] + lm[POG] + ghost_shift
    bld.layers.append(Layer("mandible_far", [ghost], 0.16 * bone))
    bld.cortex("mandible_far_cortex", ghost, 2.0, 0.22 * bone)

    # ----------------------------------------------------------------- teeth
    _incisor(bld, lm[UI], sc.u_axis, sc.u_lab, sc.u_len, bone)
    _incisor(bld, lm[LI], sc.l_axis, sc.l_lab, sc.l_len, bone)
    shift = 1.5 * prm["molar_shift"]
    for s0, w, root in ((1.0, 9.5, 12.0), (11.0, 10.0, 12.0), (21.5, 10.0, 13.0), (31.0, 7.0, 13.0), (38.0, 7.0, 14.0)):
        if s0 + w / 2 < sc.lo - 6.0:
            _molar(bld, O, s0 + shift, w, root, +1.0, bone)
            _molar(bld, O, s0 + 2.5 + shift, w, root, -1.0, bone)
    _incisor(bld, O(sc.lo - 7.0, -0.5), unit(O.vec(-0.25, 1.0)), sc.o, 25.0, 0.7 * bone)

    # ------------------------------------------------------- spine and neck
    _spine(bld, R, sc.r, prm, bone)
    bld.fill("soft_tissue", sc.silhouette, 0.3 * soft)
    bld.blob("hyoid", lm[GO] + m * 0.45 * sc.lmp - perp(m) * 24.0, m, 6.0, 2.5, 0.35 * bone)
    return Anatomy(bld.layers, sc.directions)


def _inner_band(bld: _Builder, name: str, poly: np.ndarray, width: np.ndarray, att: float, center) -> None:
    """A band of ``width`` (per vertex, mm) on the side of ``poly`` facing ``center``."""
    n = perp(unit(np.gradient(poly, axis=0)))
    side = 1.0 if np.mean(np.sum(n * (center - poly), axis=1)) > 0 else -1.0
    inner = poly + side * n * width[:, None]
    bld.layers.append(Layer(name, [np.concatenate([poly, inner[::-1]])], att))


def _incisor(bld: _Builder, tip, axis, labial, length, bone) -> None:
    """An incisor (or canine) seen from the side: pointed tip, crown, tapering root."""
    T = Frame(tip, axis)  # a along the tooth, b towards... sign fixed below
    s = 1.0 if T.n @ labial > 0 else -1.0
    L = length
    pts = [T(0, 0), T(0.12 * L, s * 1.9), T(0.3 * L, s * 3.1), T(0.45 * L, s * 3.3), T(0.72 * L, s * 2.2),
           T(L, 0), T(0.72 * L, -s * 2.2), T(0.45 * L, -s * 3.5), T(0.25 * L, -s * 3.1), T(0.08 * L, -s * 1.4)]
    tooth = spline(pts, closed=True, corners=(0, 5))
    bld.fill("tooth", tooth, 0.9 * bone)
    crown = spline(pts[:4] + [T(0.42 * L, 0.0)] + pts[7:], closed=True, corners=(0, 4))
    bld.fill("enamel", crown, 0.35 * bone)
    bld.stroke("pulp", spline([T(0.3 * L, 0.0), T(0.9 * L, 0.0)]), 0.8, -0.3 * bone)


def _molar(bld: _Builder, O: Frame, s: float, w: float, root: float, side: float, bone: float) -> None:
    """A posterior tooth centred at ``s`` mm along the occlusal frame; ``side`` +1 upper, -1 lower."""
    def q(a, b):
        return O(s + a, side * b)
    hw = 0.5 * w
    crown = [q(-hw + 1.0, 0.2), q(-hw - 0.2, 3.0), q(-hw + 0.8, 6.5), q(hw - 0.8, 6.5), q(hw + 0.2, 3.0),
             q(hw - 1.0, 0.2), q(0.0, 1.0)]
    roots = [q(-hw + 0.8, 6.0), q(-hw + 1.4, 6.5 + root), q(-hw + 2.8, 6.5 + 0.9 * root), q(0.0, 9.0),
             q(hw - 2.8, 6.5 + 0.9 * root), q(hw - 1.4, 6.5 + root), q(hw - 0.8, 6.0)]
    bld.fill("molar_root", spline(roots, closed=True, corners=(1, 3, 5)), 0.3 * bone)
    bld.fill("molar_crown", spline(crown, closed=True, corners=(6,)), 0.55 * bone)


def _spine(bld: _Builder, R: Frame, r, prm, bone) -> None:
    """Cervical vertebrae C2-C6 behind the ramus (corners act as distractors)."""
    s = rotate(r, prm["spine_tilt"])
    V = Frame(R(6.0, -prm["spine_gap"]), s)  # a down the spine, b forwards
    depth = 15.0
    # Dens and C2 body.
    c2 = spline([V(-6, -4), V(-7, -9), V(8, -10.5), V(10, -depth), V(30, -depth), V(30, 0), V(12, 0.5), V(8, -3.0)],
                closed=True, corners=(3, 4, 5))
    p = bld.fill("C2", c2, 0.42 * bone, True)
    bld.cortex("C2_cortex", p, 1.0, 0.3 * bone)
    bld.blob("C1_arch", V(-2, 3.5), s, 5.0, 3.5, 0.35 * bone)
    bld.blob("C1_post", V(-4, -40), s, 4.0, 8.0, 0.18 * bone, True)
    top = 34.0
    for k in range(4):
        hgt = 12.5 - 0.3 * k
        a0, a1 = top, top + hgt
        body = spline([V(a0, -depth), V(a1, -depth), V(a1, 0), V(0.5 * (a0 + a1), 0.8), V(a0, 0)],
                      closed=True, corners=(0, 1, 2, 4))
        p = bld.fill("vertebra", body, 0.42 * bone, True)
        bld.cortex("vertebra_cortex", p, 1.0, 0.3 * bone)
        bld.blob("lamina", V(0.5 * (a0 + a1) + 2.0, -depth - 13), rotate(s, -75), 10.0, 3.5, 0.18 * bone, True)
        top = a1 + 4.0
    bld.blob("C2_spinous", V(20, -depth - 20), rotate(s, -70), 10.0, 4.5, 0.2 * bone, True)
