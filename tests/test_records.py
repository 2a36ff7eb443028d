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


def test_select_landmarks_cuts_every_landmark_axis_and_reindexes_the_observer_set():
    rng = np.random.default_rng(1)
    m, n, k = 5, 6, 3
    ids = [f"{i:03d}" for i in range(m)]
    ann = {f"ann{o}": rng.uniform(0, 50, (m, n, 2)) for o in range(k)}
    ann["senior"] = rng.uniform(0, 50, (m, n, 2))
    truth = {"landmarks": rng.normal(size=(m, n, 2)), "annotation_cov": rng.normal(size=(m, n, 2, 2)),
             "observer_bias": rng.normal(size=(m, k, n, 2)), "pose_translation_mm": rng.normal(size=(m, 2)),
             "unlisted_per_landmark": rng.normal(size=(m, n)), "pose_scale": rng.normal(size=m)}
    extras = {"annotation_cov_mm": rng.normal(size=(n, 2, 2)), "landmark_kind": np.array(list("eceecc")),
              "observer_bias_mm": rng.normal(size=(k, n, 2)), "challenge_annotations": rng.normal(size=(m, n, 2)),
              "observer_landmarks": (4, 1, 3), "observer_ids": ids[:2], "unlisted": np.arange(n)}
    rec = LandmarkDataset("toy", ids, [Path(f"{i}.bmp") for i in ids], tuple("abcdef"), ann, "senior",
                          np.full((m, 2), 0.1), np.full((m, 2), 64), {"train": ids[:3], "test1": ids[3:]},
                          truth, extras)
    sel = [3, 0, 4]
    out = rec.select_landmarks(sel)
    assert out.landmark_names == ("d", "a", "e") and out.ids == rec.ids and out.splits == rec.splits
    for new, old in enumerate(sel):  # brute force, one landmark at a time
        for key in ann:
            np.testing.assert_array_equal(out.annotations[key][:, new], rec.annotations[key][:, old])
        for key in ("landmarks", "annotation_cov", "unlisted_per_landmark"):
            np.testing.assert_array_equal(out.truth[key][:, new], truth[key][:, old])
        np.testing.assert_array_equal(out.truth["observer_bias"][:, :, new], truth["observer_bias"][:, :, old])
        np.testing.assert_array_equal(out.extras["annotation_cov_mm"][new], extras["annotation_cov_mm"][old])
        assert out.extras["landmark_kind"][new] == extras["landmark_kind"][old]
        np.testing.assert_array_equal(out.extras["observer_bias_mm"][:, new], extras["observer_bias_mm"][:, old])
        np.testing.assert_array_equal(out.extras["challenge_annotations"][:, new],
                                      extras["challenge_annotations"][:, old])
    assert out.truth["observer_bias"].shape == (m, k, 3, 2) and out.truth["annotation_cov"].shape == (m, 3, 2, 2)
    # per-image entries without a landmark axis and unlisted extras are kept
    np.testing.assert_array_equal(out.truth["pose_translation_mm"], truth["pose_translation_mm"])
    np.testing.assert_array_equal(out.truth["pose_scale"], truth["pose_scale"])
    np.testing.assert_array_equal(out.extras["unlisted"], extras["unlisted"])
    assert out.extras["observer_ids"] == ids[:2]
    # observer set (4, 1, 3) -> landmarks 4 and 3 kept, at new positions 2 and 0; 1 dropped
    assert out.extras["observer_landmarks"] == (2, 0)
    # the original is unchanged, and selecting commutes with a derived reference
    assert rec.landmark_names == tuple("abcdef") and rec.annotations["senior"].shape == (m, n, 2)
    np.testing.assert_allclose(out.with_reference("all_mean").landmarks,
                               rec.with_reference("all_mean").landmarks[:, sel])
    np.testing.assert_allclose(out.with_reference("all_mean").landmarks,
                               np.mean([ann[o][:, sel] for o in ann], axis=0))


def test_select_landmarks_errors():
    rec = make_record()
    with pytest.raises(DataError, match="landmark index 3 out of range 0..2"):
        rec.select_landmarks([0, 3])
    with pytest.raises(DataError, match="repeated landmark index"):
        rec.select_landmarks([1, 1])
    with pytest.raises(DataError, match="at least one landmark"):
        rec.select_landmarks([])
