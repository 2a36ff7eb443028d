"""Tests for lmkcore.analysis.clinical_study: Fig. 9 curves, summaries, annotation-only Gaussians, real-file loading."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from lmkcore.analysis import clinical as C
from lmkcore.analysis import clinical_study as cs
from lmkcore.errors import ConfigError


def test_accuracy_vs_fraction_matches_brute_force():
    rng = np.random.default_rng(0)
    ent = rng.integers(0, 5, 40).astype(float)  # many ties: stable order decides
    ok = rng.random(40) < 0.6
    frac, acc = cs.accuracy_vs_fraction(ok, ent)
    order = sorted(range(40), key=lambda i: (ent[i], i))
    for k in (1, 7, 20, 40):
        assert frac[k - 1] == pytest.approx(k / 40)
        assert acc[k - 1] == pytest.approx(100 * np.mean(ok[order[:k]]))
    with pytest.raises(ConfigError):
        cs.accuracy_vs_fraction(ok[:3], ent)


def test_fig9_summary_values_and_auc():
    rng = np.random.default_rng(1)
    m = 60
    ref = {k: rng.integers(0, C.N_CLASSES[k], m) for k in C.MEASURES}
    ent = {k: rng.random(m) for k in C.MEASURES}
    # wrong exactly where entropy is high for ANB: AUC 1, the 50 % least uncertain all right
    pred = {k: ref[k].copy() for k in C.MEASURES}
    pred["ANB"] = np.where(ent["ANB"] > np.median(ent["ANB"]), (ref["ANB"] + 1) % 3, ref["ANB"])
    flip = rng.random(m) < 0.3
    pred["SNA"] = np.where(flip, (ref["SNA"] + 1) % 3, ref["SNA"])
    t = cs.fig9_summary(pred, ref, ent, other=ref)
    assert t.loc["ANB", "model acc @0.5"] == 100 and t.loc["ANB", "model acc @1"] == 50
    assert t.loc["ANB", "entropy AUC"] == 1.0
    assert np.isnan(t.loc["SNB", "entropy AUC"])  # nothing wrong
    assert (t["junior acc @1"] == 100).all()
    wrong = pred["SNA"] != ref["SNA"]
    u = mannwhitneyu(ent["SNA"][wrong], ent["SNA"][~wrong]).statistic / (wrong.sum() * (~wrong).sum())
    assert t.loc["SNA", "entropy AUC"] == pytest.approx(u)
    assert t.loc["SNA", "model acc @1"] == pytest.approx(100 * (1 - wrong.mean()))


def test_observer_spread_gaussians():
    rng = np.random.default_rng(2)
    m = 4
    senior = 100 + 10 * rng.random((m, 19, 2))
    junior = senior + rng.standard_normal((m, 19, 2))
    idx = (8, 9, 2, 11, 14)
    obs = senior[:, None, list(idx)] + rng.standard_normal((m, 11, 5, 2))
    g = cs.observer_spread_gaussians(obs, senior, junior, idx)
    for i in range(m):
        for j, k in enumerate(idx):
            np.testing.assert_allclose(g.mean_mm[i, k], obs[i, :, j].mean(0))
            np.testing.assert_allclose(g.cov_mm[i, k], np.cov(obs[i, :, j].T))
        d2 = np.sum((senior[i, 0] - junior[i, 0]) ** 2)
        np.testing.assert_allclose(g.cov_mm[i, 0], d2 / 4 * np.eye(2))
        np.testing.assert_allclose(g.mean_mm[i, 0], 0.5 * (senior[i, 0] + junior[i, 0]))
    pooled = cs.pair_pooled_cov(senior, junior)
    np.testing.assert_allclose(pooled[3], np.cov((senior - junior)[:, 3].T) / 2)
    g2 = cs.observer_spread_gaussians(obs, senior, junior, idx, other_cov_mm=pooled)
    np.testing.assert_allclose(g2.cov_mm[2, 0], pooled[0])
    np.testing.assert_allclose(g2.cov_mm[2, 8], g.cov_mm[2, 8])


def test_real_annotation_files_load_when_present():
    real = cs.find_real_annotations("synthetic")
    if real is None:
        pytest.skip("../shared/data/HeatmapUncertainty/setup_ann not present")
    assert real.senior_mm.shape == (400, 19, 2) and real.junior_mm.shape == (400, 19, 2)
    assert real.observers_mm.shape == (100, 11, 5, 2)
    # the 11-observer files repeat senior/junior: they must match the full annotation files
    rows = real.rows(real.observer_ids)
    np.testing.assert_allclose(real.observers_mm[:, 0], real.senior_mm[rows][:, list(real.landmark_indices)], atol=1e-3)
    # plausible ISBI geometry (0.1 mm/px, 1935 x 2400 px)
    assert 0 < real.senior_mm[..., 0].min() and real.senior_mm[..., 0].max() < 193.5
    agree = cs.agreement_table({"senior": C.classify_all(real.senior_mm), "junior": C.classify_all(real.junior_mm)},
                               "senior")
    assert ((agree["junior"] > 50) & (agree["junior"] < 100)).all()


def test_given_annotation_folder_is_used_or_rejected_with_its_path(tmp_path):
    from lmkcore.errors import DataError

    with pytest.raises(DataError, match=f"{tmp_path}: not a 'setup_ann' folder"):
        cs.find_real_annotations("synthetic", annotations_dir=tmp_path)
    default = cs.find_real_annotations("synthetic")
    if default is None:
        pytest.skip("../shared/data/HeatmapUncertainty/setup_ann not present")
    given = cs.find_real_annotations("synthetic", annotations_dir=default.source)
    assert given.source == default.source and given.ids == default.ids
    np.testing.assert_array_equal(given.junior_mm, default.junior_mm)
