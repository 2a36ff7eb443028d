"""Softmax heatmaps (McCouat & Voiculescu 2022): NLL, temperature scaling, ERE, ECE, ROC; checked against
hand-computed values and brute-force loops; the trainer and experiment cache handle the NLL objectives."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from lmkcore.analysis import calibration as cal
from lmkcore.training import losses
from lmkcore.training.augment import AugmentConfig
from lmkcore.runs.calibration import evaluate_calibration, probability_maps, with_calibration_split
from lmkcore.data.datasets import load_dataset
from lmkcore.errors import ConfigError
from lmkcore.runs.experiment import ExperimentConfig, run_experiment
from lmkcore.training.trainer import TrainConfig


# ----------------------------------------------------------------------------- ERE
def test_ere_of_one_hot_heatmap_is_zero():
    lm = torch.tensor([[[3.2, 4.7], [0.0, 0.0]]])
    maps = losses.onehot_targets(lm, (7, 6))
    assert maps.sum((-2, -1)).tolist() == [[1.0, 1.0]] and maps[0, 0, 5, 3] == 1
    ere, am = cal.expected_radial_error(maps, np.array([[0.1, 0.2]]))
    assert torch.all(ere == 0)
    assert am[0, 0].tolist() == [3, 5]


def test_ere_of_known_distribution_equals_hand_computation():
    p = torch.zeros(1, 1, 6, 5, dtype=torch.float64)
    p[0, 0, 2, 2] = 0.48   # argmax (x=2, y=2)
    p[0, 0, 2, 3] = 0.30   # 1 px right: 1 * 0.1 mm
    p[0, 0, 4, 2] = 0.20   # 2 px down: 2 * 0.2 mm
    p[0, 0, 5, 4] = 0.02   # < 5 % of 0.48 = 0.024: zeroed
    ere, _ = cal.expected_radial_error(p, np.array([[0.1, 0.2]]))
    expected = (0.30 * 0.1 + 0.20 * 0.4) / (0.48 + 0.30 + 0.20)
    assert ere.item() == pytest.approx(expected, rel=1e-12)
    # without spacing, pixels
    assert cal.expected_radial_error(p)[0].item() == pytest.approx((0.30 * 1 + 0.20 * 2) / 0.98, rel=1e-12)


def test_ere_matches_brute_force_on_random_maps():
    rng = np.random.default_rng(0)
    probs = torch.softmax(torch.as_tensor(rng.normal(0, 2, (2, 3, 7, 9))).flatten(2), -1).reshape(2, 3, 7, 9)
    spacing = np.array([[0.1, 0.15], [0.3, 0.2]])
    ere, am = cal.expected_radial_error(probs, spacing)
    for b, n in itertools.product(range(2), range(3)):
        m = probs[b, n].numpy()
        y0, x0 = np.unravel_index(np.argmax(m), m.shape)
        keep = np.where(m >= 0.05 * m.max(), m, 0.0)
        keep /= keep.sum()
        total = sum(keep[y, x] * np.hypot((x - x0) * spacing[b, 0], (y - y0) * spacing[b, 1])
                    for y in range(7) for x in range(9))
        assert ere[b, n].item() == pytest.approx(total, rel=1e-10)
        assert am[b, n].tolist() == [x0, y0]


def test_ere_from_regression_crops_clips_negatives():
    crop = np.zeros((1, 1, 5, 5))
    crop[0, 0, 2, 2], crop[0, 0, 2, 3], crop[0, 0, 0, 0] = 1.0, 1.0, -5.0
    # two equal pixels: argmax is the first (x=2), the other is 1 px away -> ERE 0.5 px
    assert cal.ere_from_heatmaps(crop)[0, 0] == pytest.approx(0.5)


# ----------------------------------------------------------------------------- losses
def test_onehot_nll_is_cross_entropy_with_onehot_target():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 6, 8)
    lm = torch.tensor([[[1.4, 2.6], [7.2, 0.1], [float("nan"), 1.0]], [[0.0, 5.4], [3.5, 3.49], [9.0, 1.0]]])
    ce = -(losses.onehot_targets(lm, (8, 6)) * losses.log_softmax_2d(logits)).sum((-2, -1))
    _, valid = losses.pixel_index(lm, (8, 6))
    assert valid.tolist() == [[True, True, False], [True, True, False]]  # NaN and x=9 (outside) masked
    assert losses.onehot_nll(logits, lm).item() == pytest.approx((ce.sum() / valid.sum()).item(), rel=1e-6)
    flat = torch.nn.functional.cross_entropy(logits[0, 0].reshape(1, -1), torch.tensor([3 * 8 + 1]))
    assert losses.nll_per_landmark(logits, lm)[0][0, 0].item() == pytest.approx(flat.item(), rel=1e-6)


def test_gaussian_nll_matches_explicit_cross_entropy():
    torch.manual_seed(1)
    logits = torch.randn(1, 1, 9, 11)
    lm = torch.tensor([[[4.3, 5.8]]])
    yy, xx = np.mgrid[0:9, 0:11]
    q = np.exp(-0.5 * ((xx - 4.3) ** 2 + (yy - 5.8) ** 2) / 1.5**2)
    q /= q.sum()
    logp = torch.log_softmax(logits.flatten(), 0).reshape(9, 11).numpy()
    assert losses.gaussian_nll(logits, lm, 1.5).item() == pytest.approx(-(q * logp).sum(), rel=1e-5)


# ----------------------------------------------------------------------------- temperature scaling
@pytest.mark.parametrize("scale", [4.0, 0.5])
def test_temperature_scaling_recovers_miscalibration_keeps_argmax_and_lowers_nll(scale):
    g = torch.Generator().manual_seed(3)
    base = torch.randn(200, 2, 8, 8, generator=g) * 1.5
    sampled = torch.multinomial(torch.softmax(base.flatten(2), -1).reshape(-1, 64), 1, generator=g).reshape(200, 2)
    lm = torch.stack([sampled % 8, sampled // 8], -1).float()
    logits = base * scale  # over- (scale > 1) or under-confident network outputs
    t = cal.fit_temperature(logits, lm)
    np.testing.assert_allclose(t.numpy(), scale, rtol=0.2)
    before, after = losses.onehot_nll(logits, lm).item(), losses.onehot_nll(logits, lm, t).item()
    assert after < before
    assert after == pytest.approx(losses.onehot_nll(base, lm).item(), rel=0.03)
    p, p_t = losses.softmax_2d(logits), losses.softmax_2d(logits, t)
    assert torch.equal(p.flatten(2).argmax(-1), p_t.flatten(2).argmax(-1))


# ----------------------------------------------------------------------------- ECE, ROC
def test_reliability_diagram_and_ece_match_brute_force():
    rng = np.random.default_rng(1)
    conf = rng.uniform(0, 0.6, 500)
    correct = rng.uniform(size=500) < conf * 1.3
    rd = cal.reliability_diagram(conf, correct, n_bins=10)
    top = conf.max()
    ece = 0.0
    for b in range(10):
        lo, hi = b * top / 10, (b + 1) * top / 10
        inside = (conf >= lo) & ((conf < hi) if b < 9 else (conf <= hi))
        assert rd.count[b] == inside.sum()
        if inside.any():
            assert rd.confidence[b] == pytest.approx(conf[inside].mean())
            assert rd.accuracy[b] == pytest.approx(correct[inside].mean())
            ece += inside.sum() / 500 * abs(correct[inside].mean() - conf[inside].mean())
    assert rd.ece == pytest.approx(ece)
    assert rd.edges[-1] == pytest.approx(top) and rd.count.sum() == 500
    # perfectly calibrated in-bin: ECE 0
    assert cal.reliability_diagram([0.5, 0.5, 1.0], [True, False, True]).ece == pytest.approx(0.0)


def test_roc_auc_and_threshold_match_brute_force():
    rng = np.random.default_rng(2)
    scores = np.round(rng.normal(size=300), 1)  # rounded: many ties
    positive = rng.uniform(size=300) < 1 / (1 + np.exp(-2 * scores))
    fpr, tpr, thr = cal.roc_curve(scores, positive)
    for f, t, th in zip(fpr, tpr, thr):
        flagged = scores >= th
        assert t == pytest.approx((flagged & positive).sum() / positive.sum())
        assert f == pytest.approx((flagged & ~positive).sum() / (~positive).sum())
    pos, neg = scores[positive], scores[~positive]
    mann_whitney = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (pos.size * neg.size)
    assert cal.roc_auc(scores, positive) == pytest.approx(mann_whitney, rel=1e-12)
    th = cal.threshold_at_tpr(scores, positive, 0.5)
    rate = lambda t: ((scores >= t) & positive).sum() / positive.sum()  # noqa: E731
    assert rate(th) >= 0.5
    assert rate(np.min(scores[scores > th])) < 0.5
    assert cal.roc_auc(scores, np.ones(300, bool)) != cal.roc_auc(scores, np.ones(300, bool))  # NaN: one class
    # +inf scores (e.g. an unusable fit counted as maximally uncertain) are one tied group
    inf_scores = np.r_[np.inf, np.inf, 1.0, 0.0]
    assert cal.roc_auc(inf_scores, np.array([True, False, True, False])) == pytest.approx((0.5 + 1 + 0 + 1) / 4)


def test_binned_means_groups_of_36():
    x = np.arange(100.0)[::-1]
    mx, my = cal.binned_means(x, 2 * x, 36)
    assert mx.tolist() == [17.5, 53.5, 85.5] and my.tolist() == [35.0, 107.0, 171.0]


# ----------------------------------------------------------------------------- trainer / experiment
def test_default_train_config_dict_is_unchanged():
    assert "loss" not in TrainConfig().to_dict()
    assert TrainConfig(loss="onehot_nll").to_dict()["loss"] == "onehot_nll"
    assert TrainConfig.from_dict(TrainConfig(loss="onehot_nll").to_dict()).loss == "onehot_nll"
    with pytest.raises(ConfigError, match="TrainConfig.loss must be one of"):
        TrainConfig(loss="bce")


def test_onehot_experiment_calibration_end_to_end(session_cache, tmp_path):
    record = with_calibration_split(load_dataset("synthetic", None, n_images=24, width=64, cache_dir=session_cache))
    fit, calib = record.splits["train/fit"], record.splits["train/calib"]
    assert not set(fit) & set(calib) and fit + calib == record.splits["train"]
    tc = TrainConfig(model="resnet34_unet", loss="onehot_nll", target="fixed", num_filters=4, iterations=8,
                     batch_size=2, checkpoint_every=4, log_every=2, augment=AugmentConfig(elastic_grid=5))
    cfg = ExperimentConfig(train=tc, input_width=64, train_split="train/fit", eval_split="test_all", crop_size=9, fit_window=9)
    res = run_experiment(record, cfg, tmp_path, progress=False)
    assert np.all(res.peak <= 1.0) and np.all(res.heatmap_crops >= 0)  # softmax probabilities
    ev = evaluate_calibration(record, res, tmp_path)
    m, n = len(res.ids), len(res.landmark_names)
    assert ev.ere_mm.shape == ev.ere_ts_mm.shape == ev.confidence_ts.shape == (m, n)
    assert ev.argmax_unchanged and np.all(ev.temperature > 0)
    assert np.all(ev.calib_nll_ts <= ev.calib_nll + 1e-9)
    # the hottest pixel is the experiment's argmax (before sub-pixel refinement)
    assert np.max(np.abs(ev.argmax_px - res.pred_argmax_px)) < 2 * record.image_size[0, 0] / 64
    again = evaluate_calibration(record, res, tmp_path)
    np.testing.assert_array_equal(again.ere_ts_mm, ev.ere_ts_mm)
    probs, images, _ = probability_maps(record, res, tmp_path, res.ids[:2], ev.temperature)
    assert probs.shape[:2] == (2, n) and images.shape == probs.shape[:1] + probs.shape[2:]
    np.testing.assert_allclose(probs.sum((-2, -1)), 1.0, rtol=1e-4)
    bad = ExperimentConfig(train=tc, input_width=64, train_split="train", eval_split="test_all", crop_size=9, fit_window=9)
    with pytest.raises(ConfigError, match="overlaps the training split"):
        evaluate_calibration(record, run_experiment(record, bad, tmp_path, progress=False), tmp_path)
