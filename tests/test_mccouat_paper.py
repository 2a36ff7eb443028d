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
