"""The ``paper-dry`` profile: ``paper`` in every size, 2 iterations / 1 epoch, a handful of images per split."""
from __future__ import annotations

from dataclasses import fields

import numpy as np

from lmkcore.data.records import LandmarkDataset
from lmkcore.runs.phdnet import phdnet_config
from lmkcore.training.methods import METHODS
from lmkcore.training.profiles import get_profile

SCHEDULE = {"name", "base", "iterations", "convention_overrides", "split_images", "max_epochs"}


def test_paper_dry_has_every_size_of_paper():
    paper, dry = get_profile("paper"), get_profile("paper-dry")
    for f in fields(paper):
        if f.name not in SCHEDULE:
            assert getattr(dry, f.name) == getattr(paper, f.name), f.name
    assert dry.sizes == "paper" and paper.sizes == "paper" and get_profile("quick").sizes == "quick"
    assert (dry.iterations, dry.split_images, dry.max_epochs) == (2, 3, 1)
    for method, (_, spec) in METHODS.items():
        a, b = paper.train_config(**spec).to_dict(), dry.train_config(**spec).to_dict()
        assert b["iterations"] == 2, method
        diff = {k for k in a if a[k] != b[k]}
        assert diff <= {"iterations", "checkpoint_every", "log_every"}, (method, diff)


def test_paper_dry_phdnet_is_paper_with_one_epoch():
    a = phdnet_config(get_profile("paper")).to_dict()
    b = phdnet_config(get_profile("paper-dry")).to_dict()
    assert a["max_epochs"] == 500 and b["max_epochs"] == 1
    assert {k for k in a if a[k] != b[k]} == {"max_epochs"}


def _record(n=20):
    ids = [f"{i:03d}" for i in range(n)]
    lm = np.zeros((n, 2, 2))
    splits = {"train": ids[:8], "test1": ids[8:14], "test2": ids[14:], "test_all": ids[8:],
              "cv1/train": ids[5:15], "cv1/val": ids[:5] + ids[15:]}
    return LandmarkDataset(name="toy", ids=ids, image_paths=[f"{i}.png" for i in ids], annotations={"senior": lm},
                           reference="senior", spacing=np.full((n, 2), 0.1), image_size=np.full((n, 2), 100),
                           splits=splits, landmark_names=["a", "b"])


def test_restrict_keeps_a_handful_per_split_and_parts_inside_unions():
    rec = _record()
    out = get_profile("paper-dry").restrict(rec)
    assert out.splits["train"] == ["000", "001", "002"]
    assert out.splits["test1"] == ["008", "009", "010"] and out.splits["test2"] == ["014", "015", "016"]
    # test_all = test1 + test2: keeps both parts' images
    assert out.splits["test_all"] == out.splits["test1"] + out.splits["test2"]
    assert set(out.ids) == set().union(*map(set, out.splits.values()))
    assert out.ids == sorted(out.ids)  # the record's order
    assert len(out.splits["cv1/val"]) == 3
    assert get_profile("paper").restrict(rec) is rec
