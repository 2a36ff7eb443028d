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
from lmkcore.reporting.figure_index import index_problems, output_files, write_index  # noqa: E402


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


def test_index_is_complete_after_a_smoke_run(tmp_path, session_cache):
    """``run_all.sh --profile smoke`` (notebooks 00 and 08: tables and figures of two notebooks) leaves an
    INDEX.md that lists every figure/table file with its paper reference, notebook, profile/dataset and time."""
    figs = tmp_path / "figures"
    start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    res = subprocess.run([sys.executable, "-m", "lmkcore.cli", "--profile", "smoke", "--only", "00,08",
                          "--output-dir", str(tmp_path / "out"), "--figures-dir", str(figs),
                          "--cache-dir", str(session_cache), "--device", "cpu"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert index_problems(figs) == []
    files = output_files(figs)
    rows = index_rows((figs / "INDEX.md").read_text())
    assert set(files) == set(rows)
    assert {"08_explore_example_thaler_fig4_fig7.png", "08_explore_example_thaler_fig4_fig7.pdf",
            "00_dataset_samples.png", "00_dataset_observer_stats.csv"} <= set(files)
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
