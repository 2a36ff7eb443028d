"""PHD-Net (Schobs et al. 2021): labels, candidate smoothing, confidence, per-landmark models, caching."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage

from lmkcore.training.augment import AugmentConfig
from lmkcore.data.datasets import load_dataset
from lmkcore.errors import ConfigError
from lmkcore.models.phdnet import PATCH, PHDNet, count_parameters
from lmkcore.runs.phdnet import PHDNetConfig, run_phdnet
from lmkcore.analysis.phdnet_coordinates import candidate_smoothing, confidence_threshold, cross_fitted_high_confidence, simple_coordinates
from lmkcore.training.phdnet_targets import decode_displacement, displacement_targets, encode_displacement, patch_centres, patch_heatmaps, phdnet_loss
from lmkcore.reporting.published import confidence_table, find_pykale_tables


# ------------------------------------------------------------------ labels


def test_displacement_encoding_round_trips():
    d = torch.randn(1000, 2, dtype=torch.float64) * 50
    assert torch.allclose(decode_displacement(encode_displacement(d)), d, atol=1e-9)
    t = encode_displacement(torch.tensor([0.0, 1.0, -1.0, math.e - 1], dtype=torch.float64))
    assert torch.allclose(t, torch.tensor([0.0, math.log(2), -math.log(2), 1.0], dtype=torch.float64))


def test_decoded_targets_point_from_every_patch_to_the_landmark():
    lm = torch.tensor([[[37.3, 12.9], [-5.0, 200.0]]], dtype=torch.float64)  # (1, 2, 2), one outside the grid
    grid = (6, 9)
    t = displacement_targets(lm, grid)  # (1, 2, 2, 6, 9)
    cand = patch_centres(grid, dtype=torch.float64) + decode_displacement(t).permute(0, 1, 3, 4, 2)
    assert torch.allclose(cand, lm[:, :, None, None, :].expand_as(cand), atol=1e-9)
    assert torch.allclose(patch_centres(grid)[1, 2], torch.tensor([2 * PATCH + 3.5, PATCH + 3.5]))


def test_patch_heatmaps_peak_on_the_containing_patch():
    lm = torch.tensor([[[37.3, 12.9]]])
    g = patch_heatmaps(lm, (6, 9), sigma=2.0)
    assert torch.argmax(g[0, 0]).item() == 1 * 9 + 4  # row floor(12.9/8) = 1, column floor(37.3/8) = 4
    assert g.max().item() == pytest.approx(1.0)
    assert g[0, 0, 1, 6].item() == pytest.approx(math.exp(-4 / 8))  # two patches away, sigma 2
    b = patch_heatmaps(lm, (6, 9), kind="binary")
    assert b.sum().item() == 1 and b[0, 0, 1, 4].item() == 1


def test_loss_is_zero_for_perfect_outputs_and_ignores_missing_landmarks():
    lm = torch.tensor([[[30.0, 20.0], [float("nan"), float("nan")]]])
    grid = (4, 5)
    disp = displacement_targets(torch.nan_to_num(lm), grid)
    heat = patch_heatmaps(torch.nan_to_num(lm), grid)
    l_d, l_h = phdnet_loss(disp, heat, lm)
    assert l_d.item() == pytest.approx(0.0, abs=1e-12) and l_h.item() == pytest.approx(0.0, abs=1e-12)
    l_d, l_h = phdnet_loss(disp + 1.0, heat + 0.5, lm)
    assert l_h.item() == pytest.approx(0.25) and l_d.item() > 0


# ------------------------------------------------------------------ model


def test_single_landmark_model_matches_the_paper_size_and_patch_grid():
    m = PHDNet(1)
    assert 55_000 < count_parameters(m) < 70_000  # "only 0.06M trainable parameters"
    disp, heat = m(torch.zeros(2, 1, 64, 96))
    assert disp.shape == (2, 1, 2, 8, 12) and heat.shape == (2, 1, 8, 12)
    with pytest.raises(ConfigError, match="multiple of 8"):
        m(torch.zeros(1, 1, 60, 64))


def test_independent_mode_is_one_separate_model_per_landmark():
    torch.manual_seed(0)
    joint = PHDNet(3, filters=4, head_filters=(5, 6), independent=True)
    x = torch.randn(2, 1, 32, 40)
    disp, heat = joint(x)
    js = joint.state_dict()
    for i in range(3):
        single = PHDNet(1, filters=4, head_filters=(5, 6))
        ss = {}
        for k, v in single.state_dict().items():
            n = v.shape[0]
            ss[k] = js[k][i * n:(i + 1) * n]
        single.load_state_dict(ss)
        d1, h1 = single(x)
        assert torch.allclose(d1[:, 0], disp[:, i], atol=1e-5) and torch.allclose(h1[:, 0], heat[:, i], atol=1e-5)
    assert count_parameters(joint) == 3 * count_parameters(PHDNet(1, filters=4, head_filters=(5, 6)))


def test_shared_variants_have_per_landmark_outputs_and_fewer_parameters():
    full = PHDNet(19, independent=True)
    trunk = PHDNet(19)
    heads = PHDNet(19, shared_heads=True)
    assert count_parameters(heads) < count_parameters(trunk) < count_parameters(full)
    disp, heat = heads(torch.zeros(1, 1, 32, 48))
    assert disp.shape == (1, 19, 2, 4, 6) and heat.shape == (1, 19, 4, 6)
    with pytest.raises(ConfigError, match="share heads"):
        PHDNet(2, independent=True, shared_heads=True)


# ------------------------------------------------------------------ coordinates


def _construct(grid, true_xy, wrong_xy, wrong_patch):
    """Heatmap mildly high around the true patch, a higher spike on a wrong patch; displacements of all
    patches point to the true landmark, those of the spike's 3x3 neighbourhood to a wrong point."""
    gh, gw = grid
    lm = torch.tensor([[true_xy]], dtype=torch.float64)
    heat = 0.6 * patch_heatmaps(lm, grid, sigma=2.0)
    heat[0, 0, wrong_patch[1], wrong_patch[0]] = 1.0
    disp = displacement_targets(lm, grid).clone()
    wrong = displacement_targets(torch.tensor([[wrong_xy]], dtype=torch.float64), grid)
    ys = slice(wrong_patch[1] - 1, wrong_patch[1] + 2)
    xs = slice(wrong_patch[0] - 1, wrong_patch[0] + 2)
    disp[..., ys, xs] = wrong[..., ys, xs]
    return heat, disp


@pytest.mark.parametrize("grid", [(16, 16), (24, 30)])
def test_candidate_smoothing_finds_the_consensus_when_the_top_patch_is_wrong(grid):
    true_xy, wrong_xy, wrong_patch = (61.0, 70.0), (110.0, 30.0), (13, 4)
    heat, disp = _construct(grid, true_xy, wrong_xy, wrong_patch)
    xy_simple, _ = simple_coordinates(heat, disp)
    assert torch.allclose(xy_simple[0, 0], torch.tensor(wrong_xy, dtype=torch.float64))  # the simple strategy fails
    xy, peak, maps = candidate_smoothing(heat, disp, region_px=128, return_maps=True)
    assert torch.equal(xy[0, 0], torch.tensor(true_xy, dtype=torch.float64))
    assert maps["candidate"].shape[-2:] == (128, 128)
    # the candidate map is ~ the number of agreeing patches at the landmark
    o = maps["origin"][0, 0].long()
    assert maps["candidate"][0, 0, 70 - o[1], 61 - o[0]].item() > 100


def _upsample_loop(heat, smooth_px):
    gh, gw = heat.shape
    out = np.zeros((gh * PATCH, gw * PATCH))
    for y in range(gh * PATCH):
        for x in range(gw * PATCH):
            sy = min(max((y + 0.5) / PATCH - 0.5, 0), gh - 1)
            sx = min(max((x + 0.5) / PATCH - 0.5, 0), gw - 1)
            y0, x0 = int(math.floor(sy)), int(math.floor(sx))
            y1, x1 = min(y0 + 1, gh - 1), min(x0 + 1, gw - 1)
            fy, fx = sy - y0, sx - x0
            out[y, x] = ((1 - fy) * ((1 - fx) * heat[y0, x0] + fx * heat[y0, x1])
                         + fy * ((1 - fx) * heat[y1, x0] + fx * heat[y1, x1]))
    out = np.maximum(out, 0)
    r = max(1, math.ceil(3 * smooth_px))
    return ndimage.gaussian_filter(out, smooth_px, mode="nearest", truncate=r / smooth_px)


def _smoothing_loop(heat, disp, region_px, blob_sigma, smooth_px):
    """Straightforward reference: loops over windows, patches and pixels."""
    gh, gw = heat.shape
    rh, rw = min(region_px // PATCH, gh), min(region_px // PATCH, gw)
    best, origin = -np.inf, None
    for y0 in range(gh - rh + 1):
        for x0 in range(gw - rw + 1):
            s = heat[y0:y0 + rh, x0:x0 + rw].sum()
            if s > best + 1e-12:
                best, origin = s, (x0, y0)
    x0, y0 = origin
    mc = np.zeros((rh * PATCH, rw * PATCH))
    for j in range(y0, y0 + rh):
        for i in range(x0, x0 + rw):
            d = np.sign(disp[:, j, i]) * np.expm1(np.abs(disp[:, j, i]))
            cx, cy = i * PATCH + 3.5 + d[0] - x0 * PATCH, j * PATCH + 3.5 + d[1] - y0 * PATCH
            for v in range(rh * PATCH):
                for u in range(rw * PATCH):
                    mc[v, u] += math.exp(-((u - cx) ** 2 + (v - cy) ** 2) / (2 * blob_sigma ** 2))
    up = _upsample_loop(heat, smooth_px)[y0 * PATCH:(y0 + rh) * PATCH, x0 * PATCH:(x0 + rw) * PATCH]
    ms = mc * up
    v, u = np.unravel_index(np.argmax(ms), ms.shape)
    return np.array([u + x0 * PATCH, v + y0 * PATCH], dtype=float), ms.max()


@pytest.mark.parametrize("seed,grid,region,smooth", [(0, (5, 7), 32, 4.0), (1, (6, 4), 40, 2.0), (2, (3, 3), 64, 0.7)])
def test_candidate_smoothing_equals_a_loop_implementation(seed, grid, region, smooth):
    g = torch.Generator().manual_seed(seed)
    b, n = 2, 2
    heat = torch.rand(b, n, *grid, generator=g, dtype=torch.float64) - 0.1
    disp = torch.randn(b, n, 2, *grid, generator=g, dtype=torch.float64) * 2.0
    xy, peak = candidate_smoothing(heat, disp, region_px=region, blob_sigma=1.3, smooth_px=smooth)
    for bi in range(b):
        for ni in range(n):
            ref_xy, ref_peak = _smoothing_loop(heat[bi, ni].numpy(), disp[bi, ni].numpy(), region, 1.3, smooth)
            np.testing.assert_array_equal(xy[bi, ni].numpy(), ref_xy)
            assert peak[bi, ni].item() == pytest.approx(ref_peak, rel=1e-9)


def test_simple_strategy_uses_the_top_patch():
    grid = (4, 5)
    lm = torch.tensor([[[13.0, 21.0]]])
    heat = torch.zeros(1, 1, *grid)
    heat[0, 0, 3, 1] = 2.0
    xy, peak = simple_coordinates(heat, displacement_targets(lm, grid))
    assert torch.allclose(xy[0, 0], lm[0, 0], atol=1e-4) and peak.item() == 2.0


# ------------------------------------------------------------------ confidence


def test_confidence_threshold_is_the_error_weighted_peak_of_the_worst_tenth():
    rng = np.random.default_rng(0)
    e = rng.permutation(np.arange(1.0, 21.0))
    p = rng.random(20)
    worst = np.argsort(e)[-2:]  # 10% of 20
    expected = (e[worst] * p[worst]).sum() / e[worst].sum()
    assert confidence_threshold(e, p) == pytest.approx(expected)
    assert confidence_threshold([1.0, 5.0, np.nan], [0.2, 0.7, 0.1]) == pytest.approx(0.7)  # ceil(0.1 * 2) = 1
    with pytest.raises(ConfigError):
        confidence_threshold([1.0], [1.0, 2.0])


def test_cross_fitted_confidence_uses_the_other_fold():
    e = np.array([[1.0], [9.0], [2.0], [8.0]])
    p = np.array([[0.9], [0.2], [0.8], [0.3]])
    folds = np.array([0, 0, 1, 1])
    hi = cross_fitted_high_confidence(e, p, folds, fraction=0.5)
    # fold 0 threshold from fold 1 = 0.3, fold 1 threshold from fold 0 = 0.2
    np.testing.assert_array_equal(hi[:, 0], [True, False, True, True])


# ------------------------------------------------------------------ training, caching, published data


def test_training_runs_caches_and_validates_config(session_cache):
    record = load_dataset("synthetic", None, n_images=16, width=64, cache_dir=session_cache)
    cfg = PHDNetConfig(filters=4, iterations=3, batch_size=2, subimage=32, input_width=64,
                       augment=AugmentConfig(elastic_grid=5, elastic_magnitude=0.5))
    r = run_phdnet(record, cfg, session_cache, progress=False)
    n = len(record.landmark_names)
    assert r.pred_px["smoothing"].shape == (len(record.splits["test_all"]), n, 2)
    assert r.threshold["smoothing"].shape == (n,) and np.isfinite(r.errors_mm("simple")).all()
    assert set(r.val_ids).isdisjoint(r.ids) and set(r.val_ids) <= set(record.splits["train"])
    again = run_phdnet(record, cfg, session_cache, progress=False)
    assert again.key == r.key and again.train_seconds == r.train_seconds
    np.testing.assert_array_equal(again.peak["smoothing"], r.peak["smoothing"])
    with pytest.raises(ConfigError, match="heatmap"):
        PHDNetConfig(heatmap="box")


def test_paper_training_path_no_augmentation_adam_and_the_tenth_threshold(tmp_path, monkeypatch):
    """The paper's settings reach training: no augmentation (no resampling at all), Adam at the config's lr,
    thresholds from the 10 % least accurate validation predictions."""
    from lmkcore.analysis.phdnet_coordinates import landmark_thresholds
    from lmkcore.runs import phdnet as run

    def no_augmentation(*args, **kwargs):
        raise AssertionError("the identity augmentation must not resample the images")

    used = []

    def spy(model, config):
        opt = run.make_optimizer.__wrapped__(model, config)
        used.append((type(opt).__name__, opt.param_groups[0]["lr"]))
        return opt

    spy.__wrapped__ = run.make_optimizer
    monkeypatch.setattr(run, "sample_params", no_augmentation)
    monkeypatch.setattr(run, "make_optimizer", spy)
    record = load_dataset("synthetic", None, n_images=24, width=64, cache_dir=tmp_path)
    cfg = PHDNetConfig(filters=4, iterations=2, batch_size=4, subimage=32, input_width=64, shared_heads=True,
                       lr=3e-4, val_fraction=0.6, augment=AugmentConfig.identity())
    r = run_phdnet(record, cfg, tmp_path, progress=False)
    assert used == [("Adam", 3e-4)] and run.THRESHOLD_FRACTION == 0.1
    assert len(r.val_ids) >= 5  # enough to tell 10 % from other fractions
    for s in ("simple", "smoothing"):
        want = landmark_thresholds(r.val_errors_mm(s), r.val_peak[s], 0.1)
        np.testing.assert_allclose(r.threshold[s], want, rtol=1e-12)
    # and a config that augments does resample
    with pytest.raises(AssertionError, match="identity augmentation"):
        run_phdnet(record, PHDNetConfig(**{**cfg.to_dict(), "augment": AugmentConfig()}), tmp_path, progress=False)


@pytest.mark.skipif(find_pykale_tables() is None, reason="published pykale tables not available")
def test_published_phdnet_high_confidence_subset_is_more_accurate():
    table = confidence_table(find_pykale_tables())
    assert set(table.index.get_level_values("view")) == {"SA", "4CH"}
    phd = table.xs("PHD-NET", level="model")
    assert (phd["HiC mean"] < phd["All mean"]).all()
    assert ((phd["HiC %"] > 0) & (phd["HiC %"] < 100)).all()


def test_given_published_folder_is_found_or_rejected_with_its_path(tmp_path):
    from lmkcore.errors import DataError

    with pytest.raises(DataError, match="no published PHD-Net tables here"):
        find_pykale_tables(tmp_path)
    for model in ("PHD-NET", "U-NET"):
        (tmp_path / "Uncertainty_tuples" / model).mkdir(parents=True)
    assert find_pykale_tables(tmp_path) == tmp_path / "Uncertainty_tuples"
    assert find_pykale_tables(tmp_path / "Uncertainty_tuples") == tmp_path / "Uncertainty_tuples"


def test_epoch_schedule_with_early_stopping_keeps_a_validation_history(session_cache):
    record = load_dataset("synthetic", None, n_images=16, width=64, cache_dir=session_cache)
    cfg = PHDNetConfig(filters=4, max_epochs=3, patience=1, batch_size=4, subimage=32, input_width=64,
                       shared_heads=True, augment=AugmentConfig.identity())
    r = run_phdnet(record, cfg, session_cache, progress=False)
    epochs = [h["epoch"] for h in r.history]
    assert 2 <= len(epochs) <= 3 and epochs == list(range(1, len(epochs) + 1))
    assert all(np.isfinite(h["val_loss"]) for h in r.history)


def test_reproduction_report_reads_the_table2_notebook_07_saves(tmp_path):
    """REPRODUCTION.md's Schobs Table 2 rows read 07_schobs_table2_confidence as notebook 07 writes it
    (row labels from method_label, columns from confidence_rows, saved by style.save_table)."""
    from lmkcore.reporting import reproduction as rep
    from lmkcore.reporting.phdnet_report import confidence_rows
    from lmkcore.reporting.style import save_table
    from lmkcore.training.methods import method_label

    rng = np.random.default_rng(0)
    names = ["PHD-Net (candidate smoothing)", "PHD-Net (simple)", "Binary + simple (Noothout baseline)",
             method_label("scn_aniso") + ", Σ̂-fit", method_label("unet_iso") + ", argmax"]
    errors = {n: rng.gamma(2.0, 1.0 + i, size=(10, 3)) for i, n in enumerate(names)}
    high = {n: rng.random((10, 3)) < 0.6 for n in names}
    table2 = confidence_rows(errors, high, high[names[0]])
    table2.index.name = "isbi2015, test_all (mm)"
    folder = tmp_path / "paper-dry-isbi2015"
    folder.mkdir()
    save_table(table2, folder, "07_schobs_table2_confidence", "Schobs et al. 2021, Table 2", "{:.2f}",
               notebook="07_phdnet_confidence", profile="paper-dry", dataset="isbi2015")
    (run,) = rep.find_runs(tmp_path)
    got = {(t.row, t.column): rep.lookup(run, t) for t in rep.targets() if t.paper == rep.SCHOBS and t.table == "Table 2"}
    for model, ours in (("PHD-Net", names[0]), ("U-Net", names[4]), ("Baseline [9]", names[2])):
        e, ref_hi = errors[ours], high[names[0]]
        np.testing.assert_allclose(got[(model, "SA All (mm)")], (e.mean(), e.std()), rtol=1e-9)
        np.testing.assert_allclose(got[(model, "SA HiC (mm)")], (e[ref_hi].mean(), e[ref_hi].std()), rtol=1e-9)
        assert got[(model, "4ch All (mm)")] is None  # no 4ch view in the package's data
    assert got[("PHD-Net", "SA HiC share (%)")][0] == pytest.approx(100 * high[names[0]].mean())
    assert got[("Hourglass", "SA All (mm)")] is None


def test_every_training_batch_is_full_even_with_fewer_training_images(tmp_path, monkeypatch):
    """paper-dry keeps the paper's batch of 32 with a handful of images: the batch cycles through them."""
    from lmkcore.runs import phdnet as run

    seen = []
    loss = run.phdnet_loss

    def spy(disp, *args, **kwargs):
        seen.append(disp.shape[0])
        return loss(disp, *args, **kwargs)

    monkeypatch.setattr(run, "phdnet_loss", spy)
    record = load_dataset("synthetic", None, n_images=24, width=64, cache_dir=tmp_path)
    record = record.with_splits({"few": list(record.splits["train"])[:3]})
    cfg = PHDNetConfig(filters=4, max_epochs=1, batch_size=8, subimage=32, input_width=64, shared_heads=True,
                       augment=AugmentConfig.identity())
    r = run_phdnet(record, cfg, tmp_path, train_split="few", eval_split="test_all", progress=False)
    assert len(r.val_ids) == 1 and len(r.history) == 1
    assert seen == [8, 1]  # one training step of a full batch (2 images cycled), then the validation loss
