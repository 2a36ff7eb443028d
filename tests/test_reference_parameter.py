"""The ``reference`` parameter: which annotation set is the ground truth of a run (every notebook,
``--param reference=...``), its own figures folder, the 11-observer mean and clear errors."""
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from lmkcore.cli import parameter_names, parse_extra_params
from lmkcore.data.records import LandmarkDataset
from lmkcore.errors import ConfigError, DataError
from lmkcore.reporting.figure_index import run_folder_name
from lmkcore.reporting.notebook import setup_notebook
from lmkcore.reporting.reproduction import find_runs

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _observer_record(m=5, n=3, n_obs=11):
    rng = np.random.default_rng(1)
    ids = [f"{i:03d}" for i in range(m)]
    names = ["senior", "junior"] + [f"ann{k}" for k in range(1, n_obs - 1)]
    ann = {o: rng.uniform(0, 50, (m, n, 2)) for o in names}
    for o in names[2:]:
        ann[o][0, 1] = np.nan  # image 000, landmark 1: only senior and junior annotated it
    return LandmarkDataset("toy", ids, [Path(f"{i}.png") for i in ids], tuple("abc"[:n]), ann, "senior",
                           np.full((m, 2), 0.1), np.full((m, 2), 64), {"train": ids})


def test_all_mean_is_the_mean_of_every_observer_and_nan_where_one_is_missing():
    rec = _observer_record()
    out = rec.with_reference("all_mean")
    stack = np.stack([rec.annotations[o] for o in rec.annotators])  # (11, M, N, 2)
    assert stack.shape[0] == 11
    want = stack.mean(0)  # NaN where any observer is missing
    np.testing.assert_allclose(out.landmarks, want)
    assert np.isnan(out.landmarks[0, 1]).all() and np.isfinite(np.delete(out.landmarks, 1, axis=1)).all()
    assert out.reference == "all_mean" and "all_mean" not in out.annotators  # derived, not an observer
    assert rec.reference == "senior"  # unchanged


def test_all_mean_needs_observers_and_unknown_references_name_the_known_ones():
    rec = _observer_record(n_obs=2)
    with pytest.raises(DataError, match="'all_mean' .* needs at least 3 observers; this record has 2"):
        rec.with_reference("all_mean")
    with pytest.raises(DataError, match="unknown reference annotation set 'senoir'; known: junior, senior"):
        rec.with_reference("senoir")


def test_every_notebook_declares_reference_and_passes_it_on():
    assert len(NOTEBOOKS) >= 10
    for nb in NOTEBOOKS:
        assert "reference" in parameter_names(nb), nb.name
        code = "".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code")
        assert "reference=reference" in code, f"{nb.name} does not pass reference to setup_notebook"
    extra = parse_extra_params(["reference=junior"], NOTEBOOKS)
    assert all(extra[nb] == {"reference": "junior"} for nb in NOTEBOOKS)


def test_a_reference_run_has_its_own_figures_folder_and_ground_truth(tmp_path):
    assert run_folder_name("quick", "isbi2015") == "quick-isbi2015"
    assert run_folder_name("quick", "isbi2015", "junior") == "quick-isbi2015-junior"
    ctx = setup_notebook("01_accuracy", "smoke", "synthetic", None, "cpu", 0, str(tmp_path / "fig"),
                         str(tmp_path / "cache"), reference="junior")
    assert ctx.figures_dir == tmp_path / "fig" / "smoke-synthetic-junior"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        record = ctx.load_dataset()
    assert record.reference == "junior"
    np.testing.assert_array_equal(record.landmarks, record.annotations["junior"])
    assert ctx.provenance["reference"] == "junior"
    default = setup_notebook("01_accuracy", "smoke", "synthetic", None, "cpu", 0, str(tmp_path / "fig"),
                             str(tmp_path / "cache"))
    assert "reference" not in default.provenance and default.figures_dir.name == "smoke-synthetic"


def test_bad_reference_values_give_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="reference must be the name of an annotation set"):
        setup_notebook("01_accuracy", "smoke", "synthetic", None, "cpu", 0, str(tmp_path), None, reference="a b")
    ctx = setup_notebook("01_accuracy", "smoke", "synthetic", None, "cpu", 0, str(tmp_path),
                         str(tmp_path / "cache"), reference="nobody")
    with pytest.raises(DataError, match="unknown reference annotation set 'nobody'"):
        ctx.load_dataset()


def test_reproduction_report_keeps_reference_runs_apart(tmp_path):
    for folder, ref in (("quick-isbi2015", None), ("quick-isbi2015-junior", "junior")):
        d = tmp_path / folder
        (d / ".meta").mkdir(parents=True)
        (d / "01_table.csv").write_text("a,b\n1,2\n")
        meta = {"profile": "quick", "dataset": "isbi2015", **({"reference": ref} if ref else {})}
        (d / ".meta" / "01_table.json").write_text(json.dumps(meta))
    labels = [r.label for r in find_runs(tmp_path)]
    assert labels == ["quick / isbi2015", "quick / isbi2015 (junior)"]
