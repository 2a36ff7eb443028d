"""Tests of the synthetic dataset: known truth, declared annotation noise, layout, determinism."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from lmkcore.synthetic.anatomy import LANDMARK_KIND
from lmkcore.analysis.covariance import axis_angle_difference, cov_to_params
from lmkcore.errors import ConfigError, DataError
from lmkcore.data.imageio import read_image
from lmkcore.data.landmarks import ISBI_LANDMARK_NAMES
from lmkcore.synthetic.shape_model import derive_from_isbi_setup, load_shape_model
from lmkcore.synthetic.generator import (SyntheticConfig, draw_annotations, generate_synthetic, load_synthetic,
                               sample_geometry, simulate_annotations, synthetic_dataset)

REAL_SETUP = Path("/work/shared/data/HeatmapRegression/cep/setup")
SMALL = dict(n_images=12, width=48)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    return generate_synthetic(SyntheticConfig(**SMALL), tmp_path_factory.mktemp("syn") / "small")


# ----------------------------------------------------------------- 1. observers
def test_draw_annotations_matches_declared_covariance():
    geo = sample_geometry(SyntheticConfig(n_images=8, width=64, seed=3))
    cov = geo.annotation_cov_px[2]  # (N, 2, 2) of one image
    rng = np.random.Generator(np.random.PCG64(123))
    draws = draw_annotations(geo.landmarks_px[2], cov, 40000, rng)  # (n, N, 2)
    d = draws - geo.landmarks_px[2]
    emp = np.einsum("sni,snj->nij", d, d) / len(d)
    th_d, maj_d, min_d = cov_to_params(cov)
    th_e, maj_e, min_e = cov_to_params(emp)
    np.testing.assert_allclose(maj_e, maj_d, rtol=0.03)
    np.testing.assert_allclose(min_e, min_d, rtol=0.03)
    aniso = maj_d / min_d >= 2.0
    assert aniso.sum() >= 8  # the edge landmarks
    assert np.degrees(axis_angle_difference(th_e, th_d))[aniso].max() < 3.0
    assert np.abs(d.mean(0)).max() < 0.05 * maj_d.max()


def test_declared_covariance_follows_contour_and_pose():
    cfg = SyntheticConfig(n_images=30, width=64, seed=1)
    geo = sample_geometry(cfg)
    theta, s_maj, s_min = cov_to_params(geo.annotation_cov_px)
    # Sizes in mm are the declared table times the pose scale.
    mm = np.stack([s_maj, s_min], -1) * cfg.spacing_mm / geo.scale[:, None, None]
    np.testing.assert_allclose(mm, np.broadcast_to(geo.sigma_mm, mm.shape), rtol=1e-9)
    # Major axis along the stored landmark direction, which turns with the pose.
    tangent = np.arctan2(geo.directions[..., 1], geo.directions[..., 0])
    edge = np.array([k == "edge" for k in LANDMARK_KIND])
    assert np.degrees(axis_angle_difference(theta, tangent))[:, edge].max() < 1e-6
    spread = np.degrees(np.ptp(np.unwrap(tangent[:, edge], axis=0), axis=0))
    assert spread.min() > 2.0  # orientation differs between images


def test_observers_consistent_with_declared_covariance(small_root):
    rec = load_synthetic(small_root)
    obs = rec.extras["observers"].tolist()
    true, cov = rec.truth["landmarks"], rec.truth["annotation_cov"]
    inv = np.linalg.inv(cov)
    d2 = []
    for k, name in enumerate(obs):
        r = rec.annotations[name] - true - rec.truth["observer_bias"][:, k]
        d2.append(np.einsum("mni,mnij,mnj->mn", r, inv, r))
    d2 = np.stack(d2)
    assert len(obs) == 11 and d2.size == 11 * 12 * 19
    assert abs(d2.mean() - 2.0) < 0.2  # chi-square with 2 dof
    assert 0.92 < np.mean(d2 < 5.991) < 0.98  # its 95 % quantile
    # The junior's documented bias is present in its annotations.
    j = obs.index("junior")
    me = ISBI_LANDMARK_NAMES.index("menton")
    shift_px = rec.truth["observer_bias"][:, j, me]
    assert np.allclose(np.linalg.norm(shift_px, axis=-1) * rec.spacing[:, 0] / rec.truth["pose_scale"], 1.0)
    assert not rec.truth["observer_bias"][:, obs.index("senior")].any()


# --------------------------------------------------------- 2. clinical classes
def test_every_clinical_class_occurs_in_default_set():
    clinical = pytest.importorskip("lmkcore.analysis.clinical")
    geo = sample_geometry(SyntheticConfig())  # geometry only: 400 images, seed 0
    classes = clinical.classify_all(geo.landmarks_px * SyntheticConfig().spacing_mm)
    for measure in clinical.MEASURES:
        counts = np.bincount(classes[measure], minlength=clinical.N_CLASSES[measure])
        assert (counts > 0).all(), f"{measure}: class counts {counts.tolist()}"


# ----------------------------------------------------------------- 3. determinism
def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_is_bit_identical_and_other_seed_differs(tmp_path, small_root):
    a = generate_synthetic(SyntheticConfig(**SMALL), tmp_path / "a")
    assert _digest(a) == _digest(small_root)
    b = generate_synthetic(SyntheticConfig(**SMALL, seed=1), tmp_path / "b")
    da, db = _digest(a), _digest(b)
    assert da.keys() - {"dataset.json"} == db.keys() - {"dataset.json"}
    differ = [k for k in da if da[k] != db[k]]
    assert "truth.npz" in differ and "setup/all_senior.csv" in differ
    assert sum(k.endswith(".bmp") for k in differ) == 12
    assert SyntheticConfig(**SMALL).key() != SyntheticConfig(**SMALL, seed=1).key()


# ------------------------------------------------------------ 4. bad parameters
@pytest.mark.parametrize("kwargs, field", [
    (dict(width=0), "width"), (dict(width=-3), "width"), (dict(width=16), "width"), (dict(width=64.0), "width"),
    (dict(n_images=7), "n_images"), (dict(n_images=True), "n_images"), (dict(seed=-1), "seed"),
    (dict(n_extra_observers=-1), "n_extra_observers"), (dict(noise=-0.1), "noise"),
    (dict(noise=float("nan")), "noise"), (dict(pose_rotation_deg=90), "pose_rotation_deg"),
    (dict(shape_variance_scale=0), "shape_variance_scale"), (dict(observer_bias="senior"), "observer_bias"),
    (dict(annotation_scale=0), "annotation_scale"), (dict(edge_to_edge_fraction=1.5), "edge_to_edge_fraction"),
])
def test_bad_parameters_raise_config_error_naming_them(kwargs, field):
    with pytest.raises(ConfigError) as err:
        SyntheticConfig(**kwargs)
    assert str(err.value).startswith(field)


def test_zero_width_message_and_unknown_option():
    with pytest.raises(ConfigError, match=r"^width must be a positive integer, got 0$"):
        SyntheticConfig(width=0)
    from lmkcore.data.datasets import load_dataset
    with pytest.raises(ConfigError, match="widht"):
        load_dataset("synthetic", None, widht=64)


# -------------------------------------------------------------- 5. round trip
def test_load_round_trips_annotations_splits_and_images(small_root):
    cfg = SyntheticConfig(**SMALL)
    rec = load_synthetic(small_root)
    geo = sample_geometry(cfg)
    ann, _, _ = simulate_annotations(geo)
    assert rec.observers[0] == "senior" and rec.reference == "senior"
    assert set(rec.annotations) == {"senior", "junior"} | {f"ann{i}" for i in range(1, 10)}
    for k, name in enumerate(cfg.observers):
        np.testing.assert_allclose(rec.annotations[name], ann[k], atol=0.6e-4 / cfg.spacing_mm)
    np.testing.assert_array_equal(rec.truth["landmarks"], geo.landmarks_px)
    ids = rec.ids
    assert ids == [f"{i:03d}" for i in range(1, 13)]
    sp = rec.splits
    assert sp["train"] + sp["test1"] + sp["test2"] == ids
    assert (len(sp["train"]), len(sp["test1"]), len(sp["test2"])) == (4, 4, 4)  # round(12 * 150 / 400)
    assert sp["test_all"] == sp["test1"] + sp["test2"]
    vals = [sp[f"cv{k}/val"] for k in range(1, 5)]
    assert sorted(sum(vals, [])) == ids
    for k in range(1, 5):
        assert sorted(sp[f"cv{k}/train"] + sp[f"cv{k}/val"]) == ids
        assert not set(sp[f"cv{k}/train"]) & set(sp[f"cv{k}/val"])
    w, h = cfg.width, cfg.height
    assert (rec.image_size == [w, h]).all() and np.allclose(rec.spacing, 240.0 / h)
    lm = rec.truth["landmarks"]
    assert (lm >= 0).all() and (lm[..., 0] <= w - 1).all() and (lm[..., 1] <= h - 1).all()
    for path in rec.image_paths:
        img = read_image(path)
        assert img.shape == (h, w) and img.max() > 100 and img.min() < 30
    folders = {p.parent.name for p in rec.image_paths}
    assert folders == {"TrainingData", "Test1Data", "Test2Data"}


def test_load_reports_missing_and_corrupt_files(tmp_path):
    root = generate_synthetic(SyntheticConfig(n_images=8, width=40), tmp_path / "d")
    (root / "setup" / "all_ann3.csv").unlink()
    with pytest.raises(DataError, match="all_ann3.csv"):
        load_synthetic(root)
    root = generate_synthetic(SyntheticConfig(n_images=8, width=40), tmp_path / "d")
    (root / "truth.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="truth.npz"):
        load_synthetic(root)
    root = generate_synthetic(SyntheticConfig(n_images=8, width=40), tmp_path / "d")
    next((root / "RawImage").rglob("005.bmp")).unlink()
    with pytest.raises(DataError, match="005"):
        load_synthetic(root)
    (root / "dataset.json").unlink()
    with pytest.raises(DataError, match="dataset.json"):
        load_synthetic(root)


def test_cache_generates_once_and_registry_loads(tmp_path):
    from lmkcore.data.datasets import load_dataset
    cfg = SyntheticConfig(n_images=8, width=40, seed=4)
    path = synthetic_dataset(cfg, tmp_path)
    assert path.name == f"synthetic-{cfg.key()}"
    stamp = (path / "truth.npz").stat().st_mtime_ns
    rec = load_dataset("synthetic", None, width=40, n_images=8, seed=4, cache_dir=tmp_path)
    assert (path / "truth.npz").stat().st_mtime_ns == stamp and rec.extras["root"] == path
    assert load_dataset("synthetic", path).ids == rec.ids
    with pytest.raises(ConfigError, match="width"):
        load_dataset("synthetic", path, width=48)


# ----------------------------------------------- 6. landmarks sit on structures
def test_edge_landmarks_lie_on_image_edges_across_their_direction(tmp_path):
    cfg = SyntheticConfig(n_images=8, width=192, seed=2, noise=0.01)
    rec = load_synthetic(generate_synthetic(cfg, tmp_path / "edges"))
    edge = np.array([k == "edge" for k in LANDMARK_KIND])
    rng = np.random.default_rng(0)
    g_true, g_shift, cosines = [], [], []
    for i, path in enumerate(rec.image_paths):
        img = ndimage.gaussian_filter(read_image(path), 1.0)
        gy, gx = np.gradient(img)
        mag = np.hypot(gx, gy)
        lm = rec.truth["landmarks"][i][edge]
        tangent = rec.truth["tangent_angle"][i][edge]
        phi = rng.uniform(0, 2 * np.pi, len(lm))
        shift = lm + 6.0 / cfg.spacing_mm * np.stack([np.cos(phi), np.sin(phi)], -1)
        at = lambda p: ndimage.map_coordinates(mag, [p[:, 1], p[:, 0]], order=1, mode="nearest")  # noqa: E731
        g_true.append(at(lm))
        g_shift.append(at(shift))
        gxs = ndimage.map_coordinates(gx, [lm[:, 1], lm[:, 0]], order=1)
        gys = ndimage.map_coordinates(gy, [lm[:, 1], lm[:, 0]], order=1)
        cosines.append(np.abs(np.cos(np.arctan2(gys, gxs) - tangent)))
    g_true, g_shift, cosines = map(np.concatenate, (g_true, g_shift, cosines))
    assert g_true.mean() > 2.0 * g_shift.mean()
    assert np.median(g_true) > 2.0 * np.median(g_shift)
    strong = g_true > np.median(g_true)
    # The intensity changes across the declared (tangent) direction, not along it.
    assert np.median(cosines[strong]) < 0.3


# ------------------------------------------------------------- 7. shape model
def test_shape_model_loads_and_samples_its_mean():
    model = load_shape_model()
    n = len(ISBI_LANDMARK_NAMES)
    assert model.mean.shape == (n, 2) and model.landmark_names == ISBI_LANDMARK_NAMES
    flat = model.modes.reshape(model.n_modes, -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(model.n_modes), atol=1e-4)
    assert np.all(np.diff(model.variances) <= 0) and model.variances[0] > 50.0
    shapes = model.sample(np.random.Generator(np.random.PCG64(0)), 20000)
    assert np.abs(shapes.mean(0) - model.mean).max() < 0.3
    coef = (shapes - model.mean).reshape(len(shapes), -1) @ flat.T
    np.testing.assert_allclose(coef.var(0), model.variances, rtol=0.06)
    # Nasion in front of sella, chin below the incisors: a right-facing skull in mm.
    assert model.mean[1, 0] - model.mean[0, 0] > 40.0 and model.mean[7, 1] > model.mean[11, 1]


@pytest.mark.skipif(not (REAL_SETUP / "all_senior.csv").is_file(),
                    reason="real ISBI annotations (/work/shared) not available to re-derive the shape model")
def test_shape_model_rederives_from_real_annotations():
    stored = load_shape_model()
    derived = derive_from_isbi_setup(REAL_SETUP)
    assert derived.n_modes == stored.n_modes and derived.n_shapes == stored.n_shapes == 400
    np.testing.assert_allclose(derived.mean, stored.mean, atol=2e-6)
    np.testing.assert_allclose(derived.variances, stored.variances, rtol=1e-6, atol=2e-6)
    np.testing.assert_allclose(derived.modes, stored.modes, atol=2e-6)
    assert derived.residual_variance == pytest.approx(stored.residual_variance, abs=2e-6)
