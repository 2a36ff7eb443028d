"""``figures/INDEX.md``: every figure and table file with its provenance, one folder per run.

Each ``(profile, dataset)`` run writes into its own folder
``figures/<profile>-<dataset>/`` (:func:`run_folder_name`), so a smoke run or
a run on real data never overwrites the committed quick/synthetic results.
:func:`lmkcore.reporting.style.save_figure` / ``save_table`` write one JSON record per
saved item into ``<figures_dir>/.meta/`` (files, paper figure/table, notebook,
profile, dataset, creation time); ``run_all.sh`` turns them into ``INDEX.md``
with :func:`write_index` (one ``INDEX.md`` per run folder) and
:func:`write_root_index` (``figures/INDEX.md``, linking every run folder). Files in the folder without a record (saved some
other way) are listed too, in a separate section, so the index names every
figure/table file; :func:`index_problems` says what is incomplete.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from lmkcore.data.formats import atomic_write_text

#: File types that count as figures or tables.
FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")
TABLE_SUFFIXES = (".csv", ".md", ".tex")
#: Provenance fields every record must have.
REQUIRED_FIELDS = ("name", "files", "kind", "paper_ref", "notebook", "profile", "dataset", "created")
INDEX_NAME = "INDEX.md"


def read_index_records(figures_dir: str | Path) -> list[dict]:
    """The provenance records written by :func:`lmkcore.reporting.style.save_figure` / ``save_table``, by name."""
    meta_dir = Path(figures_dir) / ".meta"
    records = []
    for path in sorted(meta_dir.glob("*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue  # a record being rewritten concurrently; it is rebuilt on the next run
    return records


def output_files(figures_dir: str | Path) -> list[str]:
    """Names of the figure/table files in ``figures_dir`` (not hidden, not ``INDEX.md``), sorted."""
    figures_dir = Path(figures_dir)
    if not figures_dir.is_dir():
        return []
    return sorted(p.name for p in figures_dir.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.name != INDEX_NAME
                  and p.suffix.lower() in FIGURE_SUFFIXES + TABLE_SUFFIXES)


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def index_problems(figures_dir: str | Path) -> list[str]:
    """What keeps ``INDEX.md`` from describing every file completely (empty list: complete).

    Checks that every figure/table file has a provenance record, every record's
    files exist, every record has the :data:`REQUIRED_FIELDS` (non-empty) and a
    parseable ISO creation time, and that ``INDEX.md`` links every file.
    """
    figures_dir = Path(figures_dir)
    problems = []
    records = read_index_records(figures_dir)
    recorded = {}
    for rec in records:
        name = rec.get("name", "?")
        for key in REQUIRED_FIELDS:
            if rec.get(key) in (None, "", []):
                problems.append(f"{name}: provenance field {key!r} missing or empty")
        try:
            _dt.datetime.fromisoformat(str(rec.get("created")))
        except ValueError:
            problems.append(f"{name}: created {rec.get('created')!r} is not an ISO time")
        for f in rec.get("files", []):
            recorded[f] = name
            if not (figures_dir / f).is_file():
                problems.append(f"{name}: file {f} of its record does not exist")
    for f in output_files(figures_dir):
        if f not in recorded:
            problems.append(f"{f}: no provenance record (save it with ctx.save_figure / ctx.save_table)")
    index = figures_dir / INDEX_NAME
    text = index.read_text() if index.is_file() else ""
    if not text:
        problems.append(f"{INDEX_NAME} missing")
    else:
        for f in output_files(figures_dir):
            if f"]({f})" not in text:
                problems.append(f"{f}: not listed in {INDEX_NAME}")
    return problems


def write_index(figures_dir: str | Path) -> Path:
    """Write ``<figures_dir>/INDEX.md`` listing every saved figure/table whose files exist.

    One row per figure (PNG + PDF) or table (CSV + Markdown), ordered by
    notebook and name, with its paper figure/table, notebook, profile/dataset
    and creation time (UTC); then any figure/table files without a provenance
    record. A note says when the rows come from more than one profile or
    dataset (files left from earlier runs).
    """
    figures_dir = Path(figures_dir)
    rows, runs, recorded = [], set(), set()
    n_fig = n_tab = 0
    records = sorted(read_index_records(figures_dir), key=lambda r: (str(r.get("notebook", "")), str(r.get("name", ""))))
    for rec in records:
        files = [f for f in rec.get("files", []) if (figures_dir / f).is_file()]
        if not files:
            continue
        recorded.update(files)
        kind = rec.get("kind", "?")
        n_fig += kind == "figure"
        n_tab += kind == "table"
        runs.add((rec.get("profile", "?"), rec.get("dataset", "?")))
        rows.append(
            "| {name} | {kind} | {files} | {ref} | {nb} | {prof} / {ds} | {when} |".format(
                name=_cell(rec.get("name", "?")),
                kind=_cell(kind),
                files=", ".join(f"[{f}]({f})" for f in files),
                ref=_cell(rec.get("paper_ref", "-")),
                nb=_cell(rec.get("notebook", "?")),
                prof=_cell(rec.get("profile", "?")),
                ds=_cell(rec.get("dataset", "?")),
                when=_cell(rec.get("created", "?")),
            )
        )
    text = (
        "# Figures and tables\n\n"
        "Regenerated by `./run_all.sh`; one row per figure (PNG + PDF) or table (CSV + Markdown): "
        f"{n_fig} figures, {n_tab} tables.\n\n"
    )
    if len(runs) > 1:
        text += ("**Note:** these rows come from more than one run ("
                 + ", ".join(f"{p} / {d}" for p, d in sorted(runs))
                 + "); files of an earlier run stay until overwritten.\n\n")
    text += (
        "| name | kind | files | paper figure/table | notebook | profile / dataset | created (UTC) |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    untracked = [f for f in output_files(figures_dir) if f not in recorded]
    if untracked:
        text += ("\n## Files without a provenance record\n\n"
                 "Saved without `ctx.save_figure` / `ctx.save_table`, so their paper reference and origin are unknown.\n\n"
                 + "\n".join(f"- [{f}]({f})" for f in untracked) + "\n")
    path = figures_dir / INDEX_NAME
    atomic_write_text(path, text)
    return path


def run_folder_name(profile: str, dataset: str, reference: str | None = None) -> str:
    """The folder (below the figures root) of a ``(profile, dataset)`` run, e.g. ``"quick-synthetic"``;
    a run against another ``reference`` annotation set than the dataset's default gets its own folder,
    e.g. ``"quick-isbi2015-junior"``."""
    return f"{profile}-{dataset}" + (f"-{reference}" if reference else "")


def run_folders(figures_root: str | Path) -> list[Path]:
    """The run folders below ``figures_root``: sub-folders holding provenance records (``.meta/``), sorted."""
    root = Path(figures_root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / ".meta").is_dir())


def write_root_index(figures_root: str | Path) -> Path:
    """Write ``<figures_root>/INDEX.md``: one row per run folder, linking its own ``INDEX.md``.

    Each row gives the folder, the profile/dataset of its records, how many
    figures and tables it holds and when the newest was made (UTC). The
    per-folder ``INDEX.md`` files (:func:`write_index`) list the files.
    """
    root = Path(figures_root)
    rows = []
    for folder in run_folders(root):
        recs = [r for r in read_index_records(folder)
                if any((folder / f).is_file() for f in r.get("files", []))]
        runs = sorted({f"{r.get('profile', '?')} / {r.get('dataset', '?')}"
                       + (f" (reference {r['reference']})" if r.get("reference") else "") for r in recs})
        n_fig = sum(r.get("kind") == "figure" for r in recs)
        n_tab = sum(r.get("kind") == "table" for r in recs)
        newest = max((str(r.get("created", "")) for r in recs), default="-")
        link = f"[{folder.name}/]({folder.name}/{INDEX_NAME})"
        rows.append(f"| {link} | {_cell(', '.join(runs) or '-')} | {n_fig} | {n_tab} | {_cell(newest)} |")
    text = (
        "# Figures and tables, by run\n\n"
        "`./run_all.sh --profile P --dataset D` writes its figures (PNG + PDF) and tables (CSV + Markdown) to "
        "`figures/P-D/` (`figures/P-D-R/` with `--param reference=R`), so runs never overwrite each other; the committed "
        "results are those of the default run, `quick-synthetic/`, and the tables of the quick runs on the real ISBI 2015 "
        "data (their figures are not committed: some show the images). Each folder's `INDEX.md` lists its files with "
        "the paper figure/table, notebook and time.\n\n"
        "| run folder | profile / dataset | figures | tables | newest (UTC) |\n"
        "|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    path = root / INDEX_NAME
    atomic_write_text(path, text)
    return path
