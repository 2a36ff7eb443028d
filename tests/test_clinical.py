"""Tests for lmkcore.analysis.clinical: the 8 ISBI 2015 clinical measures and classes.

Geometry tests build landmark sets whose measure value is known by
construction (computed by hand in the test), in mm, image coordinates
(x right, y DOWN), patient facing right.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from lmkcore.analysis import clinical as C

IDX = {name: i for i, name in enumerate(C.ISBI_LANDMARK_NAMES)}

# A plausible ISBI-like landmark set in mm (pixel * 0.1 mm), facing right.
BASE = np.array(
    [
        (80, 100),   # sella
        (146, 96),   # nasion
        (128, 121),  # orbitale
        (60, 120),   # porion
        (141, 163),  # subspinale (A)
        (132, 200),  # supramentale (B)
        (137, 216),  # pogonion
        (127, 223),  # menton
        (132, 221),  # gnathion
        (72, 190),   # gonion
        (140, 178),  # lower incisal incision
        (143, 179),  # upper incisal incision
        (156, 172),  # upper lip
        (153, 190),  # lower lip
        (152, 155),  # subnasale
        (147, 220),  # soft tissue pogonion
        (88, 153),   # posterior nasal spine
        (150, 153),  # anterior nasal spine
        (70, 150),   # articulare
    ],
    dtype=np.float64,
)


def base() -> np.ndarray:
    return BASE.copy()


def put(lm: np.ndarray, name: str, xy) -> None:
    lm[..., IDX[name], :] = xy


def get(lm: np.ndarray, name: str) -> np.ndarray:
    return lm[..., IDX[name], :]


def direction(deg: float) -> np.ndarray:
    """Unit vector at image angle ``deg`` (0 = +x, 90 = +y = down on screen)."""
    r = math.radians(deg)
    return np.array([math.cos(r), math.sin(r)])


def random_shapes(n: int, seed: int = 0, sigma: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return BASE + sigma * rng.standard_normal((n, 19, 2))


def rotation(deg: float) -> np.ndarray:
    r = math.radians(deg)
    return np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])


# --------------------------------------------------------------------------
# constants
# --------------------------------------------------------------------------
def test_landmark_names_and_constants():
    names = C.ISBI_LANDMARK_NAMES
    assert len(names) == 19 and len(set(names)) == 19
    assert names[0] == "sella" and names[1] == "nasion"
    assert names[10] == "lower_incisal_incision" and names[11] == "upper_incisal_incision"
    assert names[16] == "posterior_nasal_spine" and names[18] == "articulare"
    assert C.MEASURES == ("ANB", "SNB", "SNA", "ODI", "APDI", "FHI", "FMA", "MW")
    assert set(C.CLASS_NAMES) == set(C.MEASURES) == set(C.UNITS)
    assert {m: C.N_CLASSES[m] for m in C.MEASURES} == {
        **{m: 3 for m in C.MEASURES[:-1]},
        "MW": 4,
    }
    for m in C.MEASURES:
        assert "normal" in C.CLASS_NAMES[m][C.NORMAL_CLASS].lower()
    assert C.NORMAL_CLASS == 0


# --------------------------------------------------------------------------
# hand-constructed geometry: each measure hits a known value
# --------------------------------------------------------------------------
def sn_ab(sna_deg: float, snb_deg: float) -> np.ndarray:
    """S directly behind N; A and B below N at the given angles from N->S."""
    lm = base()
    n = get(lm, "nasion").copy()
    put(lm, "sella", n + (-70.0, 0.0))  # N->S points to image angle 180 deg
    # N->S is at 180 deg; a point at image angle (180 - theta) below N makes
    # the angle theta with N->S.
    put(lm, "subspinale", n + 68.0 * direction(180.0 - sna_deg))
    put(lm, "supramentale", n + 105.0 * direction(180.0 - snb_deg))
    return lm


@pytest.mark.parametrize(
    "sna_deg, snb_deg, cls_sna, cls_snb, cls_anb",
    [
        (82.0, 78.0, 0, 0, 0),   # ANB = 4.0: all normal
        (85.0, 78.0, 1, 0, 1),   # ANB = 7.0: prognathic maxilla, Class II
        (79.0, 80.0, 2, 2, 2),   # ANB = -1.0: retrognathic max., prognathic mand., Class III
        (80.0, 73.0, 0, 1, 1),   # ANB = 7.0 with retrognathic mandible
        (81.0, 78.5, 0, 0, 2),   # ANB = 2.5: Class III tendency
    ],
)
def test_sna_snb_anb_constructed(sna_deg, snb_deg, cls_sna, cls_snb, cls_anb):
    lm = sn_ab(sna_deg, snb_deg)
    assert C.sna(lm) == pytest.approx(sna_deg, abs=1e-9)
    assert C.snb(lm) == pytest.approx(snb_deg, abs=1e-9)
    assert C.anb(lm) == pytest.approx(sna_deg - snb_deg, abs=1e-9)
    cls = C.classify_all(lm)
    assert (cls["SNA"], cls["SNB"], cls["ANB"]) == (cls_sna, cls_snb, cls_anb)


def test_anb_is_signed():
    lm = sn_ab(79.0, 81.0)  # B in front of A
    assert C.anb(lm) == pytest.approx(-2.0, abs=1e-9)
    assert C.classify("ANB", C.anb(lm)) == 2  # Class III


def odi_geometry(mp_incl_deg: float, pp_tilt_deg: float) -> np.ndarray:
    """AB vertical, FH horizontal, mandibular plane rising backwards by
    ``mp_incl_deg``, palatal plane tilted by ``pp_tilt_deg`` (positive = ANS
    lower, i.e. down anteriorly). Then angle(Me->Go, B->A) = 90 - mp_incl and
    ODI = 90 - mp_incl + pp_tilt by hand."""
    lm = base()
    put(lm, "porion", (60.0, 120.0))
    put(lm, "orbitale", (130.0, 120.0))
    put(lm, "posterior_nasal_spine", (88.0, 153.0))
    put(lm, "anterior_nasal_spine", np.array([88.0, 153.0]) + 62.0 * direction(pp_tilt_deg))
    put(lm, "supramentale", (132.0, 200.0))
    put(lm, "subspinale", (132.0, 163.0))  # B->A points straight up (270 deg)
    me = np.array([127.0, 223.0])
    put(lm, "menton", me)
    # Me->Go points backwards and up: image angle 180 + mp_incl.
    put(lm, "gonion", me + 60.0 * direction(180.0 + mp_incl_deg))
    return lm


@pytest.mark.parametrize(
    "mp_incl, pp_tilt, expected, cls",
    [
        (17.5, 2.0, 74.5, 0),    # Kim's mean
        (25.0, -3.0, 62.0, 2),   # PP tipped up anteriorly (negative): open bite tendency
        (5.0, 1.0, 86.0, 1),     # deep bite tendency
        (20.0, -1.5, 68.5, 0),   # just inside the normal range
    ],
)
def test_odi_constructed(mp_incl, pp_tilt, expected, cls):
    lm = odi_geometry(mp_incl, pp_tilt)
    assert expected == pytest.approx(90.0 - mp_incl + pp_tilt)
    assert C.odi(lm) == pytest.approx(expected, abs=1e-9)
    assert C.classify_all(lm)["ODI"] == cls


def apdi_geometry(facial_deg: float, ab_rot_deg: float, pp_tilt_deg: float) -> np.ndarray:
    """FH horizontal; facial plane N->Pog at image angle 180 - facial_deg, so
    angle(Or->Po, N->Pog) = facial_deg; A->B is the facial direction rotated
    by ``ab_rot_deg`` clockwise on screen (B further back = Class II side), so
    the AB term is -ab_rot_deg; palatal term = pp_tilt_deg.
    APDI = facial_deg - ab_rot_deg + pp_tilt_deg by hand."""
    lm = base()
    put(lm, "porion", (60.0, 120.0))
    put(lm, "orbitale", (130.0, 120.0))
    n = np.array([146.0, 96.0])
    put(lm, "nasion", n)
    facial_dir = 180.0 - facial_deg
    put(lm, "pogonion", n + 120.0 * direction(facial_dir))
    a = np.array([141.0, 163.0])
    put(lm, "subspinale", a)
    put(lm, "supramentale", a + 37.0 * direction(facial_dir + ab_rot_deg))
    put(lm, "posterior_nasal_spine", (88.0, 153.0))
    put(lm, "anterior_nasal_spine", np.array([88.0, 153.0]) + 62.0 * direction(pp_tilt_deg))
    return lm


@pytest.mark.parametrize(
    "facial, ab_rot, pp_tilt, expected, cls",
    [
        (85.0, 4.0, 0.4, 81.4, 0),    # Kim & Vietas' mean
        (86.0, 12.0, -1.0, 73.0, 1),  # A well ahead of B: Class II tendency
        (92.0, -3.0, 0.5, 95.5, 2),   # B ahead of A: Class III tendency
        (88.0, 8.0, -2.0, 78.0, 0),
    ],
)
def test_apdi_constructed(facial, ab_rot, pp_tilt, expected, cls):
    lm = apdi_geometry(facial, ab_rot, pp_tilt)
    assert expected == pytest.approx(facial - ab_rot + pp_tilt)
    assert C.apdi(lm) == pytest.approx(expected, abs=1e-9)
    assert C.classify_all(lm)["APDI"] == cls


def fhi_geometry(pfh_vec, afh: float = 100.0) -> np.ndarray:
    lm = base()
    s = np.array([80.0, 100.0])
    n = np.array([146.0, 96.0])
    put(lm, "sella", s)
    put(lm, "nasion", n)
    put(lm, "gonion", s + np.asarray(pfh_vec, dtype=float))
    put(lm, "menton", n + (0.0, afh))
    return lm


@pytest.mark.parametrize(
    "pfh_vec, expected, cls",
    [
        ((0.0, 70.0), 0.70, 0),
        ((-42.0, 56.0), 0.70, 0),  # 3-4-5 triangle: |S-Go| = 70
        ((0.0, 80.0), 0.80, 1),    # short face tendency
        ((-36.0, 48.0), 0.60, 2),  # |S-Go| = 60: long face tendency
    ],
)
def test_fhi_constructed(pfh_vec, expected, cls):
    lm = fhi_geometry(pfh_vec)
    assert C.fhi(lm) == pytest.approx(expected, abs=1e-12)
    assert C.classify_all(lm)["FHI"] == cls


def fma_geometry(phi_deg: float) -> np.ndarray:
    lm = base()
    s = np.array([80.0, 100.0])
    put(lm, "sella", s)
    put(lm, "nasion", s + (66.0, 0.0))  # S->N along +x
    go = np.array([72.0, 190.0])
    put(lm, "gonion", go)
    put(lm, "gnathion", go + 61.0 * direction(phi_deg))  # forward and down
    return lm


@pytest.mark.parametrize("phi, cls", [(29.0, 0), (35.0, 1), (22.0, 2), (31.4, 0), (26.8, 0)])
def test_fma_constructed(phi, cls):
    lm = fma_geometry(phi)
    assert C.fma(lm) == pytest.approx(phi, abs=1e-9)
    if phi not in (31.4, 26.8):  # exact thresholds are tested on values below
        assert C.classify_all(lm)["FMA"] == cls


def test_fma_uses_sn_and_gogn_not_frankfort():
    lm = fma_geometry(29.0)
    # Tilting FH (porion/orbitale) or moving menton must not change the challenge's FMA.
    put(lm, "orbitale", get(lm, "orbitale") + (0.0, 15.0))
    put(lm, "menton", get(lm, "menton") + (-5.0, 9.0))
    assert C.fma(lm) == pytest.approx(29.0, abs=1e-9)


def mw_geometry(offset) -> np.ndarray:
    lm = base()
    lit = np.array([140.0, 178.0])
    put(lm, "lower_incisal_incision", lit)
    put(lm, "upper_incisal_incision", lit + np.asarray(offset, dtype=float))
    return lm


@pytest.mark.parametrize(
    "offset, expected, cls",
    [
        ((3.0, 0.0), 3.0, 0),     # normal
        ((2.4, 3.2), 4.0, 0),     # normal, oblique
        ((3.0, 4.0), 5.0, 3),     # large overjet (C4)
        ((-1.0, 0.0), -1.0, 2),   # upper tip behind lower tip: anterior cross bite
        ((-3.0, -4.0), -5.0, 2),
        ((0.0, 0.0), 0.0, 1),     # tips coincide: edge to edge (C2)
        ((1.0, 0.0), 1.0, 2),     # 0 < MW < 2: challenge program falls through to C3
        ((0.0, 3.0), 3.0, 0),     # equal x: sign is + as in the challenge program
        ((2.0, 0.0), 2.0, 0),     # exactly the lower bound: normal
        ((0.0, 4.5), 4.5, 0),     # exactly the upper bound: normal
    ],
)
def test_mw_constructed_and_special_cases(offset, expected, cls):
    lm = mw_geometry(offset)
    assert C.mw(lm) == pytest.approx(expected, abs=1e-12)
    assert C.classify_all(lm)["MW"] == cls


# --------------------------------------------------------------------------
# thresholds: just below / at / just above
# --------------------------------------------------------------------------
INTERVAL_CASES = [
    # measure, low, high, class below low, class above high
    ("ANB", 3.2, 5.7, 2, 1),
    ("SNB", 74.6, 78.7, 1, 2),
    ("SNA", 79.4, 83.2, 2, 1),
    ("ODI", 68.4, 80.5, 2, 1),
    ("APDI", 77.6, 85.2, 1, 2),
    ("FHI", 0.65, 0.75, 2, 1),
    ("FMA", 26.8, 31.4, 2, 1),
]


@pytest.mark.parametrize("measure, low, high, below, above", INTERVAL_CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_interval_thresholds(measure, low, high, below, above, dtype):
    assert C.THRESHOLDS[measure] == (low, high, below, above)
    lo, hi = dtype(low), dtype(high)
    inf = dtype(np.inf)
    values = np.array(
        [
            np.nextafter(lo, -inf), lo, np.nextafter(lo, inf),
            (lo + hi) / dtype(2),
            np.nextafter(hi, -inf), hi, np.nextafter(hi, inf),
            lo - dtype(10), hi + dtype(10),
        ],
        dtype=dtype,
    )
    got = C.classify(measure, values)
    assert got.tolist() == [below, 0, 0, 0, 0, 0, above, below, above]
    assert got.dtype.kind == "i"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mw_thresholds_and_zero(dtype):
    inf = dtype(np.inf)
    two, four5, zero = dtype(2.0), dtype(4.5), dtype(0.0)
    values = np.array(
        [
            np.nextafter(two, -inf), two, np.nextafter(two, inf),
            np.nextafter(four5, -inf), four5, np.nextafter(four5, inf),
            zero, -zero, np.nextafter(zero, inf), np.nextafter(zero, -inf),
            dtype(-7.0), dtype(11.0),
        ],
        dtype=dtype,
    )
    got = C.classify("MW", values)
    assert got.tolist() == [2, 0, 0, 0, 0, 3, 1, 1, 2, 2, 2, 3]


def test_mw_edge_tolerance():
    values = np.array([0.3, -0.3, 0.5, -0.5, 0.6, -0.6, 3.0, 5.0])
    assert C.classify("MW", values).tolist() == [2, 2, 2, 2, 2, 2, 0, 3]
    assert C.classify("MW", values, mw_edge_tol=0.5).tolist() == [1, 1, 1, 1, 2, 2, 0, 3]
    lm = mw_geometry((0.3, 0.0))
    assert C.classify_all(lm)["MW"] == 2
    assert C.classify_all(lm, mw_edge_tol=0.5)["MW"] == 1
    with pytest.raises(ValueError, match="mw_edge_tol"):
        C.classify("MW", values, mw_edge_tol=2.0)
    with pytest.raises(ValueError, match="mw_edge_tol"):
        C.classify_all(lm, mw_edge_tol=-1.0)


@pytest.mark.parametrize(
    "measure, build, threshold, below, above",
    [
        ("SNA", lambda v: sn_ab(v, 78.0), 79.4, 2, 0),
        ("SNA", lambda v: sn_ab(v, 78.0), 83.2, 0, 1),
        ("SNB", lambda v: sn_ab(82.0, v), 74.6, 1, 0),
        ("SNB", lambda v: sn_ab(82.0, v), 78.7, 0, 2),
        ("ANB", lambda v: sn_ab(78.0 + v, 78.0), 3.2, 2, 0),
        ("ANB", lambda v: sn_ab(78.0 + v, 78.0), 5.7, 0, 1),
        ("ODI", lambda v: odi_geometry(90.0 - v, 0.0), 68.4, 2, 0),
        ("ODI", lambda v: odi_geometry(90.0 - v, 0.0), 80.5, 0, 1),
        ("APDI", lambda v: apdi_geometry(v + 5.0, 5.0, 0.0), 77.6, 1, 0),
        ("APDI", lambda v: apdi_geometry(v + 5.0, 5.0, 0.0), 85.2, 0, 2),
        ("FHI", lambda v: fhi_geometry((0.0, 100.0 * v)), 0.65, 2, 0),
        ("FHI", lambda v: fhi_geometry((0.0, 100.0 * v)), 0.75, 0, 1),
        ("FMA", fma_geometry, 26.8, 2, 0),
        ("FMA", fma_geometry, 31.4, 0, 1),
    ],
)
def test_geometry_just_below_and_above_threshold(measure, build, threshold, below, above):
    eps = 1e-6 if measure != "FHI" else 1e-8
    lo_lm, hi_lm = build(threshold - eps), build(threshold + eps)
    v_lo = C.measure_values(lo_lm)[measure]
    v_hi = C.measure_values(hi_lm)[measure]
    assert v_lo == pytest.approx(threshold - eps, abs=eps / 100)
    assert v_hi == pytest.approx(threshold + eps, abs=eps / 100)
    assert C.classify_all(lo_lm)[measure] == below
    assert C.classify_all(hi_lm)[measure] == above


# --------------------------------------------------------------------------
# invariances
# --------------------------------------------------------------------------
ANGLES_AND_RATIOS = ("ANB", "SNB", "SNA", "ODI", "APDI", "FHI", "FMA")


def test_translation_invariance_all_measures():
    lm = random_shapes(40, seed=1)
    moved = lm + np.array([37.5, -81.25])
    a, b = C.measure_values(lm), C.measure_values(moved)
    for m in C.MEASURES:
        np.testing.assert_allclose(b[m], a[m], atol=1e-9, err_msg=m)


@pytest.mark.parametrize("deg", [-35.0, -7.0, 12.0, 40.0])
def test_rotation_invariance(deg):
    lm = random_shapes(40, seed=2)
    center = np.array([100.0, 150.0])
    rot = (lm - center) @ rotation(deg).T + center
    a, b = C.measure_values(lm), C.measure_values(rot)
    for m in ANGLES_AND_RATIOS:
        np.testing.assert_allclose(b[m], a[m], atol=1e-9, err_msg=m)
    # MW: magnitude is rotation invariant; its sign follows the image x axis.
    np.testing.assert_allclose(np.abs(b["MW"]), np.abs(a["MW"]), atol=1e-9)


def test_mw_sign_kept_under_small_rotation():
    lm = random_shapes(40, seed=3, sigma=0.3)  # UIT clearly ahead of LIT
    rot = (lm - 120.0) @ rotation(5.0).T + 120.0
    np.testing.assert_allclose(C.mw(rot), C.mw(lm), atol=1e-9)
    assert np.all(C.mw(lm) > 0)


@pytest.mark.parametrize("scale", [0.37, 2.5])
def test_isotropic_scaling(scale):
    lm = random_shapes(40, seed=4)
    scaled = lm * scale
    a, b = C.measure_values(lm), C.measure_values(scaled)
    for m in ANGLES_AND_RATIOS:
        np.testing.assert_allclose(b[m], a[m], atol=1e-9, err_msg=m)
    np.testing.assert_allclose(b["MW"], scale * a["MW"], atol=1e-9)


def test_mirrored_input_changes_signed_terms():
    """Documented convention: patients must face right. A mirrored (left-facing)
    image gives different ODI/APDI/MW, so the convention matters."""
    lm = random_shapes(10, seed=5)
    mirrored = lm * np.array([-1.0, 1.0])
    a, b = C.measure_values(lm), C.measure_values(mirrored)
    for m in ("SNA", "SNB", "ANB", "FHI", "FMA"):  # unsigned angles and ratios
        np.testing.assert_allclose(b[m], a[m], atol=1e-9)
    assert not np.allclose(b["MW"], a["MW"])
    assert not np.allclose(b["ODI"], a["ODI"])


# --------------------------------------------------------------------------
# batch shapes, dtypes, consistency
# --------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [(), (5,), (3, 4), (2, 1, 3)])
def test_batch_shapes(batch):
    n = int(np.prod(batch)) if batch else 1
    flat = random_shapes(n, seed=6)
    lm = flat.reshape(batch + (19, 2))
    values = C.measure_values(lm)
    classes = C.classify_all(lm)
    assert list(values) == list(C.MEASURES) and list(classes) == list(C.MEASURES)
    per_item = [C.measure_values(flat[i]) for i in range(n)]
    for m in C.MEASURES:
        assert values[m].shape == batch and values[m].dtype == np.float64
        assert classes[m].shape == batch and classes[m].dtype.kind == "i"
        expected = np.array([float(d[m]) for d in per_item]).reshape(batch)
        np.testing.assert_array_equal(values[m], expected)
        fn = getattr(C, m.lower())
        np.testing.assert_array_equal(fn(lm), values[m])
        np.testing.assert_array_equal(classes[m], C.classify(m, values[m]))


def test_list_int_float32_and_empty_inputs():
    as_list = BASE.astype(int).tolist()
    np.testing.assert_allclose(C.anb(as_list), C.anb(BASE.astype(int).astype(float)))
    lm = random_shapes(20, seed=7)
    v64 = C.measure_values(lm)
    v32 = C.measure_values(lm.astype(np.float32))
    for m in C.MEASURES:
        np.testing.assert_allclose(v32[m], v64[m], rtol=1e-4, atol=1e-3, err_msg=m)
    empty = C.classify_all(np.zeros((0, 19, 2)))
    assert all(c.shape == (0,) for c in empty.values())
    non_contiguous = np.asfortranarray(lm)[::2]
    np.testing.assert_array_equal(C.fhi(non_contiguous), C.fhi(lm[::2]))


def test_chunking_matches_unchunked(monkeypatch):
    lm = random_shapes(23, seed=8, sigma=4.0).reshape(23, 1, 19, 2)
    ref_v, ref_c = C.measure_values(lm), C.classify_all(lm)
    monkeypatch.setattr(C, "_CHUNK", 5)
    v, c = C.measure_values(lm), C.classify_all(lm)
    for m in C.MEASURES:
        np.testing.assert_array_equal(v[m], ref_v[m])
        np.testing.assert_array_equal(c[m], ref_c[m])


# --------------------------------------------------------------------------
# probabilities and entropy
# --------------------------------------------------------------------------
def test_class_probabilities_identical_copies_is_one_hot():
    images = random_shapes(6, seed=9, sigma=4.0)
    sampled = np.broadcast_to(images, (17,) + images.shape)
    probs = C.class_probabilities(sampled)
    classes = C.classify_all(images)
    for m in C.MEASURES:
        k = C.N_CLASSES[m]
        assert probs[m].shape == (6, k)
        np.testing.assert_array_equal(probs[m], np.eye(k)[classes[m]])
        np.testing.assert_array_equal(C.class_entropy(probs[m]), np.zeros(6))


@pytest.mark.parametrize("chunk", [7, 100, 1 << 17])
def test_class_probabilities_match_brute_force(monkeypatch, chunk):
    monkeypatch.setattr(C, "_CHUNK", chunk)
    rng = np.random.default_rng(10)
    images = random_shapes(15, seed=11, sigma=3.0).reshape(3, 5, 19, 2)
    sampled = images + 2.0 * rng.standard_normal((40, 3, 5, 19, 2))
    probs = C.class_probabilities(sampled)
    classes = C.classify_all(sampled)  # (40, 3, 5)
    for m in C.MEASURES:
        k = C.N_CLASSES[m]
        brute = np.stack([(classes[m] == j).mean(axis=0) for j in range(k)], axis=-1)
        assert probs[m].shape == (3, 5, k)
        np.testing.assert_allclose(probs[m], brute, atol=1e-15)
        np.testing.assert_allclose(probs[m].sum(axis=-1), 1.0)


def test_class_probabilities_single_image_and_single_sample():
    probs = C.class_probabilities(BASE[None])  # S = 1, batch shape ()
    classes = C.classify_all(BASE)
    for m in C.MEASURES:
        assert probs[m].shape == (C.N_CLASSES[m],)
        assert probs[m][int(classes[m])] == 1.0


def test_class_entropy():
    assert C.class_entropy([1 / 3, 1 / 3, 1 / 3]) == pytest.approx(math.log(3))
    assert C.class_entropy([0.25] * 4) == pytest.approx(math.log(4))
    assert C.class_entropy([0.5, 0.5, 0.0]) == pytest.approx(math.log(2))
    assert C.class_entropy([0.0, 1.0, 0.0]) == 0.0
    p = np.array([0.2, 0.3, 0.5])
    assert C.class_entropy(p) == pytest.approx(-(p * np.log(p)).sum())
    batch = np.tile(p, (2, 4, 1))
    out = C.class_entropy(batch)
    assert out.shape == (2, 4) and np.all(np.isfinite(out))
    with pytest.raises(ValueError, match="NaN"):
        C.class_entropy([0.5, np.nan, 0.5])
    with pytest.raises(ValueError, match="negative"):
        C.class_entropy([1.5, -0.5, 0.0])
    with pytest.raises(ValueError):
        C.class_entropy(0.5)


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(19, 3), (18, 2), (2,), (38,), (4, 2, 19), ()])
def test_wrong_trailing_shape(shape):
    bad = np.zeros(shape)
    with pytest.raises(ValueError, match=r"\(\.\.\., 19, 2\)"):
        C.measure_values(bad)
    with pytest.raises(ValueError, match=r"19, 2\)"):
        C.classify_all(bad)
    with pytest.raises(ValueError, match=r"19, 2\)"):
        C.sna(bad)


def test_class_probabilities_needs_sample_axis():
    with pytest.raises(ValueError, match=r"\(S, \.\.\., 19, 2\)"):
        C.class_probabilities(BASE)
    with pytest.raises(ValueError, match="S == 0"):
        C.class_probabilities(np.zeros((0, 3, 19, 2)))


def test_nan_landmark_makes_only_its_measures_undefined():
    lm = random_shapes(4, seed=12)
    ref = C.measure_values(lm)
    lm[2, IDX["gonion"], 1] = np.nan  # gonion enters ODI (mandibular plane), FHI (posterior height), FMA
    vals, cls = C.measure_values(lm), C.classify_all(lm)
    for m in C.MEASURES:
        uses_gonion = m in ("ODI", "FHI", "FMA")
        assert np.isnan(vals[m][2]) == uses_gonion, m
        assert (cls[m][2] == C.UNDEFINED) == uses_gonion, m
        np.testing.assert_array_equal(vals[m][[0, 1, 3]], ref[m][[0, 1, 3]])  # other images untouched


@pytest.mark.parametrize("bad_value, word", [(np.inf, "inf"), (-np.inf, "inf")])
def test_non_finite_input(bad_value, word):
    lm = random_shapes(4, seed=12)
    lm[2, IDX["gonion"], 1] = bad_value
    with pytest.raises(ValueError, match=word):
        C.measure_values(lm)
    with pytest.raises(ValueError, match=word):
        C.class_probabilities(lm[None])
    with pytest.raises(ValueError, match=word):
        C.fma(lm)  # even a measure that does not use gonion rejects it


def test_classify_errors():
    with pytest.raises(ValueError, match="unknown measure 'XYZ'"):
        C.classify("XYZ", [1.0])
    with pytest.raises(ValueError, match="unknown measure"):
        C.classify("anb", [1.0])  # names are case-sensitive
    assert C.classify("ANB", [1.0, np.nan]).tolist() == [2, C.UNDEFINED]  # NaN: undefined, not an error
    with pytest.raises(ValueError):
        C.classify("ANB", ["a"])
    with pytest.raises(ValueError, match="19, 2"):
        C.measure_values(np.full((19, 2), "x"))


def test_fhi_degenerate():
    lm = base()
    put(lm, "menton", get(lm, "nasion"))
    assert np.isnan(C.fhi(lm))  # anterior face height 0: undefined, not a number
    assert C.classify_all(lm)["FHI"] == C.UNDEFINED and C.class_name("FHI", C.UNDEFINED) == "undefined"
