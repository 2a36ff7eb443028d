"""Trainer and experiment cache: exact resume, determinism, caching, clear config errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lmkcore.training.augment import AugmentConfig
from lmkcore.data.loader import LandmarkImageDataset
from lmkcore.data.datasets import load_dataset
from lmkcore.errors import ConfigError
from lmkcore.runs.experiment import ExperimentConfig, ExperimentResult, _crop, load_cached, run_experiment
from lmkcore.training.trainer import TrainConfig, load_checkpoint, train


@pytest.fixture(scope="module")
def tiny(session_cache):
    record = load_dataset("synthetic", None, n_images=16, width=64, cache_dir=session_cache)
    ds = LandmarkImageDataset(record, record.splits["train"], cache_dir=session_cache / "images")
    return record, ds


def config(**kw):
    base = dict(num_filters=4, iterations=6, batch_size=2, checkpoint_every=2, log_every=1,
                augment=AugmentConfig(elastic_grid=5, elastic_magnitude=0.5), target_lr_scale=10.0)
    base.update(kw)
    return TrainConfig(**base)


def state(trained):
    return {**{f"m.{k}": v for k, v in trained.model.state_dict().items()},
            **{f"t.{k}": v for k, v in trained.target.state_dict().items()}}


def test_interrupted_and_resumed_training_gives_identical_weights(tiny, tmp_path):
    _, ds = tiny
    cfg = config()
    full = train(cfg, ds, checkpoint_path=tmp_path / "a.pt", progress=False)
    part = train(cfg, ds, checkpoint_path=tmp_path / "b.pt", progress=False, stop_after=3)
    assert load_checkpoint(tmp_path / "b.pt")["iteration"] == 3
    resumed = train(cfg, ds, checkpoint_path=tmp_path / "b.pt", progress=False)
    a, b, p = state(full), state(resumed), state(part)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert any(not torch.equal(a[k], p[k]) for k in a)  # the resumed part did train
    assert [h["loss"] for h in full.history] == [h["loss"] for h in resumed.history]


def test_same_seed_same_weights_other_seed_differs(tiny):
    _, ds = tiny
    a = state(train(config(iterations=3, seed=1), ds, progress=False))
    b = state(train(config(iterations=3, seed=1), ds, progress=False))
    c = state(train(config(iterations=3, seed=2), ds, progress=False))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_checkpoint_of_other_config_is_refused(tiny, tmp_path):
    _, ds = tiny
    train(config(iterations=2), ds, checkpoint_path=tmp_path / "c.pt", progress=False)
    with pytest.raises(ConfigError, match="another configuration"):
        train(config(iterations=2, lr=0.5), ds, checkpoint_path=tmp_path / "c.pt", progress=False)


@pytest.mark.parametrize("field, value, message", [
    ("model", "resnet", "TrainConfig.model must be one of"),
    ("iterations", 0, "TrainConfig.iterations must be a positive integer"),
    ("lr", -1.0, "TrainConfig.lr must be > 0"),
    ("dropout", 1.0, "TrainConfig.dropout must be in"),
])
def test_bad_train_config(field, value, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{field: value})


def test_experiment_is_cached_and_bounded(tiny, tmp_path):
    record, _ = tiny
    cfg = ExperimentConfig(train=config(iterations=4), input_width=64, eval_split="test_all", mc_samples=2,
                           crop_size=9, fit_window=9)
    assert load_cached(record, cfg, tmp_path) is None
    res = run_experiment(record, cfg, tmp_path, progress=False)
    m, n = len(record.splits["test_all"]), len(record.landmark_names)
    assert res.pred_fit_px.shape == (m, n, 2) and res.fit_cov_mm.shape == (m, n, 2, 2)
    assert res.heatmap_crops.shape == (m, n, 9, 9) and res.heatmap_crops.dtype == np.float16
    assert res.mc_points_px.shape == (m, 2, n, 2)
    # usable fits are SPD covariances; unusable ones (near-flat heatmaps of a 4-iteration model)
    # fall back to the argmax with NaN covariance
    ok = res.fit_ok
    assert np.all(np.linalg.eigvalsh(res.fit_cov_mm[ok]) > 0)
    assert np.isnan(res.fit_cov_mm[~ok]).all()
    np.testing.assert_array_equal(res.pred_fit_px[~ok], res.pred_argmax_px[~ok])
    again = load_cached(record, cfg, tmp_path)
    assert again is not None and again.key == res.key
    np.testing.assert_array_equal(again.pred_fit_px, res.pred_fit_px)
    # errors against the declared truth are finite and use the per-image spacing
    err = res.errors_mm("fit", "truth")
    manual = np.linalg.norm((res.pred_fit_px - res.truth_px) * res.spacing[:, None, :], axis=-1)
    np.testing.assert_allclose(err, manual)
    # another config is another cache entry
    other = ExperimentConfig(train=config(iterations=4, seed=5), input_width=64, crop_size=9, fit_window=9)
    assert load_cached(record, other, tmp_path) is None


def test_crops_are_centred_and_zero_padded():
    h = torch.zeros(1, 2, 10, 12)
    h[0, 0, 3, 4] = 1.0
    h[0, 1, 0, 11] = 2.0
    crops, origin = _crop(h, torch.tensor([[[4, 3], [11, 0]]]), 5)
    assert crops[0, 0, 2, 2] == 1.0 and crops[0, 1, 2, 2] == 2.0
    assert origin.tolist() == [[[2, 1], [9, -2]]]
    assert crops[0, 1, :2].abs().sum() == 0 and crops[0, 1, :, 3:].abs().sum() == 0


def test_learned_sigma_follows_declared_annotation_orientation(session_cache):
    """Thaler et al.'s mechanism on known truth: trained on one noisy observer, the learned target
    covariance Sigma of every anisotropic landmark (declared axis ratio >= 2) takes the orientation of
    the declared annotation covariance (within 15 deg).

    Dedicated small run (~75 s on 2 CPU cores): annotation noise x5 so that it dominates the network's
    own error everywhere, also at the generator's low-contrast landmarks (orbitale, porion), where
    with the plain noise of the quick profile the network's own, round error dominates and the learned
    Sigma comes out nearly round (quick model of notebooks 01/02: 39 and 54 deg off there). Seeds 0
    and 1 of this run give at most 10.1 and 7.3 deg over the 11 landmarks.
    """
    from lmkcore.analysis.covariance import axis_angle_difference, cov_to_params

    record = load_dataset("synthetic", None, n_images=80, width=128, annotation_scale=5.0, cache_dir=session_cache)
    ds = LandmarkImageDataset(record, record.splits["train"] + record.splits["test1"], cache_dir=session_cache / "images")
    # convention paper_text: the setting this test was tuned on; with the authors'-code default (variances, alpha
    # v_maj v_min) the orientation check passes too but the std axis ratio of some landmarks stays below 1.3 (issue 13)
    cfg = TrainConfig(iterations=800, num_filters=16, batch_size=4, checkpoint_every=0, target_lr_scale=10.0,
                      convention="paper_text",
                      augment=AugmentConfig(intensity_scale=0.2, intensity_shift=0.2, translate=0.03, rotate_deg=5.0,
                                            scale=0.05, aniso_scale=0.0, elastic_grid=6, elastic_magnitude=0.5))
    trained = train(cfg, ds, progress=False)
    learned = trained.target.parameters_table()
    theta_true, s1, s2 = cov_to_params(record.truth["annotation_cov"].mean(0))
    error = np.degrees(axis_angle_difference(learned["theta"], theta_true))
    checked = [i for i in range(len(record.landmark_names)) if s1[i] / s2[i] >= 2]
    assert len(checked) == 11
    bad = {record.landmark_names[i]: round(float(error[i]), 1) for i in checked if error[i] > 15}
    assert not bad, f"learned Sigma orientation off by > 15 deg: {bad}"
    # and the learned Sigma of those landmarks is anisotropic, elongated like the declared one
    ratio = learned["sigma_major"] / learned["sigma_minor"]
    assert np.all(ratio[checked] > 1.3)


def test_unloadable_checkpoint_is_one_clear_error(tmp_path):
    import pickle

    from lmkcore.errors import DataError

    bad = tmp_path / "bad.pt"
    with open(bad, "wb") as fh:
        pickle.dump({"lr": np.float64(0.1)}, fh)  # not plain tensors/containers
    from lmkcore.data.integrity import write_checksum

    write_checksum(bad)  # a valid checksum: the weights_only check is what must refuse it
    with pytest.raises(DataError, match=r"bad\.pt: not a loadable lmkcore checkpoint"):
        load_checkpoint(bad)
