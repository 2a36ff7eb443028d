"""The 8 cephalometric clinical measures of the ISBI 2015 challenge, vectorised.

The ISBI 2015 grand challenge "Automated Detection and Analysis for Diagnosis
in Cephalometric X-ray Image" classifies every cephalogram by eight clinical measures computed from the 19
landmarks (ANB, SNB, SNA, ODI, APDI, FHI, FMA, MW), each into the challenge's
anatomical types C1, C2, C3 (and C4 for MW).

Sources
-------
[W16]  C.-W. Wang et al., "A benchmark for comparison of dental radiography
       analysis algorithms", Medical Image Analysis 31:63-76, 2016,
       doi:10.1016/j.media.2016.02.004 (Table 1: measure definitions,
       Table 2: classification criteria). Challenge site:
       http://www-o.ntust.edu.tw/~cweiwang/ISBI2015/challenge1/
[L16]  C. Lindner, C.-W. Wang et al., "Fully automatic system for accurate
       localisation and analysis of cephalometric landmarks in lateral
       cephalograms", Scientific Reports 6:33581, 2016 (same criteria).
[REF]  The challenge's classification program as ported to Python in public
       code (a script ``Angle.py`` that writes ``ANBtype`` ... ``mwtype``;
       found in the public code index, owning repository not identified).
       It settles what the tables leave open: signs of the
       composite angles, which side of each threshold is open, and MW's
       0 < MW < 2 mm gap. Where [REF] and the tables agree we cite both.
[K74]  Y. H. Kim, "Overbite depth indicator with particular reference to
       anterior open-bite", Am. J. Orthod. 65:586-611, 1974 (ODI).
[KV78] Y. H. Kim and J. J. Vietas, "Anteroposterior dysplasia indicator: an
       adjunct to cephalometric differential diagnosis", Am. J. Orthod.
       73:619-633, 1978 (APDI).

Conventions
-----------
* A landmark array has shape ``(..., 19, 2)``: any leading batch shape, the
  19 ISBI landmarks in the order of :data:`ISBI_LANDMARK_NAMES`, and
  ``(x, y)`` in **millimetres** with x = column (to the right) and y = row
  **downwards** (image coordinates). Multiply pixel coordinates by the pixel
  spacing (0.1 mm for ISBI 2015) before calling.
* Patients face to the right (nasion has a larger x than sella), as in every
  ISBI image. The signed terms of ODI/APDI and the sign of MW assume this;
  mirror left-facing images (x -> -x) first.
* Angles are in degrees, FHI is a dimensionless ratio, MW is in mm.
* Undefined measures are NaN, never a confident number: an angle whose
  defining vector has zero length (e.g. sella = nasion makes SNA, SNB, ANB and
  FMA undefined), FHI with nasion = menton, and every measure using a NaN
  landmark (a flagged, degenerate prediction). Their class is
  :data:`UNDEFINED` (-1, name "undefined"); :func:`class_probabilities` counts
  such samples in no class (``return_undefined=True`` gives their fraction) and
  :func:`class_count_table` counts them in an ``undefined`` column. Infinite
  coordinates are an error.
* Angles between vectors are unsigned, ``atan2(|cross(u, v)|, dot(u, v))`` in
  [0, 180]; where the challenge gives a term a sign, it is decided by
  ``cross(u, v) = u_x v_y - u_y v_x``. Because y points down, ``cross > 0``
  means v is rotated **clockwise as seen on the screen** from u.
* Classes: the integer class ``k`` is the challenge's type ``C(k+1)``; class
  0 (C1) is always "normal". Seven measures have 3 classes; MW has 4 (see
  :func:`mw`), so use :data:`N_CLASSES` rather than assuming 3.
* Threshold values themselves are **normal**: every normal range is a closed
  interval (the challenge program tests ``value < low`` and ``value > high``
  for the abnormal types). A value equal to a threshold in the dtype of the
  values (e.g. ``np.float32(74.6)``) is normal.

All functions are vectorised over the batch shape; large inputs are processed
in chunks of flattened instances to bound the memory of temporaries.
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import numpy as np

from lmkcore.errors import ConfigError
from lmkcore.data.landmarks import ISBI_LANDMARK_NAMES  # the 19 names, file order (re-exported)

__all__ = [
    "ISBI_LANDMARK_NAMES",
    "MEASURES",
    "UNITS",
    "CLASS_NAMES",
    "N_CLASSES",
    "NORMAL_CLASS",
    "THRESHOLDS",
    "anb",
    "snb",
    "sna",
    "odi",
    "apdi",
    "fhi",
    "fma",
    "mw",
    "measure_values",
    "classify",
    "classify_all",
    "class_probabilities",
    "class_entropy",
    "class_count_table",
    "UNDEFINED",
    "UNDEFINED_NAME",
    "class_name",
]

_N_LANDMARKS = len(ISBI_LANDMARK_NAMES)
_INDEX: Dict[str, int] = {name: i for i, name in enumerate(ISBI_LANDMARK_NAMES)}

#: The eight measures, in the challenge's order.
MEASURES: Tuple[str, ...] = ("ANB", "SNB", "SNA", "ODI", "APDI", "FHI", "FMA", "MW")

#: Unit of each measure's value.
UNITS: Dict[str, str] = {
    "ANB": "deg",
    "SNB": "deg",
    "SNA": "deg",
    "ODI": "deg",
    "APDI": "deg",
    "FHI": "ratio",
    "FMA": "deg",
    "MW": "mm",
}

#: Human-readable names of the classes; index k is the challenge's type C(k+1).
#: Index 0 is "normal" for every measure. MW has four types.
CLASS_NAMES: Dict[str, Tuple[str, ...]] = {
    "ANB": ("Class I (normal)", "Class II", "Class III"),
    "SNB": ("normal mandible", "retrognathic mandible", "prognathic mandible"),
    "SNA": ("normal maxilla", "prognathic maxilla", "retrognathic maxilla"),
    "ODI": ("normal", "deep bite tendency", "open bite tendency"),
    "APDI": ("normal", "Class II tendency", "Class III tendency"),
    "FHI": ("normal", "short face tendency", "long face tendency"),
    "FMA": ("normal", "mandible high angle tendency", "mandible low angle tendency"),
    "MW": ("normal", "edge to edge", "anterior cross bite", "large overjet"),
}

#: Number of classes per measure (3, except 4 for MW).
N_CLASSES: Dict[str, int] = {m: len(names) for m, names in CLASS_NAMES.items()}

#: The integer class that means "normal" (the challenge's C1) for every measure.
NORMAL_CLASS = 0

#: The class of an undefined (NaN) measure value, e.g. coincident defining landmarks.
UNDEFINED = -1
#: Name of :data:`UNDEFINED`.
UNDEFINED_NAME = "undefined"


def class_name(measure: str, k: int) -> str:
    """Human-readable name of class ``k`` of ``measure`` (``"undefined"`` for :data:`UNDEFINED`)."""
    _check_measure(measure)
    return UNDEFINED_NAME if int(k) == UNDEFINED else CLASS_NAMES[measure][int(k)]

#: ``measure -> (low, high, class_below_low, class_above_high)`` for the seven
#: interval-type measures, from [W16] Table 2 and [REF]; ``low <= v <= high``
#: is class 0 (normal). MW is special-cased (see :func:`mw`).
THRESHOLDS: Dict[str, Tuple[float, float, int, int]] = {
    "ANB": (3.2, 5.7, 2, 1),    # < 3.2 Class III (C3); > 5.7 Class II (C2)
    "SNB": (74.6, 78.7, 1, 2),  # < 74.6 retrognathic (C2); > 78.7 prognathic (C3)
    "SNA": (79.4, 83.2, 2, 1),  # < 79.4 retrognathic (C3); > 83.2 prognathic (C2)
    "ODI": (68.4, 80.5, 2, 1),  # < 68.4 open bite (C3); > 80.5 deep bite (C2)
    "APDI": (77.6, 85.2, 1, 2),  # < 77.6 Class II (C2); > 85.2 Class III (C3)
    "FHI": (0.65, 0.75, 2, 1),  # < 0.65 long face (C3); > 0.75 short face (C2)
    "FMA": (26.8, 31.4, 2, 1),  # < 26.8 low angle (C3); > 31.4 high angle (C2)
}

#: MW normal range (closed) and the large-overjet boundary, in mm.
_MW_NORMAL_LOW = 2.0
_MW_NORMAL_HIGH = 4.5

# Flattened instances per chunk (bounds the size of every temporary array).
_CHUNK = 1 << 17


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------
def _as_landmarks(landmarks_mm, *, name: str = "landmarks_mm", min_ndim: int = 2) -> np.ndarray:
    """Validate a ``(..., 19, 2)`` landmark array and return it as a float array."""
    arr = np.asarray(landmarks_mm)
    if arr.dtype.kind not in "fiub":
        raise ConfigError(
            f"{name} must be a real numeric array of shape (..., 19, 2); got dtype {arr.dtype}"
        )
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    if arr.ndim < min_ndim or arr.shape[-2:] != (_N_LANDMARKS, 2):
        want = "(S, ..., 19, 2)" if min_ndim > 2 else "(..., 19, 2)"
        raise ConfigError(
            f"{name} must have shape {want} (19 ISBI landmarks, (x, y) in mm); "
            f"got shape {arr.shape}"
        )
    _check_finite(arr, name)
    return arr


def _check_finite(arr: np.ndarray, name: str) -> None:
    """Raise a clear error on inf (NaN marks an undefined landmark and is allowed). Fast path: one sum."""
    if arr.size == 0:
        return
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.sum(arr, dtype=np.float64)
    if np.isfinite(total):
        return
    n_inf = int(np.count_nonzero(np.isinf(arr)))
    if n_inf:
        raise ConfigError(
            f"{name} contains infinite values ({n_inf} inf); landmark coordinates must be finite "
            "(or NaN for an undefined landmark)"
        )


def _check_measure(measure: str) -> str:
    if not isinstance(measure, str) or measure not in CLASS_NAMES:
        raise ConfigError(
            f"unknown measure {measure!r}; expected one of {', '.join(MEASURES)}"
        )
    return measure


# --------------------------------------------------------------------------
# geometry helpers on (x, y) tuples of float64 arrays
# --------------------------------------------------------------------------
class _Points:
    """Lazy, cached access to landmark coordinates and shared terms of one chunk."""

    def __init__(self, lm: np.ndarray):
        self._lm = lm
        self._xy: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
        self.cache: Dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> Tuple[np.ndarray, np.ndarray]:
        xy = self._xy.get(name)
        if xy is None:
            i = _INDEX[name]
            xy = (
                np.array(self._lm[..., i, 0], dtype=np.float64),
                np.array(self._lm[..., i, 1], dtype=np.float64),
            )
            self._xy[name] = xy
        return xy

    def vec(self, start: str, end: str) -> Tuple[np.ndarray, np.ndarray]:
        """Vector from landmark ``start`` to landmark ``end``."""
        (x0, y0), (x1, y1) = self[start], self[end]
        return x1 - x0, y1 - y0


def _dot(u, v) -> np.ndarray:
    return u[0] * v[0] + u[1] * v[1]


def _cross(u, v) -> np.ndarray:
    return u[0] * v[1] - u[1] * v[0]


def _angle(u, v) -> np.ndarray:
    """Unsigned angle between vectors u and v in degrees, in [0, 180]; NaN if either has zero length."""
    ang = np.degrees(np.arctan2(np.abs(_cross(u, v)), _dot(u, v)))
    zero = ((u[0] == 0) & (u[1] == 0)) | ((v[0] == 0) & (v[1] == 0))
    return np.where(zero, np.nan, ang)


# --------------------------------------------------------------------------
# the measures (core functions on one chunk)
# --------------------------------------------------------------------------
def _sna(p: _Points) -> np.ndarray:
    if "SNA" not in p.cache:
        p.cache["SNA"] = _angle(p.vec("nasion", "sella"), p.vec("nasion", "subspinale"))
    return p.cache["SNA"]


def _snb(p: _Points) -> np.ndarray:
    if "SNB" not in p.cache:
        p.cache["SNB"] = _angle(p.vec("nasion", "sella"), p.vec("nasion", "supramentale"))
    return p.cache["SNB"]


def _anb(p: _Points) -> np.ndarray:
    return _sna(p) - _snb(p)


def _palatal_fh(p: _Points) -> np.ndarray:
    """Palatal plane to FH: + when the palatal plane tips down anteriorly."""
    if "PP-FH" not in p.cache:
        fh = p.vec("porion", "orbitale")
        pp = p.vec("posterior_nasal_spine", "anterior_nasal_spine")
        ang = _angle(fh, pp)
        p.cache["PP-FH"] = np.where(_cross(fh, pp) < 0, -ang, ang)
    return p.cache["PP-FH"]


def _odi(p: _Points) -> np.ndarray:
    ab_mp = _angle(p.vec("menton", "gonion"), p.vec("supramentale", "subspinale"))
    return ab_mp + _palatal_fh(p)


def _apdi(p: _Points) -> np.ndarray:
    facial_plane = p.vec("nasion", "pogonion")
    facial_angle = _angle(p.vec("orbitale", "porion"), facial_plane)
    ab = p.vec("subspinale", "supramentale")
    ab_facial = _angle(facial_plane, ab)
    ab_facial = np.where(_cross(facial_plane, ab) > 0, -ab_facial, ab_facial)
    return facial_angle + ab_facial + _palatal_fh(p)


def _fhi(p: _Points) -> np.ndarray:
    pfh = np.hypot(*p.vec("sella", "gonion"))
    afh = np.hypot(*p.vec("nasion", "menton"))
    # undefined (NaN) where nasion and menton coincide (anterior face height 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(afh == 0, np.nan, pfh / np.where(afh == 0, 1.0, afh))


def _fma(p: _Points) -> np.ndarray:
    return _angle(p.vec("sella", "nasion"), p.vec("gonion", "gnathion"))


def _mw(p: _Points) -> np.ndarray:
    (xl, yl), (xu, yu) = p["lower_incisal_incision"], p["upper_incisal_incision"]
    dist = np.hypot(xu - xl, yu - yl)
    return np.where(xu < xl, -dist, dist)


_CORE: Dict[str, Callable[[_Points], np.ndarray]] = {
    "ANB": _anb,
    "SNB": _snb,
    "SNA": _sna,
    "ODI": _odi,
    "APDI": _apdi,
    "FHI": _fhi,
    "FMA": _fma,
    "MW": _mw,
}


# --------------------------------------------------------------------------
# classification (core, no validation)
# --------------------------------------------------------------------------
def _classify_core(measure: str, values: np.ndarray, mw_edge_tol: float) -> np.ndarray:
    """Classes (int8) of validated float values."""
    if measure == "MW":
        lo = values.dtype.type(_MW_NORMAL_LOW)
        hi = values.dtype.type(_MW_NORMAL_HIGH)
        tol = values.dtype.type(mw_edge_tol)
        cls = np.full(values.shape, 2, dtype=np.int8)  # anterior cross bite (incl. 0<MW<2)
        cls[np.abs(values) <= tol] = 1  # edge to edge
        cls[(values >= lo) & (values <= hi)] = 0  # normal
        cls[values > hi] = 3  # large overjet
        cls[np.isnan(values)] = UNDEFINED
        return cls
    low, high, below, above = THRESHOLDS[measure]
    lo = values.dtype.type(low)
    hi = values.dtype.type(high)
    cls = np.zeros(values.shape, dtype=np.int8)
    cls[values < lo] = below
    cls[values > hi] = above
    cls[np.isnan(values)] = UNDEFINED
    return cls


def _check_tol(mw_edge_tol) -> float:
    tol = float(mw_edge_tol)
    if not (0.0 <= tol < _MW_NORMAL_LOW):
        raise ConfigError(
            f"mw_edge_tol must be in [0, {_MW_NORMAL_LOW}) mm; got {mw_edge_tol!r}"
        )
    return tol


# --------------------------------------------------------------------------
# chunked driver
# --------------------------------------------------------------------------
def _run(
    landmarks_mm,
    measures: Tuple[str, ...],
    *,
    classes: bool,
    mw_edge_tol: float = 0.0,
) -> Dict[str, np.ndarray]:
    """Validate, then compute values (float64) or classes (int8) chunk by chunk."""
    lm = _as_landmarks(landmarks_mm)
    batch = lm.shape[:-2]
    flat = lm.reshape(-1, _N_LANDMARKS, 2)  # a view for contiguous input
    n = flat.shape[0]
    dtype = np.int8 if classes else np.float64
    out = {m: np.empty(n, dtype=dtype) for m in measures}
    for start in range(0, n, _CHUNK):
        pts = _Points(flat[start : start + _CHUNK])
        for m in measures:
            vals = _CORE[m](pts)
            out[m][start : start + _CHUNK] = (
                _classify_core(m, vals, mw_edge_tol) if classes else vals
            )
    return {m: a.reshape(batch) for m, a in out.items()}


def _one(measure: str, landmarks_mm) -> np.ndarray:
    return _run(landmarks_mm, (measure,), classes=False)[measure]


# --------------------------------------------------------------------------
# public: one function per measure
# --------------------------------------------------------------------------
def anb(landmarks_mm) -> np.ndarray:
    """ANB angle in degrees, signed: ``ANB = SNA - SNB``.

    Landmarks: sella (S), nasion (N), subspinale (A), supramentale (B).
    Formula: SNA - SNB, with SNA/SNB the unsigned angles at N (see :func:`sna`,
    :func:`snb`). Negative when B lies in front of A relative to N.

    Classes ([W16] Table 2, [REF]): 0 = C1 Class I (normal), 3.2 <= ANB <= 5.7;
    1 = C2 Class II, ANB > 5.7; 2 = C3 Class III, ANB < 3.2.

    Sources disagree in wording only: [W16] Table 1 calls ANB "the angle between
    A, N and B"; an unsigned angle could never fall below 0 and would put a
    Class III patient with B ahead of A into Class I/II. The challenge program
    [REF] computes the signed difference SNA - SNB, which we follow.

    Returns an array of the batch shape ``landmarks_mm.shape[:-2]``.
    """
    return _one("ANB", landmarks_mm)


def snb(landmarks_mm) -> np.ndarray:
    """SNB angle in degrees: the unsigned angle S-N-B at nasion, in [0, 180].

    Landmarks: sella (S), nasion (N), supramentale (B).
    Formula: angle between the vectors N->S and N->B ([W16] Table 1, [REF]).

    Classes ([W16] Table 2, [REF]): 0 = C1 normal mandible,
    74.6 <= SNB <= 78.7; 1 = C2 retrognathic mandible, SNB < 74.6;
    2 = C3 prognathic mandible, SNB > 78.7.
    """
    return _one("SNB", landmarks_mm)


def sna(landmarks_mm) -> np.ndarray:
    """SNA angle in degrees: the unsigned angle S-N-A at nasion, in [0, 180].

    Landmarks: sella (S), nasion (N), subspinale (A).
    Formula: angle between the vectors N->S and N->A ([W16] Table 1, [REF]).

    Classes ([W16] Table 2, [REF]): 0 = C1 normal maxilla, 79.4 <= SNA <= 83.2;
    1 = C2 prognathic maxilla, SNA > 83.2; 2 = C3 retrognathic maxilla,
    SNA < 79.4.
    """
    return _one("SNA", landmarks_mm)


def odi(landmarks_mm) -> np.ndarray:
    """Overbite depth indicator (ODI, Kim [K74]) in degrees.

    Landmarks: subspinale (A), supramentale (B), menton (Me), gonion (Go),
    porion (Po), orbitale (Or), posterior/anterior nasal spine (PNS, ANS).

    Formula ([W16] Table 1: "arithmetic sum of the angle between the AB plane
    and the mandibular plane (Me-Go) and the angle of the palatal plane to the
    Frankfort horizontal"; signs from [REF])::

        ODI = angle(Me->Go, B->A) + s * angle(Po->Or, PNS->ANS)

    where the first term is unsigned and ``s = -1`` when ``cross(Po->Or,
    PNS->ANS) < 0`` (image y down: the palatal plane tips *up* anteriorly
    relative to FH), else ``+1`` (tips down anteriorly). This matches Kim's
    rule (palatal-plane angle negative when PP is tilted upward anteriorly).

    Classes ([W16] Table 2, [REF]): 0 = C1 normal (74.5 +/- 6.07, i.e.
    68.4 <= ODI <= 80.5); 1 = C2 deep bite tendency, ODI > 80.5;
    2 = C3 open bite tendency, ODI < 68.4.

    Note: some secondary sources write ODI with the palatal plane measured
    against the mandibular plane; the challenge and Kim use FH, as here.
    """
    return _one("ODI", landmarks_mm)


def apdi(landmarks_mm) -> np.ndarray:
    """Anteroposterior dysplasia indicator (APDI, Kim & Vietas [KV78]) in degrees.

    Landmarks: orbitale (Or), porion (Po), nasion (N), pogonion (Pog),
    subspinale (A), supramentale (B), posterior/anterior nasal spine.

    Formula ([W16] Table 1: sum of the facial angle FH to N-Pog, the angle of
    the AB plane to the facial plane, and the palatal plane to FH; signs from
    [REF])::

        APDI = angle(Or->Po, N->Pog)
             + t * angle(N->Pog, A->B)
             + s * angle(Po->Or, PNS->ANS)

    with unsigned angles, ``t = -1`` when ``cross(N->Pog, A->B) > 0`` (B lies
    behind the parallel to the facial plane through A, i.e. A "ahead" of B;
    Class II direction), else ``+1``; ``s`` as in :func:`odi` (+ when the
    palatal plane tips down anteriorly).

    Classes ([W16] Table 2, [REF]): 0 = C1 normal (81.4 +/- 3.8, i.e.
    77.6 <= APDI <= 85.2); 1 = C2 Class II tendency, APDI < 77.6;
    2 = C3 Class III tendency, APDI > 85.2.

    Note: secondary sources sometimes shorten this to "FH-AB + PP-FH"; since
    the facial-plane terms telescope, that is the same quantity up to sign
    conventions. We keep the challenge's three-term form.
    """
    return _one("APDI", landmarks_mm)


def fhi(landmarks_mm) -> np.ndarray:
    """Facial height index (FHI): dimensionless ratio ``|S-Go| / |N-Me|``.

    Landmarks: sella (S), gonion (Go), nasion (N), menton (Me).
    Formula ([W16] Table 1, [REF]): posterior face height (S-Go) divided by
    anterior face height (N-Me). Raises ``ValueError`` if N and Me coincide.

    Classes ([W16] Table 2, [REF]): 0 = C1 normal, 0.65 <= FHI <= 0.75;
    1 = C2 short face tendency, FHI > 0.75; 2 = C3 long face tendency,
    FHI < 0.65.
    """
    return _one("FHI", landmarks_mm)


def fma(landmarks_mm) -> np.ndarray:
    """"FMA" as defined by the challenge, in degrees: angle between S-N and Go-Gn.

    Landmarks: sella (S), nasion (N), gonion (Go), gnathion (Gn).
    Formula ([W16] Table 1, [REF]): unsigned angle between the vectors S->N
    and Go->Gn, in [0, 180].

    Sources disagree: the clinical Frankfort-mandibular plane angle (Tweed's
    FMA) is the angle between FH (Po-Or) and the mandibular plane (Go-Me);
    S-N to Go-Gn is what orthodontists call SN-GoGn. The challenge defines and
    computes "FMA" as S-N to Go-Gn, with thresholds chosen for that, so we
    follow the challenge.

    Classes ([W16] Table 2, [REF]): 0 = C1 normal, 26.8 <= FMA <= 31.4;
    1 = C2 mandible high angle tendency, FMA > 31.4; 2 = C3 mandible low angle
    tendency, FMA < 26.8.
    """
    return _one("FMA", landmarks_mm)


def mw(landmarks_mm) -> np.ndarray:
    """Modified Wits appraisal (MW) in mm: signed incisal-edge distance.

    Landmarks: upper incisal incision (UIT, L12 in 1-based ISBI numbering) and
    lower incisal incision (LIT, L11).
    Formula ([W16] Table 1, [REF])::

        MW = sign(x_UIT - x_LIT) * ||UIT - LIT||

    i.e. the Euclidean UIT-LIT distance, negative when the upper incisal tip
    lies behind (smaller x than) the lower one. When x_UIT == x_LIT the sign
    is +, as in [REF] (the paper's formula is undefined there). The sign uses
    the image x axis, so MW is translation invariant and its magnitude is
    rotation invariant, but its sign is tied to the patient facing right.

    Classes ([W16] Table 2, [REF]) - MW has FOUR types:
        0 = C1 normal, 2 <= MW <= 4.5;
        1 = C2 edge to edge, MW == 0 (|MW| <= ``mw_edge_tol`` in
            :func:`classify`; default 0, i.e. exact equality as in [REF]);
        2 = C3 anterior cross bite, MW < 0;
        3 = C4 large overjet, MW > 4.5.
    Special cases: (a) the paper's table leaves 0 < MW < 2 mm uncovered; the
    challenge program falls through to C3 there, and so do we (class 2);
    (b) edge-to-edge is an exact equality, so for continuous coordinates it
    occurs only when the two tips coincide, unless a tolerance is given;
    (c) MW is not the classical Wits appraisal (A and B projected on the
    occlusal plane), which the 19 ISBI landmarks cannot support.
    """
    return _one("MW", landmarks_mm)


def measure_values(landmarks_mm) -> Dict[str, np.ndarray]:
    """All eight measures: ``{measure: float64 array of the batch shape}``.

    See the per-measure functions for formulas, units (:data:`UNITS`) and
    sources. Input shape ``(..., 19, 2)`` in mm, image coordinates.
    """
    return _run(landmarks_mm, MEASURES, classes=False)


# --------------------------------------------------------------------------
# public: classification
# --------------------------------------------------------------------------
def classify(measure: str, values, *, mw_edge_tol: float = 0.0) -> np.ndarray:
    """Challenge class of measure values: int8 array of the same shape.

    ``k`` is the challenge's type ``C(k+1)``; 0 is normal. Values in
    ``[low, high]`` (closed; thresholds included) are normal, values below
    ``low`` / above ``high`` get the classes in :data:`THRESHOLDS`. A value
    equal to a threshold in the values' own dtype counts as normal (the
    threshold is converted to that dtype before comparing). MW has four
    classes and special cases, see :func:`mw`; ``mw_edge_tol`` (mm, default 0
    = the challenge's exact ``MW == 0``) widens its edge-to-edge class.

    NaN values (undefined measures) get :data:`UNDEFINED` (-1).
    Raises ``ValueError`` for an unknown measure.
    """
    _check_measure(measure)
    tol = _check_tol(mw_edge_tol)
    vals = np.asarray(values)
    if vals.dtype.kind not in "fiub":
        raise ConfigError(f"values for {measure} must be real numbers; got dtype {vals.dtype}")
    if vals.dtype.kind != "f":
        vals = vals.astype(np.float64)
    return _classify_core(measure, vals, tol)


def classify_all(landmarks_mm, *, mw_edge_tol: float = 0.0) -> Dict[str, np.ndarray]:
    """Classes of all eight measures: ``{measure: int8 array of the batch shape}``.

    Equivalent to ``classify(m, measure_values(landmarks_mm)[m])`` for each m,
    but chunked so no full-size float temporaries are kept.
    """
    tol = _check_tol(mw_edge_tol)
    return _run(landmarks_mm, MEASURES, classes=True, mw_edge_tol=tol)


def class_probabilities(
    sampled_landmarks_mm, *, mw_edge_tol: float = 0.0, return_undefined: bool = False
):
    """Fraction of samples in each class, per measure.

    Input: ``(S, ..., 19, 2)`` - S landmark samples (e.g. from a predictive
    distribution) for each of the ``...`` images, in mm.
    Output: ``{measure: float64 array (..., K)}`` with ``K = N_CLASSES[measure]``
    (3; 4 for MW); entry ``[..., k]`` is the fraction of the S samples whose
    class is k, so each row sums to 1 - the fraction of samples for which
    the measure is undefined (:data:`UNDEFINED`; 0 for finite, non-coincident
    landmarks). With ``return_undefined`` also returns ``{measure: (...)}``
    float64, that undefined fraction. Computed in chunks over the images
    (about ``2**17`` sample-instances at a time) to bound memory.
    """
    tol = _check_tol(mw_edge_tol)
    lm = _as_landmarks(sampled_landmarks_mm, name="sampled_landmarks_mm", min_ndim=3)
    n_samples = lm.shape[0]
    if n_samples == 0:
        raise ConfigError("sampled_landmarks_mm has no samples (S == 0)")
    batch = lm.shape[1:-2]
    flat = lm.reshape(n_samples, -1, _N_LANDMARKS, 2)
    n_img = flat.shape[1]
    counts = {m: np.zeros((n_img, N_CLASSES[m] + 1), dtype=np.int64) for m in MEASURES}  # last: undefined
    step = max(1, _CHUNK // n_samples)
    for start in range(0, n_img, step):
        chunk = flat[:, start : start + step]
        width = chunk.shape[1]
        pts = _Points(chunk)
        for m in MEASURES:
            k = N_CLASSES[m] + 1
            cls = _classify_core(m, _CORE[m](pts), tol).astype(np.intp)
            cls[cls == UNDEFINED] = k - 1
            flat_idx = cls + k * np.arange(width, dtype=np.intp)
            counts[m][start : start + width] = np.bincount(
                flat_idx.ravel(), minlength=k * width
            ).reshape(width, k)
    probs = {m: (c[:, :-1] / n_samples).reshape(batch + (N_CLASSES[m],)) for m, c in counts.items()}
    if return_undefined:
        return probs, {m: (c[:, -1] / n_samples).reshape(batch) for m, c in counts.items()}
    return probs


def class_entropy(probs) -> np.ndarray:
    """Shannon entropy in **nats** (natural log) over the last axis.

    ``H = -sum_k p_k ln p_k`` with ``0 ln 0 = 0``; input ``(..., K)`` (K = 3,
    or 4 for MW), output ``(...)``. Maximum is ``ln K`` (ln 3 ~ 1.0986).
    Raises ``ValueError`` for a 0-d input, NaN or negative probabilities.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim < 1:
        raise ConfigError("probs must have a class axis last, shape (..., K)")
    if np.isnan(p).any():
        raise ConfigError("probs contain NaN")
    if (p < 0).any():
        raise ConfigError("probs contain negative values")
    plogp = p * np.log(np.where(p > 0, p, 1.0))
    return -np.sum(plogp, axis=-1)



def class_count_table(classes: dict[str, np.ndarray]):
    """Images per class and measure as a DataFrame (rows: measures, columns: C1..C4).

    Parameters
    ----------
    classes : dict
        Measure name to an integer class array (e.g. from :func:`classify_all`).

    Returns
    -------
    pandas.DataFrame
        Counts; ``C4`` exists for MW only (NaN elsewhere); ``undefined``
        counts the :data:`UNDEFINED` entries (undefined measures).
    """
    import pandas as pd

    width = max(N_CLASSES[m] for m in classes)
    rows = {}
    for m, c in classes.items():
        c = np.asarray(c).ravel().astype(np.int64)
        defined = c[c != UNDEFINED]
        counts = np.bincount(defined, minlength=N_CLASSES[m]).astype(float)
        rows[m] = np.concatenate([counts, np.full(width - len(counts), np.nan), [float(c.size - defined.size)]])
    df = pd.DataFrame.from_dict(rows, orient="index", columns=[f"C{k + 1}" for k in range(width)] + [UNDEFINED_NAME])
    df.index.name = "measure"
    return df
