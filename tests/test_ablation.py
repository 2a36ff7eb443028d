"""Ablation helpers: reduced training splits and point errors."""
from __future__ import annotations

import numpy as np
import pytest

from lmkcore.runs import ablation
from lmkcore.errors import ConfigError


class _Rec:
    name = "toy"

    def __init__(self, splits=None):
        self.splits = splits or {"train": [f"{i:03d}" for i in range(30)]}

    def with_splits(self, splits):  # as LandmarkDataset.with_splits: a new record
        return _Rec({**self.splits, **splits})


def test_reduced_splits_are_nested_subsets():
    original = _Rec()
    rec, names = ablation.reduced_training_splits(original, "train", [10, 20, 50], seed=1)
    assert names == {10: "train/n10", 20: "train/n20"}  # 50 >= 30 images: skipped
    assert list(original.splits) == ["train"]  # the input record is not changed
    a, b = set(rec.splits["train/n10"]), set(rec.splits["train/n20"])
    assert len(a) == 10 and len(b) == 20 and a < b < set(rec.splits["train"])
    again, _ = ablation.reduced_training_splits(_Rec(), "train", [10], seed=1)
    assert again.splits["train/n10"] == rec.splits["train/n10"]
    with pytest.raises(ConfigError):
        ablation.reduced_training_splits(rec, "nope", [5])


def test_point_errors_mm():
    e = ablation.point_errors_mm(np.array([[[3.0, 4.0]]]), np.zeros((1, 1, 2)), np.array([[1.0, 0.5]]))
    assert e[0, 0] == pytest.approx(np.hypot(3.0, 2.0))


def test_point_errors_mm_nan_reference_gives_nan():
    e = ablation.point_errors_mm(np.array([[[3.0, 4.0], [1.0, 1.0]]]), np.array([[[0.0, 0.0], [np.nan, np.nan]]]),
                                 np.array([[1.0, 1.0]]))
    assert e[0, 0] == pytest.approx(5.0) and np.isnan(e[0, 1])
