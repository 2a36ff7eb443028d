"""Widget explorer: content follows every control, geometry matches references, absent caches explain themselves."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import spearmanr

from lmkcore.analysis.covariance import params_to_cov
from lmkcore.data.datasets import load_dataset
from lmkcore.runs.experiment import experiment_key, load_cached, result_folder, run_experiment
from lmkcore.data.image_cache import resize_landmarks
from lmkcore.training.methods import experiment_config
from lmkcore.training.profiles import get_profile
from lmkcore.reporting.widgets import ExplorerSource, ExplorerState, LandmarkExplorer, explorer_figure, overview_content, view_content

#: A tiny profile: trains in a couple of seconds per method on a CPU.
PROFILE = get_profile("smoke").with_(iterations=4, num_filters=4, name="smoke")


def _known_fit_cov_mm(m: int, n: int) -> np.ndarray:
    """Distinct, known Sigma-hat per image and landmark (mm^2)."""
    i, k = np.meshgrid(np.arange(m), np.arange(n), indexing="ij")
    return params_to_cov(0.1 * i - 0.3 * k, 1.0 + 0.1 * i + 0.2 * k, 0.5 + 0.05 * k)


@pytest.fixture(scope="module")
def cached(session_cache, tmp_path_factory):
    """Two datasets; scn_aniso and scn_iso cached on the first, with Sigma-hat overwritten by known values."""
    cache = tmp_path_factory.mktemp("explorer-cache")
    a = load_dataset("synthetic", None, n_images=16, width=64, cache_dir=session_cache)
    b = load_dataset("synthetic", None, n_images=12, width=64, seed=3, cache_dir=session_cache)
    for method in ("scn_aniso", "scn_iso"):
        cfg = experiment_config(PROFILE, a, method, seed=0)
        res = run_experiment(a, cfg, cache, progress=False)
        m, n = res.fit_ok.shape
        res.fit_cov_mm = _known_fit_cov_mm(m, n)
        res.fit_ok = np.ones((m, n), dtype=bool)
        res.save(result_folder(cache, experiment_key(cfg, a)))
    return {"a": a, "b": b}, cache


def _source(cached, **kw):
    datasets, cache = cached
    return ExplorerSource({"A": datasets["a"], "B": datasets["b"]}, PROFILE, cache, seed=0,
                          methods=["scn_aniso", "scn_iso", "scn_fixed"], **kw)


def test_each_control_changes_the_plotted_content(cached):
    ex = LandmarkExplorer(_source(cached))
    c = ex.controls
    assert ex.view["status"] == "ok" and ex.view["method"] == "scn_aniso"
    first = ex.view
    png = ex.image.value
    assert png[:4] == b"\x89PNG"
    assert ex.last_update_s < 5.0  # a loose bound; the speed target lives in benchmarks/bench_widgets.py

    # image: another id, another Sigma-hat (the known per-image values), another image crop
    ids = list(c["image"].options)
    assert ids == list(load_cached(cached[0]["a"], ex.source.config("A", "scn_aniso"), cached[1]).ids)
    c["image"].value = ids[3]
    v = ex.view
    assert v["image"] == ids[3] and v["image_index"] == 3 and first["image"] == ids[0]
    fit1 = [e for e in v["ellipses"] if e["name"] == "Σ̂ fit 1σ"][0]
    fit1_before = [e for e in first["ellipses"] if e["name"] == "Σ̂ fit 1σ"][0]
    assert fit1["width"] != pytest.approx(fit1_before["width"])
    assert v["numbers"]["Σ̂ size σmaj·σmin (mm²)"] == pytest.approx((1.0 + 0.3) * 0.5)
    assert ex.overview["selected"] == 3
    assert ex.image.value != png

    # landmark: another name, another learned Sigma, other offsets in the overview
    lm_before = ex.view
    off_before = ex.overview["offsets_mm"]
    c["landmark"].value = 2
    v = ex.view
    assert v["landmark"] == 2 and v["landmark_name"] == cached[0]["a"].landmark_names[2]
    assert v["image"] == ids[3]  # the image choice is kept
    learned = lambda view: [e for e in view["ellipses"] if e["name"].startswith("Σ learned")][0]  # noqa: E731
    assert (learned(v)["width"], learned(v)["angle_deg"]) != (learned(lm_before)["width"], learned(lm_before)["angle_deg"])
    assert not np.allclose(ex.overview["offsets_mm"], off_before)
    assert v["numbers"]["Σ̂ θ (deg)"] == pytest.approx(np.degrees(0.1 * 3 - 0.3 * 2))

    # method: other network -> other heatmap and prediction; an uncached method -> the message
    heat = v["heatmap"]
    c["method"].value = "scn_iso"
    v = ex.view
    assert v["status"] == "ok" and v["method"] == "scn_iso" and v["image"] == ids[3] and v["landmark"] == 2
    iso = load_cached(cached[0]["a"], ex.source.config("A", "scn_iso"), cached[1])
    aniso = load_cached(cached[0]["a"], ex.source.config("A", "scn_aniso"), cached[1])
    assert np.array_equal(heat, np.asarray(aniso.heatmap_crops[3, 2], dtype=np.float32))  # shown: the selected network's
    assert np.array_equal(v["heatmap"], np.asarray(iso.heatmap_crops[3, 2], dtype=np.float32))
    assert learned(v)["width"] == pytest.approx(learned(v)["height"], rel=1e-6)  # isotropic learned target
    c["method"].value = "scn_fixed"
    assert ex.view["status"] == "missing" and "scn_fixed" in ex.message.value
    assert "No cached result" in ex.view["message"]

    # dataset: B has no cached result -> its ids and landmarks, and the explanatory message
    c["method"].value = "scn_aniso"
    c["dataset"].value = "B"
    assert ex.view["status"] == "missing" and ex.view["dataset"] == "B"
    assert list(c["image"].options) == cached[0]["b"].splits["test_all"]
    assert "No cached result for method 'scn_aniso' on dataset 'B'" in ex.message.value
    c["dataset"].value = "A"
    assert ex.view["status"] == "ok" and ex.view["dataset"] == "A" and ex.message.value == ""


def test_view_geometry_matches_references(cached):
    src = _source(cached)
    rec = cached[0]["a"]
    res = src.result("A", "scn_aniso")
    row, lm = 5, 1
    image = res.ids[row]
    v = view_content(src, ExplorerState("A", "scn_aniso", image, lm))
    r = rec.index_of([image])[0]
    work = np.asarray(res.work_size, float)
    # prediction and target in working px
    np.testing.assert_allclose(v["points"]["prediction"][0], resize_landmarks(res.pred_fit_px[row, lm], rec.image_size[r], work))
    np.testing.assert_allclose(v["points"]["truth"][0], resize_landmarks(rec.truth["landmarks"][r, lm], rec.image_size[r], work))
    assert len(v["points"]["observers"]) == len(rec.annotators) == 11
    # Sigma-hat ellipse: full axes 2 k sqrt(eigenvalues) of the covariance in working px^2
    ws = res.work_spacing[row]
    cov_px = res.fit_cov_mm[row, lm] / np.outer(ws, ws)
    lam = np.linalg.eigvalsh(cov_px)
    for k in (1, 2, 3):
        e = [e for e in v["ellipses"] if e["name"] == f"Σ̂ fit {k}σ"][0]
        assert e["width"] == pytest.approx(2 * k * np.sqrt(lam[1]))
        assert e["height"] == pytest.approx(2 * k * np.sqrt(lam[0]))
        major = np.linalg.eigh(cov_px)[1][:, 1]
        assert abs(np.cos(np.radians(e["angle_deg"])) * major[0] + np.sin(np.radians(e["angle_deg"])) * major[1]) == pytest.approx(1.0)
    # observers' ellipse: numpy's sample covariance of the 11 annotations, scaled to working px
    obs = np.stack([rec.annotations[a][r, lm] for a in rec.annotators])
    f = work / rec.image_size[r]
    lam_obs = np.linalg.eigvalsh(np.cov(obs.T) * np.outer(f, f))
    e = [e for e in v["ellipses"] if e["name"] == "observers 2σ"][0]
    assert e["width"] == pytest.approx(4 * np.sqrt(lam_obs[1]))
    # the heatmap crop drawn is the cached one, and the image crop covers the window
    np.testing.assert_array_equal(v["heatmap"], res.heatmap_crops[row, lm].astype(np.float32))
    x0, x1, y0, y1 = v["window"]
    assert v["image_crop"].shape == (y1 - y0, x1 - x0)
    # numbers: error in mm
    assert v["numbers"]["error vs reference (mm)"] == pytest.approx(res.errors_mm("fit")[row, lm])
    # overview: offsets in mm and the Spearman correlation against scipy
    o = overview_content(src, ExplorerState("A", "scn_aniso", image, lm))
    off = (res.pred_fit_px[:, lm] - res.reference_px[:, lm]) * res.spacing
    np.testing.assert_allclose(o["offsets_mm"], off)
    size = np.sqrt(np.linalg.eigvalsh(res.fit_cov_mm[:, lm])).prod(-1)
    assert o["numbers"]["Spearman(Σ̂ size, error)"] == pytest.approx(spearmanr(size, np.linalg.norm(off, axis=-1)).statistic)
    assert len(o["fit_ellipses"]["centers"]) == len(res.ids)
    np.testing.assert_array_equal(o["fit_ellipses"]["centers"], 0.0)  # Thaler et al. Figs. 4-5: at the origin
    by_offset = overview_content(src, ExplorerState("A", "scn_aniso", image, lm), fit_centers="offset")
    np.testing.assert_allclose(by_offset["fit_ellipses"]["centers"], off)
    assert o["offset_ellipse"]["width"] == pytest.approx(4 * np.sqrt(np.linalg.eigvalsh(np.cov(off.T))[1]))
    fig = explorer_figure(v, o)  # draws without error
    assert len(fig.axes) == 2


def test_absent_cache_explains_how_to_create_it_and_never_trains(cached, tmp_path):
    datasets, _ = cached
    src = ExplorerSource({"synthetic": datasets["a"]}, PROFILE, tmp_path, seed=0)
    ex = LandmarkExplorer(src)
    assert ex.view["status"] == "missing" and ex.overview["status"] == "missing"
    msg = ex.view["message"]
    assert "No cached result for method 'scn_aniso' on dataset 'synthetic'" in msg
    assert f"./run_all.sh --only 01 --profile smoke --dataset synthetic --cache-dir {tmp_path}" in msg
    assert "ctx.experiment(record, 'scn_aniso')" in msg and "never trains" in msg
    assert msg in ex.message.value
    assert all("(not cached)" in label for label, _ in ex.controls["method"].options)
    ex.controls["landmark"].value = 3  # still no training, still the message
    assert ex.view["status"] == "missing"
    assert not (tmp_path / "experiments").exists()  # nothing trained or written


def test_optional_uncertainty_fields_are_shown_when_present(cached):
    src = _source(cached)
    state = ExplorerState("A", "scn_aniso", None, 0)
    numbers = view_content(src, state)["numbers"]
    assert "ERE (mm)" not in numbers and "PHD-Net confidence (peak)" not in numbers
    res = src.result("A", "scn_aniso")
    m, n = res.fit_ok.shape
    # typed optional fields of the result (no patching): a copy with them set
    src._results[("A", "scn_aniso")] = replace(res, ere_mm=np.arange(m * n, dtype=float).reshape(m, n),
                                               softmax_confidence=np.full((m, n), 0.25))
    numbers = view_content(src, ExplorerState("A", "scn_aniso", res.ids[2], 1))["numbers"]
    assert numbers["ERE (mm)"] == 2 * n + 1
    assert numbers["max softmax probability"] == 0.25
    assert "PHD-Net confidence (peak)" not in numbers
    assert res.ere_mm is None  # the cached result itself is unchanged


def test_record_without_splits_gives_a_message_not_a_crash(cached, tmp_path):
    rec = cached[0]["a"].subset(cached[0]["a"].ids[:5])  # subsets drop the splits a method config needs
    ex = LandmarkExplorer(ExplorerSource({"cut": rec}, PROFILE, tmp_path))
    assert ex.view["status"] == "error" and "splits" in ex.view["message"]
    assert list(ex.controls["image"].options) == rec.ids
    assert ex.view["message"] in ex.message.value


def test_ere_of_a_cached_calibration_and_phdnet_results_are_shown(cached, tmp_path):
    """ERE comes from the calibration file next to a result (notebook 06); PHD-Net (notebook 07) from its own cache."""
    from lmkcore.runs.phdnet import PHDNetResult
    from lmkcore.reporting.widgets import PHDNET, _phdnet_folder

    datasets, cache = cached
    src = _source(cached)
    res = src.result("A", "scn_aniso")
    m, n = res.fit_ok.shape
    folder = result_folder(cache, res.key)
    ere = np.arange(m * n, dtype=float).reshape(m, n)
    from lmkcore.runs.store import write_arrays  # how evaluate_calibration writes it (with its checksum)

    write_arrays(folder / "calibration_test.npz", {"ids": np.asarray(res.ids[::-1]), "ere_mm": ere[::-1],
                                                   "ere_ts_mm": ere[::-1] + 0.5, "confidence": np.full((m, n), 0.3)})
    try:
        fresh = _source(cached)  # results are read (with their calibration) when first asked for
        numbers = view_content(fresh, ExplorerState("A", "scn_aniso", res.ids[2], 1))["numbers"]
        assert numbers["ERE (mm)"] == 2 * n + 1 and numbers["ERE, temperature-scaled (mm)"] == 2 * n + 1.5
        assert numbers["max softmax probability"] == pytest.approx(0.3)
    finally:
        from lmkcore.data.integrity import checksum_path

        (folder / "calibration_test.npz").unlink()
        checksum_path(folder / "calibration_test.npz").unlink(missing_ok=True)
    # PHD-Net: a hand-made cached result where the explorer looks for it
    rec = datasets["a"]
    src = ExplorerSource({"A": rec}, PROFILE, tmp_path, methods=["scn_aniso", PHDNET])
    ids = rec.splits["test_all"]
    r = rec.index_of(ids)
    n = len(rec.landmark_names)
    pred = {"simple": rec.landmarks[r] + 1.0, "smoothing": rec.landmarks[r] + 0.5}
    peak = {s: np.linspace(0, 1, len(ids) * n).reshape(len(ids), n) for s in pred}
    phd = PHDNetResult(key="k", config={}, ids=ids, val_ids=[], landmark_names=list(rec.landmark_names),
                       spacing=rec.spacing[r], reference_px=rec.landmarks[r], truth_px=None, pred_px=pred, peak=peak,
                       val_spacing=np.zeros((0, 2)), val_reference_px=np.zeros((0, n, 2)), val_pred_px={}, val_peak={},
                       threshold={s: np.full(n, 0.5) for s in pred})
    assert view_content(src, ExplorerState("A", PHDNET, None, 0))["status"] == "missing"
    folder = _phdnet_folder(src, "A", PHDNET)
    folder.mkdir(parents=True)
    phd.save(folder)
    src = ExplorerSource({"A": rec}, PROFILE, tmp_path, methods=["scn_aniso", PHDNET])
    ex = LandmarkExplorer(src, method=PHDNET)
    v = ex.view
    assert v["status"] == "ok" and v["numbers"]["PHD-Net confidence (peak)"] == peak["smoothing"][0, 0]
    assert v["numbers"]["PHD-Net high confidence"] == 0.0 and not any(e["name"].startswith("Σ") for e in v["ellipses"])
    assert v["numbers"]["error vs reference (mm)"] == pytest.approx(np.hypot(0.5, 0.5) * rec.spacing[r[0], 0])
    ex.controls["image"].value = ids[-1]
    assert ex.view["numbers"]["PHD-Net high confidence"] == 1.0


def test_padded_frame_result_maps_points_through_the_frame(session_cache, tmp_path):
    """A result trained in a zero-padded frame (ExperimentConfig.input_height, McCouat's paper profile): points
    are mapped with the frame, not the image size, so they sit where the cached heatmap crop is; the image shown
    is the padded one the network saw."""
    from lmkcore.data.loader import LandmarkImageDataset
    from lmkcore.runs.experiment import ExperimentResult

    rec = load_dataset("synthetic", None, n_images=16, width=64, cache_dir=session_cache)
    assert tuple(rec.image_size[0]) == (64, 80)
    profile = PROFILE.with_(method_overrides=(("scn_aniso", (("input_width", 48), ("input_height", 64))),))
    src = ExplorerSource({"A": rec}, profile, tmp_path, seed=0, methods=["scn_aniso"])
    cfg = src.config("A", "scn_aniso")
    assert (cfg.input_width, cfg.input_height) == (48, 64)
    # 64 x 80 to aspect 48 / 64 = 0.75: padded at the bottom to ceil(64 / 0.75) = 86 rows: frame 64 x 86
    ids = list(rec.splits[cfg.eval_split])[:2]
    r = rec.index_of(ids)
    m, n = 2, len(rec.landmark_names)
    pred = np.full((m, n, 2), 10.0)
    pred[1, 2] = (31.5, 42.5)  # -> working ((31.5 + .5) 48 / 64 - .5, (42.5 + .5) 64 / 86 - .5) = (23.5, 31.5)
    crops = np.zeros((m, n, 15, 15), dtype=np.float16)
    crops[1, 2, 7, 7] = 1.0
    origin = np.full((m, n, 2), 0.0)
    origin[1, 2] = (17.0, 25.0)  # crop centre (24, 32): the heatmap maximum next to the prediction
    nan_cov = np.full((m, n, 2, 2), np.nan)
    res = ExperimentResult(
        key=experiment_key(cfg, rec), config=cfg.to_dict(), ids=ids, landmark_names=list(rec.landmark_names),
        spacing=rec.spacing[r], reference_px=pred.copy(), truth_px=None, pred_argmax_px=pred.copy(),
        pred_fit_px=pred, peak=np.ones((m, n)), fit_cov_mm=nan_cov, fit_amplitude=np.ones((m, n)),
        fit_ok=np.zeros((m, n), dtype=bool), learned_cov_mm=np.full((n, 2, 2), np.nan), heatmap_crops=crops,
        crop_origin=origin, work_size=(48, 64), work_spacing=np.tile(rec.spacing[r[:1]] * [64 / 48, 86 / 64], (m, 1)))
    res.save(result_folder(tmp_path, res.key))

    np.testing.assert_array_equal(src.frame_size("A", "scn_aniso"), [[64, 86], [64, 86]])
    v = view_content(src, ExplorerState("A", "scn_aniso", ids[1], 2))
    assert v["status"] == "ok" and v["work_size"] == (48, 64)
    np.testing.assert_allclose(v["points"]["prediction"][0], (23.5, 31.5))
    np.testing.assert_allclose(v["points"]["reference"][0], (23.5, 31.5))
    assert v["heatmap_origin"] == (17.0, 25.0)
    # the image is the padded one (bottom rows are the zero padding), from the experiment's own image cache
    images = src.images("A", "scn_aniso")
    assert images.shape == (2, 64, 48)
    padded = LandmarkImageDataset(rec, ids, size=(48, 64), cache_dir=tmp_path / "images", pad=True).images
    np.testing.assert_array_equal(images, padded)
    assert np.all(np.asarray(images[:, 62:]) == 0) and np.asarray(images[:, :40]).max() > 0
