"""run_all.sh / papermill pipeline: options, failure reporting, and a smoke run of every notebook."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import REPO

RUNNER = [sys.executable, "-m", "lmkcore.cli"]


def run(args, cwd=REPO, env=None, timeout=600):
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--profile", "bogus"], "unknown profile 'bogus'; choose one of: smoke, quick, paper"),
        (["--dataset", "nope"], "unknown dataset 'nope'"),
        (["--only", "99"], "--only '99': no notebook numbered 99"),
        (["--seed", "x"], "--seed must be an integer"),
        (["--dataset", "synthetic", "--data-root", "/no/such/dir"], "--data-root '/no/such/dir' does not exist"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_bad_options_give_one_clear_error(args, message):
    res = run(RUNNER + args)
    assert res.returncode == 2
    assert message in res.stderr
    assert "Traceback" not in res.stderr


def test_run_all_sh_forwards_options_in_an_active_env():
    env = dict(os.environ, VIRTUAL_ENV=sys.prefix, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    res = run(["bash", str(REPO / "run_all.sh"), "--profile", "bogus"], env=env)
    assert res.returncode == 2, res.stderr
    assert "unknown profile 'bogus'" in res.stderr


def _notebook(path: Path, body: str, extra_params: str = "") -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('profile = "quick"\nseed = 0' + extra_params)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)


def test_failing_notebook_stops_and_names_notebook_and_cell(tmp_path):
    src = tmp_path / "nbs"
    src.mkdir()
    _notebook(src / "00_fine.ipynb", "print('seed', seed)")
    _notebook(src / "01_broken.ipynb", "1 / 0")
    _notebook(src / "02_never.ipynb", "print('not reached')")
    source_before = (src / "01_broken.ipynb").read_text()
    out = tmp_path / "out"
    res = run(RUNNER + ["--profile", "smoke", "--notebooks-dir", str(src), "--output-dir", str(out),
                        "--figures-dir", str(tmp_path / "fig"), "--seed", "7"])
    assert res.returncode == 1
    assert "[1/3] 00_fine" in res.stdout and " ok " in res.stdout
    assert "01_broken" in res.stdout and "FAILED" in res.stdout
    assert "02_never" not in res.stdout
    # the injected-parameters cell shifts indices by one: the failing cell is index 3
    assert "notebook 01_broken.ipynb failed in cell 3" in res.stderr
    assert "ZeroDivisionError" in res.stderr
    executed = nbformat.read(out / "01_broken.ipynb", as_version=4)
    tracebacks = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert tracebacks and tracebacks[0]["ename"] == "ZeroDivisionError"
    fine = nbformat.read(out / "00_fine.ipynb", as_version=4)
    assert any("seed 7" in o.get("text", "") for c in fine.cells for o in c.get("outputs", []))
    assert (src / "01_broken.ipynb").read_text() == source_before  # sources never overwritten
    assert not (out / "02_never.ipynb").exists()


def test_param_sets_notebook_specific_parameters_and_rejects_unknown_ones(tmp_path):
    src = tmp_path / "nbs"
    src.mkdir()
    _notebook(src / "00_a.ipynb", "print('got', repr(threshold), repr(folder))", "\nthreshold = 1.0\nfolder = None")
    _notebook(src / "01_b.ipynb", "print('b has no threshold')")
    common = ["--profile", "smoke", "--notebooks-dir", str(src), "--output-dir", str(tmp_path / "out"),
              "--figures-dir", str(tmp_path / "fig")]
    res = run(RUNNER + common + ["--param", "threshold=0.25", "--param", "folder=/data/my tables"])
    assert res.returncode == 0, res.stdout + res.stderr
    a = nbformat.read(tmp_path / "out" / "00_a.ipynb", as_version=4)
    assert any("got 0.25 '/data/my tables'" in o.get("text", "") for c in a.cells for o in c.get("outputs", []))
    for args, message in [(["--param", "tresh=1"], "--param tresh: no selected notebook has a parameter 'tresh'; "
                                                    "notebook-specific parameters: folder, threshold"),
                          (["--param", "seed=3"], "--param seed: use --seed instead"),
                          (["--param", "novalue"], "--param 'novalue': expected NAME=VALUE")]:
        res = run(RUNNER + common + args)
        assert res.returncode == 2 and message in res.stderr, res.stderr
        assert "Traceback" not in res.stderr


def test_source_notebooks_are_output_free_and_parameterised():
    notebooks = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert notebooks, "no notebooks"
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), path.name
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs"


def test_smoke_profile_runs_every_notebook(tmp_path, session_cache):
    out, figs = tmp_path / "out", tmp_path / "figures"
    res = run(RUNNER + ["--profile", "smoke", "--output-dir", str(out), "--figures-dir", str(figs),
                        "--cache-dir", str(session_cache), "--device", "cpu"])
    assert res.returncode == 0, res.stdout + res.stderr
    notebooks = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for nb in notebooks:
        assert (out / nb.name).is_file()
        assert f"{nb.stem}" in res.stdout
    # every figure/table named in the provenance records exists, and INDEX.md lists them all
    index = (figs / "INDEX.md").read_text()
    records = [json.loads(p.read_text()) for p in (figs / ".meta").glob("*.json")]
    assert records
    for rec in records:
        for f in rec["files"]:
            assert (figs / f).is_file(), f
            assert f"[{f}]({f})" in index
    produced = {p.name for p in figs.iterdir() if p.is_file() and p.name != "INDEX.md"}
    listed = {f for rec in records for f in rec["files"]}
    assert produced == listed
    assert {"00_dataset_samples.png", "00_dataset_samples.pdf", "00_dataset_observer_stats.csv"} <= produced
