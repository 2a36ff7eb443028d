"""Ablation helpers: reduced training splits and point errors."""
from __future__ import annotations

import numpy as np
import pytest

from lmkcore.runs import ablation
from lmkcore.errors import ConfigError


class _Rec:
    name = "toy"

    def __init__(self):
        self.splits = {"train": [f"{i:03d}" for i in range(30)]}


def test_reduced_splits_are_nested_subsets():
    rec = _Rec()
    names = ablation.reduced_training_splits(rec, "train", [10, 20, 50], seed=1)
    assert names == {10: "train/n10", 20: "train/n20"}  # 50 >= 30 images: skipped
    a, b = set(rec.splits["train/n10"]), set(rec.splits["train/n20"])
    assert len(a) == 10 and len(b) == 20 and a < b < set(rec.splits["train"])
    again = _Rec()
    ablation.reduced_training_splits(again, "train", [10], seed=1)
    assert again.splits["train/n10"] == rec.splits["train/n10"]
    with pytest.raises(ConfigError):
        ablation.reduced_training_splits(rec, "nope", [5])


def test_point_errors_mm():
    e = ablation.point_errors_mm(np.array([[[3.0, 4.0]]]), np.zeros((1, 1, 2)), np.array([[1.0, 0.5]]))
    assert e[0, 0] == pytest.approx(np.hypot(3.0, 2.0))
