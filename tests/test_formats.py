import numpy as np
import pytest

from lmkcore.errors import DataError
from lmkcore.data.formats import atomic_directory, read_id_list, read_landmark_csv, write_id_list, write_landmark_csv


def test_landmark_csv_roundtrip_mm_to_px(tmp_path):
    rng = np.random.default_rng(0)
    px = rng.uniform(0, 2000, size=(5, 19, 2))
    px[2, 3] = np.nan
    ids = [f"{i:03d}" for i in range(1, 6)]
    write_landmark_csv(tmp_path / "a.csv", ids, px, 0.1, decimals=6)
    first = (tmp_path / "a.csv").read_text().splitlines()[0].split(",")
    assert first[0] == "001" and float(first[1]) == pytest.approx(px[0, 0, 0] * 0.1, abs=1e-6)
    got_ids, got = read_landmark_csv(tmp_path / "a.csv", n_landmarks=19, spacing_mm=0.1)
    assert got_ids == ids
    np.testing.assert_allclose(got, px, atol=1e-4)
    assert np.isnan(got[2, 3]).all() and np.isfinite(np.delete(got.reshape(-1, 2), 2 * 19 + 3, 0)).all()


def test_wrong_coordinate_count_names_file_and_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("001,1,2,3,4\n002,1,2,3\n")
    with pytest.raises(DataError, match=r"bad\.csv, line 2: 3 coordinates .* expected 2 landmarks"):
        read_landmark_csv(path, n_landmarks=2)


def test_non_numeric_and_missing(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("001,1,abc\n")
    with pytest.raises(DataError, match=r"bad\.csv, line 1: non-numeric coordinate 'abc'"):
        read_landmark_csv(path)
    with pytest.raises(DataError, match=r"nothere\.csv: landmark file not found"):
        read_landmark_csv(tmp_path / "nothere.csv")


def test_id_lists(tmp_path):
    write_id_list(tmp_path / "s.txt", ["003", "001"])
    assert read_id_list(tmp_path / "s.txt") == ["003", "001"]
    (tmp_path / "d.txt").write_text("1\n1\n")
    with pytest.raises(DataError, match="duplicate"):
        read_id_list(tmp_path / "d.txt")


def test_atomic_directory_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "ds"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("interrupted")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_directory(target) as tmp:
        (tmp / "done.txt").write_text("x")
    assert (target / "done.txt").read_text() == "x"


def test_atomic_write_gives_ordinary_permissions(tmp_path):
    import os
    import stat

    from lmkcore.data.formats import atomic_write_text

    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "t.md", "x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "t.md").stat().st_mode) == 0o644
