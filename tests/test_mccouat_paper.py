"""McCouat & Voiculescu 2022 in the ``paper`` profile: padded 640 x 800 input, epoch multi-step schedule,
their augmentation preset, encoder weights, Test1-half temperatures, and the ledger rows that check them."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lmkcore.data.loader import LandmarkImageDataset, padded_frame_size
from lmkcore.data.geometry import resize_landmarks
from lmkcore.data.records import LandmarkDataset


# ----------------------------------------------------------------------------- geometry
def test_padded_frame_hand_values():
    # ISBI 1935 x 2400 at aspect 0.8: too wide, the bottom is padded to ceil(1935 / 0.8) = 2419 rows
    assert padded_frame_size([1935, 2400], (640, 800)).tolist() == [1935, 2419]
    # too tall: the right is padded to ceil(150 * 0.8) = 120 columns; an exact ratio stays unpadded
    assert padded_frame_size(np.array([[100, 150], [1600, 2000]]), (640, 800)).tolist() == [[120, 150], [1600, 2000]]
    # original -> working by hand: x' = (x + 0.5) 640 / 1935 - 0.5, y' = (y + 0.5) 800 / 2419 - 0.5
    p = np.array([[99.5, 2399.5], [0.0, 0.0]])
    w = resize_landmarks(p, [1935, 2419], [640, 800])
    np.testing.assert_allclose(w, [[100 * 640 / 1935 - 0.5, 2400 * 800 / 2419 - 0.5],
                                   [0.5 * 640 / 1935 - 0.5, 0.5 * 800 / 2419 - 0.5]], rtol=0, atol=1e-12)
    np.testing.assert_allclose(w[0], [32.574935, 793.216412], atol=1e-6)
    # 0.1 mm/px ISBI -> 0.30234375 mm per working px along x (McCouat's hard-coded pixel size)
    assert 0.1 * 1935 / 640 == pytest.approx(0.30234375)


def _image_record(tmp_path, sizes, blocks):
    """Images of value 100 with a 255 block (x0, x1, y0, y1 inclusive pixel indices) per image; one landmark at
    each block's centre."""
    ids, paths, lms = [], [], []
    for k, ((w, h), (x0, x1, y0, y1)) in enumerate(zip(sizes, blocks)):
        img = np.full((h, w), 100, np.uint8)
        img[y0:y1 + 1, x0:x1 + 1] = 255
        path = tmp_path / f"im{k}.png"
        Image.fromarray(img).save(path)
        ids.append(f"{k}")
        paths.append(path)
        lms.append([[(x0 + x1) / 2, (y0 + y1) / 2]])
    lm = np.asarray(lms, dtype=np.float64)
    return LandmarkDataset(name="padtoy", ids=ids, image_paths=paths, landmark_names=("a",),
                           annotations={"senior": lm}, reference="senior", spacing=np.full((len(ids), 2), 0.1),
                           image_size=np.asarray(sizes), splits={"train": ids})


def test_padded_dataset_round_trip_and_pixels(tmp_path):
    # 100 x 150 (pad right to 120 x 150) and 150 x 100 (pad bottom to 150 x 188), both to 40 x 50 (aspect 0.8)
    rec = _image_record(tmp_path, [(100, 150), (150, 100)], [(54, 59, 84, 89), (30, 35, 12, 17)])
    ds = LandmarkImageDataset(rec, size=(40, 50), cache_dir=tmp_path / "cache", pad=True)
    assert ds.frame_size.tolist() == [[120, 150], [150, 188]]
    # image 0: scale 1/3 both axes; the block's edges 53.5..59.5 -> 17.5..19.5: landmark (56.5, 86.5) -> (18.5, 28.5)
    np.testing.assert_allclose(ds.landmarks[0, 0], [18.5, 28.5], atol=1e-5)
    np.testing.assert_allclose(ds.spacing[0], [0.3, 0.3], atol=1e-6)
    img0 = ds[0]["image"][0].numpy()
    assert np.all(img0[:, 34:] == 0) and np.all(img0[:, :32] > 0.3)  # padded columns 100..119 -> x > 32.8
    # the bright block's intensity centroid is the mapped landmark
    excess = np.clip(img0 - 100 / 255, 0, None)
    yy, xx = np.mgrid[:50, :40]
    np.testing.assert_allclose([(excess * xx).sum() / excess.sum(), (excess * yy).sum() / excess.sum()],
                               ds.landmarks[0, 0], atol=0.05)
    # image 1: padded at the bottom (rows 100..187 -> y > 26.1 are zero)
    img1 = ds[1]["image"][0].numpy()
    assert np.all(img1[28:] == 0) and np.all(img1[:25] > 0.3)
    np.testing.assert_allclose(ds.spacing[1], [0.1 * 150 / 40, 0.1 * 188 / 50], rtol=1e-6)
    # working -> original with the frame: the round trip returns the annotation
    back = np.stack([resize_landmarks(ds.landmarks[i], ds.size, ds.frame_size[i]) for i in range(2)])
    np.testing.assert_allclose(back, rec.landmarks, atol=1e-4)
    # without padding the frame is the image itself
    plain = LandmarkImageDataset(rec, size=(40, 50), cache_dir=tmp_path / "cache")
    assert plain.frame_size.tolist() == [[100, 150], [150, 100]]
    assert not np.allclose(plain.landmarks, ds.landmarks)


# ----------------------------------------------------------------------------- epoch multi-step schedule
def test_multistep_schedule_equals_torch_multisteplr():
    from lmkcore.training.trainer import TrainConfig, _lr_factor, steps_per_epoch, total_iterations

    cfg = TrainConfig(model="resnet34_unet", loss="onehot_nll", target="fixed", lr=1e-3, batch_size=4, epochs=15,
                      lr_schedule="multistep", lr_milestones=(4, 6, 8), lr_gamma=0.1)
    n = 150  # ISBI training images: 38 batches per epoch (the last of 2 images)
    assert steps_per_epoch(cfg, n) == 38 and total_iterations(cfg, n) == 15 * 38
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([param], lr=1e-3)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[4, 6, 8], gamma=0.1)
    for epoch in range(15):
        expected = opt.param_groups[0]["lr"]
        for k in (0, 17, 37):  # first, middle and last batch of the epoch
            assert 1e-3 * _lr_factor(cfg, epoch * 38 + k, n) == pytest.approx(expected, rel=1e-12), (epoch, k)
        opt.step()
        sched.step()
    assert _lr_factor(cfg, 3 * 38 + 37, n) == 1.0 and _lr_factor(cfg, 4 * 38, n) == pytest.approx(0.1)


def test_epoch_batches_cover_every_image_once_per_epoch():
    from lmkcore.training.trainer import _epoch_batch_indices

    n, b = 10, 4
    for epoch in range(3):
        batches = [_epoch_batch_indices(n, b, 0, epoch * 3 + k) for k in range(3)]
        assert [len(x) for x in batches] == [4, 4, 2]
        assert sorted(np.concatenate(batches).tolist()) == list(range(n))


def test_new_fields_validated_and_absent_from_default_keys():
    from lmkcore.errors import ConfigError
    from lmkcore.training.augment import AugmentConfig
    from lmkcore.training.trainer import TrainConfig

    d = TrainConfig().to_dict()
    for name in ("epochs", "lr_milestones", "lr_gamma", "encoder_weights", "encoder_weights_sha256"):
        assert name not in d  # cache keys of earlier runs unchanged
    assert not {"intensity_scale_center", "translate_px", "elastic_magnitude_uniform"} & set(d["augment"])
    assert TrainConfig.from_dict(TrainConfig(epochs=3, lr_schedule="multistep", lr_milestones=[2]).to_dict()).lr_milestones == (2,)
    with pytest.raises(ConfigError, match="epoch based"):
        TrainConfig(lr_schedule="multistep")
    with pytest.raises(ConfigError, match="lr_milestones"):
        TrainConfig(epochs=3, lr_schedule="multistep", lr_milestones=(6, 4))
    with pytest.raises(ConfigError, match="intensity_scale"):
        AugmentConfig(intensity_scale=0.8, intensity_scale_center=0.75)


# ----------------------------------------------------------------------------- augmentation preset
def test_mccouat_augment_ranges_on_constructed_inputs():
    from lmkcore.training.augment import AugmentConfig, apply_params, sample_params
    from lmkcore.training.profiles import MCCOUAT_AUGMENT

    cfg = AugmentConfig(**dict(MCCOUAT_AUGMENT))
    b, h, w = 256, 800, 640
    params = sample_params(b, (h, w), cfg, generator=torch.Generator().manual_seed(0))
    s = params.intensity_scale.numpy()
    assert s.min() >= 0.5 and s.max() <= 1.0 and s.min() < 0.55 and s.max() > 0.95
    assert np.all(params.intensity_shift.numpy() == 0)
    # forward affine = inverse of the backward matrix: R diag(s); recover angle and scale
    fwd = torch.linalg.inv(params.matrix.double())
    scale = torch.sqrt(torch.linalg.det(fwd)).numpy()
    angle = np.degrees(np.arctan2(fwd[:, 1, 0].numpy(), fwd[:, 0, 0].numpy()))
    assert scale.min() >= 0.95 - 1e-9 and scale.max() <= 1.05 + 1e-9 and np.ptp(scale) > 0.08
    assert np.abs(angle).max() <= 3 + 1e-9 and np.abs(angle).max() > 2.7
    # translation: the image centre c moves to c + t, |t| <= 10 px per axis
    c = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=torch.float64)
    t = (torch.einsum("bij,bj->bi", fwd, c[None] - params.offset.double()) - c).numpy()
    assert np.abs(t).max() <= 10 + 1e-6 and np.abs(t).max() > 9
    # elastic: per-image magnitude factor in [0, 1]; the displacement stays a few px (imgaug alpha <= 500, sigma 30)
    small = sample_params(4, (h, w), cfg, generator=torch.Generator().manual_seed(1))
    ident = AugmentConfig(**{**dict(MCCOUAT_AUGMENT), "rotate_deg": 0.0, "scale": 0.0, "translate_px": 0.0})
    el = sample_params(4, (h, w), ident, generator=torch.Generator().manual_seed(1))
    img = torch.zeros(4, 1, h, w)
    pts = torch.tensor([[[320.0, 400.0], [100.0, 700.0]]]).repeat(4, 1, 1)
    _, moved = apply_params(el, img, pts)
    disp = (moved - pts).norm(dim=-1)
    assert disp.max() < 12 and el.control is not None and small.control is not None
    # a constructed image: a constant image stays within [0.5, 1] x its value inside the field of view
    ones = torch.ones(4, 1, h, w)
    out, _ = apply_params(small, ones, pts)
    inner = out[:, :, 50:-50, 50:-50]
    assert inner.min() >= 0.5 - 1e-5 and inner.max() <= 1.0 + 1e-5


def test_translate_px_keeps_the_random_stream_of_other_configs():
    from lmkcore.training.augment import AugmentConfig, sample_params

    a = sample_params(3, (50, 40), AugmentConfig(), generator=torch.Generator().manual_seed(3))
    b = sample_params(3, (50, 40), AugmentConfig(translate_px=0.0), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.matrix, b.matrix) and torch.equal(a.offset, b.offset)


# ----------------------------------------------------------------------------- profile / method settings
def _stand_in():
    from types import SimpleNamespace

    return SimpleNamespace(name="isbi2015", splits={"train": [], "test_all": []}, reference="senior", num_landmarks=19)


def test_paper_profile_gives_mccouat_settings_and_paper_dry_one_epoch():
    from lmkcore.training.methods import experiment_config
    from lmkcore.training.profiles import get_profile

    for method in ("chh_onehot", "chh_gaussian"):
        paper = experiment_config(get_profile("paper"), _stand_in(), method)
        dry = experiment_config(get_profile("paper-dry"), _stand_in(), method)
        assert (paper.input_width, paper.input_height) == (640, 800) == (dry.input_width, dry.input_height)
        t = paper.train
        assert (t.optimizer, t.lr, t.batch_size, t.epochs, t.lr_schedule, t.lr_milestones, t.lr_gamma) == \
            ("adam", 1e-3, 4, 15, "multistep", (4, 6, 8), 0.1)
        assert t.augment.translate_px == 10.0 and t.augment.rotate_deg == 3.0
        a, b = paper.train.to_dict(), dry.train.to_dict()
        assert dry.train.epochs == 1 and {k for k in a if a[k] != b[k]} <= {"epochs", "iterations", "checkpoint_every",
                                                                             "log_every"}
        # the quick profile keeps its own sizes and schedule
        quick = experiment_config(get_profile("quick"), _stand_in(), method)
        assert quick.input_height is None and quick.train.epochs is None and quick.train.lr_schedule == "cosine"
        assert quick.train.iterations == get_profile("quick").iterations
    # an explicit input width keeps the aspect
    assert experiment_config(get_profile("paper"), _stand_in(), "chh_onehot", input_width=320).input_height is None


def test_mccouat_ledger_rows_equal_the_configuration():
    from lmkcore.training import ledger

    assert ledger.PAPER_METHODS["mccouat2022"] == ("chh_onehot", "chh_gaussian")
    assert ledger.check_paper_configs(("mccouat2022",)) == []
    assert sum(r.field is not None for r in ledger.ledger_rows("mccouat2022")) >= 10
    assert ledger.check_paper_configs(("mccouat2022",), profile=__import__(
        "lmkcore.training.profiles", fromlist=["get_profile"]).get_profile("quick"))


# ----------------------------------------------------------------------------- encoder weights
def test_encoder_weights_file_is_loaded_and_keyed_by_its_hash(tmp_path):
    from lmkcore.errors import ConfigError
    from lmkcore.models.resnet_unet import ResNet34Encoder
    from lmkcore.training.trainer import TrainConfig, build_network

    torch.manual_seed(5)
    src = ResNet34Encoder(3, 64)  # a random "ImageNet" ResNet-34 (3-channel stem, torchvision names)
    state = {**src.state_dict(), "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
    path = tmp_path / "resnet34.pth"
    torch.save(state, path)
    kw = dict(model="resnet34_unet", loss="onehot_nll", target="fixed", num_filters=64)
    cfg = TrainConfig(**kw, encoder_weights=str(path))
    net = build_network(cfg, 2)
    torch.testing.assert_close(net.encoder.layer3[5].conv2.weight, state["layer3.5.conv2.weight"])
    torch.testing.assert_close(net.encoder.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    d = cfg.to_dict()
    assert "encoder_weights" not in d and len(d["encoder_weights_sha256"]) == 64
    assert d != TrainConfig(**kw).to_dict()
    # other weights -> another key
    torch.save({**state, "bn1.bias": state["bn1.bias"] + 1}, tmp_path / "other.pth")
    assert TrainConfig(**kw, encoder_weights=str(tmp_path / "other.pth")).to_dict() != d
    # a wrong file: one clear ConfigError naming it, at configuration time
    bad = tmp_path / "resnet18.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("layer4")}, bad)
    with pytest.raises(ConfigError, match="resnet18.pth") as info:
        TrainConfig(**kw, encoder_weights=str(bad))
    assert "missing" in str(info.value) and info.value.__cause__ is None
    with pytest.raises(ConfigError, match="nothing.pth"):
        TrainConfig(**kw, encoder_weights=str(tmp_path / "nothing.pth"))


# ----------------------------------------------------------------------------- temperature data
def test_temperature_plan_uses_test1_halves_where_there_is_test1():
    from lmkcore.runs.calibration import temperature_plan

    ids = [f"{i:03d}" for i in range(1, 301)]
    lm = np.zeros((300, 1, 2))
    rec = LandmarkDataset(name="isbi-like", ids=ids, image_paths=[f"{i}.bmp" for i in ids], landmark_names=("a",),
                          annotations={"senior": lm}, reference="senior", spacing=np.full((300, 2), 0.1),
                          image_size=np.full((300, 2), 100),
                          splits={"train": ids[:150], "test1": ids[150:300]})
    plan = temperature_plan(rec, "train")
    assert plan.train_split == "train" and plan.select_split == "test1/select"
    assert plan.record.splits["test1/fit"] == [f"{i:03d}" for i in range(151, 226)]
    assert plan.record.splits["test1/select"] == [f"{i:03d}" for i in range(226, 301)]
    no_test1 = rec.with_splits({"test1": []})
    fallback = temperature_plan(no_test1, "train")
    assert (fallback.train_split, fallback.fit_split, fallback.select_split) == ("train/fit", "train/calib", None)
    assert len(fallback.record.splits["train/calib"]) == 30


def test_param_path_is_passed_absolute(tmp_path, monkeypatch):
    from pathlib import Path

    from lmkcore.cli import parse_extra_params

    nb = Path(__file__).resolve().parents[1] / "notebooks" / "06_calibration.ipynb"
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "r34.pth").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    extra = parse_extra_params(["encoder_weights=w/r34.pth", "reference=mean"], [nb])
    assert extra[nb] == {"encoder_weights": str(tmp_path / "w" / "r34.pth"), "reference": "mean"}


def test_padded_onehot_experiment_with_test1_temperatures(session_cache, tmp_path):
    """End to end on synthetic 64 x 80 images: a fixed 64 x 64 input (padded right to 80 x 80), temperatures by
    the authors' procedure on the Test1 halves; predictions come back in original px through the frame."""
    from lmkcore.data.datasets import load_dataset
    from lmkcore.runs.calibration import evaluate_calibration, temperature_plan
    from lmkcore.runs.experiment import ExperimentConfig, experiment_dataset, run_experiment
    from lmkcore.training.augment import AugmentConfig
    from lmkcore.training.trainer import TrainConfig

    record = load_dataset("synthetic", None, n_images=24, width=64, cache_dir=session_cache)
    plan = temperature_plan(record, "train")
    assert plan.select_split == "test1/select"
    rec = plan.record
    tc = TrainConfig(model="resnet34_unet", loss="onehot_nll", target="fixed", num_filters=4, epochs=2,
                     lr_schedule="multistep", lr_milestones=(1,), batch_size=4, log_every=1,
                     augment=AugmentConfig(elastic_grid=5))
    cfg = ExperimentConfig(train=tc, input_width=64, input_height=64, train_split="train", eval_split="test_all",
                           crop_size=9, fit_window=9)
    res = run_experiment(rec, cfg, tmp_path, progress=False)
    ds = experiment_dataset(rec, cfg, res.ids, tmp_path)
    assert res.work_size == (64, 64) and ds.frame_size.tolist() == [[80, 80]] * len(res.ids)
    np.testing.assert_allclose(res.work_spacing, rec.spacing[rec.index_of(res.ids)] * 80 / 64, rtol=1e-6)
    n_train = len(rec.splits["train"])
    assert res.history[-1]["iteration"] == 2 * -(-n_train // 4)  # 2 epochs of ceil(n / 4) batches
    ev = evaluate_calibration(rec, res, tmp_path, plan.fit_split, select_split=plan.select_split)
    assert ev.argmax_unchanged and np.all(ev.temperature > 0)
    # hottest pixel = integer working pixel i, mapped to original px through the 80 x 80 frame: (i + 0.5) 80 / 64 - 0.5
    work = (ev.argmax_px + 0.5) * 64 / 80 - 0.5
    np.testing.assert_allclose(work, np.round(work), atol=1e-9)
    assert work.min() >= 0 and work.max() <= 63
    nll_fit = evaluate_calibration(rec, res, tmp_path, plan.fit_split)  # the NLL fit: another cached evaluation
    assert not np.array_equal(nll_fit.temperature, ev.temperature)
    with pytest.raises(Exception, match="overlaps the training split"):
        evaluate_calibration(rec, res, tmp_path, plan.fit_split, select_split="train")
