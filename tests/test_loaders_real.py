"""Real-dataset loaders on the team's read-only copies of the real files.

Skipped (with the reason) when the shared data folder is absent. Locate it with
``$LMKCORE_SHARED_DATA`` or ``<repo>/../shared/data``.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from lmkcore.data.datasets import hand, isbi
from lmkcore.data.datasets._common import LoaderWarning, image_info
from lmkcore.data.formats import read_id_list, read_landmark_csv, write_landmark_csv
from lmkcore.data.image_cache import cached_images, decode_resized, resize_image
from lmkcore.data.imageio import read_image

SHARED = Path(os.environ.get("LMKCORE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
JPG = SHARED / "ISBI2015-cepha400-jpg"
SETUP = SHARED / "HeatmapUncertainty" / "setup_ann" / "all_landmarks"
SETUP2 = SHARED / "HeatmapRegression" / "cep" / "setup"
OBS = SHARED / "HeatmapUncertainty" / "setup_ann" / "5_landmarks"
HAND = SHARED / "HeatmapRegression" / "hand_xray" / "hand_xray_dataset"

pytestmark = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"real data not available: {SHARED} is absent (set LMKCORE_SHARED_DATA)"
)

IDS = [f"{k:03d}" for k in range(1, 401)]


def _need(*paths: Path) -> None:
    for p in paths:
        if not p.exists():
            pytest.skip(f"real data not available: {p} is absent")


@pytest.fixture(scope="module")
def record():
    _need(JPG, SETUP)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LoaderWarning)  # nothing is skipped or missing in the ISBI files
        return isbi.load(JPG, annotations_root=SETUP.parent, verbose=False)


def test_400_by_19_senior_and_junior(record):
    _need(SETUP2)
    for folder in (SETUP, SETUP2):
        ann = isbi.read_csv_setup(folder)
        assert set(ann) == {"senior", "junior", "challenge"}
        for obs in ann:
            ids, px = ann[obs]
            assert ids == IDS and px.shape == (400, 19, 2) and np.isfinite(px).all()
    assert record.ids == IDS
    for obs in ("senior", "junior"):
        arr = record.annotations[obs]
        assert arr.shape == (400, 19, 2) and np.isfinite(arr).all()
        np.testing.assert_allclose(arr, isbi.read_csv_setup(SETUP)[obs][1])
    # both copies of the CSV setup are identical
    a, b = isbi.read_csv_setup(SETUP), isbi.read_csv_setup(SETUP2)
    for obs in a:
        np.testing.assert_array_equal(a[obs][1], b[obs][1])
    # senior and junior differ (two observers), by about a millimetre on average
    d = np.linalg.norm(record.annotations["senior"] - record.annotations["junior"], axis=-1) * 0.1
    assert 0.5 < d.mean() < 3.0


def test_splits_and_cv(record):
    assert record.splits["train"] == IDS[:150]
    assert record.splits["test1"] == IDS[150:300] and record.splits["test2"] == IDS[300:]
    assert record.splits["test_all"] == IDS[150:]
    vals = []
    for k in range(1, 5):
        tr, va = record.splits[f"cv{k}/train"], record.splits[f"cv{k}/val"]
        assert len(tr) == 300 and len(va) == 100 and not set(tr) & set(va)
        vals += va
    assert sorted(vals) == IDS


def test_mm_pixel_round_trip(tmp_path):
    _need(SETUP)
    for obs in ("senior", "junior", "challenge"):
        src = SETUP / f"all_{obs}.csv"
        ids, px = read_landmark_csv(src, n_landmarks=19, spacing_mm=0.1)
        np.testing.assert_allclose(px, np.round(px), atol=1e-9)          # integer pixels in the files
        write_landmark_csv(tmp_path / f"{obs}.csv", ids, px, 0.1)
        _, mm_orig = read_landmark_csv(src, n_landmarks=19)
        _, mm_back = read_landmark_csv(tmp_path / f"{obs}.csv", n_landmarks=19)
        np.testing.assert_allclose(mm_back, mm_orig, atol=1e-9)
        _, px_back = read_landmark_csv(tmp_path / f"{obs}.csv", n_landmarks=19, spacing_mm=0.1)
        np.testing.assert_allclose(px_back, px, atol=1e-9)


def test_challenge_equals_senior_except_landmark_16_on_test2(record):
    ch = isbi.load(JPG, annotations_root=SETUP.parent, reference="challenge", verbose=False)
    diff = np.abs(ch.landmarks - ch.annotations["senior"]).max(-1) > 1e-6
    rows, lms = np.nonzero(diff)
    assert set(lms.tolist()) == {15}                                   # landmark 16, 1-based
    assert [ch.ids[r] for r in rows] == IDS[300:]                      # every Test2 image, nothing else
    moved = np.linalg.norm(ch.landmarks[300:, 15] - ch.annotations["senior"][300:, 15], axis=-1) * 0.1
    assert moved.min() > 0.5                                           # mm; a real shift, not rounding
    # nor is it the junior position
    assert (np.abs(ch.landmarks[300:, 15] - ch.annotations["junior"][300:, 15]).max(-1) > 1e-6).all()


def test_observer_set_100_by_11_by_5():
    _need(OBS, SETUP)
    ids, names, arr, observer_names, lms = isbi.load_isbi_observers(OBS)
    assert len(ids) == 100 and arr.shape == (100, 11, 5, 2) and np.isfinite(arr).all()
    assert observer_names == ["senior", "junior"] + [f"ann{k}" for k in range(1, 10)]
    assert lms == (8, 9, 2, 11, 14)
    assert sorted(read_id_list(OBS / "cv" / "all.txt")) == ids
    full = isbi.read_csv_setup(SETUP)
    rows = [IDS.index(i) for i in ids]
    np.testing.assert_allclose(arr[:, 0], full["senior"][1][rows][:, list(lms)], atol=1e-9)
    np.testing.assert_allclose(arr[:, 1], full["junior"][1][rows][:, list(lms)], atol=1e-9)
    # the nine extra observers scatter around the senior/junior mean by a few mm at most
    spread = np.linalg.norm(arr[:, 2:] - arr[:, :2].mean(1, keepdims=True), axis=-1) * 0.1
    assert np.median(spread) < 3.0


def test_observers_in_the_record(record):
    for k in range(1, 10):
        a = record.annotations[f"ann{k}"]
        assert a.shape == (400, 19, 2)
        ok = ~np.isnan(a).any(-1)
        assert ok.sum() == 500 and set(np.nonzero(ok.any(0))[0].tolist()) == {8, 9, 2, 11, 14}
    for k in range(1, 5):
        assert len(record.splits[f"obs_cv{k}/train"]) == 75 and len(record.splits[f"obs_cv{k}/val"]) == 25


def test_nine_real_hand_images():
    _need(HAND)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LoaderWarning)
        rec = hand.load(HAND, verbose=False)
    msgs = [str(w.message) for w in caught]
    assert any("901 of 910 annotated ids have no image" in m for m in msgs), msgs
    assert any("splits filtered to the 9 ids with an image" in m for m in msgs), msgs
    assert rec.ids == ["3167", "3177", "3229", "3231", "5245", "7081", "7088", "7232", "7236"]
    assert rec.landmarks.shape == (9, 37, 2) and np.isfinite(rec.landmarks).all()
    lm, size = rec.landmarks, rec.image_size[:, None, :]
    assert ((lm >= 0) & (lm <= size - 1)).all()
    dist_mm = np.linalg.norm((lm[:, 1] - lm[:, 5]) * rec.spacing, axis=-1)
    np.testing.assert_allclose(dist_mm, 50.0)
    # the sample .mha headers already hold this wrist normalisation (to 6 digits)
    np.testing.assert_allclose(rec.spacing, rec.extras["header_spacing"], rtol=1e-5)
    img = read_image(rec.image_paths[0])
    assert img.shape == (rec.image_size[0, 1], rec.image_size[0, 0])
    assert len(rec.extras["annotated_ids"]) == 910
    assert rec.splits["cv_reduced/cv1/train"] and all(i in rec.ids for i in rec.splits["cv1/train"])


def test_400_jpeg_cephalograms(record, tmp_path):
    _need(JPG)
    paths = sorted((JPG / "cepha400").glob("*.jpg"))
    assert [p.stem for p in paths] == IDS
    infos = [image_info(p) for p in paths]                              # headers of all 400
    assert {i.size for i in infos} == {(1935, 2400)} and {i.components for i in infos} == {3}
    assert (record.image_size == [1935, 2400]).all()
    assert record.extras["layout"]["images"] == "jpeg"
    # their senior CSVs equal the senior CSV setup file exactly, for all 400
    setup_ids, setup_px = read_landmark_csv(SETUP / "all_senior.csv", n_landmarks=19, spacing_mm=0.1)
    got = {}
    for split in ("train", "test1", "test2"):
        ids, px = isbi.read_jpeg_csv(JPG / f"{split}_senior.csv")
        got.update(zip(ids, px))
    assert sorted(got) == IDS
    np.testing.assert_allclose(np.stack([got[i] for i in setup_ids]), setup_px, atol=1e-9)
    # decode a few in full: grey, right size; the fast scaled decode agrees with a full decode + resize
    for k in (0, 221, 376):
        img = read_image(paths[k])
        assert img.shape == (2400, 1935) and img.dtype == np.float32 and 0 <= img.min() and img.max() <= 255
        fast = decode_resized(paths[k], (240, 300))
        assert np.abs(fast - resize_image(img, (240, 300))).mean() < 1.0
    stack = cached_images(record.subset(IDS[:8]), (240, 300), tmp_path, progress=False)
    assert stack.shape == (8, 300, 240) and stack.dtype == np.uint8 and stack.std() > 10
