"""The reproduction report ``figures/REPRODUCTION.md``: every number of the paper tables the package
reproduces, the paper's value beside the package's value of each run found in ``figures/``, with the
fidelity ledger's deviations for that table.

One row per number: (paper, table, row, column), the paper's value (from
:mod:`lmkcore.reporting.references`), and one column per (profile, dataset) run. The package's values
are read from the tables (CSV) the notebooks write, in either layout:

* per run: ``figures/<profile>-<dataset>/<name>.csv`` (profile and dataset from the table's
  ``.meta/<name>.json`` provenance, else from the folder name);
* flat: ``figures/<name>.csv`` with ``figures/.meta/<name>.json`` (runs told apart by the provenance).

Each reproduced number is a :class:`Target`: the CSV stems that may hold it, the row label(s) and the
column header(s) to look for (``~name`` matches a header ending in the word ``name``, e.g. ``"L10 gonion"`` but
not ``"L7 pogonion"``; ``@text`` reads the number after ``text`` in the table's first header). A cell ``"1.34 ± 0.30"`` is read as mean and SD. A number no run produced is shown as ``–``.
Datasets differ from the papers' (synthetic cephalograms, or cephalograms for PHD-Net's cardiac MRI): the
run columns say which data made each value.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from lmkcore.reporting import references as ref

__all__ = ["Target", "Run", "targets", "find_runs", "lookup", "ledger_deviations", "build_report",
           "write_reproduction"]

NA = math.nan
PROFILE_NAMES = ("paper-dry", "smoke", "quick", "paper")


# ----------------------------------------------------------------------------- what is reproduced
@dataclass(frozen=True)
class Target:
    """One number of a paper table and where the package writes its counterpart.

    Attributes
    ----------
    paper, table, row, column : str
        The paper's coordinates of the number (e.g. ``"Thaler et al. 2021"``, ``"Table 2"``,
        ``"Test1, Σ-target Σ̂-fit"``, ``"PE mean (mm)"``).
    value : float
        The paper's number; ``sd`` its ± part (NaN if none).
    sources : tuple of str
        CSV stems (without ``.csv``) that may hold the package's value, tried in order.
    rows : tuple
        Candidate row keys: a string matches the first column, a tuple matches the first columns.
    columns : tuple of str
        Candidate column headers (``~word``: a header ending in that word; ``@text``: the number after
        ``text`` in the first header).
    note : str
        Shown beside the row (e.g. which definition the package's number uses).
    sd_columns : tuple of str
        Headers of the package's SD of the value (same row), when the table keeps it in its own column.
    """

    paper: str
    table: str
    row: str
    column: str
    value: float
    sd: float = NA
    sources: tuple = ()
    rows: tuple = ()
    columns: tuple = ()
    note: str = ""
    sd_columns: tuple = ()


THALER, PAYER, MCCOUAT, SCHOBS = ("Thaler et al. 2021", "Payer et al. 2019", "McCouat & Voiculescu 2022",
                                  "Schobs et al. 2021")
SDR = ("SDR 2mm", "SDR 2.5mm", "SDR 3mm", "SDR 4mm")
SDR_LABELS = ("SDR 2 mm (%)", "SDR 2.5 mm (%)", "SDR 3 mm (%)", "SDR 4 mm (%)")


def _thaler_table2() -> list[Target]:
    out = []
    method = "Thaler et al. (2021) Σ-target, Σ̂-fit"
    for key, label, stem in (("test1", "Test1", "01_thaler_table2_accuracy_test1"),
                             ("test2", "Test2", "01_thaler_table2_accuracy_test2"),
                             ("cv_junior", "CV jun.", "01_thaler_table2_accuracy_cv_junior")):
        v = ref.THALER_TABLE2[(key, method)]
        rows = ("SCN Σ-target, Σ̂-fit",)
        out.append(Target(THALER, "Table 2", f"{label}, Σ-target Σ̂-fit", "PE (mm)", v[0], v[1], (stem,), rows,
                          ("PE mean",), sd_columns=("PE SD",)))
        for i, (col, lab) in enumerate(zip(SDR, SDR_LABELS)):
            out.append(Target(THALER, "Table 2", f"{label}, Σ-target Σ̂-fit", lab, v[2 + i], NA, (stem,), rows, (col,)))
    return out


_T4_METRIC = {"ratio": ("σmaj:σmin", "ratio σmaj:σmin"), "product": ("σmaj·σmin (mm²)", "product σmaj·σmin (mm²)"),
              "theta": ("θ (deg)",), "PE": ("PE (mm)",)}
_T4_LABEL = {"ratio": "σmaj:σmin", "product": "σmaj·σmin (mm²)", "theta": "θ (deg)", "PE": "PE (mm)"}


def _thaler_table34() -> list[Target]:
    out = []
    for (row, metric), values in ref.THALER_TABLE4.items():
        keys: list = []
        for m in _T4_METRIC[metric]:
            keys += [(row, m), (m, row)]
            if row == "Σ-target, Σ̂-fit":
                keys += [(m, "Σ̂-fit")]
            if row == "Σ-target, target":
                keys += [(m, "Σ-target")]
            if row == "Ann.":
                keys += [(m, "Ann."), (m.split(" ")[0] if " " in m else m,)]
        if row == "Ann." and metric in ("ratio", "product", "theta"):
            keys += [({"ratio": "ratio", "product": "product (mm^2)", "theta": "theta (deg)"}[metric],)]
        in_t3 = row in ("Ann.", "Σ-target, Σ̂-fit", "Σ-target, target") and metric != "PE"
        table = "Tables 3-4" if in_t3 else "Table 4"
        t3 = ("03_thaler_table3_distribution_parameters", "03_thaler_table3_ann_row")
        stems = t3 + ("04_thaler_table4_target_strategies_mcd",) if in_t3 else \
            ("04_thaler_table4_target_strategies_mcd",) + t3
        for lm, name, (mean, sd) in zip(range(1, 6), ref.THALER_TABLE4_LANDMARKS, values):
            out.append(Target(THALER, table, row, f"{_T4_LABEL[metric]} L{lm} ({name})", mean, sd, stems,
                              tuple(keys), (f"~{name}",)))
    return out


def _payer_table4() -> list[Target]:
    out = []
    # notebook 01's row labels: method_label("scn_payer") / ("unet_iso"), and their former names
    for method, ours in (("SCN (Payer et al. 2019)", ("SCN, learned σ (Payer et al. 2019)",
                                                      "SCN, σ-target (Payer et al. 2019)")),
                         ("Localization U-Net (Payer et al. 2019)", ("Localization U-Net, learned σ (Payer et al. 2019)",
                                                                     "Localization U-Net, σ-target"))):
        for r, o in zip(("2", "2.5", "3", "4"), ref.PAYER_TABLE4_OUTLIERS[method]):
            out.append(Target(PAYER, "Table 4", method.split(" (")[0], f"#O {r} mm (%)", o, NA,
                              ("01_payer_table4_outliers",), ours, (f"#O {r}mm %",)))
    return out


def _mccouat() -> list[Target]:
    out = []
    rows = ("one-hot U-Net, hottest pixel",)
    for key, label in (("test1", "Test1"), ("test2", "Test2")):
        v = ref.MCCOUAT_TABLE1[key]
        stem = f"06_mccouat_table1_localisation_{key}"
        out.append(Target(MCCOUAT, "Table 1", f"{label}, ours", "MRE (mm)", v[0], NA, (stem,), rows, ("PE mean",)))
        for i, (col, lab) in enumerate(zip(SDR, SDR_LABELS)):
            out.append(Target(MCCOUAT, "Table 1", f"{label}, ours", lab, v[1 + i], NA, (stem,), rows, (col,)))
    for row, v in ref.MCCOUAT_TABLE2.items():
        stem = ("06_mccouat_table2_good_erroneous",)
        out.append(Target(MCCOUAT, "Table 2", row, "# landmarks", v[0], NA, stem, (row,), ("# landmarks",)))
        out.append(Target(MCCOUAT, "Table 2", row, "MRE (mm)", v[1], NA, stem, (row,), ("PE mean",)))
        for i, (col, lab) in enumerate(zip(SDR, SDR_LABELS)):
            out.append(Target(MCCOUAT, "Table 2", row, lab, v[2 + i], NA, stem, (row,), (col,)))
    other = list(ref.MCCOUAT_OTHER.items())
    ece_label, ece = other[0]
    out.append(Target(MCCOUAT, "ECE (Fig. 4c)", "one-hot, after temperature scaling", "ECE (authors' code, x100)", ece,
                      NA, ("06_mccouat_calibration_definitions", "06_mccouat_fig4_ece"),
                      ("authors_code", "one-hot, after temperature scaling"), ("ECE", "ECE (%)"),
                      "package: the code's definition where 06 reports it (06_mccouat_calibration_definitions), "
                      "else the text's, in %"))
    out.append(Target(MCCOUAT, "ECE (Fig. 4c)", "one-hot, after temperature scaling", "ECE (paper text, fraction)",
                      ece / 100, NA, ("06_mccouat_calibration_definitions",), ("paper_text",), ("ECE",),
                      "paper value: 0.7 read on the text's scale would be 0.007"))
    out.append(Target(MCCOUAT, "ERE (Sec. 5.3.1)", "ERE threshold at TPR 0.5", "mm", other[1][1], NA,
                      ("06_mccouat_calibration_definitions", "06_mccouat_table2_good_erroneous"), ("paper_text",),
                      ("ERE threshold (mm)", "@ERE threshold"), "erroneous = error > 2 mm (text)"))
    out.append(Target(MCCOUAT, "ERE (Sec. 3.4)", "ERE vs error correlation", "r", other[2][1], NA,
                      ("06_mccouat_fig5_ere_vs_error_correlation", "06_mccouat_fig5_ere_vs_error"),
                      ("Pearson r (bins of 36)", "correlation"), ("~r", "~correlation")))
    return out


def _schobs() -> list[Target]:
    out = []
    for (method, (m, s)), ours in zip(ref.SCHOBS_TABLE1.items(), ("Binary + simple", "Gaussian + simple",
                                                                   "Gaussian + candidate smoothing")):
        out.append(Target(SCHOBS, "Table 1", method, "error (mm)", m, s, ("07_schobs_table1_mapping_and_coordinates",),
                          (ours,), ("PE mean",), sd_columns=("PE SD",)))
    # notebook 07's row labels: lmkcore.training.methods.method_label + ", argmax" (the U-Net's label before and
    # after it named Payer et al.); tests/test_phdnet.py checks they match
    ours_rows = {"Baseline [9]": ("Binary + simple (Noothout baseline)",), "Hourglass": (),
                 "U-Net": ("Localization U-Net, learned σ (Payer et al. 2019), argmax",
                           "Localization U-Net, σ-target, argmax"),
                 "PHD-Net": ("PHD-Net (candidate smoothing)",)}
    for model, cells in ref.SCHOBS_TABLE2.items():
        for (m, s), col, ours_col in zip(cells, ("SA All", "SA HiC", "4ch All", "4ch HiC"),
                                         ("All mean", "HiC(PHD-Net) mean", None, None)):
            out.append(Target(SCHOBS, "Table 2", model, f"{col} (mm)", m, s, ("07_schobs_table2_confidence",),
                              ours_rows[model] if ours_col else (), (ours_col,) if ours_col else (),
                              "package: one cephalogram set (no SA/4ch views)" if ours_col and ours_rows[model] else "",
                              (ours_col.replace(" mean", " SD"),) if ours_col else ()))
    for view, pct in ref.SCHOBS_TABLE2_HIC_PERCENT.items():
        out.append(Target(SCHOBS, "Table 2", "PHD-Net", f"{view} HiC share (%)", pct, NA,
                          ("07_schobs_table2_confidence",), ("PHD-Net (candidate smoothing)",) if view == "SA" else (),
                          ("own HiC %",) if view == "SA" else ()))
    return out


def targets() -> list[Target]:
    """Every reproduced paper number, in report order."""
    return _thaler_table2() + _thaler_table34() + _payer_table4() + _mccouat() + _schobs()


# ----------------------------------------------------------------------------- runs in figures/
@dataclass
class Run:
    """The tables of one (profile, dataset) run: ``tables`` maps a CSV stem to its path."""

    profile: str
    dataset: str
    tables: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.profile} / {self.dataset}"


def _meta(folder: Path, stem: str) -> dict:
    path = folder / ".meta" / f"{stem}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _split_folder_name(name: str) -> tuple[str, str]:
    for p in sorted(PROFILE_NAMES, key=len, reverse=True):
        if name.startswith(p + "-"):
            return p, name[len(p) + 1:]
    head, _, tail = name.partition("-")
    return head, tail or "?"


def find_runs(figures_dir: str | Path) -> list[Run]:
    """The runs whose tables are in ``figures_dir`` (flat layout and ``<profile>-<dataset>/`` folders),
    sorted by (profile, dataset)."""
    root = Path(figures_dir)
    runs: dict[tuple[str, str], Run] = {}

    def add(folder: Path, default: tuple[str, str] | None) -> None:
        for csv in sorted(folder.glob("*.csv")):
            meta = _meta(folder, csv.stem)
            dataset = str(meta.get("dataset") or (default or ("?", "?"))[1])
            if meta.get("reference") and "dataset" in meta:
                dataset += f" ({meta['reference']})"  # a run against another reference annotation set
            key = (str(meta.get("profile") or (default or ("?", "?"))[0]), dataset)
            runs.setdefault(key, Run(*key)).tables.setdefault(csv.stem, csv)

    if root.is_dir():
        add(root, None)
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            add(sub, _split_folder_name(sub.name))
    return [runs[k] for k in sorted(runs)]


# ----------------------------------------------------------------------------- reading a number
_PM = re.compile(r"^\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s*(?:±|\+-|\\pm)\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s*$")


def _parse(cell) -> tuple[float, float]:
    """``(mean, sd)`` of a cell: a number, or ``"a ± b"``; NaN when unreadable."""
    if isinstance(cell, (int, float)) and not isinstance(cell, bool):
        return float(cell), NA
    text = str(cell).strip()
    m = _PM.match(text)
    if m:
        return float(m.group(1)), float(m.group(2))
    try:
        return float(text), NA
    except ValueError:
        return NA, NA


def _read(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError):
        return None


def _match_column(columns: Iterable[str], wanted: str) -> str | None:
    cols = list(columns)
    if wanted.startswith("~"):  # a whole word at the end of the header: "L10 gonion", not "L7 pogonion"
        pattern = re.compile(rf"(^|[\s_(]){re.escape(wanted[1:].lower())}\)?$")
        hits = [c for c in cols if pattern.search(c.strip().lower())]
        return hits[0] if hits else None
    return wanted if wanted in cols else None


def lookup(run: Run, target: Target) -> tuple[float, float] | None:
    """The package's ``(value, sd)`` for ``target`` in ``run``, or None if no table holds it."""
    for stem in target.sources:
        path = run.tables.get(stem)
        if path is None:
            continue
        df = _read(path)
        if df is None or df.empty:
            continue
        for col in target.columns:
            if col.startswith("@"):  # a number in the first header, e.g. "test2, ERE threshold 1.870 mm"
                m = re.search(re.escape(col[1:]) + r"\s*([-+]?\d+(?:\.\d+)?)", df.columns[0])
                if m:
                    return float(m.group(1)), NA
                continue
            name = _match_column(df.columns[1:], col)
            if name is None:
                continue
            for key in target.rows:
                key = key if isinstance(key, tuple) else (key,)
                if len(key) >= df.shape[1]:
                    continue
                hit = pd.Series(True, index=df.index)
                for i, part in enumerate(key):
                    hit &= df.iloc[:, i].str.strip() == part
                if hit.any() and name not in df.columns[: len(key)]:
                    value = _parse(df.loc[hit, name].iloc[0])
                    if math.isnan(value[0]):
                        continue
                    for sd_col in target.sd_columns:
                        if math.isnan(value[1]) and sd_col in df.columns:
                            value = (value[0], _parse(df.loc[hit, sd_col].iloc[0])[0])
                    return value
    return None


# ----------------------------------------------------------------------------- the ledger
#: Ledger paper key and method (None: every method of the paper) behind each reproduced table.
LEDGER_KEYS = {
    (THALER, "Table 2"): ("thaler2021", "scn_aniso"),
    (THALER, "Tables 3-4"): ("thaler2021", "scn_aniso"),
    (THALER, "Table 4"): ("thaler2021", None),
    (PAYER, "Table 4"): ("payer2019", None),
    (MCCOUAT, None): ("mccouat2022", None),
    (SCHOBS, None): ("schobs2021", None),
}


def ledger_deviations(paper: str, table: str) -> list[str]:
    """The fidelity ledger's declared deviations (:mod:`lmkcore.training.ledger`, rows with a ``deviation``)
    for ``paper``'s ``table``, one line each; empty if there is no ledger or no deviation."""
    try:
        from lmkcore.training import ledger  # optional: built in parallel (issue 13)
    except ImportError:
        return []
    key = LEDGER_KEYS.get((paper, table)) or LEDGER_KEYS.get((paper, None))
    if key is None or not hasattr(ledger, "ledger_rows"):
        return []
    try:
        rows = ledger.ledger_rows(*key)
    except Exception:  # an unknown paper key in an older ledger: no rows rather than no report
        return []
    out = []
    for r in rows:
        deviation = str(getattr(r, "deviation", "") or "").strip()
        if not deviation:
            continue
        code = str(getattr(r, "authors_code", "") or "").strip()
        method = getattr(r, "method", "*")
        who = "" if method in ("*", None) else f" [{method}]"
        out.append(f"{r.setting}{who}: paper {r.paper_text}" + (f"; authors' code {code}" if code else "")
                   + f"; package {r.lmkcore} -- {deviation}")
    return out


# ----------------------------------------------------------------------------- the report
def _fmt(value: float, sd: float = NA) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    digits = 0 if float(value).is_integer() and abs(value) >= 100 else 3 if round(value, 2) != round(value, 3) \
        and abs(value) < 10 and len(repr(float(value))) <= 6 else 2
    s = f"{value:.{digits}f}"
    return s if sd is None or math.isnan(sd) else f"{s} ± {sd:.2f}"


def build_report(figures_dir: str | Path) -> str:
    """The Markdown text of the reproduction report for the runs in ``figures_dir``."""
    runs = find_runs(figures_dir)
    lines = ["# Reproduction report", "",
             "Every number of the paper tables this package reproduces: the paper's value and the package's value "
             "of each run whose tables are in `figures/` (`–`: not produced by that run). Written by "
             "`lmkcore.reporting.reproduction` at the end of `./run_all.sh`; regenerate with "
             "`python -m lmkcore.reporting.reproduction figures/`.", "",
             "The package's runs use other data than the papers' (the synthetic cephalograms; the ISBI 2015 "
             "cephalograms for PHD-Net's cardiac MRI) and, except `paper`, shortened training: compare "
             "trends, not decimals. Deviations are the fidelity ledger's declared differences for the table.", ""]
    if runs:
        lines.append("Runs: " + ", ".join(f"`{r.profile}-{r.dataset}` ({len(r.tables)} tables)" for r in runs))
    else:
        lines.append("Runs: none found in this folder yet.")
    lines.append("")
    groups: dict[tuple[str, str], list[Target]] = {}
    for t in targets():
        groups.setdefault((t.paper, t.table), []).append(t)
    for (paper, table), items in groups.items():
        lines += [f"## {paper}, {table}", ""]
        devs = ledger_deviations(paper, table)
        header = ["row", "column", "paper"] + [r.label for r in runs] + ["note"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for t in items:
            cells = [t.row, t.column, _fmt(t.value, t.sd)]
            for r in runs:
                v = lookup(r, t)
                cells.append(_fmt(*v) if v else "–")
            cells.append(t.note)
            lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
        lines.append("")
        if devs:
            lines += ["Ledger deviations for this table:", ""] + [f"- {d}" for d in devs] + [""]
        else:
            lines += ["Ledger deviations for this table: none recorded (or no ledger yet).", ""]
    return "\n".join(lines)


def write_reproduction(figures_dir: str | Path, path: str | Path | None = None) -> Path:
    """Write :func:`build_report` to ``path`` (default ``<figures_dir>/REPRODUCTION.md``); returns the path."""
    out = Path(path) if path is not None else Path(figures_dir) / "REPRODUCTION.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(build_report(figures_dir), encoding="utf-8")
    tmp.replace(out)
    return out


if __name__ == "__main__":
    import sys

    print(write_reproduction(sys.argv[1] if len(sys.argv) > 1 else "figures"))
