"""figures/INDEX.md: every figure/table file listed with paper reference, notebook, profile/dataset and time."""
from __future__ import annotations

import datetime as dt
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from conftest import REPO  # noqa: E402
from lmkcore.reporting import style  # noqa: E402
from lmkcore.reporting.figure_index import (  # noqa: E402
    index_problems, output_files, run_folder_name, run_folders, write_index, write_root_index)


def index_rows(text: str) -> dict[str, list[str]]:
    """file name -> the cells of the INDEX.md table row that links it."""
    rows = {}
    for line in text.splitlines():
        if not line.startswith("| ") or line.startswith("| name"):
            continue
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        for part in cells[2].split(", "):
            if part.startswith("[") and "](" in part:
                rows[part[1:part.index("]")]] = cells
    return rows


def test_index_lists_records_untracked_files_and_reports_problems(tmp_path):
    prov = {"notebook": "99_demo", "profile": "smoke", "dataset": "synthetic"}
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    style.save_figure(fig, tmp_path, "99_demo_fig", "Thaler et al. 2021, Fig. 3 | left", **prov)
    plt.close(fig)
    style.save_table(pd.DataFrame({"a": [1.0]}), tmp_path, "99_demo_table", "-", **prov)
    (tmp_path / "stray.png").write_bytes(b"\x89PNG")  # saved without provenance
    write_index(tmp_path)
    text = (tmp_path / "INDEX.md").read_text()
    rows = index_rows(text)
    assert set(rows) == {"99_demo_fig.png", "99_demo_fig.pdf", "99_demo_table.csv", "99_demo_table.md"}
    name, kind, _, ref, nb, run, created = rows["99_demo_fig.png"]
    assert (name, kind, nb, run) == ("99_demo_fig", "figure", "99_demo", "smoke / synthetic")
    assert ref == "Thaler et al. 2021, Fig. 3 \\| left"  # a '|' in a reference does not break the table
    dt.datetime.fromisoformat(created)
    assert rows["99_demo_table.md"][1] == "table"
    assert "1 figures, 1 tables" in text
    assert "## Files without a provenance record" in text and "- [stray.png](stray.png)" in text
    assert index_problems(tmp_path) == ["stray.png: no provenance record (save it with ctx.save_figure / ctx.save_table)"]
    # a deleted file and an incomplete record are reported
    (tmp_path / "stray.png").unlink()
    (tmp_path / "99_demo_table.md").unlink()
    style.save_figure(plt.figure(), tmp_path, "99_other", "", notebook="99_demo", profile="smoke", dataset="synthetic")
    write_index(tmp_path)
    problems = index_problems(tmp_path)
    assert "99_demo_table: file 99_demo_table.md of its record does not exist" in problems
    assert "99_other: provenance field 'paper_ref' missing or empty" in problems
    assert len(problems) == 2


def test_two_runs_are_flagged(tmp_path):
    for prof in ("smoke", "quick"):
        style.save_table(pd.DataFrame({"a": [1.0]}), tmp_path, f"99_{prof}", "-", notebook="99_demo", profile=prof,
                         dataset="synthetic")
    write_index(tmp_path)
    assert "more than one run (quick / synthetic, smoke / synthetic)" in (tmp_path / "INDEX.md").read_text()


def test_index_is_complete_after_a_smoke_run(tmp_path):
    """``run_all.sh --profile smoke`` (notebooks 00 and 08: tables and figures of two notebooks) leaves an
    INDEX.md that lists every figure/table file with its paper reference, notebook, profile/dataset and time.
    On a fresh cache 08 trains nothing: its line says the example figure was skipped and which command to run."""
    session_cache = tmp_path / "cache"
    root = tmp_path / "figures"
    figs = root / "smoke-synthetic"
    start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    res = subprocess.run([sys.executable, "-m", "lmkcore.cli", "--profile", "smoke", "--only", "00,08",
                          "--output-dir", str(tmp_path / "out"), "--figures-dir", str(root),
                          "--cache-dir", str(session_cache), "--device", "cpu"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert index_problems(figs) == []
    files = output_files(figs)
    rows = index_rows((figs / "INDEX.md").read_text())
    assert set(files) == set(rows)
    assert {"00_dataset_samples.png", "00_dataset_observer_stats.csv"} <= set(files)
    assert not any(f.startswith("08_explore_example") for f in files)
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("[2/2] 08_explore") and " ok " in ln)
    assert line.endswith(", 1 section skipped: no cached scn_aniso result (08 never trains); "
                         "run ./run_all.sh --only 01 --profile smoke first"), line
    assert not list(session_cache.rglob("*.pt")), "notebook 08 trained a model"
    for f in files:
        name, kind, _, ref, nb, run, created = rows[f]
        assert nb[:2] == f[:2] and nb in ("00_dataset", "08_explore"), f
        assert run == "smoke / synthetic" and ref, f
        assert kind == ("figure" if f.endswith((".png", ".pdf")) else "table"), f
        assert start <= dt.datetime.fromisoformat(created) <= dt.datetime.now(dt.timezone.utc), f
    # every figure comes as PNG + PDF, every table as CSV + Markdown
    stems = {f.rsplit(".", 1)[0] for f in files}
    for stem in stems:
        exts = {f.rsplit(".", 1)[1] for f in files if f.rsplit(".", 1)[0] == stem}
        assert exts in ({"png", "pdf"}, {"csv", "md"}), (stem, exts)


def test_root_index_links_every_run_folder_with_its_counts(tmp_path):
    for prof, n_tables in (("quick", 2), ("smoke", 1)):
        folder = tmp_path / run_folder_name(prof, "synthetic")
        for k in range(n_tables):
            style.save_table(pd.DataFrame({"a": [1.0]}), folder, f"99_t{k}", "-", notebook="99_demo", profile=prof,
                             dataset="synthetic")
        write_index(folder)
    (tmp_path / "not-a-run").mkdir()  # no provenance records: not a run folder
    assert [p.name for p in run_folders(tmp_path)] == ["quick-synthetic", "smoke-synthetic"]
    text = write_root_index(tmp_path).read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| [")]
    assert len(rows) == 2
    assert rows[0].startswith("| [quick-synthetic/](quick-synthetic/INDEX.md) | quick / synthetic | 0 | 2 | ")
    assert rows[1].startswith("| [smoke-synthetic/](smoke-synthetic/INDEX.md) | smoke / synthetic | 0 | 1 | ")
    assert "not-a-run" not in text


def test_committed_figures_live_in_the_default_run_folder():
    """The committed results are the default run's (quick / synthetic), each file indexed there; the root
    INDEX.md links that folder."""
    figs = REPO / "figures"
    from lmkcore.reporting.figure_index import FIGURE_SUFFIXES

    loose = [p.name for p in figs.iterdir() if p.is_file() and p.suffix in FIGURE_SUFFIXES + (".csv",)]
    assert loose == [] and not (figs / ".meta").exists()  # only reports (INDEX.md, README.md...) at the root
    default = figs / run_folder_name("quick", "synthetic")
    assert index_problems(default) == []
    assert "[quick-synthetic/](quick-synthetic/INDEX.md)" in (figs / "INDEX.md").read_text()
