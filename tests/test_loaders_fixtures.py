"""Real-dataset loaders on tiny fixture files written in each on-disk layout."""
from __future__ import annotations

import os
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from lmkcore.errors import ConfigError, DataError
from lmkcore.data.formats import write_id_list, write_landmark_csv
from lmkcore.data.imageio import write_image
from lmkcore.data.datasets import _LOADERS, folder, hand, isbi
from lmkcore.data.datasets._common import LoaderWarning
from lmkcore.data.image_cache import cache_file, cached_images, decode_resized, resize_image, resize_landmarks
from lmkcore.data.landmarks import ISBI_OBSERVER_LANDMARKS

W, H = 48, 60
SPLITS = {"train": ["001", "002"], "test1": ["003", "004"], "test2": ["005", "006"]}
IDS = [i for ids in SPLITS.values() for i in ids]
FOLDER_OF = {"train": "TrainingData", "test1": "Test1Data", "test2": "Test2Data"}
CV = {1: ["001", "004"], 2: ["002", "005"], 3: ["003"], 4: ["006"]}
OBS_IDS = ["002", "003", "004", "006"]
OBS_CV = {1: ["002"], 2: ["003"], 3: ["004"], 4: ["006"]}
CLASSES = {i: [k % 3 + 1 + j % 2 for j in range(8)] for k, i in enumerate(IDS)}


def _points(seed: int, m: int = len(IDS), n: int = 19) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(2, W - 2, (m, n)), rng.integers(2, H - 2, (m, n))], -1).astype(float)


SENIOR = _points(1)
JUNIOR = _points(2)
CHALLENGE = SENIOR.copy()
CHALLENGE[4:, 15] += [1.0, -1.0]          # landmark 16 changed on test2 (ids 005, 006)
ANN = {f"ann{k}": _points(10 + k, len(OBS_IDS), 5) for k in range(1, 10)}


def _image(seed: int = 0, size=(W, H)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (size[1], size[0])).astype(np.uint8)


def make_challenge(root: Path, observers=("senior", "junior"), classes=True, images=True, annotations=True) -> Path:
    for split, ids in SPLITS.items():
        for i in ids:
            if images:
                write_image(root / "RawImage" / FOLDER_OF[split] / f"{i}.bmp", _image(int(i)))
    if annotations:
        for obs in observers:
            arr = {"senior": SENIOR, "junior": JUNIOR}[obs]
            d = root / "AnnotationsByMD" / f"400_{obs}"
            d.mkdir(parents=True, exist_ok=True)
            for k, i in enumerate(IDS):
                lines = [f"{int(x)},{int(y)}" for x, y in arr[k]]
                if classes:
                    lines += [str(c + (obs == "junior")) for c in CLASSES[i]]
                (d / f"{i}.txt").write_text("\r\n".join(lines) + "\r\n")
    return root


def make_csv_setup(folder_: Path, observers=("senior", "junior", "challenge"), cv=True, observer_set=True) -> Path:
    arrs = {"senior": SENIOR, "junior": JUNIOR, "challenge": CHALLENGE}
    for obs in observers:
        write_landmark_csv(folder_ / f"all_{obs}.csv", IDS, arrs[obs], 0.1)
    for split, ids in SPLITS.items():
        write_id_list(folder_ / f"{split}.txt", ids)
    write_id_list(folder_ / "test_all.txt", SPLITS["test1"] + SPLITS["test2"])
    if cv:
        for k, val in CV.items():
            write_id_list(folder_ / "cv" / f"set{k}" / "val.txt", val)
            write_id_list(folder_ / "cv" / f"set{k}" / "train.txt", [i for i in IDS if i not in val])
    if observer_set:
        obs_dir = folder_.parent / "5_landmarks"
        for name, arr in ANN.items():
            write_landmark_csv(obs_dir / f"5lms_{name}.csv", OBS_IDS, arr, 0.1)
        for name, arr in (("senior", SENIOR), ("junior", JUNIOR)):
            write_landmark_csv(obs_dir / f"5lms_{name}.csv", IDS, arr[:, list(ISBI_OBSERVER_LANDMARKS)], 0.1)
        for k, val in OBS_CV.items():
            write_id_list(obs_dir / "cv" / f"set{k}" / "val.txt", val)
            write_id_list(obs_dir / "cv" / f"set{k}" / "train.txt", [i for i in OBS_IDS if i not in val])
        write_id_list(obs_dir / "cv" / "all.txt", OBS_IDS)
    return folder_


def make_jpeg(root: Path, images=True) -> Path:
    if images:
        (root / "cepha400").mkdir(parents=True, exist_ok=True)
        for i in IDS:
            g = _image(int(i))
            Image.fromarray(np.stack([g, g, g], -1)).save(root / "cepha400" / f"{i}.jpg", quality=90)
    header = "image_path," + ",".join(f"{k}_{a}" for k in range(1, 20) for a in "xy")
    for split, ids in SPLITS.items():
        rows = [f"{i}.jpg," + ",".join(str(int(v)) for v in SENIOR[IDS.index(i)].ravel()) for i in ids]
        random.Random(0).shuffle(rows)
        (root / f"{split}_senior.csv").write_text(header + "\n" + "\n".join(rows[::-1]) + "\n")
    return root


def _quiet(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LoaderWarning)
        return fn(*a, verbose=False, **kw)


# --------------------------------------------------------------------------------------
# ISBI 2015
# --------------------------------------------------------------------------------------

def test_registry_has_the_real_loaders():
    assert _LOADERS["isbi2015"] is isbi.load and _LOADERS["hand"] is hand.load and _LOADERS["folder"] is folder.load


def test_challenge_layout_targets_splits_and_class_lines(tmp_path):
    root = make_challenge(tmp_path / "isbi")
    rec = _quiet(isbi.load, root)
    assert rec.ids == IDS and rec.reference == "senior" and rec.ndim == 2
    np.testing.assert_array_equal(rec.landmarks, SENIOR)
    np.testing.assert_array_equal(rec.annotations["junior"], JUNIOR)
    assert rec.image_paths[0].name == "001.bmp" and (rec.image_size == [W, H]).all()
    np.testing.assert_allclose(rec.spacing, 0.1)
    assert {k: v for k, v in rec.splits.items()} == SPLITS
    cls = rec.extras["clinical_classes"]
    assert list(cls) == ["ANB", "SNB", "SNA", "ODI", "APDI", "FHI", "FMA", "MW"]
    assert cls["ANB"].dtype.kind == "i" and cls["ANB"].tolist() == [CLASSES[i][0] for i in IDS]
    assert cls["MW"].tolist() == [CLASSES[i][7] for i in IDS]
    jun = _quiet(isbi.load, root, reference="junior")
    np.testing.assert_array_equal(jun.landmarks, JUNIOR)
    assert jun.extras["clinical_classes"]["SNB"].tolist() == [CLASSES[i][1] + 1 for i in IDS]
    mean = _quiet(isbi.load, root, reference="mean")
    np.testing.assert_allclose(mean.landmarks, (SENIOR + JUNIOR) / 2)
    with pytest.raises(DataError, match="no challenge annotations"):
        _quiet(isbi.load, root, reference="challenge")
    with pytest.raises(ConfigError, match="unknown reference 'average'"):
        _quiet(isbi.load, root, reference="average")


def test_challenge_txt_without_class_lines_has_no_classes(tmp_path):
    root = make_challenge(tmp_path / "isbi", classes=False)
    rec = _quiet(isbi.load, root)
    assert "clinical_classes" not in rec.extras
    np.testing.assert_array_equal(rec.landmarks, SENIOR)


def test_csv_setup_layout_all_targets_and_cv(tmp_path):
    root = make_challenge(tmp_path / "isbi", annotations=False)
    make_csv_setup(root / "setup_ann" / "all_landmarks")
    for target, want in (("senior", SENIOR), ("junior", JUNIOR), ("challenge", CHALLENGE),
                         ("mean", (SENIOR + JUNIOR) / 2)):
        rec = _quiet(isbi.load, root, reference=target)
        np.testing.assert_allclose(rec.landmarks, want, atol=1e-9)
    assert "challenge" not in rec.annotations            # a ground-truth variant, not an observer
    diff = np.abs(rec.extras["challenge_annotations"] - rec.annotations["senior"]).max(-1) > 0
    assert np.argwhere(diff).tolist() == [[4, 15], [5, 15]]
    ch = _quiet(isbi.load, root, reference="challenge")
    assert ch.observers[:3] == ["challenge", "ann1", "ann2"] and "challenge_annotations" not in ch.extras
    assert rec.splits["test_all"] == ["003", "004", "005", "006"]
    for k, val in CV.items():
        assert rec.splits[f"cv{k}/val"] == val
        assert sorted(rec.splits[f"cv{k}/train"] + val) == IDS
    assert rec.extras["cv_target"] == "junior"
    assert rec.extras["layout"]["images"] == "challenge"


def test_jpeg_layout_alone_gives_senior_and_splits(tmp_path):
    root = make_jpeg(tmp_path / "ISBI2015-cepha400-jpg")
    rec = _quiet(isbi.load, root)
    assert rec.ids == IDS and rec.image_paths[2].name == "003.jpg"
    np.testing.assert_array_equal(rec.landmarks, SENIOR)        # rows were shuffled in the files
    assert (rec.image_size == [W, H]).all()
    assert {k: sorted(v) for k, v in rec.splits.items()} == SPLITS
    with pytest.raises(DataError, match="no junior annotations"):
        _quiet(isbi.load, root, reference="junior")


def test_jpeg_layout_with_annotations_root(tmp_path):
    root = make_jpeg(tmp_path / "jpg")
    setup = make_csv_setup(tmp_path / "elsewhere" / "all_landmarks")
    rec = _quiet(isbi.load, root, reference="mean", annotations_root=tmp_path / "elsewhere")
    np.testing.assert_allclose(rec.annotations["junior"], JUNIOR, atol=1e-9)
    np.testing.assert_allclose(rec.landmarks, (SENIOR + JUNIOR) / 2, atol=1e-9)
    assert "ann9" in rec.annotations and rec.splits["cv2/val"] == CV[2]
    assert str(setup / "all_junior.csv") in rec.extras["layout"]["annotations"]["junior"]


def test_jpeg_layout_finds_sibling_setup_and_says_so(tmp_path, capsys):
    root = make_jpeg(tmp_path / "ISBI2015-cepha400-jpg")
    make_csv_setup(tmp_path / "HeatmapUncertainty" / "setup_ann" / "all_landmarks")
    rec = _quiet(isbi.load, root, reference="junior")
    np.testing.assert_allclose(rec.landmarks, JUNIOR, atol=1e-9)
    rec = isbi.load(root, reference="junior", verbose=True)
    out = capsys.readouterr().out
    assert "sibling CSV setup" in out and "HeatmapUncertainty" in out
    # pointing data_root at the image folder itself works too
    rec2 = _quiet(isbi.load, root / "cepha400", reference="junior")
    np.testing.assert_allclose(rec2.landmarks, JUNIOR, atol=1e-9)


def test_challenge_images_txt_senior_plus_csv_annotations_root(tmp_path):
    root = make_challenge(tmp_path / "isbi", observers=("senior",))
    make_csv_setup(tmp_path / "setup", observers=("senior", "junior"), observer_set=False)
    rec = _quiet(isbi.load, root, reference="junior", annotations_root=tmp_path / "setup")
    np.testing.assert_allclose(rec.landmarks, JUNIOR, atol=1e-9)
    np.testing.assert_allclose(rec.annotations["senior"], SENIOR, atol=1e-9)
    assert "clinical_classes" in rec.extras and rec.extras["clinical_classes_observer"] == "senior"


def test_disagreeing_sources_are_an_error_naming_both_files(tmp_path):
    root = make_challenge(tmp_path / "isbi", observers=("senior",))
    setup = make_csv_setup(tmp_path / "setup", observers=("senior",), observer_set=False)
    bad = SENIOR.copy()
    bad[3, 7] += 2
    write_landmark_csv(setup / "all_senior.csv", IDS, bad, 0.1)
    with pytest.raises(DataError, match=r"all_senior\.csv: senior landmark 8 of image '004'.*004\.txt"):
        _quiet(isbi.load, root, annotations_root=setup)


def test_observer_set_function_and_record(tmp_path):
    root = make_challenge(tmp_path / "isbi", annotations=False)
    make_csv_setup(root / "all_landmarks")
    obs = isbi.load_isbi_observers(root)
    ids, names, arr, observer_names, lms = obs
    assert ids == OBS_IDS and arr.shape == (4, 11, 5, 2)
    assert observer_names == ["senior", "junior"] + [f"ann{k}" for k in range(1, 10)]
    assert lms == (8, 9, 2, 11, 14) and names == ("gnathion", "gonion", "orbitale", "upper_incisal_incision", "subnasale")
    rows = [IDS.index(i) for i in OBS_IDS]
    np.testing.assert_allclose(arr[:, 0], SENIOR[rows][:, list(lms)], atol=1e-9)
    np.testing.assert_allclose(arr[:, 1], JUNIOR[rows][:, list(lms)], atol=1e-9)
    np.testing.assert_allclose(arr[:, 6], ANN["ann5"], atol=1e-9)
    rec = _quiet(isbi.load, root)
    a3 = rec.annotations["ann3"]
    assert a3.shape == (6, 19, 2)
    np.testing.assert_allclose(a3[rows][:, list(lms)], ANN["ann3"], atol=1e-9)
    mask = np.ones((6, 19), bool)
    mask[np.ix_(rows, list(lms))] = False
    assert np.isnan(a3[mask]).all()
    assert rec.extras["observer_ids"] == OBS_IDS and rec.extras["observer_names"][:3] == ["senior", "junior", "ann1"]
    assert rec.splits["obs_cv3/val"] == ["004"] and sorted(rec.splits["obs_cv3/train"]) == ["002", "003", "006"]
    assert rec.splits["obs_all"] == OBS_IDS
    assert "ann1" not in _quiet(isbi.load, root, observers=False).annotations


def test_observer_set_missing_image_is_an_error(tmp_path):
    folder_ = make_csv_setup(tmp_path / "all_landmarks").parent / "5_landmarks"
    write_landmark_csv(folder_ / "5lms_ann4.csv", OBS_IDS[:3], ANN["ann4"][:3], 0.1)
    with pytest.raises(DataError, match=r"5lms_ann4\.csv: 1 of the 4 observer-set images are missing"):
        isbi.load_isbi_observers(folder_)


def test_reusable_layout_functions(tmp_path):
    root = make_challenge(tmp_path / "isbi", annotations=False)
    make_csv_setup(root / "cep" / "setup", observer_set=False)
    imgs = isbi.find_challenge_images(root)
    assert list(imgs) == IDS and imgs["003"].parent.name == "Test1Data"
    setup = isbi.find_csv_setup(root)
    assert setup == root / "cep" / "setup"
    ann = isbi.read_csv_setup(setup, 0.1)
    assert set(ann) == {"senior", "junior", "challenge"} and ann["junior"][0] == IDS
    np.testing.assert_allclose(ann["junior"][1], JUNIOR, atol=1e-9)
    sp = isbi.read_splits(setup)
    assert sp["train"] == ["001", "002"] and sp["cv4/val"] == ["006"]


# --------------------------------------------------------------------------------------
# ISBI bad input
# --------------------------------------------------------------------------------------

def test_missing_data_root_names_it(tmp_path):
    with pytest.raises(DataError, match=r"nothere: ISBI 2015 data_root not found"):
        isbi.load(tmp_path / "nothere")
    with pytest.raises(DataError, match=r"no ISBI 2015 images found"):
        isbi.load(tmp_path)


def test_missing_annotations_names_the_root(tmp_path):
    root = make_challenge(tmp_path / "isbi", annotations=False)
    with pytest.raises(DataError, match=r"isbi: no ISBI 2015 annotations found"):
        _quiet(isbi.load, root)


def test_missing_annotation_for_an_image_names_the_source(tmp_path):
    root = make_challenge(tmp_path / "isbi")
    (root / "AnnotationsByMD" / "400_senior" / "005.txt").unlink()
    with pytest.raises(DataError, match=r"400_senior: no senior annotation for 1 image\(s\).*005"):
        _quiet(isbi.load, root)


def test_split_id_without_image_names_the_split_file(tmp_path):
    root = make_challenge(tmp_path / "isbi", annotations=False)
    setup = make_csv_setup(root / "setup", observer_set=False)
    write_id_list(setup / "cv" / "set2" / "val.txt", ["002", "777"])
    with pytest.raises(DataError, match=r"set2/val\.txt: split 'cv2/val' names 1 id\(s\) without an image: 777"):
        _quiet(isbi.load, root)
    with pytest.warns(LoaderWarning, match="dropped 1"):
        rec = isbi.load(root, missing_images="skip", verbose=False)
    assert rec.splits["cv2/val"] == ["002"]


def test_wrong_number_of_coordinates(tmp_path):
    root = make_challenge(tmp_path / "isbi")
    f = root / "AnnotationsByMD" / "400_junior" / "002.txt"
    lines = f.read_text().splitlines()
    lines[4] = "12,13,14"
    f.write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"400_junior/002\.txt, line 5: 3 coordinates for landmark 5"):
        _quiet(isbi.load, root)
    lines[4] = "12,13"
    f.write_text("\n".join(lines[:10]))
    with pytest.raises(DataError, match=r"002\.txt: 10 non-empty lines, expected 19"):
        _quiet(isbi.load, root)
    lines = lines[:19] + ["1", "2", "3"]
    f.write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"002\.txt: 3 lines after the 19 landmarks; expected none or 8"):
        _quiet(isbi.load, root)
    root2 = make_challenge(tmp_path / "isbi2", annotations=False)
    setup = make_csv_setup(root2, observer_set=False)
    text = (setup / "all_junior.csv").read_text().splitlines()
    text[2] = text[2] + ",1.5"
    (setup / "all_junior.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"all_junior\.csv, line 3: 39 coordinates for image '003'"):
        _quiet(isbi.load, root2)
    root3 = make_jpeg(tmp_path / "jpg")
    csv = root3 / "test1_senior.csv"
    rows = csv.read_text().splitlines()
    csv.write_text("\n".join([rows[0].replace("19_y", "19_z")] + rows[1:]))
    with pytest.raises(DataError, match=r"test1_senior\.csv: header .* column 39 is '19_z'"):
        _quiet(isbi.load, root3)


def test_nan_landmarks(tmp_path):
    root = make_challenge(tmp_path / "isbi")
    f = root / "AnnotationsByMD" / "400_senior" / "001.txt"
    lines = f.read_text().splitlines()
    lines[2] = "nan,5"
    f.write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"400_senior/001\.txt, line 3: landmark 3 is NaN"):
        _quiet(isbi.load, root)
    # the CSV setup format allows missing values: a warning, the NaN is kept, nothing moves
    root2 = make_challenge(tmp_path / "isbi2", annotations=False)
    setup = make_csv_setup(root2, observer_set=False)
    jun = JUNIOR.copy()
    jun[1, 4] = np.nan
    write_landmark_csv(setup / "all_junior.csv", IDS, jun, 0.1)
    with pytest.warns(LoaderWarning, match=r"1 junior landmark\(s\) are missing \(NaN\) in .*all_junior\.csv"):
        rec = isbi.load(root2, reference="junior", verbose=False)
    assert np.isnan(rec.landmarks[1, 4]).all() and np.isfinite(np.delete(rec.landmarks.reshape(-1, 2), 19 + 4, 0)).all()
    np.testing.assert_allclose(rec.landmarks[1, 5], JUNIOR[1, 5], atol=1e-9)


def test_out_of_image_landmark_names_file_and_image(tmp_path):
    root = make_challenge(tmp_path / "isbi")
    f = root / "AnnotationsByMD" / "400_junior" / "006.txt"
    lines = f.read_text().splitlines()
    lines[10] = f"{W + 3},10"
    f.write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"400_junior/006\.txt: image '006', landmark 11 \(lower_incisal_incision\).*outside the image"):
        _quiet(isbi.load, root)


def test_unreadable_image_names_it(tmp_path):
    root = make_challenge(tmp_path / "isbi")
    (root / "RawImage" / "Test1Data" / "004.bmp").write_bytes(b"this is not a bitmap")
    with pytest.raises(DataError, match=r"Test1Data/004\.bmp: unreadable image"):
        _quiet(isbi.load, root)


def test_mixed_header_spacings_name_the_file(tmp_path):
    root = make_challenge(tmp_path / "isbi")
    for split, ids in SPLITS.items():
        for i in ids:
            (root / "RawImage" / FOLDER_OF[split] / f"{i}.bmp").unlink()
            write_image(root / "RawImage" / FOLDER_OF[split] / f"{i}.mha", _image(int(i)),
                        spacing=(0.2, 0.2) if i == "005" else (0.1, 0.1))
    with pytest.raises(DataError, match=r"Test2Data/005\.mha: mixed spacings"):
        _quiet(isbi.load, root)


# --------------------------------------------------------------------------------------
# Hand
# --------------------------------------------------------------------------------------

HAND_IDS = ["3001", "3002", "3003", "3004", "3005", "3006"]
HAND_WITH_IMAGE = ["3002", "3004", "3005"]
HW, HH = 50, 70


def make_hand(root: Path, header_spacing=0.15) -> tuple[Path, np.ndarray]:
    ds = root / "hand_xray" / "hand_xray_dataset"
    rng = np.random.default_rng(5)
    px = np.stack([rng.integers(1, HW - 1, (6, 37)), rng.integers(1, HH - 1, (6, 37))], -1).astype(float)
    px[:, 1] = [10, 50]
    px[:, 5, 0] = 10 + 20 + np.arange(6) * 3          # wrist widths 20, 23, ... px
    px[:, 5, 1] = 50
    (ds / "setup").mkdir(parents=True)
    (ds / "setup" / "all.csv").write_text(
        "\n".join(",".join([i] + [str(int(v)) for v in p.ravel()]) for i, p in zip(HAND_IDS, px)) + "\n")
    folds = [["3001", "3004"], ["3002", "3005"], ["3003", "3006"]]
    for k, test in enumerate(folds, start=1):
        train = [i for i in HAND_IDS if i not in test]
        write_id_list(ds / "setup" / "cv" / f"set{k}" / "test.txt", test)
        write_id_list(ds / "setup" / "cv" / f"set{k}" / "train.txt", train)
        write_id_list(ds / "setup" / "cv_rand" / "10" / "1" / f"set{k}" / "train.txt", train[:2])
        write_id_list(ds / "setup" / "cv_rand" / "10" / "1" / f"set{k}" / "test.txt", test)
    write_id_list(ds / "setup" / "cv" / "set3" / "test_single.txt", ["3003", "3003"])
    write_id_list(ds / "setup" / "cv_reduced" / "set1" / "train.txt", ["3002", "3004"])
    write_id_list(ds / "setup" / "cv_reduced" / "set1" / "test.txt", ["3005"])
    (ds / "images").mkdir()
    for k, i in enumerate(HAND_WITH_IMAGE):
        g = (np.arange(HW)[None, :] * 2 + np.arange(HH)[:, None] + 30 * k).astype(np.uint8)
        g[:, : HW // 3] = 5 + k                               # dark background, bright "hand"
        img = sitk.GetImageFromArray(g[None])                 # W x H x 1 like the real files
        img.SetSpacing((header_spacing,) * 3)
        sitk.WriteImage(img, str(ds / "images" / f"{i}.mha"))
    return ds, px


def test_hand_loads_only_ids_with_images_and_says_so(tmp_path):
    ds, px = make_hand(tmp_path)
    with warnings.catch_warnings(record=True) as rec_w:
        warnings.simplefilter("always", LoaderWarning)
        rec = hand.load(tmp_path, verbose=False)
    msgs = [str(w.message) for w in rec_w]
    assert any("3 of 6 annotated ids have no image" in m for m in msgs)
    assert any("splits filtered to the 3 ids" in m for m in msgs)
    assert rec.ids == HAND_WITH_IMAGE and rec.reference == "gt" and len(rec.landmark_names) == 37
    rows = [HAND_IDS.index(i) for i in HAND_WITH_IMAGE]
    np.testing.assert_array_equal(rec.landmarks, px[rows])
    assert (rec.image_size == [HW, HH]).all()
    assert rec.extras["skipped_ids"] == ["3001", "3003", "3006"]
    assert rec.splits["cv1/val"] == ["3004"] == rec.splits["cv1/test"]
    assert rec.splits["cv1/train"] == ["3002", "3005"]
    assert rec.splits["cv_rand/10/1/cv1/train"] == ["3002"]
    assert rec.splits["cv_reduced/cv1/train"] == ["3002", "3004"]
    assert not any("test_single" in k for k in rec.splits)
    with pytest.raises(DataError, match=r"3 id\(s\) of .*all\.csv have no image"):
        hand.load(ds, missing_images="error", verbose=False)


def test_hand_wrist_normalisation_is_50_mm(tmp_path):
    ds, px = make_hand(tmp_path)
    rec = _quiet(hand.load, ds)
    dist_mm = np.linalg.norm((rec.landmarks[:, 1] - rec.landmarks[:, 5]) * rec.spacing, axis=-1)
    np.testing.assert_allclose(dist_mm, 50.0)
    np.testing.assert_allclose(rec.spacing[:, 0], 50.0 / np.array([23.0, 29.0, 32.0]))
    np.testing.assert_allclose(rec.extras["header_spacing"], 0.15)
    hdr = _quiet(hand.load, ds, normalisation="header")
    np.testing.assert_allclose(hdr.spacing, 0.15)


def test_hand_histogram_matching_preprocessing(tmp_path):
    ds, _ = make_hand(tmp_path)
    rec = _quiet(hand.load, ds, preprocess="histogram_matching", reference_id="3005")
    pre = rec.extras["preprocess"]
    from lmkcore.data.imageio import read_image
    ref = read_image(rec.image_paths[2])
    img = read_image(rec.image_paths[0])
    out = pre(img)
    assert out.shape == img.shape and out.dtype == np.float32
    inside = ref > hand.otsu_threshold(ref)
    out_inside = out[img > hand.otsu_threshold(img)]
    assert abs(np.median(out_inside) - np.median(ref[inside])) < 2.0
    assert abs(np.median(img[img > hand.otsu_threshold(img)]) - np.median(ref[inside])) > 20
    assert np.all(np.diff(out[5]) >= -1e-4)                  # monotone mapping keeps the ramp ordered
    stack = cached_images(rec, (25, 35), tmp_path / "cache", progress=False)
    plain = cached_images(_quiet(hand.load, ds), (25, 35), tmp_path / "cache", progress=False)
    assert stack.filename != plain.filename
    np.testing.assert_allclose(stack[0], np.clip(np.rint(resize_image(out, (25, 35))), 0, 255), atol=1)


def test_hand_bad_input(tmp_path):
    with pytest.raises(DataError, match=r"no hand dataset found"):
        hand.load(tmp_path)
    ds, _ = make_hand(tmp_path)
    text = (ds / "setup" / "all.csv").read_text().splitlines()
    text[3] = ",".join(text[3].split(",")[:-2])
    (ds / "setup" / "all.csv").write_text("\n".join(text))
    with pytest.raises(DataError, match=r"all\.csv, line 4: 72 coordinates for image '3004', expected 37"):
        _quiet(hand.load, ds)


# --------------------------------------------------------------------------------------
# Generic folder format
# --------------------------------------------------------------------------------------

def _folder_2d(root: Path, with_nan=False) -> np.ndarray:
    (root / "images").mkdir(parents=True)
    pts = _points(7, 3, 4)
    if with_nan:
        pts[1, 2] = np.nan
    names = ["apex", "base", "left", "right"]
    header = "image," + ",".join(f"{n}_{a}" for n in names for a in "xy")
    rows = []
    for k, i in enumerate(["a", "b", "c"]):
        Image.fromarray(_image(k)).save(root / "images" / f"{i}.png")
        rows.append(f"{i}.png," + ",".join("" if np.isnan(v) else f"{v:g}" for v in pts[k].ravel()))
    (root / "landmarks.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    obs2 = pts[[2, 0]] + 1
    rows2 = [f"{i}," + ",".join(f"{v:g}" for v in p.ravel()) for i, p in zip(["c", "a"], obs2)]
    (root / "landmarks_second.csv").write_text(header + "\n" + "\n".join(rows2) + "\n")
    write_id_list(root / "splits" / "train.txt", ["a", "b"])
    write_id_list(root / "splits" / "test.txt", ["c"])
    write_id_list(root / "splits" / "cv" / "set1" / "val.txt", ["b"])
    return pts


def test_folder_2d_png(tmp_path):
    pts = _folder_2d(tmp_path / "ds", with_nan=True)
    with pytest.warns(LoaderWarning) as w:
        rec = folder.load(tmp_path / "ds", spacing=0.25, verbose=False)
    assert any("1 landmark(s) missing (NaN)" in str(x.message) for x in w)
    assert rec.ids == ["a", "b", "c"] and rec.landmark_names == ("apex", "base", "left", "right")
    np.testing.assert_array_equal(rec.landmarks, pts)
    assert np.isnan(rec.landmarks[1, 2]).all()
    np.testing.assert_allclose(rec.spacing, 0.25)
    assert rec.splits == {"train": ["a", "b"], "test": ["c"], "cv1/val": ["b"]}
    sec = rec.annotations["second"]
    np.testing.assert_allclose(sec[[2, 0]], pts[[2, 0]] + 1)
    assert np.isnan(sec[1]).all()
    sec_rec = _quiet(folder.load, tmp_path / "ds", reference="second", spacing=0.25)
    assert sec_rec.reference == "second" and sec_rec.ids == ["a", "b", "c"] and np.isnan(sec_rec.landmarks[1]).all()


def test_folder_3d_mha_mm_and_world(tmp_path):
    root = tmp_path / "ct"
    (root / "images").mkdir(parents=True)
    spacing = (0.5, 0.75, 2.0)
    size = (20, 16, 8)
    pts = np.array([[[3, 4, 2], [10.5, 12, 6]], [[0, 0, 0], [19, 15, 7]]], float)
    origin = (-10.0, 5.0, 30.0)
    direction = (0, 1, 0, -1, 0, 0, 0, 0, 1)     # rotated axes
    mm_rows, world_rows = [], []
    for k, i in enumerate(["v1", "v2"]):
        img = sitk.GetImageFromArray(np.zeros(size[::-1], np.int16))
        img.SetSpacing(spacing)
        img.SetOrigin(origin)
        img.SetDirection(direction)
        sitk.WriteImage(img, str(root / "images" / f"{i}.mha"))
        mm_rows.append(f"{i}," + ",".join(f"{v:g}" for v in (pts[k] * spacing).ravel()))
        world = [img.TransformContinuousIndexToPhysicalPoint(tuple(p)) for p in pts[k]]
        world_rows.append(f"{i}.mha," + ",".join(f"{v:.9g}" for p in world for v in p))
    header = "image,x1,y1,z1,x2,y2,z2"
    (root / "mm.csv").write_text(header + "\n" + "\n".join(mm_rows) + "\n")
    (root / "world.csv").write_text(header + "\n" + "\n".join(world_rows) + "\n")
    rec = folder.load(root, landmarks="mm.csv", units="mm", verbose=False)
    assert rec.ndim == 3 and rec.landmark_names == ("L1", "L2")
    np.testing.assert_allclose(rec.landmarks, pts, atol=1e-9)
    assert (rec.image_size == size).all()
    np.testing.assert_allclose(rec.spacing, np.tile(spacing, (2, 1)))
    rec = folder.load(root, landmarks="world.csv", units="world", verbose=False)
    np.testing.assert_allclose(rec.landmarks, pts, atol=1e-6)


def test_folder_bad_input(tmp_path):
    root = tmp_path / "ds"
    _folder_2d(root)
    good = (root / "landmarks.csv").read_text().splitlines()
    (root / "landmarks.csv").write_text("\n".join(good[:2] + [good[2] + ",4"] + good[3:]))
    with pytest.raises(DataError, match=r"landmarks\.csv, line 3: 10 fields for image 'b\.png', expected 9"):
        _quiet(folder.load, root)
    (root / "landmarks.csv").write_text("\n".join(good[:3] + ["zz.png" + good[3][5:]]))
    with pytest.raises(DataError, match=r"landmarks\.csv, line 4: image 'zz\.png' not found"):
        _quiet(folder.load, root)
    (root / "landmarks.csv").write_text("\n".join([good[0].replace("base_x,base_y", "base_y,base_x")] + good[1:]))
    with pytest.raises(DataError, match=r"landmarks\.csv: columns base_y, base_x \(columns 4-5\) are not the x/y"):
        _quiet(folder.load, root)
    (root / "landmarks.csv").write_text("\n".join(good[:2] + ["b.png,1,1,1,1,1,1,1," + str(H + 5)] + good[3:]))
    with pytest.raises(DataError, match=r"landmarks\.csv: image 'b', landmark 4 \(right\).*outside the image"):
        _quiet(folder.load, root)
    (root / "landmarks.csv").write_text("\n".join(good))
    (root / "images" / "c.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=r"images/c\.png: unreadable image"):
        _quiet(folder.load, root)
    Image.fromarray(_image(2)).save(root / "images" / "c.png")
    write_id_list(root / "splits" / "test.txt", ["c", "d"])
    with pytest.raises(DataError, match=r"splits/test\.txt: split 'test' names 1 id\(s\) without an image: d"):
        _quiet(folder.load, root)


def test_folder_mixed_spacings_and_dimensions(tmp_path):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    for i, sp in (("p", (0.5, 0.5)), ("q", (0.7, 0.7))):
        write_image(root / "images" / f"{i}.mha", _image(1), spacing=sp)
    (root / "landmarks.csv").write_text(
        "image,a_x,a_y,spacing_x,spacing_y\np,3,4,0.5,0.5\nq,5,6,0.5,0.5\n")
    with pytest.raises(DataError, match=r"images/q\.mha: mixed spacings: header spacing \[0\.7, 0\.7\]"):
        _quiet(folder.load, root)
    (root / "landmarks.csv").write_text("image,a_x,a_y\np,3,4\nq,5,6\n")
    rec = _quiet(folder.load, root)
    np.testing.assert_allclose(rec.spacing, [[0.5, 0.5], [0.7, 0.7]])
    vol = sitk.GetImageFromArray(np.zeros((4, H, W), np.uint8))
    sitk.WriteImage(vol, str(root / "images" / "q.mha"))
    with pytest.raises(DataError, match=r"images/q\.mha: mixed dimensions: 3D image"):
        _quiet(folder.load, root)


def test_folder_and_loaders_reject_unknown_options(tmp_path):
    _folder_2d(tmp_path / "ds")
    with pytest.raises(ConfigError, match="unknown option"):
        folder.load(tmp_path / "ds", unit="mm")
    with pytest.raises(ConfigError, match="units must be"):
        folder.load(tmp_path / "ds", units="cm")


# --------------------------------------------------------------------------------------
# Image cache
# --------------------------------------------------------------------------------------

def test_resize_landmarks_pixel_centre_convention():
    np.testing.assert_allclose(resize_landmarks([[0.0, 0.0]], (100, 50), (50, 25)), [[-0.25, -0.25]])
    np.testing.assert_allclose(resize_landmarks([[-0.5, 49.5]], (100, 50), (10, 5)), [[-0.5, 4.5]])
    lm = np.random.default_rng(0).uniform(0, 90, (3, 4, 2))
    lm[1, 2] = np.nan
    sizes = np.array([[100, 90], [120, 100], [200, 150]])
    out = resize_landmarks(lm, sizes, (24, 30))
    np.testing.assert_allclose(out[0, 0], (lm[0, 0] + 0.5) * np.array([24, 30]) / sizes[0] - 0.5)
    back = resize_landmarks(out, (24, 30), sizes)
    np.testing.assert_allclose(back, lm)
    assert np.isnan(out[1, 2]).all()


def _dot_record(tmp_path: Path, ext: str):
    root = tmp_path / f"dots_{ext}"
    (root / "images").mkdir(parents=True)
    centres = [(101, 61), (40, 150), (140, 30)]
    rows = []
    for k, (cx, cy) in enumerate(centres):
        g = np.zeros((180, 160), np.uint8)
        g[cy - 4: cy + 5, cx - 4: cx + 5] = 200
        Image.fromarray(np.stack([g] * 3, -1) if ext == "jpg" else g).save(root / "images" / f"d{k}.{ext}", quality=95)
        rows.append(f"d{k}.{ext},{cx},{cy}")
    (root / "landmarks.csv").write_text("image,c_x,c_y\n" + "\n".join(rows) + "\n")
    return _quiet(folder.load, root), np.array(centres, float)


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_cached_images_geometry_matches_resize_landmarks(tmp_path, ext):
    rec, centres = _dot_record(tmp_path, ext)
    size = (40, 45)
    stack = cached_images(rec, size, tmp_path / "cache", progress=False)
    assert isinstance(stack, np.memmap) and stack.shape == (3, 45, 40) and stack.dtype == np.uint8
    want = resize_landmarks(centres, rec.image_size, size)
    yy, xx = np.mgrid[:45, :40]
    for k in range(3):
        w = stack[k].astype(float)
        w /= w.sum()
        np.testing.assert_allclose([(w * xx).sum(), (w * yy).sum()], want[k], atol=0.03)


def test_cached_images_decodes_once_and_keys_on_files(tmp_path, monkeypatch):
    rec, _ = _dot_record(tmp_path, "png")
    cache = tmp_path / "cache"
    first = cached_images(rec, (40, 45), cache, progress=False)
    import lmkcore.data.image_cache as ic

    def boom(*a, **k):
        raise AssertionError("decoded again")
    monkeypatch.setattr(ic, "decode_resized", boom)
    again = cached_images(rec, (40, 45), cache, progress=False)
    assert again.filename == first.filename
    np.testing.assert_array_equal(again, first)
    monkeypatch.undo()
    other = cached_images(rec, (20, 30), cache, dtype="float16", progress=False)
    assert other.shape == (3, 30, 20) and other.dtype == np.float16 and other.filename != first.filename
    p = rec.image_paths[1]
    Image.fromarray(np.full((180, 160), 77, np.uint8)).save(p)
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    changed = cached_images(rec, (40, 45), cache, progress=False)
    assert changed.filename != first.filename and (changed[1] == 77).all()
    # no temporary files left behind (the per-key lock files stay by design)
    assert sorted(f.name for f in cache.iterdir() if f.name.startswith(".") and not f.name.endswith(".lock")) == []


def test_cached_images_failure_leaves_no_file(tmp_path):
    rec, _ = _dot_record(tmp_path, "png")
    rec.image_paths[2].write_bytes(b"broken")
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"d2\.png: (unreadable image|truncated PNG)"):
        cached_images(rec, (40, 45), cache, dtype="uint8", progress=False)
    assert [f for f in cache.iterdir() if not f.name.endswith(".lock")] == []
    assert not cache_file(rec, (40, 45), cache, dtype="uint8").exists()


def test_jpeg_fast_decode_matches_full_decode(tmp_path):
    rng = np.random.default_rng(3)
    g = (rng.normal(0, 1, (240, 200)).cumsum(0).cumsum(1))
    g = np.clip((g - g.min()) / np.ptp(g) * 255, 0, 255).astype(np.uint8)
    Image.fromarray(np.stack([g] * 3, -1)).save(tmp_path / "x.jpg", quality=95)
    fast = decode_resized(tmp_path / "x.jpg", (30, 36))
    from lmkcore.data.imageio import read_image
    full = resize_image(read_image(tmp_path / "x.jpg"), (30, 36))
    assert np.abs(fast - full).mean() < 1.0
