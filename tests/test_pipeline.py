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


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_smoke_profile_runs_every_notebook(tmp_path, session_cache):
    """Every notebook runs in the smoke profile, writes only below ``<figures root>/smoke-synthetic/`` (a
    committed-like ``quick-synthetic/`` folder stays byte for byte the same) and the root INDEX.md links both."""
    out, root = tmp_path / "out", tmp_path / "figures"
    committed = root / "quick-synthetic"
    committed.mkdir(parents=True)
    for src in sorted((REPO / "figures" / "quick-synthetic").glob("00_*"))[:4]:  # a few real committed files
        (committed / src.name).write_bytes(src.read_bytes())
    (committed / ".meta").mkdir()
    (committed / ".meta" / "00_x.json").write_text("{}")
    before = _tree(committed)
    res = run(RUNNER + ["--profile", "smoke", "--output-dir", str(out), "--figures-dir", str(root),
                        "--cache-dir", str(session_cache), "--device", "cpu"])
    assert res.returncode == 0, res.stdout + res.stderr
    assert _tree(committed) == before
    # at the root only the two cross-run reports: the index and the reproduction report
    assert {p.name for p in root.iterdir()} == {"INDEX.md", "REPRODUCTION.md", "quick-synthetic", "smoke-synthetic"}
    assert "smoke-synthetic" in (root / "REPRODUCTION.md").read_text()
    root_index = (root / "INDEX.md").read_text()
    assert "[smoke-synthetic/](smoke-synthetic/INDEX.md)" in root_index
    assert "[quick-synthetic/](quick-synthetic/INDEX.md)" in root_index
    assert "Kernel is running over TCP" not in res.stdout + res.stderr
    figs = root / "smoke-synthetic"
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


def test_smoke_reference_junior_runs_the_cv_junior_experiments(tmp_path, session_cache):
    """``--param reference=junior`` (issue 13): notebook 01 writes Thaler Table 2's "CV jun." table (4-fold CV on the
    junior annotations, read by REPRODUCTION.md), 02 adds the CV-junior Fig. 3 panel, 05 draws Fig. 9 from the
    CV-junior model; none of them skips a CV-junior section."""
    out, root = tmp_path / "out", tmp_path / "figures"
    res = run(RUNNER + ["--profile", "smoke", "--only", "01,02,05", "--param", "reference=junior",
                        "--output-dir", str(out), "--figures-dir", str(root), "--cache-dir", str(session_cache),
                        "--device", "cpu"])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "CV jun." not in res.stdout and "CV-junior" not in res.stdout  # no CV-junior section skipped
    figs = root / "smoke-synthetic-junior"
    for name in ("01_thaler_table2_accuracy_cv_junior.csv", "02_thaler_fig3_size_vs_error_cv_junior.csv",
                 "02_thaler_fig3_size_vs_error.png", "05_thaler_fig9_accuracy_vs_entropy_fraction.png"):
        assert (figs / name).is_file(), name
    table = (figs / "01_thaler_table2_accuracy_cv_junior.csv").read_text(encoding="utf-8")
    assert table.startswith('"CV jun. (4-fold, 40 images, junior)"') and "SCN Σ-target, Σ̂-fit" in table
    corr = (figs / "02_thaler_fig3_size_error_correlation.csv").read_text(encoding="utf-8")
    assert "CV jun. (4 folds pooled)" in corr
    nb05 = (out / "05_clinical_classification.ipynb").read_text(encoding="utf-8")
    assert "model: SCN Σ-target, CV jun. (4 folds pooled), reference junior" in nb05
    row = next(line for line in (root / "REPRODUCTION.md").read_text(encoding="utf-8").splitlines()
               if line.startswith("| CV jun., Σ-target Σ̂-fit | PE (mm) |"))
    assert row.split("|")[4].strip() not in ("", "–")  # the run's value, read from notebook 01's table


@pytest.mark.parametrize("seed, ok", [("0", True), (str(2**32 - 1), True), ("-1", False), (str(2**32), False),
                                      ("1e3", False)])
def test_seed_range_is_checked_before_any_notebook(tmp_path, capsys, seed, ok):
    from lmkcore.cli import main

    args = ["--profile", "smoke", "--seed", seed, "--list"]
    assert main(args) == (0 if ok else 2)
    err = capsys.readouterr().err
    if ok:
        assert err == ""
    elif seed == "1e3":
        assert err.strip() == "run_all.sh: error: --seed must be an integer, got '1e3'"
    else:
        assert err.strip() == f"run_all.sh: error: --seed must be between 0 and 2**32 - 1 = 4294967295, got {seed}"


def test_unwritable_output_or_figures_folder_stops_before_any_notebook(tmp_path, capsys):
    from lmkcore.cli import main

    src = tmp_path / "nbs"
    src.mkdir()
    _notebook(src / "00_a.ipynb", "print('ran')")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    common = ["--profile", "smoke", "--notebooks-dir", str(src)]
    for args, message in [
        (["--output-dir", str(blocker / "out"), "--figures-dir", str(tmp_path / "fig")],
         f"--output-dir {blocker / 'out'}: not writable (Not a directory)"),
        (["--output-dir", str(tmp_path / "out"), "--figures-dir", str(blocker)],
         f"--figures-dir {blocker}: exists and is not a folder"),
    ]:
        assert main(common + args) == 2
        captured = capsys.readouterr()
        assert captured.err.strip().splitlines() == [f"run_all.sh: error: {message}"]
        assert "starting" not in captured.out
        assert not (tmp_path / "out" / "00_a.ipynb").exists()


PROGRESS_CELL = """import time
from lmkcore.progress import progress
bar = progress(range(30), desc="train demo")
for i in bar:
    time.sleep(0.1)
    bar.set_postfix(loss=f"{1 / (i + 1):.3g}")
print("cell done")"""

SKIP_CELL = """from lmkcore.reporting.notebook import report_skip
report_skip("real part", "real annotations not found", "pass --param annotations_dir=...")"""


def test_live_progress_skips_and_final_bar_state(tmp_path):
    """Not a TTY: "starting", then periodic lines naming the running cell with the bar's iterations, rate and
    loss; the notebook's line reports its skipped section; the executed copy keeps only each bar's final state;
    the kernel runs over IPC (no TCP warning)."""
    src = tmp_path / "nbs"
    src.mkdir()
    _notebook(src / "00_train.ipynb", SKIP_CELL)
    nb = nbformat.read(src / "00_train.ipynb", as_version=4)
    nb.cells.insert(2, nbformat.v4.new_code_cell(PROGRESS_CELL))
    nbformat.write(nb, src / "00_train.ipynb")
    out = tmp_path / "out"
    res = run(RUNNER + ["--profile", "smoke", "--notebooks-dir", str(src), "--output-dir", str(out),
                        "--figures-dir", str(tmp_path / "fig"), "--log-interval", "0.5"])
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    start = lines.index("[1/1] 00_train                     starting")
    live = [ln for ln in lines[start + 1:] if ln.startswith("    [00_train] cell ")]
    bars = [ln for ln in live if "train demo:" in ln and "it/s" in ln and "loss=" in ln and "/30 [" in ln]
    assert len(bars) >= 2, res.stdout  # several updates of one running bar (3 s at 0.5 s per line)
    # the running cell: parameters, injected parameters, x = 1, then the training cell (its first line shown)
    assert all(ln.startswith("    [00_train] cell 4/5 [import time], ") for ln in bars), bars
    ok = [ln for ln in lines if ln.startswith("[1/1] 00_train") and " ok " in ln]
    assert len(ok) == 1 and ok[0].endswith(
        ", 1 section skipped: real annotations not found; pass --param annotations_dir=..."), ok
    assert "Kernel is running over TCP" not in res.stdout + res.stderr
    executed = nbformat.read(out / "00_train.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []) if o.get("name") == "stdout")
    assert "train demo: 100%|" in text and "30/30 [" in text and "cell done" in text
    assert "\r" not in text and " 0/30 [" not in text  # the final state only, not the frozen initial one


def test_verbose_streams_the_notebook_output(tmp_path):
    src = tmp_path / "nbs"
    src.mkdir()
    _notebook(src / "00_talk.ipynb", "print('hello from the notebook')\nprint('second line')")
    res = run(RUNNER + ["--profile", "smoke", "--notebooks-dir", str(src), "--output-dir", str(tmp_path / "out"),
                        "--figures-dir", str(tmp_path / "fig"), "--verbose"])
    assert res.returncode == 0, res.stderr
    assert "hello from the notebook\nsecond line\n" in res.stdout


def test_live_progress_rewrites_one_line_on_a_terminal():
    import io

    from lmkcore.cli import LiveProgress

    buf = io.StringIO()
    live = LiveProgress("01_x", 10, out=buf, tty=True)
    live.cell_started(cell_index=3)
    live.write("train a:  10%|#  | 1/10 [00:01<00:09, 1.0it/s]\rtrain a:  20%|##  | 2/10 [00:02<00:08, 1.0it/s]")
    live._tick()
    live.write("\n")  # a bare newline keeps the last progress line
    live._tick()
    frames = buf.getvalue().split("\r")[1:]
    assert len(frames) == 2 and "\n" not in buf.getvalue()
    for frame in frames:
        assert frame.startswith("    cell 4/10, 0s: train a:  20%|##  | 2/10") and frame.endswith("\x1b[K")


def test_python_dash_m_lmkcore_runs_the_same_command_line():
    res = run([sys.executable, "-m", "lmkcore", "--profile", "smoke", "--only", "00,01", "--list"])
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["00_dataset.ipynb", "01_accuracy.ipynb"]
    bad = run([sys.executable, "-m", "lmkcore", "--seed", "99999999999"])
    assert bad.returncode == 2 and "--seed must be between 0 and 2**32 - 1" in bad.stderr
