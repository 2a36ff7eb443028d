"""3D spine pipeline: synthetic spine phantom, 3D windows/augmentation, targets and decoding, sliding
windows, missing vertebrae, identification rate and the Table 5 columns."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from lmkcore.analysis import metrics
from lmkcore.analysis.decoding3d import argmax_subpixel_3d
from lmkcore.data.volumes import VolumeSet, extract_window, resample_volume
from lmkcore.errors import ConfigError, DataError
from lmkcore.runs.spine import SpineResult, per_vertebra_table, table5
from lmkcore.synthetic.spine import (
    VERTEBRA_NAMES,
    SpineConfig,
    constructed_centroids,
    find_centroid_file,
    load_spine,
    read_centroid_table,
    render_spine_volume,
    spine_dataset,
)
from lmkcore.training.augment import AugmentConfig
from lmkcore.training.targets import HeatmapTarget, gaussian_heatmaps
from lmkcore.training.volume3d import (
    Train3DConfig,
    masked_loss,
    predict_sliding_z,
    train_3d,
    training_batch,
    window_starts,
)

CENTROIDS = find_centroid_file()
needs_real = pytest.mark.skipif(
    CENTROIDS is None,
    reason="the CSI 2014 centroid file (HeatmapRegression/spine/.../points_world_coordinates.csv) is not under "
           "$LMKCORE_SHARED_DATA or ../shared/data",
)


def _blobs(shape_zyx, points_xyz, sigma=1.5) -> torch.Tensor:
    """A volume with one isotropic Gaussian blob (peak 1) per point (x, y, z voxels)."""
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape_zyx], indexing="ij")
    vol = np.zeros(shape_zyx)
    for px, py, pz in points_xyz:
        vol = np.maximum(vol, np.exp(-((x - px) ** 2 + (y - py) ** 2 + (z - pz) ** 2) / (2 * sigma**2)))
    return torch.as_tensor(vol, dtype=torch.float32)


# --------------------------------------------------------------------------------------------------
# 3D augmentation through the training-batch path
# --------------------------------------------------------------------------------------------------


def test_training_batch_moves_landmarks_with_the_volume() -> None:
    """Point-image test: blobs rendered at the landmarks end up at the returned landmarks after the
    window cut (random z) and the 3D affine + elastic augmentation."""
    pts = np.array([[[12.0, 11.3, 10.2], [20.4, 19.0, 30.7], [9.6, 21.2, 44.1]],
                    [[15.5, 9.8, 6.0], [10.2, 22.0, 25.5], [21.0, 14.4, 18.8]]])
    vols = [_blobs((56, 32, 32), pts[0]), _blobs((40, 32, 32), pts[1])]
    vs = VolumeSet(["a", "b"], [v * 2.0 - 1.0 for v in vols], pts, np.ones((2, 3)), 2.0)
    aug = AugmentConfig(intensity_shift=0.0, intensity_scale=0.0, translate=0.05, rotate_deg=10.0, scale=0.1,
                        aniso_scale=0.05, elastic_grid=5, elastic_magnitude=0.8, elastic_max_lipschitz=0.5)
    gen = torch.Generator().manual_seed(3)
    imgs, lms = training_batch(vs, [0, 1, 0], (32, 32, 48), aug, gen)
    assert imgs.shape == (3, 1, 48, 32, 32) and lms.shape == (3, 3, 3)
    moved_any = False
    for b in range(3):
        for i in range(3):
            q = lms[b, i].numpy()
            if np.any(q < 3) or np.any(q > np.array([28, 28, 44])):
                continue  # blob cut by the window border
            # the blob's sub-voxel peak within 3 voxels of the returned landmark
            img = (imgs[b, 0] + 1.0) / 2.0
            zz, yy, xx = np.meshgrid(*[np.arange(s) for s in img.shape], indexing="ij")
            near = ((xx - q[0]) ** 2 + (yy - q[1]) ** 2 + (zz - q[2]) ** 2) <= 9
            local = torch.where(torch.as_tensor(near), img, torch.zeros_like(img)).clamp_min(1e-6)
            peak, _ = argmax_subpixel_3d(local[None, None])
            assert np.linalg.norm(peak[0, 0].numpy() - q) < 0.35, (b, i, peak, q)
            moved_any |= bool(np.linalg.norm(q - pts[[0, 1, 0][b], i]) > 1.0)
    assert moved_any  # the augmentation did move things


def test_short_volume_is_padded_and_long_one_cut_at_random_z() -> None:
    pts = np.array([[[5.0, 5.0, 3.0]], [[5.0, 5.0, 70.0]]])
    vols = [torch.zeros(10, 12, 12), torch.zeros(80, 12, 12)]
    vs = VolumeSet(["s", "l"], vols, pts, np.ones((2, 3)), 2.0)
    none = AugmentConfig.identity()
    zs = set()
    for seed in range(8):
        imgs, lms = training_batch(vs, [0, 1], (8, 8, 16), none, torch.Generator().manual_seed(seed))
        # x-y centred: 12 -> 8 crops 2 voxels on each side
        assert lms[0, 0, 0] == 3.0 and lms[0, 0, 1] == 3.0
        short_z = float(lms[0, 0, 2]) - 3.0  # placement offset of the short volume
        assert 0 <= short_z <= 6 and (imgs[0, 0, :int(short_z)] < -0.4).all()  # air before it
        zs.add(float(lms[1, 0, 2]))
    assert len(zs) > 1  # random z positions of the long volume


# --------------------------------------------------------------------------------------------------
# targets, decoding, loss with missing landmarks
# --------------------------------------------------------------------------------------------------


def test_3d_target_decoding_round_trip() -> None:
    """Gaussian targets at sub-voxel positions decode back to them (log-parabola is exact per axis)."""
    rng = np.random.default_rng(0)
    lm = torch.as_tensor(rng.uniform(3, 13, size=(2, 5, 3)) * np.array([1, 1, 2]), dtype=torch.float64)
    target = HeatmapTarget(5, "learned_iso", init_sigma=np.linspace(1.0, 2.5, 5), gamma=1000.0, spatial_dims=3)
    hm = target(lm, (16, 16, 32)).detach()
    assert hm.shape == (2, 5, 32, 16, 16)
    # closed form at the nearest voxel: gamma / ((2 pi)^1.5 sigma^3) exp(-d^2 / 2 sigma^2)
    s = target.sigmas().detach().double()
    v = lm[1, 2].round().long()
    d2 = float(((v.double() - lm[1, 2]) ** 2).sum())
    expected = 1000.0 / ((2 * np.pi) ** 1.5 * float(s[2]) ** 3) * np.exp(-d2 / (2 * float(s[2]) ** 2))
    assert float(hm[1, 2, v[2], v[1], v[0]]) == pytest.approx(expected, rel=1e-4)
    xyz, _ = argmax_subpixel_3d(hm)
    assert torch.allclose(xyz, lm, atol=1e-6)


def test_decoding_flat_heatmap_is_nan_and_border_peak_is_finite() -> None:
    hm = torch.zeros(1, 2, 6, 6, 6)
    hm[0, 1, 0, 2, 5] = 1.0
    xyz, _ = argmax_subpixel_3d(hm)
    assert torch.isnan(xyz[0, 0]).all()
    assert torch.allclose(xyz[0, 1].float(), torch.tensor([5.0, 2.0, 0.0]))


def test_missing_landmark_adds_nothing_to_the_loss() -> None:
    target = HeatmapTarget(3, "learned_iso", init_sigma=1.5, gamma=1000.0, spatial_dims=3)
    lm = torch.tensor([[[4.0, 5.0, 6.0], [float("nan")] * 3, [8.0, 3.0, 9.0]]], dtype=torch.float64)
    pred = torch.rand(1, 3, 12, 10, 10, dtype=torch.float64, requires_grad=True)
    loss, tgt = masked_loss(pred, lm, target)
    assert float(tgt[0, 1].detach().abs().max()) == 0.0
    # reference: the same loss on a problem without the missing landmark at all
    only_valid = HeatmapTarget(2, "learned_iso", init_sigma=1.5, gamma=1000.0, spatial_dims=3)
    expected, _ = masked_loss(pred[:, [0, 2]], lm[:, [0, 2]], only_valid)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12) and loss.item() > 0
    loss.backward()
    assert float(pred.grad[0, 1].abs().max()) == 0.0 and float(pred.grad[0, 0].abs().max()) > 0
    pred2 = pred.detach().clone()
    pred2[0, 1] = 1e3  # anything in the missing landmark's channel
    assert masked_loss(pred2, lm, target)[0].item() == pytest.approx(loss.item(), rel=1e-12)


def test_missing_vertebra_is_not_an_error_and_not_counted() -> None:
    true = np.array([[[0, 0, 0], [0, 0, 10], [np.nan] * 3], [[0, 0, 0], [0, 0, 10], [0, 0, 20]]], dtype=float)
    pred = true.copy()
    pred[0, 2] = [500.0, 500.0, 500.0]  # a wild prediction for the vertebra absent from scan 0
    pred[1, 1] += [0, 3, 4]  # 5 voxels off
    res = SpineResult("k", {}, ["a", "b"], ["L1", "L2", "L3"], pred, true, np.full((2, 3), 2.0),
                      np.zeros((2, 3)), np.ones(3), [], 0.0)
    err = res.errors_mm()
    assert np.isnan(err[0, 2]) and err[1, 1] == pytest.approx(10.0)
    t = table5({"m": res})
    assert t.loc["m", "n"] == 5
    assert t.loc["m", "PE mean"] == pytest.approx(10.0 / 5)
    assert t.loc["m", "PE SD"] == pytest.approx(np.std([0, 0, 0, 10.0, 0]))
    per = per_vertebra_table(res)
    assert per.loc["L3", "n"] == 1 and per.loc["L3", "PE mean"] == 0.0


# --------------------------------------------------------------------------------------------------
# identification rate (Glocker et al. 2013 / Payer Eq. 8)
# --------------------------------------------------------------------------------------------------


def test_identification_rate_against_a_hand_count() -> None:
    """Five vertebrae 25 mm apart along z (spacing 2.5 mm/voxel -> 10 voxels), hand-counted:

    V1 exact                                   -> identified
    V2 off by 15 mm towards V3 (closest is V2 at 15 vs V3 at 10 mm) -> NOT (closest is V3)
    V3 off by 12 mm sideways (closest V3, 12 mm <= 20)              -> identified
    V4 off by 22 mm sideways (closest V4 but 22 mm > 20)            -> NOT
    V5 missing in the scan (NaN)                                    -> not counted
    scan 2: V1 predicted at V2's place (swap), V2 exact             -> V1 NOT, V2 identified
    #ID = 3 of n = 6.
    """
    z = np.arange(5) * 10.0
    true = np.zeros((2, 5, 3))
    true[..., 2] = z
    true[0, 4] = np.nan
    true[1, 2:] = np.nan
    pred = true.copy()
    pred[0, 1, 2] += 6.0  # 15 mm
    pred[0, 2, 0] += 4.8  # 12 mm
    pred[0, 3, 0] += 8.8  # 22 mm
    pred[0, 4] = [0, 0, 40.0]
    pred[1, 0, 2] = 10.0
    pred[1, 2:] = 0.0
    ok = metrics.identified(pred, true, 2.5)
    assert ok.tolist() == [[True, False, True, False, False], [False, True, False, False, False]]
    ident = metrics.identification_rate(pred, true, 2.5)
    assert (ident["#ID"], ident["n"]) == (3, 6) and ident["ID rate"] == pytest.approx(50.0)
    res = SpineResult("k", {}, ["a", "b"], [f"V{i}" for i in range(5)], pred, true, np.full((2, 3), 2.5),
                      np.zeros((2, 5)), np.ones(5), [], 0.0)
    row = table5({"m": res}).loc["m"]
    assert (row["#ID"], row["n"], row["ID rate (%)"]) == (3, 6, pytest.approx(50.0))


# --------------------------------------------------------------------------------------------------
# sliding windows
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length, window, overlap, expected", [(10, 16, 8, [0]), (40, 16, 8, [0, 8, 16, 24]),
                                                               (41, 16, 8, [0, 8, 16, 24, 25]), (16, 16, 0, [0])])
def test_window_starts_cover_the_volume(length, window, overlap, expected) -> None:
    assert window_starts(length, window, overlap) == expected


def test_sliding_window_max_merge_equals_whole_volume_for_a_local_model() -> None:
    """A point-wise model: windowed + max-merged output equals the output on the whole volume."""

    class PointWise(torch.nn.Module):
        def forward(self, x):
            return torch.cat([x, 2 * x], 1)

    vol = torch.rand(45, 10, 12)
    hm, (y0, x0) = predict_sliding_z(PointWise(), vol, (8, 6, 16), overlap=6)
    assert (y0, x0) == (2, 2) and hm.shape == (2, 45, 6, 8)
    assert torch.equal(hm[0], vol[:, 2:8, 2:10]) and torch.equal(hm[1], 2 * vol[:, 2:8, 2:10])

    class Position(torch.nn.Module):  # output depends on the position in the window -> the max is taken
        def forward(self, x):
            return torch.arange(x.shape[2], dtype=x.dtype).reshape(1, 1, -1, 1, 1).expand_as(x).clone()

    hm, _ = predict_sliding_z(Position(), torch.zeros(24, 4, 4), (4, 4, 16), overlap=8)
    # windows start at 0 and 8: slice 10 is position 10 in the first and 2 in the second -> 10
    assert hm[0, 10, 0, 0] == 10 and hm[0, 20, 0, 0] == 12 and hm[0, 3, 0, 0] == 3


# --------------------------------------------------------------------------------------------------
# volumes
# --------------------------------------------------------------------------------------------------


def test_resampling_maps_landmarks_exactly() -> None:
    p = np.array([[13.4, 9.2, 7.7]])  # x, y, z original voxels
    vol = _blobs((20, 24, 30), p, sigma=3.0).numpy()
    spacing = np.array([1.0, 1.5, 2.0])
    out = resample_volume(vol, spacing, 3.0)
    assert out.shape == (int(19 * 2 / 3) + 1, int(23 * 1.5 / 3) + 1, int(29 / 3) + 1)
    peak, _ = argmax_subpixel_3d(torch.as_tensor(out)[None, None])
    assert np.allclose(peak[0, 0].numpy(), p[0] * spacing / 3.0, atol=0.15)


def test_extract_window_pads_and_crops() -> None:
    vol = torch.arange(4 * 5 * 6, dtype=torch.float32).reshape(4, 5, 6)
    w = extract_window(vol, (-1, 1, 2), (3, 3, 5), fill=-7.0)
    assert (w[0] == -7).all() and torch.equal(w[1:, :, :4], vol[:2, 1:4, 2:6]) and (w[:, :, 4] == -7).all()


def test_3d_pipeline_rejects_2d_data_with_one_clear_error() -> None:
    class Rec:
        name, ndim = "isbi2015", 2

    with pytest.raises(ConfigError, match="is 2D; the 3D pipeline needs 3D volumes"):
        VolumeSet.from_record(Rec(), 2.0)


# --------------------------------------------------------------------------------------------------
# synthetic spine phantom
# --------------------------------------------------------------------------------------------------


def test_constructed_table_is_deterministic_and_contiguous() -> None:
    a, b = constructed_centroids(6, seed=1), constructed_centroids(6, seed=1)
    assert np.array_equal(a.centroids_mm, b.centroids_mm, equal_nan=True)
    assert not np.array_equal(a.centroids_mm, constructed_centroids(6, seed=2).centroids_mm, equal_nan=True)
    for c in a.centroids_mm:
        have = np.flatnonzero(~np.isnan(c).any(-1))
        assert 7 <= have.size <= 17 and np.all(np.diff(have) == 1)
        assert np.all(np.diff(c[have, 2]) < 0)  # z decreases from cranial to caudal, as in the CSI files


def test_rendered_scan_holds_its_vertebrae_and_not_the_missing_ones() -> None:
    table = constructed_centroids(3, seed=4)
    cfg = SpineConfig(spacing_mm=4.0, noise_hu=0.0)
    for k in range(3):
        vol, origin, lm = render_spine_volume(table.centroids_mm[k], cfg, np.random.default_rng(k))
        have = ~np.isnan(lm).any(-1)
        size = np.array(vol.shape[::-1])
        assert np.all(lm[have] > -0.5) and np.all(lm[have] < size - 0.5)
        # a vertebral body (bone, > 200 HU) at every centroid, soft tissue far in front of the spine
        idx = np.round(lm[have]).astype(int)
        assert np.all(vol[idx[:, 2], idx[:, 1], idx[:, 0]] > 200)
        # the z field of view ends before the missing neighbours' centroids (the textbook gap away)
        z_ext = (size[2] - 1) * cfg.spacing_mm
        first, last = np.flatnonzero(have)[[0, -1]]
        span = (lm[first, 2] - lm[last, 2]) * cfg.spacing_mm
        assert span < z_ext < span + 2 * 0.5 * 36.0 + 2 * cfg.spacing_mm
        assert np.allclose(origin + lm[have] * cfg.spacing_mm, table.centroids_mm[k][have])
    again = render_spine_volume(table.centroids_mm[0], cfg, np.random.default_rng(0))[0]
    first = render_spine_volume(table.centroids_mm[0], cfg, np.random.default_rng(0))[0]
    assert np.array_equal(again, first)


def test_spine_dataset_is_cached_and_read_by_the_folder_loader(tmp_path) -> None:
    table = constructed_centroids(4, seed=0)
    cfg = SpineConfig(spacing_mm=8.0)
    root = spine_dataset(cfg, table, cache_dir=tmp_path)
    stamp = (root / "images" / "spine000.mha").stat().st_mtime_ns
    assert spine_dataset(cfg, table, cache_dir=tmp_path) == root
    assert (root / "images" / "spine000.mha").stat().st_mtime_ns == stamp  # reused, not re-rendered
    rec = load_spine(root)
    assert rec.ndim == 3 and rec.landmark_names == VERTEBRA_NAMES and rec.ids == table.ids
    assert np.array_equal(np.isnan(rec.landmarks), np.isnan(table.centroids_mm))
    assert np.allclose(rec.landmarks, rec.truth["landmarks"], atol=1e-3, equal_nan=True)
    assert rec.splits["train"] == table.splits["train"] and np.allclose(rec.spacing, 8.0)
    assert json.loads((root / "dataset.json").read_text())["centroid_source"] == "constructed"
    vs = VolumeSet.from_record(rec, 8.0, rec.ids[:2])
    assert vs.volumes[0].shape[1:] == (24, 24) and float(vs.volumes[0].min()) >= -1.0


def test_bad_centroid_file_gives_one_clear_error(tmp_path) -> None:
    bad = tmp_path / "points_world_coordinates.csv"
    bad.write_text("123,1,2,3\n")
    with pytest.raises(DataError, match=r"points_world_coordinates.csv, line 1: expected an id and 78"):
        read_centroid_table(bad)
    with pytest.raises(DataError, match="no spine centroid file"):
        find_centroid_file(tmp_path / "nowhere")


def test_training_is_deterministic_on_cpu() -> None:
    """Two runs with the same seed give identical weights, sigmas and logs; another seed differs."""
    table = constructed_centroids(3, seed=5)
    cfg = SpineConfig(spacing_mm=12.0, noise_hu=10.0)
    vols, lms = [], []
    for k in range(3):
        v, _, lm = render_spine_volume(table.centroids_mm[k], cfg, np.random.default_rng(k))
        vols.append(torch.as_tensor(np.clip(v / 2048.0, -1, 1), dtype=torch.float32))
        lms.append(lm)
    vs = VolumeSet(table.ids, vols, np.stack(lms), np.ones((3, 3)), 12.0)
    tc = Train3DConfig(model="unet", input_size=(8, 8, 16), iterations=6, batch_size=1, num_filters=2,
                       optimizer="adam", lr=1e-2, lr_schedule="constant", init_sigma=1.0, overlap=8, seed=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the smoke/quick profiles (tiny 3D convolutions)
    try:
        m1, t1, h1 = train_3d(vs, tc, log_every=1)
        m2, t2, h2 = train_3d(vs, tc, log_every=1)
        m3, _, h3 = train_3d(vs, replace(tc, seed=2), log_every=1)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(t1.sigmas(), t2.sigmas()) and h1 == h2
    assert not torch.allclose(t1.sigmas(), torch.ones(26))  # the sigmas were trained
    assert h3 != h1


# --------------------------------------------------------------------------------------------------
# the real CSI 2014 centroids (skipped without ../shared)
# --------------------------------------------------------------------------------------------------


@needs_real
def test_real_centroid_table_and_its_splits() -> None:
    table = read_centroid_table(CENTROIDS)
    assert len(table.ids) == 302 and table.centroids_mm.shape == (302, 26, 3)
    assert len(table.splits["train"]) == 242 and len(table.splits["test"]) == 60
    assert not set(table.splits["train"]) & set(table.splits["test"])
    have = ~np.isnan(table.centroids_mm).any(-1)
    assert have.sum(1).min() >= 1 and have.sum() > 3000


@needs_real
def test_real_scans_render_with_their_centroids_inside(tmp_path) -> None:
    table = read_centroid_table(CENTROIDS)
    cfg = SpineConfig(spacing_mm=8.0)
    for k in (0, 3, 150):
        vol, origin, lm = render_spine_volume(table.centroids_mm[k], cfg, np.random.default_rng(k))
        have = ~np.isnan(lm).any(-1)
        assert np.array_equal(have, ~np.isnan(table.centroids_mm[k]).any(-1))
        assert np.all(lm[have] > -0.5) and np.all(lm[have] < np.array(vol.shape[::-1]) - 0.5)


def test_run_spine_caches_model_and_predictions(tmp_path) -> None:
    from lmkcore.runs.spine import get_spine_profile, load_spine_model, result_folder, run_spine

    rec = load_spine(spine_dataset(SpineConfig(spacing_mm=12.0), constructed_centroids(5, seed=3), tmp_path))
    prof = get_spine_profile("smoke")
    prof = replace(prof, train=replace(prof.train, iterations=2, num_filters=2))
    first = run_spine(rec, prof, "unet", tmp_path, progress=False)
    folder = result_folder(tmp_path, first.key)
    stamp = (folder / "model.pt").stat().st_mtime_ns
    again = run_spine(rec, prof, "unet", tmp_path, progress=False)
    assert (folder / "model.pt").stat().st_mtime_ns == stamp  # loaded, not retrained
    assert again.ids == first.ids == rec.splits["test"] and again.train_seconds == first.train_seconds
    assert np.array_equal(again.pred_px, first.pred_px) and np.array_equal(again.true_px, first.true_px, equal_nan=True)
    assert first.pred_px.shape == (len(first.ids), 26, 3) and np.isfinite(first.pred_px).all()
    net = load_spine_model(first, tmp_path, 26)
    assert sum(p.numel() for p in net.parameters()) > 0
    other = run_spine(rec, prof, "unet", tmp_path, progress=False, seed=1)
    assert other.key != first.key


def test_notebook_data_synthetic_folder_and_clear_errors(tmp_path) -> None:
    from lmkcore.runs.spine import spine_record, spine_source

    table = constructed_centroids(4, seed=2)
    root = spine_dataset(SpineConfig(spacing_mm=12.0), table, tmp_path, verbose=False)
    with pytest.warns(Warning, match=r"landmark\(s\) missing \(NaN\)"):  # the folder loader counts the NaN vertebrae
        folder = spine_record("folder", root, "smoke", tmp_path, verbose=False)  # as a user's 3D folder dataset
    assert folder.ndim == 3 and folder.ids == table.ids
    assert np.allclose(folder.landmarks, load_spine(root).landmarks, equal_nan=True)
    with pytest.raises(ConfigError, match="notebook 09 needs 3D data"):
        spine_record("isbi2015", tmp_path, "smoke", tmp_path)
    assert spine_source("isbi2015", tmp_path, )[:2] == ("synthetic", None)  # notebook 09 on a 2D run: the phantom
    assert "is 2D" in spine_source("hand", tmp_path)[2]
    assert spine_source("folder", root) == ("folder", root, None)
    with pytest.raises(ConfigError, match="unknown profile 'huge'"):
        spine_record("synthetic", None, "huge", tmp_path)
