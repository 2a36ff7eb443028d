"""One figure style for every notebook, and saving figures/tables with provenance.

Every figure is written as PNG and PDF; every table as CSV and Markdown. Each
saved item also gets a small JSON record in ``<figures_dir>/.meta/`` (paper
reference, notebook, profile, dataset, time) from which ``run_all.sh`` builds
``figures/INDEX.md``.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import re
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt

from lmkcore.data.formats import atomic_write_text
from lmkcore.data.integrity import temp_path

#: Colours used for the same concept in every figure.
COLORS = {
    "truth": "#2ca02c",        # ground truth / true positions
    "prediction": "#d62728",   # predicted points (and prediction-target offsets)
    "senior": "#1f77b4",
    "junior": "#ff7f0e",
    "observer": "#9467bd",     # other observers' annotations
    "declared": "#e377c2",     # declared (synthetic) annotation covariance
    "fitted": "#17becf",       # Sigma-hat, the Gaussian fitted to a predicted heatmap
    "learned": "#2ca02c",      # Sigma, the learned target covariance (Thaler et al. draw it green)
    "argmax": "#ffbb78",       # heatmap maximum, where shown next to the fitted centre
    "offsets_fit": "#595959",  # Gaussian fitted to a cloud of offsets (Thaler et al. Figs. 4-5: grey)
}

#: Colour maps: grey images, heatmaps overlaid on them.
CMAPS = {"image": "gray", "heatmap": "inferno"}

#: Method colours in :data:`lmkcore.training.methods.METHODS` order (tab10 without the concept colours above
#: where possible); see :func:`method_color`.
_METHOD_PALETTE = ("#1f77b4", "#ff7f0e", "#8c564b", "#9467bd", "#7f7f7f", "#bcbd22", "#17becf", "#e377c2",
                   "#2ca02c", "#d62728")


def method_color(method: str) -> str:
    """The colour of method ``method`` (a :data:`lmkcore.training.methods.METHODS` key or a label) in every figure.

    Registered methods get a fixed colour by their position in ``METHODS``; any other name a
    deterministic one from the same palette (by a checksum of the name, not Python's salted hash).
    """
    import zlib

    from lmkcore.training.methods import METHODS

    keys = list(METHODS)
    if method in keys:
        return _METHOD_PALETTE[keys.index(method) % len(_METHOD_PALETTE)]
    return _METHOD_PALETTE[zlib.crc32(str(method).encode()) % len(_METHOD_PALETTE)]


def apply_style() -> None:
    """Set the package-wide matplotlib style (called by :func:`lmkcore.reporting.notebook.setup_notebook`)."""
    matplotlib.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": 150,
            "savefig.bbox": "tight",
            "font.size": 9,
            "axes.titlesize": 10,
            "axes.labelsize": 9,
            "legend.fontsize": 8,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "image.cmap": "gray",
        }
    )


def _write_meta(figures_dir: Path, name: str, files: list[str], provenance: dict[str, Any]) -> None:
    meta = {
        "name": name,
        "files": files,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **provenance,
    }
    atomic_write_text(figures_dir / ".meta" / f"{name}.json", json.dumps(meta, indent=1))


def save_figure(fig, figures_dir: str | Path, name: str, paper_ref: str, **provenance: Any) -> list[Path]:
    """Save ``fig`` as ``<name>.png`` and ``<name>.pdf`` in ``figures_dir``.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    figures_dir : path
    name : str
        File stem, e.g. ``"00_dataset_samples"``; say which paper figure it
        reproduces in the name where there is one (``"01_thaler_fig3_..."``).
    paper_ref : str
        Paper figure/table it corresponds to (``"Thaler et al. 2021, Fig. 3"``)
        or ``"-"`` for figures of our own.
    **provenance
        Stored in the index record (notebook, profile, dataset...).
    """
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        path = figures_dir / f"{name}.{ext}"
        tmp = temp_path(path, f".tmp.{ext}")  # unique per writer (concurrent runs); the extension stays last
        fig.savefig(tmp)
        tmp.replace(path)
        paths.append(path)
    _write_meta(figures_dir, name, [p.name for p in paths], {"paper_ref": paper_ref, "kind": "figure", **provenance})
    return paths


#: Units added to Markdown table headers that lack them (the CSV keeps the plain column names that code reads):
#: point/radial errors in mm, success detection rates in %.
HEADER_UNITS = ((re.compile(r"^(PE|MRE|ERE|RE)( |$)"), "mm"), (re.compile(r"^SDR \d"), "%"))


def header_with_unit(name: str) -> str:
    """``"PE mean"`` -> ``"PE mean (mm)"``, ``"SDR 2mm"`` -> ``"SDR 2mm (%)"``; unchanged when it has a unit already."""
    if "(" in name or "%" in name:
        return name
    for pattern, unit in HEADER_UNITS:
        if pattern.search(name):
            return f"{name} ({unit})"
    return name


def markdown_table(df, float_format: str = "{:.3g}") -> str:
    """Render a pandas DataFrame as a GitHub-flavoured Markdown table (index included).

    Floats use ``float_format`` (NaN: empty); integer columns stay integers (a count
    prints ``1900``, not ``1900.00``); headers get their units (:func:`header_with_unit`).
    """
    import numpy as np

    def fmt(v: Any) -> str:
        if isinstance(v, (bool, np.bool_)):
            return str(bool(v))
        if isinstance(v, (int, np.integer)):
            return str(int(v))
        if isinstance(v, (float, np.floating)):
            return "" if math.isnan(v) else float_format.format(float(v))
        return str(v)

    header = [str(df.index.name or "")] + [header_with_unit(str(c)) for c in df.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in df.itertuples(index=True, name=None):  # keeps each column's dtype (iterrows upcasts to float)
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def save_table(df, figures_dir: str | Path, name: str, paper_ref: str, float_format: str = "{:.3g}", **provenance: Any) -> list[Path]:
    """Save a DataFrame as ``<name>.csv`` and ``<name>.md`` (see :func:`save_figure`)."""
    figures_dir = Path(figures_dir)
    csv_path, md_path = figures_dir / f"{name}.csv", figures_dir / f"{name}.md"
    atomic_write_text(csv_path, df.to_csv())
    atomic_write_text(md_path, markdown_table(df, float_format))
    _write_meta(figures_dir, name, [csv_path.name, md_path.name], {"paper_ref": paper_ref, "kind": "table", **provenance})
    return [csv_path, md_path]


def close(fig) -> None:
    """Close a figure after saving (keeps notebook memory bounded)."""
    plt.close(fig)
