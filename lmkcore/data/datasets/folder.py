"""Generic folder format for any other landmark data (2D or 3D, any SimpleITK format).

Layout::

    <data_root>/landmarks.csv              one row per image: annotation set "gt"
    <data_root>/landmarks_<observer>.csv   optional further annotation sets, same columns
    <data_root>/images/                    the images, one file each, any format SimpleITK
                                           reads: .png .bmp .jpg .mha/.mhd .nii.gz .nrrd ...
                                           (convert a DICOM series to one .mha/.nii.gz first)
    <data_root>/splits/                    optional split lists: <name>.txt and
                                           cv/set<k>/<name>.txt (-> "cv<k>/<name>"),
                                           one image id per line

CSV columns (comma separated, header row required)::

    image,<name1>_x,<name1>_y[,<name1>_z],<name2>_x,...[,spacing_x,spacing_y[,spacing_z]]

* ``image`` (or ``id``): the image file, relative to ``images/`` (else to
  ``data_root``, or absolute), or just its id (the file name without folder and
  extension, looked up in ``images/``). The image id is that file name without
  extension.
* One column per coordinate, ``x`` (column), ``y`` (row) and, for 3D, ``z``
  (slice), grouped per landmark in that order. The landmark names are the
  column prefixes; the numbered form ``x1,y1[,z1],x2,...`` is accepted too
  (names ``L1``, ``L2``, ...). The dimension (2 or 3) follows from the header
  and must match the images.
* An empty field or ``nan`` marks a missing landmark: it stays NaN (never
  dropped), with one warning counting them.
* Optional ``spacing_x,spacing_y[,spacing_z]``: mm per pixel of that image.

Units of the coordinates (``units=``):

``"px"`` (default)
    Pixels, origin at the centre of the first pixel (integer = pixel centre).
``"mm"``
    ``pixel * spacing``: same origin, scaled by the spacing (as the ISBI CSV
    setup files); header origin and direction are ignored.
``"world"``
    Physical ITK (LPS) coordinates; converted with the header origin, direction
    and spacing.

Spacing (mm/px) of each image: the CSV spacing columns, else the ``spacing=``
option, else the image header. A CSV spacing that contradicts an informative
header spacing (not all 1.0) is an error ("mixed spacings"); so are 2D and 3D
images in one dataset.
"""
from __future__ import annotations

import csv
import math
import os
import re
from pathlib import Path

import numpy as np

from lmkcore.errors import ConfigError, DataError
from lmkcore.data.records import LandmarkDataset
from lmkcore.data.datasets import register
from lmkcore.data.datasets._common import (
    ImageInfo,
    check_landmarks,
    check_split_ids,
    existing_dir,
    find_images,
    image_id,
    read_infos,
    read_split_files,
    report,
    warn,
)

_OPTIONS = {"units", "spacing", "landmarks", "images_dir", "splits_dir", "name", "missing_images", "verbose"}
_NAMED = re.compile(r"^(?P<name>.+)_(?P<axis>[xyz])$", re.IGNORECASE)
_NUMBERED = re.compile(r"^(?P<axis>[xyz])(?P<num>\d+)$", re.IGNORECASE)


def parse_landmark_header(header: list[str], path: Path) -> tuple[tuple[str, ...], int, list[int], list[int]]:
    """Parse the header of a folder-format CSV.

    Returns
    -------
    names : tuple of str
        Landmark names, in column order.
    ndim : int
        2 or 3.
    coord_cols : list of int
        Column index of each coordinate, ``N * D`` of them in landmark-major order.
    spacing_cols : list of int
        Columns ``spacing_x, spacing_y[, spacing_z]`` or ``[]``.
    """
    if not header or header[0].strip().lower() not in ("image", "id"):
        raise DataError(f"{path}: first header column must be 'image' (or 'id'), got {header[0] if header else ''!r}")
    cols = [h.strip() for h in header[1:]]
    spacing_cols = [k + 1 for k, h in enumerate(cols) if h.lower().startswith("spacing_")]
    coord = [(k + 1, h) for k, h in enumerate(cols) if not h.lower().startswith("spacing_")]
    if spacing_cols:
        axes = [header[k].strip().lower()[8:] for k in spacing_cols]
        if axes not in (["x", "y"], ["x", "y", "z"]):
            raise DataError(f"{path}: spacing columns must be spacing_x,spacing_y[,spacing_z], got {[header[k] for k in spacing_cols]}")
    parsed = []
    for k, h in coord:
        m = _NUMBERED.match(h)
        if m:
            parsed.append((k, f"L{int(m['num'])}", m["axis"].lower(), h))
            continue
        m = _NAMED.match(h)
        if not m:
            raise DataError(f"{path}: header column {k + 1} {h!r} is not a coordinate (<name>_x, _y, _z or x1, y1, ...)")
        parsed.append((k, m["name"], m["axis"].lower(), h))
    if not parsed:
        raise DataError(f"{path}: header has no coordinate columns")
    ndim = 3 if any(a == "z" for _, _, a, _ in parsed) else 2
    axes = "xyz"[:ndim]
    if len(parsed) % ndim:
        raise DataError(f"{path}: {len(parsed)} coordinate columns is not a multiple of {ndim} ({'/'.join(axes)} per landmark)")
    names = []
    for j in range(0, len(parsed), ndim):
        group = parsed[j: j + ndim]
        got = "".join(a for _, _, a, _ in group)
        name = group[0][1]
        if got != axes or any(g[1] != name for g in group):
            raise DataError(
                f"{path}: columns {', '.join(g[3] for g in group)} (columns {group[0][0] + 1}-{group[-1][0] + 1}) "
                f"are not the {'/'.join(axes)} of one landmark"
            )
        if name in names:
            raise DataError(f"{path}: landmark {name!r} appears twice in the header")
        names.append(name)
    if spacing_cols and len(spacing_cols) != ndim:
        raise DataError(f"{path}: {len(spacing_cols)} spacing columns for {ndim}D landmarks")
    return tuple(names), ndim, [k for k, _, _, _ in parsed], spacing_cols


def read_folder_csv(path: str | os.PathLike):
    """Read one folder-format landmark CSV.

    Returns
    -------
    refs : list of str
        The ``image`` column (file reference or id), in file order.
    names : tuple of str
    landmarks : ndarray
        ``(M, N, D)`` in the file's units; NaN where empty or ``nan``.
    spacing : ndarray or None
        ``(M, D)`` from the spacing columns.
    lines : list of int
        The line number of each row (for messages).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: landmark file not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot read landmark file ({err})") from None
    if not rows:
        raise DataError(f"{path}: empty landmark file")
    header = rows[0]
    names, ndim, coord_cols, spacing_cols = parse_landmark_header(header, path)
    refs, values, spacings, lines = [], [], [], []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or not any(f.strip() for f in row):
            continue
        if len(row) != len(header):
            raise DataError(
                f"{path}, line {lineno}: {len(row)} fields for image {row[0].strip()!r}, expected {len(header)} "
                f"({len(names)} landmarks x {ndim} coordinates{' + spacing' if spacing_cols else ''} + image)"
            )
        ref = row[0].strip()
        if not ref:
            raise DataError(f"{path}, line {lineno}: empty image column")
        if ref in refs:
            raise DataError(f"{path}, line {lineno}: duplicate image {ref!r}")

        def num(k: int) -> float:
            text = row[k].strip()
            if not text:
                return math.nan
            try:
                return float(text)
            except ValueError:
                raise DataError(f"{path}, line {lineno}: non-numeric value {text!r} in column {header[k]!r}") from None

        values.append([num(k) for k in coord_cols])
        if spacing_cols:
            sp = [num(k) for k in spacing_cols]
            if not all(math.isfinite(v) and v > 0 for v in sp):
                raise DataError(f"{path}, line {lineno}: spacing must be positive numbers, got {sp}")
            spacings.append(sp)
        refs.append(ref)
        lines.append(lineno)
    if not refs:
        raise DataError(f"{path}: no landmark rows")
    arr = np.asarray(values, dtype=np.float64).reshape(len(refs), len(names), ndim)
    if np.isinf(arr).any():
        i = int(np.argwhere(np.isinf(arr))[0][0])
        raise DataError(f"{path}, line {lines[i]}: infinite coordinate")
    return refs, names, arr, (np.asarray(spacings) if spacing_cols else None), lines


def _resolve_image(ref: str, root: Path, images_dir: Path, by_id: dict[str, Path] | None, csv_path: Path, lineno: int) -> Path:
    cand = [Path(ref)] if Path(ref).is_absolute() else [images_dir / ref, root / ref]
    for c in cand:
        if c.is_file():
            return c
    if by_id is not None and ref in by_id:
        return by_id[ref]
    raise DataError(f"{csv_path}, line {lineno}: image {ref!r} not found (looked in {images_dir} and {root})")


def _world_to_px(points: np.ndarray, info: ImageInfo) -> np.ndarray:
    d = len(info.size)
    direction = np.asarray(info.direction, dtype=np.float64).reshape(d, d)
    origin = np.asarray(info.origin, dtype=np.float64)
    spacing = np.asarray(info.spacing, dtype=np.float64)
    # world = origin + direction @ (spacing * index)  ->  index = (direction^-1 (world - origin)) / spacing
    inv = np.linalg.inv(direction)
    return ((points - origin) @ inv.T) / spacing


@register("folder")
def load(data_root, *, reference: str | None = None, **kw) -> LandmarkDataset:
    """Load a dataset in the generic folder format (see the module docstring).

    Parameters
    ----------
    data_root : path
        The folder.
    reference : str, optional
        Annotation set used as ground truth: ``"gt"`` (``landmarks.csv``) by
        default, or ``<observer>`` of a ``landmarks_<observer>.csv``. The rows of
        ``landmarks.csv`` (else of the first file) define the images and their
        order; the other files may leave images out (NaN) but not add any.
    units : {"px", "mm", "world"}, keyword
        Units of the CSV coordinates (default ``"px"``).
    spacing : float or sequence, keyword
        mm per pixel for every image, instead of the image headers (e.g. for
        PNG/BMP/JPEG, whose headers hold none). Not with spacing columns.
    landmarks : str, keyword
        Landmark file name instead of ``landmarks.csv`` (then the only set, named
        after ``reference`` or ``"gt"``).
    images_dir, splits_dir : str, keyword
        Sub-folder names (default ``images``, ``splits``).
    name : str, keyword
        Dataset name in the record (default ``"folder"``).
    missing_images : {"error", "skip"}, keyword
        A split id without an image: error (default) or dropped with a warning.
    verbose : bool, keyword
        Print what was found.

    Returns
    -------
    LandmarkDataset
        ids in CSV row order; ``extras``: ``header_spacing``, ``units``,
        ``layout`` (files used), ``spacing_source`` (``"csv"``, ``"option"`` or
        ``"header"``).
    """
    unknown = set(kw) - _OPTIONS
    if unknown:
        raise ConfigError(f"folder: unknown option(s) {sorted(unknown)}; known: reference, {', '.join(sorted(_OPTIONS))}")
    units = kw.get("units", "px")
    if units not in ("px", "mm", "world"):
        raise ConfigError(f"folder: units must be 'px', 'mm' or 'world', got {units!r}")
    missing = kw.get("missing_images", "error")
    if missing not in ("error", "skip"):
        raise ConfigError(f"folder: missing_images must be 'error' or 'skip', got {missing!r}")
    verbose = bool(kw.get("verbose", True))
    name = str(kw.get("name", "folder"))
    opt_spacing = kw.get("spacing")

    root = existing_dir(data_root, "folder data_root")
    images_dir = root / kw.get("images_dir", "images")
    splits_dir = root / kw.get("splits_dir", "splits")
    if kw.get("landmarks"):
        files = {reference or "gt": root / kw["landmarks"]}
    else:
        files = {}
        if (root / "landmarks.csv").is_file():
            files["gt"] = root / "landmarks.csv"
        for f in sorted(root.glob("landmarks_*.csv")):
            files[f.stem[len("landmarks_"):]] = f
    if not files:
        raise DataError(f"{root}: no landmarks.csv (or landmarks_<observer>.csv) found")
    if reference is None:
        reference = "gt" if "gt" in files else next(iter(files))
    if reference not in files:
        raise ConfigError(f"folder: unknown reference {reference!r}; annotation sets here: {', '.join(files)}")

    by_id = find_images(images_dir) if images_dir.is_dir() else None
    primary = "gt" if "gt" in files else next(iter(files))
    t_file = files[primary]  # its rows define the images, in its order
    refs, names, raw, csv_spacing, lines = read_folder_csv(t_file)
    ndim = raw.shape[-1]
    paths = [_resolve_image(r, root, images_dir, by_id, t_file, ln) for r, ln in zip(refs, lines)]
    ids = [image_id(p.name) for p in paths]
    seen: dict[str, int] = {}
    for k, i in enumerate(ids):
        if i in seen:
            raise DataError(f"{t_file}, line {lines[k]}: image id {i!r} also on line {lines[seen[i]]}")
        seen[i] = k
    infos = read_infos(paths)
    first = infos[0]
    for info, ln in zip(infos, lines):
        if info.ndim != first.ndim:
            raise DataError(
                f"{info.path}: mixed dimensions: {info.ndim}D image (size {info.size}) but {first.path.name} is "
                f"{first.ndim}D ({t_file}, line {ln})"
            )
    if first.ndim != ndim:
        raise DataError(f"{t_file}: {ndim}D landmarks (header) but the images are {first.ndim}D ({first.path})")
    sizes = np.array([info.size for info in infos], dtype=np.int64)
    header_spacing = np.array([info.spacing for info in infos], dtype=np.float64)

    # spacing
    if csv_spacing is not None and opt_spacing is not None:
        raise ConfigError(f"folder: {t_file} has spacing columns; do not pass spacing= as well")
    if units == "world" and (csv_spacing is not None or opt_spacing is not None):
        raise ConfigError("folder: units='world' uses the header geometry; spacing columns or spacing= contradict it")
    if csv_spacing is not None:
        spacing, source = csv_spacing.astype(np.float64), "csv"
        for info, sp, ln in zip(infos, spacing, lines):
            if info.has_spacing and not np.allclose(info.spacing, sp, rtol=1e-4):
                raise DataError(
                    f"{info.path}: mixed spacings: header spacing {list(info.spacing)} but {t_file}, line {ln} "
                    f"says {sp.tolist()}"
                )
    elif opt_spacing is not None:
        sp = np.broadcast_to(np.asarray(opt_spacing, dtype=np.float64), (ndim,))
        if not (np.all(np.isfinite(sp)) and np.all(sp > 0)):
            raise ConfigError(f"folder: spacing must be positive, got {opt_spacing!r}")
        spacing, source = np.tile(sp, (len(ids), 1)), "option"
    else:
        spacing, source = header_spacing.copy(), "header"
        if not any(info.has_spacing for info in infos):
            warn(f"folder: no image header in {images_dir} stores a spacing; using 1 mm/px (pass spacing= to set it)")

    def to_px(arr: np.ndarray, rows: list[int]) -> np.ndarray:
        if units == "px":
            return arr
        if units == "mm":
            return arr / spacing[rows][:, None, :]
        return np.stack([_world_to_px(arr[j], infos[r]) for j, r in enumerate(rows)])

    annotations = {primary: to_px(raw, list(range(len(ids))))}
    sources = {primary: t_file}
    provided = {primary: list(range(len(ids)))}
    pos = {r: k for k, r in enumerate(refs)}
    pos.update({i: k for k, i in enumerate(ids)})
    for obs, f in files.items():
        if obs == primary:
            continue
        o_refs, o_names, o_raw, _, o_lines = read_folder_csv(f)
        if o_names != names:
            raise DataError(f"{f}: landmark columns differ from {t_file} ({len(o_names)} vs {len(names)} landmarks or other names)")
        arr = np.full((len(ids), len(names), ndim), np.nan)
        rows, src_rows = [], []
        for j, (r, ln) in enumerate(zip(o_refs, o_lines)):
            k = pos.get(r, pos.get(image_id(r)))
            if k is None:
                raise DataError(f"{f}, line {ln}: image {r!r} is not in {t_file.name}")
            rows.append(k)
            src_rows.append(j)
        arr[rows] = to_px(o_raw[src_rows], rows)
        annotations[obs] = arr
        sources[obs] = f
        provided[obs] = rows
        if len(rows) < len(ids):
            warn(f"folder: {f} annotates {len(rows)} of the {len(ids)} images of {t_file.name}; NaN for the others")
    for obs, arr in annotations.items():
        check_landmarks(f"{obs} annotations", ids, arr, sizes, sources[obs], names)
        n_nan = int(np.isnan(arr[provided[obs]]).any(-1).sum())
        if n_nan:
            warn(f"folder: {n_nan} landmark(s) missing (NaN) in {sources[obs]}; kept as NaN")

    splits = check_split_ids(read_split_files(splits_dir), ids, missing=missing) if splits_dir.is_dir() else {}
    report(
        f"{name}: {len(ids)} {ndim}D images, {len(names)} landmarks, annotation sets "
        f"{', '.join(annotations)} ({units}), spacing from {source}, {len(splits)} splits",
        verbose,
    )
    return LandmarkDataset(
        name=name,
        ids=ids,
        image_paths=paths,
        landmark_names=names,
        annotations=annotations,
        reference=reference,
        spacing=spacing,
        image_size=sizes,
        splits=splits,
        extras={
            "header_spacing": header_spacing,
            "units": units,
            "spacing_source": source,
            "layout": {"annotations": {k: str(v) for k, v in sources.items()}, "images": str(images_dir),
                       "splits": str(splits_dir) if splits_dir.is_dir() else None},
        },
    )
