"""Thaler et al. (2021)'s code settings in the ``paper`` profile of their methods (scn_aniso, scn_iso, scn_fixed):
their augmentation (THALER_AUGMENT), heatmap-layer init std 1e-4 and input pre-smoothing of 0.15 mm."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lmkcore.errors import ConfigError
from lmkcore.training.augment import AugmentConfig, apply_intensity, apply_params, sample_params
from lmkcore.training.profiles import THALER_AUGMENT

THALER = ("scn_aniso", "scn_iso", "scn_fixed")
NEW_TRAIN_FIELDS = {"heatmap_init_std", "input_smoothing_mm"}
NEW_AUGMENT_FIELDS = {"intensity_pivot", "intensity_shift_first", "intensity_clamp", "translate_mm",
                      "elastic_distribution", "elastic_unit"}


def _stand_in():
    return SimpleNamespace(name="isbi2015", splits={"train": [], "test_all": []}, reference="senior", num_landmarks=19)


# ----------------------------------------------------------------------------- augmentation preset
def test_thaler_augment_ranges_on_constructed_inputs():
    cfg = AugmentConfig(**dict(THALER_AUGMENT))
    b, h, w = 512, 516, 416
    spacing = (0.5, 0.25)  # anisotropic on purpose: the mm ranges are converted per axis
    params = sample_params(b, (h, w), cfg, generator=torch.Generator().manual_seed(0), spacing=spacing)
    # intensity, on constant images 0, 0.5 and 1: in network units n = 2 x - 1 the code's (n + u) * s,
    # u ~ U(-0.25, 0.25), s ~ 1 + U(-0.25, 0.25)
    out = torch.stack([params.intensity_scale * x + params.intensity_shift for x in (0.0, 0.5, 1.0)], 1).double()
    s = (out[:, 2] - out[:, 0]).numpy()
    u = ((2 * out[:, 1] - 1) / torch.from_numpy(s)).numpy()  # n = 0: (0 + u) s
    assert s.min() >= 0.75 - 1e-9 and s.max() <= 1.25 + 1e-9 and s.min() < 0.76 and s.max() > 1.24
    assert np.abs(u).max() <= 0.25 + 1e-9 and np.abs(u).max() > 0.24
    for k, x in enumerate((0.0, 0.5, 1.0)):
        np.testing.assert_allclose(2 * out[:, k].numpy() - 1, ((2 * x - 1) + u) * s, atol=1e-9)
    # clamp to [0, 1] (the code's [-1, 1]) after the change
    small = sample_params(16, (64, 48), cfg, generator=torch.Generator().manual_seed(1), spacing=(5.0, 5.0))
    img = torch.ones(16, 1, 64, 48)
    lo_hi, _ = apply_params(small, img, torch.zeros(16, 1, 2), clamp=cfg.clamp_range)
    unclamped, _ = apply_params(small, img, torch.zeros(16, 1, 2))
    assert lo_hi.max() <= 1.0 and lo_hi.min() >= 0.0 and unclamped.max() > 1.05
    # rotation and per-axis scale: forward affine F = R diag(s_x, s_y)
    fwd = torch.linalg.inv(params.matrix.double())
    sx, sy = fwd[:, :, 0].norm(dim=1).numpy(), fwd[:, :, 1].norm(dim=1).numpy()
    angle = np.arctan2(fwd[:, 1, 0].numpy(), fwd[:, 0, 0].numpy())
    assert np.abs(angle).max() <= 0.25 + 1e-9 and np.abs(angle).max() > 0.24
    for sc in (sx, sy):
        assert sc.min() >= 0.8 * 0.8 - 1e-9 and sc.max() <= 1.2 * 1.2 + 1e-9 and sc.min() < 0.7 and sc.max() > 1.35
    ratio = sx / sy  # the per-axis factor: (1 + U(-0.2, 0.2)) / (1 + U(-0.2, 0.2))
    assert ratio.min() >= 0.8 / 1.2 - 1e-9 and ratio.max() <= 1.2 / 0.8 + 1e-9 and np.ptp(ratio) > 0.6
    # translation: the image centre c moves to c + t, |t_k| <= 10 mm / spacing_k px
    c = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=torch.float64)
    t = (torch.einsum("bij,bj->bi", fwd, c[None] - params.offset.double()) - c).numpy()
    for k, bound in enumerate((10 / 0.5, 10 / 0.25)):
        assert np.abs(t[:, k]).max() <= bound + 1e-6 and np.abs(t[:, k]).max() > 0.97 * bound
    # elastic: 5 x 5 control points, each coefficient U(-10, 10) mm per axis (in px via the spacing); the
    # Lipschitz cap does not bind at this size, so the coefficients are the raw uniform draws
    ctrl = params.control.numpy()
    assert ctrl.shape == (b, 2, 5, 5)
    for k, bound in enumerate((10 / 0.5, 10 / 0.25)):
        z = ctrl[:, k] / bound
        assert np.abs(z).max() <= 1 + 1e-9 and np.abs(z).max() > 0.99
        assert z.std() == pytest.approx(1 / math.sqrt(3), abs=0.02)  # uniform, not normal
    # mm ranges need the spacing
    with pytest.raises(ValueError, match="spacing"):
        sample_params(2, (h, w), cfg, generator=torch.Generator().manual_seed(0))
    assert cfg.needs_spacing and not AugmentConfig().needs_spacing


def test_pivot_and_order_options_against_closed_forms():
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    base = AugmentConfig(intensity_shift=0.1, intensity_scale=0.3, translate=0.0, rotate_deg=0.0, scale=0.0,
                         aniso_scale=0.0, elastic_magnitude=0.0)
    ref = sample_params(8, (4, 4), base, generator=g())
    s, t = ref.intensity_scale, ref.intensity_shift  # the default: s x + t
    piv = sample_params(8, (4, 4), AugmentConfig(**{**base.__dict__, "intensity_pivot": 0.5}), generator=g())
    first = sample_params(8, (4, 4), AugmentConfig(**{**base.__dict__, "intensity_pivot": 0.5,
                                                      "intensity_shift_first": True}), generator=g())
    x = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(9)).double()
    sv, tv = s.reshape(-1, 1, 1, 1), t.reshape(-1, 1, 1, 1)
    torch.testing.assert_close(apply_intensity(piv, x), 0.5 + sv * (x - 0.5) + tv)
    torch.testing.assert_close(apply_intensity(first, x), 0.5 + sv * (x + tv - 0.5))
    # same random stream as the default (the options only change how the draws are used)
    assert torch.equal(piv.intensity_scale, s) and torch.equal(piv.matrix, ref.matrix)


def test_new_augment_and_train_fields_validated():
    from lmkcore.training.trainer import TrainConfig

    with pytest.raises(ConfigError, match="elastic_distribution"):
        AugmentConfig(elastic_distribution="gamma")
    with pytest.raises(ConfigError, match="elastic_unit"):
        AugmentConfig(elastic_unit="cm")
    with pytest.raises(ConfigError, match="translate_mm"):
        AugmentConfig(translate_mm=-1.0)
    with pytest.raises(ConfigError, match="intensity_clamp"):
        AugmentConfig(intensity_clamp=1)
    with pytest.raises(ConfigError, match="heatmap_init_std"):
        TrainConfig(model="unet", heatmap_init_std=1e-4)
    with pytest.raises(ConfigError, match="input_smoothing_mm"):
        TrainConfig(input_smoothing_mm=-0.1)
    cfg = TrainConfig(heatmap_init_std=1e-4, input_smoothing_mm=0.15, augment=AugmentConfig(**dict(THALER_AUGMENT)))
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


# ----------------------------------------------------------------------------- profile settings and cache keys
def test_paper_profile_gives_thaler_code_settings_to_thaler_methods_only():
    from lmkcore.training.methods import METHODS, experiment_config
    from lmkcore.training.profiles import PAPER_AUGMENT, get_profile

    for name in ("paper", "paper-dry"):
        for method in METHODS:
            t = experiment_config(get_profile(name), _stand_in(), method).train
            if method in THALER:
                assert (t.heatmap_init_std, t.input_smoothing_mm) == (1e-4, 0.15)
                assert t.augment == AugmentConfig(**dict(THALER_AUGMENT))
            else:  # Payer et al. 2019's rows and McCouat's keep their own
                assert (t.heatmap_init_std, t.input_smoothing_mm) == (1e-3, 0.0)
                if method in ("scn_payer", "unet_iso", "la_only_iso"):
                    assert t.augment == AugmentConfig(**dict(PAPER_AUGMENT))


def test_new_fields_stay_out_of_every_other_cache_key():
    """Every configuration but the paper profile's Thaler methods writes none of the new fields, so its cache key
    is the one it had before they existed (checked once against the previous commit for all profiles x methods)."""
    from lmkcore.training.methods import METHODS, experiment_config
    from lmkcore.training.profiles import PROFILES

    changed = []
    for name, profile in PROFILES.items():
        for method in METHODS:
            d = experiment_config(profile, _stand_in(), method).to_dict()["train"]
            new = (NEW_TRAIN_FIELDS & set(d)) | (NEW_AUGMENT_FIELDS & set(d["augment"]))
            if new:
                changed.append((name, method))
                assert new == NEW_TRAIN_FIELDS | NEW_AUGMENT_FIELDS
    assert sorted(changed) == sorted((p, m) for p in ("paper", "paper-dry") for m in THALER)


# ----------------------------------------------------------------------------- heatmap-layer init
@pytest.mark.parametrize("std", [1e-4, 1e-3])
def test_heatmap_layers_have_the_configured_std(std):
    from lmkcore.training.trainer import TrainConfig, build_network

    torch.manual_seed(0)
    net = build_network(TrainConfig(model="scn", num_filters=16, heatmap_init_std=std), 19)
    la = net.la.heatmap.weight.detach().double()  # 16 -> 19, 3 x 3: 2,736 weights
    sc = [m for m in net.sc.convs if isinstance(m, torch.nn.Conv2d)][-1].weight.detach().double()  # 19 x 19 x 11 x 11
    for w in (la, sc):
        n = w.numel()
        assert w.std().item() == pytest.approx(std, rel=4 / math.sqrt(2 * n))  # 4 standard errors
        assert abs(w.mean().item()) < 4 * std / math.sqrt(n)
    assert torch.all(net.la.heatmap.bias == 0)


# ----------------------------------------------------------------------------- input pre-smoothing
def test_presmoothing_equals_scipy_before_resizing(session_cache, tmp_path):
    from scipy.ndimage import gaussian_filter

    from lmkcore.data.datasets import load_dataset
    from lmkcore.data.image_cache import cache_file, read_grey, resize_image
    from lmkcore.data.loader import GaussianPresmooth, LandmarkImageDataset
    from lmkcore.runs.experiment import experiment_dataset
    from lmkcore.training.methods import experiment_config
    from lmkcore.training.profiles import get_profile

    rec = load_dataset("synthetic", None, n_images=8, width=64, cache_dir=session_cache)
    ids = list(rec.ids[:3])
    sp = np.unique(rec.spacing, axis=0)[0]  # (x, y) mm per original px
    sigma_mm = 2.5 * float(sp[0])  # 2.5 px
    size = (32, 40)
    smooth = LandmarkImageDataset(rec, ids, size=size, cache_dir=tmp_path, smoothing_mm=sigma_mm)
    plain = LandmarkImageDataset(rec, ids, size=size, cache_dir=tmp_path)
    for i, image_id in enumerate(ids):
        raw = read_grey(rec.image_paths[rec.index_of([image_id])[0]])
        want = resize_image(gaussian_filter(raw.astype(np.float32), (sigma_mm / sp[1], sigma_mm / sp[0]),
                                            mode="nearest"), size)
        got = np.asarray(smooth.images[i], dtype=np.float32)
        tol = 0.51 if smooth.images.dtype == np.uint8 else 1e-2 * max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, atol=tol)
        assert np.abs(got - np.asarray(plain.images[i], dtype=np.float32)).max() > 5 * tol  # it does smooth
    # its own cache entry, keyed by the std
    pre = GaussianPresmooth.for_record(rec, sigma_mm)
    assert pre.sigma_px == pytest.approx((sigma_mm / sp[0], sigma_mm / sp[1]))
    from dataclasses import replace

    keyed = replace(rec.subset(ids), extras={**rec.extras, "preprocess": pre})
    assert cache_file(keyed, size, tmp_path) != cache_file(rec.subset(ids), size, tmp_path)
    # the experiment builds its datasets with the config's smoothing
    cfg = experiment_config(get_profile("smoke"), rec, "scn_aniso", input_smoothing_mm=sigma_mm, input_width=32)
    ds = experiment_dataset(rec, cfg, ids, tmp_path)
    np.testing.assert_array_equal(np.asarray(ds.images), np.asarray(smooth.images))


def test_a_thaler_paper_configuration_trains_end_to_end(session_cache, tmp_path):
    """The three settings together through run_experiment (the trainer passes each batch's working spacing)."""
    from lmkcore.data.datasets import load_dataset
    from lmkcore.runs.experiment import run_experiment
    from lmkcore.training.methods import experiment_config
    from lmkcore.training.profiles import get_profile

    rec = load_dataset("synthetic", None, n_images=16, width=64, cache_dir=session_cache)
    sp = float(np.unique(rec.spacing, axis=0)[0][0])
    aug = AugmentConfig(**{**dict(THALER_AUGMENT), "translate_mm": 2 * sp, "elastic_magnitude": 2 * sp})
    cfg = experiment_config(get_profile("smoke").with_(iterations=3, num_filters=4), rec, "scn_aniso", augment=aug,
                            heatmap_init_std=1e-4, input_smoothing_mm=1.5 * sp)
    res = run_experiment(rec, cfg, tmp_path, progress=False)
    assert np.isfinite(res.history[-1]["loss"]) and res.config["train"]["input_smoothing_mm"] == 1.5 * sp
