"""Fault injection: corrupt, truncated and tampered files, concurrent writers, degenerate numbers.

Every case of the "nothing silent" issue is reproduced on small copies of real
files (from the shared data, skipped with a reason when absent) and on
synthetic equivalents built here (so CI covers every case), and must end in
one clear error naming the file, a rebuild, or a flagged (NaN / undefined)
result - never a raw traceback or a silently wrong number.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image

from conftest import shared_data_dir
from lmkcore.analysis import clinical as C
from lmkcore.analysis.decoding import argmax_subpixel, degenerate_heatmaps
from lmkcore.analysis.fitting import fit_gaussian_scipy, fit_gaussians, fit_gaussians_scipy
from lmkcore.analysis.propagation import GaussianLandmarks, propagate
from lmkcore.data import integrity
from lmkcore.data.image_cache import cache_file, cached_images, decode_resized
from lmkcore.data.imageio import read_image, write_image
from lmkcore.data.integrity import CacheRepairWarning, IntegrityError
from lmkcore.errors import DataError
from lmkcore.synthetic.generator import SyntheticConfig, load_synthetic, synthetic_dataset
from lmkcore.training.trainer import load_checkpoint, save_checkpoint

SHARED = shared_data_dir()
REAL_JPG = SHARED / "ISBI2015-cepha400-jpg" / "cepha400" / "001.jpg"
REAL_MHA_DIR = SHARED / "HeatmapRegression" / "hand_xray" / "hand_xray_dataset" / "images"
TINY = SyntheticConfig(n_images=8, width=32, n_extra_observers=0, seed=3)


def _truncate(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = Path(src).read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def _grey(h: int = 40, w: int = 30, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def _real_mha() -> Path:
    files = sorted(REAL_MHA_DIR.glob("*.mha")) if REAL_MHA_DIR.is_dir() else []
    if not files:
        pytest.skip(f"real hand radiographs not found in {REAL_MHA_DIR}")
    return files[0]


# --------------------------------------------------------------------------------------
# (a) truncated / corrupt images of every format: one DataError naming the file
# --------------------------------------------------------------------------------------
def _synthetic_image(tmp_path: Path, ext: str) -> Path:
    path = tmp_path / f"full.{ext}"
    img = _grey()
    if ext == "jpg":
        Image.fromarray(np.stack([img] * 3, -1)).save(path, quality=90)
    else:
        write_image(path, img if ext in ("bmp", "png") else img.astype(np.int16))
    return path


@pytest.mark.parametrize("ext, message", [
    ("jpg", "truncated or corrupt JPEG"), ("bmp", "truncated BMP"), ("png", "truncated PNG"),
    ("mha", "truncated MetaImage"), ("nii", "truncated NIfTI"), ("nii.gz", "truncated or corrupt gzip"),
])
def test_truncated_synthetic_image_is_one_clear_error(tmp_path, ext, message):
    full = _synthetic_image(tmp_path, ext)
    assert read_image(full).shape == (40, 30)  # the intact file reads
    bad = _truncate(full, tmp_path / f"bad.{ext}", 0.6)
    with pytest.raises(DataError, match=rf"bad\.{ext.replace('.', '[.]')}: {message}"):
        read_image(bad)
    empty = tmp_path / f"empty.{ext}"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\..*0 bytes"):
        read_image(empty)


def test_truncated_real_jpeg_is_detected_by_both_decoders(tmp_path, capfd):
    if not REAL_JPG.is_file():
        pytest.skip(f"real ISBI JPEGs not found ({REAL_JPG})")
    bad = _truncate(REAL_JPG, tmp_path / "001.jpg", 0.3)
    with pytest.raises(DataError, match=r"001\.jpg: truncated or corrupt JPEG"):
        read_image(bad)  # SimpleITK path (libjpeg would only print a warning and pad with grey)
    with pytest.raises(DataError, match=r"001\.jpg: truncated or corrupt JPEG"):
        decode_resized(bad, (64, 80))  # the image cache's scaled Pillow path
    assert "Premature end of JPEG" not in capfd.readouterr().out  # refused before libjpeg ran


def test_truncated_jpeg_in_image_cache_synthetic(tmp_path):
    full = _synthetic_image(tmp_path, "jpg")
    bad = _truncate(full, tmp_path / "cut.jpg", 0.5)
    with pytest.raises(DataError, match=r"cut\.jpg: truncated or corrupt JPEG"):
        decode_resized(bad, (15, 20))


def test_truncated_real_mha_names_the_problem_not_errno(tmp_path):
    bad = _truncate(_real_mha(), tmp_path / "hand.mha", 0.5)
    with pytest.raises(DataError, match=r"hand\.mha: truncated MetaImage pixel data \(\d+ of \d+ bytes\)") as err:
        read_image(bad)
    assert "No such file or directory" not in str(err.value)


def test_corrupt_compressed_mha_error_is_mapped(tmp_path):
    path = tmp_path / "c.mha"
    sitk.WriteImage(sitk.GetImageFromArray(_grey(64, 64)), str(path), True)  # compressed: the decoder must notice
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 200])
    with pytest.raises(DataError, match=r"c\.mha: unreadable image \(corrupt or truncated") as err:
        read_image(path)
    assert "No such file or directory" not in str(err.value)


def test_corrupt_png_crc_is_detected(tmp_path):
    path = _synthetic_image(tmp_path, "png")
    data = bytearray(path.read_bytes())
    data[60] ^= 0xFF  # inside the IDAT payload: the chunk CRC no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"full\.png: corrupt PNG \(CRC mismatch"):
        read_image(path)


# --------------------------------------------------------------------------------------
# (b) checksummed caches: decoded images, synthetic dataset, checkpoints
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return synthetic_dataset(TINY, tmp_path_factory.mktemp("faults-synth"))


def _copy_dataset(root: Path, dst_parent: Path) -> Path:
    dst = dst_parent / root.name
    shutil.copytree(root, dst)
    return dst


def test_truncated_bmp_in_synthetic_cache_is_regenerated(tiny_root, tmp_path):
    root = _copy_dataset(tiny_root, tmp_path)
    bmp = sorted((root / "RawImage").glob("*/*.bmp"))[2]
    good = read_image(bmp)
    _truncate(bmp, bmp, 0.7)
    with pytest.raises(DataError, match=rf"{bmp.name}: truncated BMP"):
        read_image(bmp)  # the challenge-layout reader refuses it
    with pytest.warns(CacheRepairWarning, match=rf"{bmp.name}: content does not match"):
        again = synthetic_dataset(TINY, tmp_path)
    assert again == root
    np.testing.assert_array_equal(read_image(bmp), good)  # regenerated bit-identically


def test_replaced_synthetic_file_is_regenerated(tiny_root, tmp_path):
    root = _copy_dataset(tiny_root, tmp_path)
    truth = root / "truth.npz"
    ref = load_synthetic(root).truth["landmarks"].copy()
    with np.load(truth) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["landmarks_px"] = arrays["landmarks_px"] + 5.0  # a valid but altered file
    np.savez(truth, **arrays)
    with pytest.warns(CacheRepairWarning, match=r"truth\.npz: content does not match"):
        synthetic_dataset(TINY, tmp_path)
    np.testing.assert_array_equal(load_synthetic(root).truth["landmarks"], ref)


def test_stale_partial_folder_is_removed_on_next_run(tiny_root, tmp_path):
    root = _copy_dataset(tiny_root, tmp_path)
    stale = tmp_path / f".{root.name}.12345-deadbeef.partial"  # a run killed while generating
    (stale / "RawImage").mkdir(parents=True)
    other_key = tmp_path / ".synthetic-otherkey.abcdefgh.partial"
    other_key.mkdir()
    shutil.rmtree(root)
    synthetic_dataset(TINY, tmp_path)
    assert root.is_dir() and not stale.exists() and not other_key.exists()


def _hold_lock(key: str, locked, release) -> None:
    with integrity.file_lock(key):
        locked.set()
        release.wait(30)


def test_partial_of_a_live_writer_is_kept(tmp_path):
    key = tmp_path / "synthetic-live"
    partial = tmp_path / ".synthetic-live.999-abc.partial"
    partial.mkdir()
    ctx = mp.get_context("fork")
    locked, release = ctx.Event(), ctx.Event()
    writer = ctx.Process(target=_hold_lock, args=(str(key), locked, release))  # another process writes the key
    writer.start()
    try:
        assert locked.wait(30)
        assert integrity.remove_stale_partials(tmp_path, "synthetic-*") == []
        assert partial.exists()
    finally:
        release.set()
        writer.join(30)
    assert integrity.remove_stale_partials(tmp_path, "synthetic-*") == [partial]  # the writer is gone


def _image_record(tmp_path: Path, tiny_root: Path):
    rec = load_synthetic(tiny_root)
    return rec, tmp_path / "images"


@pytest.mark.parametrize("tamper", ["overwritten_255", "float32_bytes", "truncated", "no_checksum"])
def test_image_cache_tampering_is_rebuilt(tiny_root, tmp_path, tamper):
    rec, cache = _image_record(tmp_path, tiny_root)
    first = np.array(cached_images(rec, (16, 20), cache, progress=False))
    path = cache_file(rec, (16, 20), cache)
    if tamper == "overwritten_255":
        np.save(path, np.full_like(first, 255))  # same shape and dtype: only the checksum notices
    elif tamper == "float32_bytes":
        np.save(path, first.astype(np.float32))
    elif tamper == "truncated":
        _truncate(path, path, 0.5)
    else:
        integrity.checksum_path(path).unlink()
    with pytest.warns(CacheRepairWarning, match=rf"{path.name}"):
        again = cached_images(rec, (16, 20), cache, progress=False)
    assert again.dtype == first.dtype
    np.testing.assert_array_equal(again, first)
    integrity.verify_file(path)  # the rebuilt file carries a valid checksum


def test_checksum_primitives(tmp_path):
    p = tmp_path / "x.bin"
    digest = integrity.write_verified(p, b"hello")
    assert integrity.read_verified(p) == b"hello" and integrity.verify_file(p) == digest
    import hashlib

    assert digest == hashlib.sha256(b"hello").hexdigest()  # the reference: hashlib on the bytes
    p.write_bytes(b"hellO")
    with pytest.raises(IntegrityError, match=r"x\.bin: content does not match"):
        integrity.read_verified(p)
    with pytest.raises(IntegrityError, match=r"x\.bin: content does not match"):
        integrity.verify_file(p)
    a, b = integrity.temp_path(p), integrity.temp_path(p)
    assert a != b and a.parent == p.parent and a.name.startswith(".x.bin.")


def test_tampered_checkpoint_is_one_error_naming_what_to_delete(tmp_path):
    path = tmp_path / "models" / "k" / "checkpoint.pt"
    save_checkpoint(path, {"iteration": 3, "w": torch.arange(4.0)})
    assert load_checkpoint(path)["iteration"] == 3
    buf = bytearray(path.read_bytes())
    buf[-10] ^= 1
    path.write_bytes(bytes(buf))
    with pytest.raises(DataError, match=rf"checkpoint\.pt: content does not match .*delete {path}"):
        load_checkpoint(path)
    path.write_bytes(b"")  # 0-byte checkpoint
    with pytest.raises(DataError, match=r"checkpoint\.pt: .*delete"):
        load_checkpoint(path)


# --------------------------------------------------------------------------------------
# concurrent writers: unique temporary names, per-key lock
# --------------------------------------------------------------------------------------
def _save_many(path: str, tag: int) -> None:
    for i in range(20):
        save_checkpoint(path, {"iteration": i, "tag": torch.tensor(tag)})


def _generate(cache: str) -> str:
    return str(synthetic_dataset(TINY, cache))


def test_two_processes_write_one_checkpoint_without_collision(tmp_path):
    path = str(tmp_path / "checkpoint.pt")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_save_many, args=(path, t)) for t in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]  # the old fixed ".checkpoint.pt.tmp" made one die
    assert load_checkpoint(path)["iteration"] == 19
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_two_processes_generate_the_synthetic_dataset_once(tmp_path):
    ctx = mp.get_context("fork")
    with ctx.Pool(2) as pool:
        roots = pool.map(_generate, [str(tmp_path)] * 2)
    assert roots[0] == roots[1]
    integrity.verify_manifest(roots[0])
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


# --------------------------------------------------------------------------------------
# (c) degenerate numbers are flagged
# --------------------------------------------------------------------------------------
def _gaussian(h=21, w=21, cx=10.3, cy=9.6, s=2.0):
    yy, xx = np.mgrid[:h, :w]
    return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))


@pytest.mark.parametrize("kind", ["zero", "flat", "nan", "inf"])
def test_degenerate_heatmap_gives_nan_and_not_ok(kind):
    hm = np.stack([_gaussian(), _gaussian()])[None]  # (1, 2, 21, 21)
    hm[0, 1] = {"zero": 0.0, "flat": 0.3, "nan": np.nan, "inf": np.inf}[kind]
    if kind in ("nan", "inf"):
        hm[0, 1, 5, 5] = 1.0  # a single non-finite pixel is enough: keep one finite peak
        hm[0, 1, 6, 6] = {"nan": np.nan, "inf": np.inf}[kind]
    t = torch.tensor(hm)
    assert degenerate_heatmaps(t).tolist() == [[False, True]]
    xy, _ = argmax_subpixel(t)  # the Gaussian's log is a quadratic: its 3x3 vertex is exact
    assert torch.isnan(xy[0, 1]).all() and torch.allclose(xy[0, 0], torch.tensor([10.3, 9.6], dtype=xy.dtype), atol=1e-6)
    for fit in (fit_gaussians(t), fit_gaussians_scipy(hm)):  # scipy used to raise ValueError on NaN
        assert not fit.converged[0, 1]  # used to be "converged" at (0, 0) with sigma 0.5 px
        for field in ("center", "cov", "amplitude", "sigma_major", "sigma_minor"):
            assert torch.isnan(getattr(fit, field)[0, 1]).all(), field
        assert torch.isfinite(fit.center[0, 0]).all()  # the valid heatmap beside it is still fitted
    ref = fit_gaussian_scipy(hm[0, 1])
    assert ref["converged"] is False and np.isnan(ref["center"]).all()


def test_degenerate_heatmap_through_propagation_is_counted():
    lm = _isbi_like()  # (19, 2) px of a plausible cephalogram
    hm = torch.zeros(1, 19, 200, 200, dtype=torch.float64)
    for k in range(19):
        hm[0, k] = torch.tensor(_gaussian(200, 200, lm[k, 0], lm[k, 1], 2.0))
    hm[0, 0] = 0.0  # sella lost: all-zero heatmap
    xy, _ = argmax_subpixel(hm)
    assert torch.isnan(xy[0, 0]).all() and torch.isfinite(xy[0, 1:]).all()
    dist = GaussianLandmarks(xy.numpy() * 0.1, np.tile(0.01 * np.eye(2), (1, 19, 1, 1)))  # mm
    unc = propagate(dist, 50, seed=0)
    for m in ("SNA", "SNB", "ANB", "FMA", "FHI"):  # every measure using sella: undefined, counted
        assert unc.most_probable[m][0] == C.UNDEFINED and unc.undefined[m][0] == 1.0 and np.isnan(unc.entropy[m][0])
        assert unc.undefined_counts()[m] == 1
    assert unc.undefined["MW"][0] == 0.0 and unc.most_probable["MW"][0] != C.UNDEFINED


def _isbi_like() -> np.ndarray:
    rng = np.random.default_rng(0)
    lm = np.array([[80, 70], [150, 60], [140, 90], [60, 100], [145, 120], [140, 160], [135, 180], [130, 175],
                   [125, 185], [95, 160], [150, 145], [145, 140], [152, 142], [150, 150], [155, 100], [130, 110],
                   [160, 170], [100, 110], [55, 95]], dtype=np.float64)
    return lm + rng.normal(0, 0.5, lm.shape)


def test_clinical_measures_with_sella_on_nasion_are_undefined():
    lm = _isbi_like()
    ok = C.measure_values(lm)
    assert all(np.isfinite(v) for v in ok.values())
    lm[C.ISBI_LANDMARK_NAMES.index("sella")] = lm[C.ISBI_LANDMARK_NAMES.index("nasion")]
    vals, cls = C.measure_values(lm), C.classify_all(lm)
    for m in C.MEASURES:  # SNA, SNB (hence ANB) and FMA use the S-N line; FHI uses sella for PFH
        undefined = m in ("SNA", "SNB", "ANB", "FMA")
        assert np.isnan(vals[m]) == undefined, m  # used to be 0 degrees and classified
        assert (cls[m] == C.UNDEFINED) == undefined, m
    probs, und = C.class_probabilities(np.stack([lm] * 5), return_undefined=True)
    assert und["SNA"] == 1.0 and probs["SNA"].sum() == 0.0 and und["MW"] == 0.0 and probs["MW"].sum() == 1.0
    table = C.class_count_table({m: np.atleast_1d(c) for m, c in cls.items()})
    assert table.loc["SNA", "undefined"] == 1 and table.loc["MW", "undefined"] == 0
    assert C.class_name("SNA", cls["SNA"]) == "undefined"


# --------------------------------------------------------------------------------------
# (d) clear errors for bad text files
# --------------------------------------------------------------------------------------
def _jpeg_layout(root: Path, header_bytes: bytes | None = None, row_bytes: bytes | None = None) -> Path:
    (root / "cepha400").mkdir(parents=True)
    g = _grey(60, 48)
    ids = ["001", "002", "003"]
    for i in ids:
        Image.fromarray(np.stack([g] * 3, -1)).save(root / "cepha400" / f"{i}.jpg", quality=90)
    header = header_bytes or ("image_path," + ",".join(f"{k}_{a}" for k in range(1, 20) for a in "xy")).encode()
    for split, i in zip(("train", "test1", "test2"), ids):
        row = row_bytes or (f"{i}.jpg," + ",".join(str(10 + k) for k in range(38))).encode()
        (root / f"{split}_senior.csv").write_bytes(header + b"\n" + row + b"\n")
    return root


@pytest.mark.parametrize("where", ["header", "row"])
def test_jpeg_layout_csv_with_non_utf8_bytes(tmp_path, where):
    from lmkcore.data.datasets import isbi

    bad = b"image_path\xff\xfe," if where == "header" else b"001.jpg,\xe9\xff"
    root = _jpeg_layout(tmp_path / "ISBI2015-cepha400-jpg", **({"header_bytes": bad} if where == "header" else {"row_bytes": bad}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match=r"_senior\.csv: cannot read landmark file"):
            isbi.load(root, verbose=False)


def test_real_jpeg_csv_copy_with_non_utf8_bytes(tmp_path):
    from lmkcore.data.datasets.isbi import read_jpeg_csv

    src = SHARED / "ISBI2015-cepha400-jpg" / "train_senior.csv"
    if not src.is_file():
        pytest.skip(f"real ISBI JPEG annotations not found ({src})")
    data = src.read_bytes()
    bad = tmp_path / "train_senior.csv"
    bad.write_bytes(data[:200] + b"\xff\xfe" + data[200:])
    assert read_jpeg_csv(src)[1].shape[1:] == (19, 2)
    with pytest.raises(DataError, match=r"train_senior\.csv: cannot read landmark file"):
        read_jpeg_csv(bad)


def test_non_utf8_split_file(tmp_path):
    from lmkcore.data.formats import read_id_list

    p = tmp_path / "train.txt"
    p.write_bytes(b"001\n\xff\xfe\n")
    with pytest.raises(DataError, match=r"train\.txt: cannot read split file"):
        read_id_list(p)


# --------------------------------------------------------------------------------------
# the run store: results verified, rebuilt from their checkpoint, or one clear error
# --------------------------------------------------------------------------------------
def test_result_files_tampered_count_as_absent_and_name_the_file(tmp_path):
    from lmkcore.runs.store import has_result, read_arrays, read_result, write_result

    folder = tmp_path / "experiments" / "k1"
    write_result(folder, {"err": np.arange(6.0)}, {"key": "k1"})
    assert has_result(folder) and read_result(folder)[1]["err"].tolist() == list(range(6))
    npz, js = folder / "result.npz", folder / "result.json"
    good_npz, good_js = npz.read_bytes(), js.read_bytes()
    cases = {
        "altered npz": lambda: np.savez_compressed(npz, err=np.arange(6.0) * 4),  # valid file, wrong numbers
        "truncated npz": lambda: npz.write_bytes(good_npz[:40]),
        "0-byte npz": lambda: npz.write_bytes(b""),
        "garbage json": lambda: js.write_bytes(b"{not json"),
    }
    for name, tamper in cases.items():
        npz.write_bytes(good_npz)
        js.write_bytes(good_js)
        tamper()
        with pytest.warns(CacheRepairWarning, match=r"result\.(npz|json): content does not match"):
            assert not has_result(folder), name  # callers recompute it
        with pytest.raises(DataError, match=rf"result\.(npz|json): .*delete .*to recompute"):
            read_result(folder)
    npz.write_bytes(b"")
    with pytest.raises(DataError, match=r"result\.npz: .*delete it to recompute"):
        read_arrays(npz)


@pytest.fixture(scope="module")
def tiny_experiment(tiny_root, tmp_path_factory):
    from lmkcore.runs.experiment import ExperimentConfig, run_experiment
    from lmkcore.training.trainer import TrainConfig

    cache = tmp_path_factory.mktemp("faults-runs")
    record = load_synthetic(tiny_root)
    cfg = ExperimentConfig(train=TrainConfig(model="unet", num_filters=4, iterations=2, batch_size=2, checkpoint_every=0),
                           input_width=32, eval_split="test1", crop_size=5, fit_window=5)
    return record, cfg, cache, run_experiment(record, cfg, cache, progress=False)


# (truncated / 0-byte / garbage files of every kind: test_result_files_tampered_count_as_absent_and_name_the_file)
@pytest.mark.parametrize("tamper", ["altered", "empty"])
def test_tampered_result_is_rebuilt_from_its_checkpoint(tiny_experiment, tamper, monkeypatch):
    import lmkcore.runs.experiment as ex

    record, cfg, cache, first = tiny_experiment
    folder = ex.result_folder(cache, first.key)
    npz = folder / "result.npz"
    if tamper == "altered":  # a valid result.npz with other numbers (the "46 -> 183 mm" case)
        with np.load(npz) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["pred_fit_px"] = arrays["pred_fit_px"] + 40.0
        np.savez_compressed(npz, **arrays)
    elif tamper == "truncated":
        _truncate(npz, npz, 0.5)
    elif tamper == "empty":
        npz.write_bytes(b"")
    else:
        (folder / "result.json").write_text("garbage{")
    calls = []
    real_train = ex.train
    monkeypatch.setattr(ex, "train", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    with pytest.warns(CacheRepairWarning, match=r"result\.(npz|json)"):
        again = ex.run_experiment(record, cfg, cache, progress=False)
    # rebuilt from the cached checkpoint (train() resumes at its last iteration: no new steps)
    ckpt = load_checkpoint(ex.model_checkpoint(record, cfg, cache))
    assert calls == [1] and ckpt["iteration"] == cfg.train.iterations
    np.testing.assert_array_equal(again.pred_fit_px, first.pred_fit_px)
    np.testing.assert_array_equal(again.pred_argmax_px, first.pred_argmax_px)
    assert ex.load_cached(record, cfg, cache) is not None  # and the rebuilt files verify
