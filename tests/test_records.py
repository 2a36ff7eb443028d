from pathlib import Path

import numpy as np
import pytest

from lmkcore.errors import DataError
from lmkcore.data.records import LandmarkDataset


def make_record(m=4, n=3):
    rng = np.random.default_rng(0)
    ids = [f"{i:03d}" for i in range(m)]
    ann = {"senior": rng.uniform(0, 50, (m, n, 2)), "junior": rng.uniform(0, 50, (m, n, 2))}
    return LandmarkDataset("toy", ids, [Path(f"{i}.bmp") for i in ids], tuple("abc"[:n]), ann, "senior",
                           np.full((m, 2), 0.1), np.full((m, 2), 64), {"train": ids[:2], "test1": ids[2:]},
                           {"landmarks": ann["senior"] + 0.5})


def test_subset_keeps_rows_aligned():
    rec = make_record()
    sub = rec.split("test1")
    assert sub.ids == ["002", "003"]
    np.testing.assert_array_equal(sub.landmarks, rec.landmarks[2:])
    np.testing.assert_array_equal(sub.truth["landmarks"], rec.truth["landmarks"][2:])
    rev = rec.subset(["003", "000"])
    np.testing.assert_array_equal(rev.annotations["junior"], rec.annotations["junior"][[3, 0]])


def test_mean_reference():
    rec = make_record().with_reference("mean")
    np.testing.assert_allclose(rec.landmarks, 0.5 * (rec.annotations["senior"] + rec.annotations["junior"]))
    assert rec.observers[0] == "mean"


def test_validation_messages():
    rec = make_record()
    with pytest.raises(DataError, match="unknown split 'test9'"):
        rec.split("test9")
    with pytest.raises(DataError, match="split 'x' names ids without an image"):
        LandmarkDataset("toy", rec.ids, rec.image_paths, rec.landmark_names, rec.annotations, "senior",
                        rec.spacing, rec.image_size, {"x": ["999"]})
    with pytest.raises(DataError, match=r"annotations\['junior'\] has shape"):
        LandmarkDataset("toy", rec.ids, rec.image_paths, rec.landmark_names,
                        {"senior": rec.landmarks, "junior": rec.landmarks[:, :2]}, "senior", rec.spacing, rec.image_size)


def test_row_indices_keeps_the_order_of_the_request_and_skips_unknown_ids():
    from lmkcore.data.records import row_indices

    all_ids = ["a", "b", "c", "d"]
    assert row_indices(all_ids, ["c", "x", "a"]).tolist() == [2, 0]
    assert row_indices(all_ids, None).tolist() == [0, 1, 2, 3]
    assert row_indices(all_ids, []).dtype == np.int64 and row_indices(all_ids, []).size == 0
