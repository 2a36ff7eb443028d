"""The two calibration definitions of McCouat & Voiculescu 2022 (paper text vs the authors' code):
ECE on constructed inputs against hand values, bin edges against np.histogram, floor vs round one-hot
pixel, correctness rule, ROC labels and threshold, and the Adam / best-ECE temperature fit."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lmkcore.analysis import calibration as cal
from lmkcore.errors import ConfigError
from lmkcore.training import losses


def test_paper_text_ece_hand_value():
    # max confidence 1.0 -> bins of width 0.1; occupied bins: 1 {0.1 F}, 2 {0.2 T}, 4 {0.4 T, 0.4 F}, 9 {1.0 T}
    # ECE = 0.2 * 0.1 + 0.2 * 0.8 + 0.4 * |0.5 - 0.4| + 0.2 * 0 = 0.22
    rd = cal.reliability_diagram([0.1, 0.2, 0.4, 0.4, 1.0], [False, True, True, False, True], definition="paper_text")
    assert rd.ece == pytest.approx(0.22)
    assert rd.ece_reported == pytest.approx(0.22)
    assert rd.count.tolist() == [0, 1, 1, 0, 2, 0, 0, 0, 0, 1]


def test_authors_code_ece_hand_value_and_x100_scale():
    conf = [0.01, 0.02, 0.05, 0.5, 0.9]
    correct = [True, False, False, True, False]
    # code bins: 0.01 -> [0, .015), 0.02 -> [.015, .03), 0.05 -> [.045, .06), 0.5 and 0.9 -> [.135, 1.1]
    # ECE = (0.99 + 0.02 + 0.05) / 5 + 2/5 * |0.5 - 0.7| = 0.292 -> reported 29.2
    rd = cal.reliability_diagram(conf, correct, definition="authors_code")
    assert rd.ece == pytest.approx(0.292)
    assert rd.ece_reported == pytest.approx(29.2)
    assert rd.count.tolist() == [1, 1, 0, 1, 0, 0, 0, 0, 0, 2]
    # the same inputs under the text: bins of 0.09 on [0, 0.9]:
    # bin 0 {.01 T, .02 F, .05 F}: 3/5 * |1/3 - 0.08/3|; bin 5 {.5 T}: 0.2 * 0.5; bin 9 {.9 F}: 0.2 * 0.9
    text = cal.reliability_diagram(conf, correct, definition="paper_text")
    assert text.ece == pytest.approx(0.6 * (1 / 3 - 0.08 / 3) + 0.1 + 0.18)


def test_authors_code_bins_match_numpy_histogram():
    rng = np.random.default_rng(0)
    conf = np.r_[rng.uniform(0, 0.2, 400), 0.015, 0.135, 0.03, 1.0]
    correct = rng.uniform(size=conf.size) < 0.5
    rd = cal.reliability_diagram(conf, correct, definition="authors_code")
    edges = np.linspace(0, 0.15, 11)
    edges[-1] = 1.1
    np.testing.assert_array_equal(rd.edges, edges)
    counts, _ = np.histogram(conf, bins=edges)
    np.testing.assert_array_equal(rd.count, counts)
    sums, _ = np.histogram(conf, bins=edges, weights=conf)
    np.testing.assert_allclose(rd.confidence, sums / counts)


def test_one_hot_pixel_floor_vs_round():
    lm = torch.tensor([[[2.7, 5.2], [-0.3, 1.6]]])
    idx_r, val_r = losses.pixel_index(lm, (8, 7), "round")
    idx_f, val_f = losses.pixel_index(lm, (8, 7), "floor")
    assert idx_r.tolist() == [[5 * 8 + 3, 2 * 8 + 0]] and val_r.tolist() == [[True, True]]
    # floor: x 2.7 -> 2; -0.3 -> -1 lies outside the grid
    assert idx_f[0, 0].item() == 5 * 8 + 2 and val_f.tolist() == [[True, False]]
    t_r, t_f = losses.onehot_targets(lm, (8, 7), "round"), losses.onehot_targets(lm, (8, 7), "floor")
    assert t_r[0, 0, 5, 3] == 1 and t_f[0, 0, 5, 2] == 1 and t_f[0, 1].sum() == 0
    assert cal.DEFINITIONS["paper_text"].rounding == "round" and cal.DEFINITIONS["authors_code"].rounding == "floor"
    with pytest.raises(ConfigError, match="rounding"):
        losses.pixel_index(lm, (8, 7), "ceil")


def test_correct_prediction_same_pixel_vs_disc_radius():
    argmax = np.array([[[3, 4], [3, 4], [3, 4], [3, 4], [3, 4]]])
    gt = np.array([[[3.4, 4.4], [3.3, 4.0], [3.6, 4.0], [2.6, 4.0], [np.nan, np.nan]]])
    spacing = np.array([[0.3, 0.3]])
    # radius 0.3 / sqrt(pi) = 0.16926 mm; errors 0.1697, 0.09, 0.18, 0.12 mm
    text = cal.correct_predictions(argmax, gt, spacing, "paper_text")
    code = cal.correct_predictions(argmax, gt, spacing, "authors_code")
    assert text.tolist() == [[True, True, False, True, False]]
    assert code.tolist() == [[False, True, False, True, False]]
    assert 0.30234375 / np.sqrt(np.pi) == pytest.approx(0.1706, abs=1e-4)
    with pytest.raises(ConfigError, match="spacing"):
        cal.correct_predictions(argmax, gt, None, "authors_code")


def test_roc_labels_and_threshold_rule():
    errors = np.array([1.5, 2.5, 4.0, 4.5, np.nan])
    assert cal.roc_positive(errors, "paper_text").tolist() == [False, True, True, True, False]
    assert cal.roc_positive(errors, "authors_code").tolist() == [False, False, False, True, False]
    scores, positive = np.array([4.0, 3.0, 2.0, 1.0]), np.array([True, False, True, False])
    # ROC: TPR 0.5 at threshold 4 and 3, 1.0 at 2: ">= 0.5" stops at 4, "> 0.5" at 2
    assert cal.threshold_at_tpr(scores, positive, 0.5, "paper_text") == 4.0
    assert cal.threshold_at_tpr(scores, positive, 0.5, "authors_code") == 2.0
    with pytest.raises(ConfigError, match="paper_text, authors_code"):
        cal.calibration_definition("guo")


def test_adam_best_ece_temperature_is_deterministic_and_minimises_selection_ece():
    g = torch.Generator().manual_seed(5)
    base = torch.randn(48, 2, 6, 6, generator=g) * 1.5
    sampled = torch.multinomial(torch.softmax(base.flatten(2), -1).reshape(-1, 36), 1, generator=g).reshape(48, 2)
    lm = torch.stack([sampled % 6, sampled // 6], -1).double() + 0.5  # floor -> the sampled pixel
    logits = base * 3.0  # over-confident
    spacing = np.full((24, 2), 0.3)
    t, hist = cal.fit_temperature_best_ece(logits[:24], lm[:24], logits[24:], lm[24:], spacing, epochs=6, seed=1)
    t2, hist2 = cal.fit_temperature_best_ece(logits[:24], lm[:24], logits[24:], lm[24:], spacing, epochs=6, seed=1)
    assert torch.equal(t, t2) and np.array_equal(hist, hist2)
    assert hist.shape == (6,)
    # the kept temperatures give the smallest ECE of the epochs on the selection half
    p = losses.softmax_2d(logits[24:].double(), t).flatten(2)
    conf = p.amax(-1).numpy()
    am = p.argmax(-1)
    argmax = torch.stack([am % 6, am // 6], -1).numpy()
    correct = cal.correct_predictions(argmax, lm[24:].numpy(), spacing, "authors_code")
    assert cal.reliability_diagram(conf, correct, definition="authors_code").ece_reported == pytest.approx(hist.min())
    # and the NLL of the fitting half moved towards the over-confidence factor (T > 1)
    assert (t > 1.0).all()
    before = losses.onehot_nll(logits[:24], lm[:24], rounding="floor").item()
    assert losses.onehot_nll(logits[:24], lm[:24], t, rounding="floor").item() < before


def test_compare_definitions_side_by_side_matches_the_parts():
    # 1 image x 5 landmarks; pixel 0.3 mm -> code radius 0.1693 mm
    conf = np.array([[0.01, 0.02, 0.05, 0.5, 0.9]])
    err = np.array([[0.10, 0.25, 3.0, 0.16, 5.0]])
    same = np.array([[True, True, False, False, False]])
    ere = np.array([[0.5, 0.7, 2.5, 0.4, 3.0]])
    table = cal.compare_definitions(conf, err, same, 0.3, ere)
    code_correct = err < 0.3 / np.sqrt(np.pi)  # [T, F, F, T, F]
    assert code_correct.tolist() == [[True, False, False, True, False]]
    assert table.loc["authors_code", "ECE"] == pytest.approx(29.2)  # the hand value of the test above
    assert table.loc["paper_text", "ECE"] == pytest.approx(
        cal.reliability_diagram(conf, same, definition="paper_text").ece)
    assert table.loc["paper_text", "accuracy"] == pytest.approx(0.4)
    assert table.loc["authors_code", "accuracy"] == pytest.approx(0.4)
    # errors > 2 mm: landmarks 3 and 5 (ERE 2.5, 3.0) -> first TPR >= 0.5 at ERE 3.0; > 4 mm: only 5 -> 3.0
    assert table.loc["paper_text", "ERE threshold (mm)"] == 3.0 and table.loc["paper_text", "ROC AUC"] == 1.0
    assert table.loc["authors_code", "ERE threshold (mm)"] == 3.0
    assert table.loc["authors_code", "erroneous if error > (mm)"] == 4.0
