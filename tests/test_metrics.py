"""Metrics on small hand-computed examples (Payer et al. 2019, Sec. 3.2; Thaler et al. 2021, Tables 1-2)."""
import numpy as np
import pytest

from lmkcore.errors import ConfigError
from lmkcore.analysis.metrics import (
    cumulative_curve,
    identification_rate,
    identified,
    image_errors,
    normalisation_spacing,
    per_landmark_table,
    point_errors,
    summary,
    summary_table,
)

NAN = np.nan


def _pred_true():
    """2 images x 3 landmarks; offsets (px) 3-4-5 triangle, 1 px, 0 px / 6 px, 8 px, missing truth."""
    true = np.array([[[10, 10], [20, 20], [30, 30]], [[5, 5], [6, 6], [NAN, NAN]]], dtype=float)
    pred = true + np.array([[[3, 4], [1, 0], [0, 0]], [[6, 0], [0, 8], [0, 0]]], dtype=float)
    pred[1, 2] = [1.0, 1.0]
    return pred, true


def test_point_errors_hand_computed_and_nan():
    pred, true = _pred_true()
    e = point_errors(pred, true, spacing=0.5)
    np.testing.assert_allclose(e[0], [2.5, 0.5, 0.0])
    np.testing.assert_allclose(e[1, :2], [3.0, 4.0])
    assert np.isnan(e[1, 2])


def test_point_errors_anisotropic_and_per_image_spacing():
    pred, true = _pred_true()
    # dx scaled by 2, dy by 1: (3, 4) -> (6, 4) -> sqrt(52); (1, 0) -> 2; (6, 0) -> 12; (0, 8) -> 8
    e = point_errors(pred, true, spacing=[[2.0, 1.0]])  # (1, d): per axis
    np.testing.assert_allclose(e[0, :2], [np.sqrt(52.0), 2.0])
    np.testing.assert_allclose(e[1, :2], [12.0, 8.0])
    # per-image (M, d) spacing
    e2 = point_errors(pred, true, spacing=[[2.0, 1.0], [1.0, 0.5]])
    np.testing.assert_allclose(e2[1, :2], [6.0, 4.0])
    # per-image isotropic factors, (M,) with M != d, and the (M, 1) form
    pred3, true3 = np.concatenate([pred, pred[:1]]), np.concatenate([true, true[:1]])
    e3 = point_errors(pred3, true3, spacing=[1.0, 2.0, 10.0])
    np.testing.assert_allclose(e3[2, 0], 50.0)
    np.testing.assert_allclose(point_errors(pred, true, spacing=[[1.0], [2.0]])[1, :2], [12.0, 16.0])
    with pytest.raises(ConfigError, match="ambiguous"):
        point_errors(pred, true, spacing=[1.0, 2.0])  # M == d == 2
    with pytest.raises(ConfigError):
        point_errors(pred, true, spacing=[1.0, 2.0, 3.0])


def test_point_errors_missing_prediction_modes():
    pred, true = _pred_true()
    pred[0, 1] = NAN
    with pytest.raises(ConfigError):
        point_errors(pred, true)
    assert np.isinf(point_errors(pred, true, missing_prediction="inf")[0, 1])
    assert np.isnan(point_errors(pred, true, missing_prediction="ignore")[0, 1])
    with pytest.raises(ConfigError):
        point_errors(pred[:, :2], true)


def test_normalisation_spacing_wrist_width():
    true = np.array([[[0, 0], [100, 0], [7, 7]], [[0, 0], [0, 25], [1, 1]]], dtype=float)
    s = normalisation_spacing(true, 0, 1, 50.0)
    np.testing.assert_allclose(s, [[0.5], [2.0]])
    pred = true + [3.0, 4.0]
    np.testing.assert_allclose(point_errors(pred, true, s), [[2.5] * 3, [10.0] * 3])


def test_summary_hand_computed():
    errors = np.array([[0.5, 1.0, 2.0, 2.5], [3.0, 4.0, 11.0, NAN]])
    s = summary(errors)
    valid = np.array([0.5, 1.0, 2.0, 2.5, 3.0, 4.0, 11.0])
    assert s["n"] == 7 and s["n missing"] == 1
    assert s["PE mean"] == pytest.approx(24.0 / 7)
    assert s["PE SD"] == pytest.approx(np.sqrt(np.mean((valid - 24.0 / 7) ** 2)))
    assert s["PE median"] == pytest.approx(2.5)
    # SDR counts PE <= r: 2 mm -> {0.5, 1, 2}; 2.5 -> +2.5; 3 -> +3; 4 -> +4
    assert s["SDR 2mm"] == pytest.approx(300 / 7)
    assert s["SDR 2.5mm"] == pytest.approx(400 / 7)
    assert s["SDR 3mm"] == pytest.approx(500 / 7)
    assert s["SDR 4mm"] == pytest.approx(600 / 7)
    # #O_r counts PE > r (Payer Eq. 6): > 2 -> {2.5, 3, 4, 11}; > 4 -> {11}; > 10 -> {11}
    assert (s["#O 2mm"], s["#O 4mm"], s["#O 10mm"]) == (4, 1, 1)
    assert s["#O 2mm %"] == pytest.approx(400 / 7)
    assert s["SDR 2mm"] + s["#O 2mm %"] == pytest.approx(100.0)


def test_summary_custom_radii_and_empty():
    s = summary([1.0, 5.0], sdr_radii=(1.0,), outlier_radii=(1.0,))
    assert s["SDR 1mm"] == 50.0 and s["#O 1mm"] == 1
    empty = summary([NAN, NAN])
    assert empty["n"] == 0 and empty["n missing"] == 2 and np.isnan(empty["PE mean"]) and np.isnan(empty["SDR 2mm"])


def test_image_errors_and_cumulative_curve():
    errors = np.array([[1.0, 3.0, NAN], [2.0, 2.0, 8.0], [NAN, NAN, NAN]])
    ipe = image_errors(errors)
    np.testing.assert_allclose(ipe[:2], [2.0, 4.0])
    assert np.isnan(ipe[2])
    x, frac = cumulative_curve([3.0, 1.0, NAN, 2.0, 2.0])
    np.testing.assert_allclose(x, [1.0, 2.0, 2.0, 3.0])
    np.testing.assert_allclose(frac, [0.25, 0.75, 0.75, 1.0])
    x, frac = cumulative_curve([3.0, 1.0, 2.0, 2.0], grid=[0.0, 1.0, 2.5, 10.0])
    np.testing.assert_allclose(frac, [0.0, 0.25, 0.75, 1.0])


def test_tables():
    errors = np.array([[1.0, 3.0], [2.0, NAN], [5.0, 1.0]])
    t = per_landmark_table(errors, ["a", "b"])
    assert list(t.index) == ["a", "b"]
    assert t.loc["a", "PE mean"] == pytest.approx(8 / 3)
    assert t.loc["b", "PE median"] == pytest.approx(2.0)
    assert t.loc["b", "n missing"] == 1
    assert t.loc["a", "#O 4mm"] == 1
    assert list(per_landmark_table(errors).index) == ["L1", "L2"]
    with pytest.raises(ConfigError):
        per_landmark_table(errors, ["a"])
    tab = summary_table({"m1": errors, "m2": errors * 2})
    assert list(tab.index) == ["m1", "m2"]
    for col in ("PE mean", "PE SD", "PE median", "SDR 2mm", "SDR 2.5mm", "SDR 3mm", "SDR 4mm", "#O 2mm", "#O 10mm %"):
        assert col in tab.columns
    assert tab.loc["m2", "PE mean"] == pytest.approx(2 * tab.loc["m1", "PE mean"])
    assert tab.loc["m1", "SDR 2mm"] == pytest.approx(300 / 5)  # 1, 2, 1 of 1, 3, 2, 5, 1


def test_identification_hand_computed():
    # one image, 4 vertebra-like landmarks 30 mm apart on a line (spacing 2 mm/px -> 15 px apart)
    true = np.array([[[0, 0], [0, 15], [0, 30], [NAN, NAN]]], dtype=float)
    pred = np.array(
        [
            [
                [0, 5],  # 10 mm from own truth, closest -> identified
                [0, 24],  # 18 mm from own, but 12 mm from landmark 2 -> wrong closest truth
                [0, 41],  # 22 mm from own truth -> beyond 20 mm (closest is own)
                [0, 45],  # no truth -> not counted
            ]
        ],
        dtype=float,
    )
    ok = identified(pred, true, spacing=2.0)
    np.testing.assert_array_equal(ok, [[True, False, False, False]])
    r = identification_rate(pred, true, spacing=2.0)
    assert r == {"#ID": 1, "n": 3, "ID rate": pytest.approx(100 / 3)}
    # boundary: Eq. (8) uses PE <= 20 mm
    assert identified(np.array([[[0.0, 10.0]]]), np.array([[[0.0, 0.0]]]), spacing=2.0)[0, 0]
    assert not identified(np.array([[[0.0, 10.01]]]), np.array([[[0.0, 0.0]]]), spacing=2.0)[0, 0]


def test_identification_uses_physical_distance():
    # anisotropic spacing decides which truth is closest: pred at (4, 0) px,
    # truths (0, 0) [own] and (4, 3) px; with spacing (1, 1) own is 4 px, other 3 px;
    # with spacing (0.5, 2) own is 2 mm, other 6 mm
    true = np.array([[[0.0, 0.0], [4.0, 3.0]]])
    pred = np.array([[[4.0, 0.0], [4.0, 3.0]]])
    assert not identified(pred, true, spacing=1.0)[0, 0]
    assert identified(pred, true, spacing=[0.5, 2.0])[0, 0]
    nan_pred = pred.copy()
    nan_pred[0, 0] = NAN
    assert not identified(nan_pred, true)[0, 0]
