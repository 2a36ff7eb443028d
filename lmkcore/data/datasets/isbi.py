"""ISBI 2015 cephalometric dataset (400 lateral cephalograms, 19 landmarks).

Wang et al., MedIA 31 (2016); senior/junior annotations of Lindner et al.,
Sci. Rep. 6 (2016); the 11-observer set of Thaler et al., MELBA (2021).

Layouts read (any image layout with any annotation layout)
-----------------------------------------------------------
Images
    (a) *challenge*: ``RawImage/{TrainingData,Test1Data,Test2Data}/NNN.bmp``
        (any image format SimpleITK reads is accepted in those folders).
        The folder gives the split: train / test1 / test2.
    (c) *JPEG*: ``cepha400/NNN.jpg`` (3-channel grey, decoded as grey).
Annotations
    (a) *challenge*: ``AnnotationsByMD/400_senior/NNN.txt`` and ``400_junior``
        (also accepted without the ``AnnotationsByMD`` level): 19 lines ``x,y``
        in pixels, optionally followed by 8 clinical class lines (one integer
        each: ANB, SNB, SNA, ODI, APDI, FHI, FMA, MW).
    (b) *CSV setup* (Payer et al. / Thaler et al.): ``all_senior.csv``,
        ``all_junior.csv``, ``all_challenge.csv`` (``id,x1,y1,...`` in mm at
        0.1 mm/px, no header), ``train.txt``, ``test1.txt``, ``test2.txt``,
        ``test_all.txt``, ``cv/set<k>/{train,val}.txt``; the 11-observer files
        ``5_landmarks/5lms_{ann1..ann9,senior,junior}.csv`` with ``cv/set<k>``.
    (c) *JPEG*: ``{train,test1,test2}_senior.csv`` beside ``cepha400/`` (header
        ``image_path,1_x,1_y,...``, integer pixels, rows in any order).

Detection rules (in this order; see :func:`load`)
    1. Images are searched under ``data_root`` only. Challenge layout: ``data_root``
       holds ``RawImage/`` with one of the three split folders, or is ``RawImage``
       itself. JPEG layout: ``data_root`` holds ``cepha400/*.jpg`` or is that
       folder. When both exist, ``images="auto"`` takes the lossless challenge
       images (``images="jpeg"`` / ``"challenge"`` forces one).
    2. Annotations are searched in ``data_root`` and, if given, ``annotations_root``.
       Challenge text files: ``<r>/AnnotationsByMD/400_<observer>/`` or
       ``<r>/400_<observer>/``. CSV setup: the first of ``<r>``,
       ``<r>/all_landmarks``, ``<r>/setup_ann/all_landmarks``, ``<r>/cep/setup``,
       ``<r>/setup`` that holds an ``all_<observer>.csv``. JPEG CSVs:
       ``<r>/{train,test1,test2}_<observer>.csv`` (or in the parent when ``<r>``
       is ``cepha400``). 11-observer folder: the first of ``<r>``,
       ``<r>/5_landmarks``, ``<r>/setup_ann/5_landmarks`` and ``<setup>/../5_landmarks``
       that holds ``5lms_ann1.csv``.
    3. Convenience: when no CSV setup was found, no ``annotations_root`` was given
       and ``data_root`` is the JPEG layout, the siblings
       ``../HeatmapUncertainty/setup_ann/all_landmarks`` and
       ``../HeatmapRegression/cep/setup`` are tried (the one used is reported).
    4. Every source found is used. Where two sources give the same observer for
       the same image they must agree within 1e-3 px (else a DataError naming
       both files); likewise split lists of the same name must hold the same ids.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy
import numpy as np

from lmkcore.errors import ConfigError, DataError
from lmkcore.data.formats import read_id_list, read_landmark_csv
from lmkcore.data.landmarks import ISBI_LANDMARK_NAMES, ISBI_OBSERVER_LANDMARKS, ISBI_SPACING_MM
from lmkcore.data.records import LandmarkDataset
from lmkcore.data.datasets import register
from lmkcore.data.datasets._common import (
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

#: The clinical classification measures of the 8 class lines, in file order.
ISBI_CLASS_MEASURES: tuple[str, ...] = ("ANB", "SNB", "SNA", "ODI", "APDI", "FHI", "FMA", "MW")

#: Challenge image folders and the split each one is.
CHALLENGE_FOLDERS: dict[str, str] = {"TrainingData": "train", "Test1Data": "test1", "Test2Data": "test2"}

#: Targets :func:`load` accepts.
ISBI_REFERENCES: tuple[str, ...] = ("senior", "junior", "mean", "challenge")

#: The 11 observers of Thaler et al. (2021), in the order of :func:`load_isbi_observers`.
ISBI_OBSERVER_NAMES: tuple[str, ...] = ("senior", "junior") + tuple(f"ann{k}" for k in range(1, 10))

_CSV_SETUP_CANDIDATES = (".", "all_landmarks", "setup_ann/all_landmarks", "cep/setup", "setup")
_SIBLING_SETUPS = ("../HeatmapUncertainty/setup_ann/all_landmarks", "../HeatmapRegression/cep/setup")
_JPEG_SPLITS = ("train", "test1", "test2")
_TOL_PX = 1e-3


# --------------------------------------------------------------------------------------
# Layout (a): challenge images and text annotations
# --------------------------------------------------------------------------------------

def _raw_image_dir(root: Path) -> Path | None:
    for cand in (root / "RawImage", root):
        if any((cand / f).is_dir() for f in CHALLENGE_FOLDERS):
            return cand
    return None


def find_challenge_images(root: str | os.PathLike) -> dict[str, Path]:
    """Images of the challenge layout: id -> path, sorted by id.

    ``root`` holds ``RawImage/`` (or is ``RawImage``) with any of
    ``TrainingData``, ``Test1Data``, ``Test2Data``. Returns ``{}`` when the
    layout is absent.

    Raises
    ------
    DataError
        If an id occurs in two split folders, or a split folder holds no image.
    """
    raw = _raw_image_dir(Path(root))
    if raw is None:
        return {}
    out: dict[str, Path] = {}
    for folder in CHALLENGE_FOLDERS:
        sub = raw / folder
        if not sub.is_dir():
            continue
        found = find_images(sub)
        if not found:
            raise DataError(f"{sub}: challenge image folder holds no image")
        for i, p in found.items():
            if i in out:
                raise DataError(f"{p}: image id {i!r} also in {out[i].parent}")
            out[i] = p
    return dict(sorted(out.items()))


def challenge_image_splits(images: dict[str, Path]) -> dict[str, list[str]]:
    """train / test1 / test2 from the folder (``TrainingData`` ...) of each image."""
    out: dict[str, list[str]] = {}
    for i, p in images.items():
        split = CHALLENGE_FOLDERS.get(p.parent.name)
        if split:
            out.setdefault(split, []).append(i)
    return out


def read_challenge_txt(path: str | os.PathLike, n_landmarks: int = 19) -> tuple[np.ndarray, np.ndarray | None]:
    """Read one ``AnnotationsByMD/400_<observer>/NNN.txt`` file.

    Returns
    -------
    landmarks : ndarray
        ``(n_landmarks, 2)`` pixels ``(x, y)``.
    classes : ndarray or None
        ``(8,)`` int clinical classes in :data:`ISBI_CLASS_MEASURES` order, or
        None when the file has no class lines.

    Raises
    ------
    DataError
        Naming the file (and line) for a missing file, too few lines, a wrong
        number of coordinates, a non-numeric or NaN value, or a class block
        that is not 8 integer lines.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    try:
        lines = path.read_text(encoding="utf-8-sig", errors="strict").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read annotation file ({err})") from None
    numbered = [(k + 1, ln.strip()) for k, ln in enumerate(lines) if ln.strip()]
    if len(numbered) < n_landmarks:
        raise DataError(f"{path}: {len(numbered)} non-empty lines, expected {n_landmarks} landmark lines 'x,y'")
    pts = np.empty((n_landmarks, 2))
    for k, (lineno, text) in enumerate(numbered[:n_landmarks]):
        fields = [f.strip() for f in text.replace("\t", ",").split(",") if f.strip()]
        if len(fields) != 2:
            raise DataError(f"{path}, line {lineno}: {len(fields)} coordinates for landmark {k + 1}, expected 2 ('x,y')")
        try:
            pts[k] = [float(fields[0]), float(fields[1])]
        except ValueError:
            raise DataError(f"{path}, line {lineno}: non-numeric coordinate in {text!r}") from None
        if not np.isfinite(pts[k]).all():
            raise DataError(f"{path}, line {lineno}: landmark {k + 1} is NaN/infinite ({text!r})")
    rest = numbered[n_landmarks:]
    if not rest:
        return pts, None
    if len(rest) != len(ISBI_CLASS_MEASURES):
        raise DataError(
            f"{path}: {len(rest)} lines after the {n_landmarks} landmarks; expected none or "
            f"{len(ISBI_CLASS_MEASURES)} class lines ({', '.join(ISBI_CLASS_MEASURES)})"
        )
    classes = np.empty(len(rest), dtype=np.int64)
    for k, (lineno, text) in enumerate(rest):
        try:
            classes[k] = int(text.split()[0].rstrip(","))
        except ValueError:
            raise DataError(
                f"{path}, line {lineno}: class line for {ISBI_CLASS_MEASURES[k]} is not an integer ({text!r})"
            ) from None
    return pts, classes


def find_challenge_annotations(root: str | os.PathLike) -> dict[str, Path]:
    """observer -> folder for ``<root>/AnnotationsByMD/400_<observer>/`` (or ``<root>/400_<observer>``)."""
    root = Path(root)
    out: dict[str, Path] = {}
    for base in (root / "AnnotationsByMD", root):
        if not base.is_dir():
            continue
        for sub in sorted(base.glob("400_*")):
            if sub.is_dir() and sub.name[4:] and sub.name[4:] not in out:
                out[sub.name[4:]] = sub
        if out:
            break
    return out


def read_challenge_annotations(folder: str | os.PathLike, n_landmarks: int = 19):
    """Read every ``NNN.txt`` of one ``400_<observer>`` folder.

    Returns
    -------
    ids : list of str
        Sorted ids.
    landmarks : ndarray
        ``(M, n_landmarks, 2)`` pixels.
    classes : ndarray
        ``(M, 8)`` int clinical classes, ``-1`` where a file has no class lines.
    files : list of Path
        The file of each row.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.glob("*.txt") if p.is_file())
    if not files:
        raise DataError(f"{folder}: annotation folder holds no .txt file")
    ids, pts, classes = [], [], []
    for f in files:
        p, c = read_challenge_txt(f, n_landmarks)
        ids.append(image_id(f.name))
        pts.append(p)
        classes.append(c if c is not None else np.full(len(ISBI_CLASS_MEASURES), -1, dtype=np.int64))
    return ids, np.stack(pts), np.stack(classes), files


# --------------------------------------------------------------------------------------
# Layout (b): CSV setup
# --------------------------------------------------------------------------------------

def find_csv_setup(root: str | os.PathLike) -> Path | None:
    """The CSV setup folder under ``root`` (see the module docstring), or None."""
    root = Path(root)
    for cand in _CSV_SETUP_CANDIDATES:
        folder = (root / cand) if cand != "." else root
        if folder.is_dir() and any(folder.glob("all_*.csv")):
            return folder
    return None


def read_csv_setup(
    folder: str | os.PathLike, spacing: float | np.ndarray = ISBI_SPACING_MM, n_landmarks: int | None = 19
) -> dict[str, tuple[list[str], np.ndarray]]:
    """Read every ``all_<observer>.csv`` of a CSV setup folder.

    Parameters
    ----------
    folder : path
        The setup folder.
    spacing : float or (D,) array
        mm per pixel used to convert the mm in the files to pixels.
    n_landmarks : int or None
        Expected landmarks per row (None: any, but the same in every file).

    Returns
    -------
    dict observer -> (ids, landmarks)
        ``landmarks`` ``(M, N, D)`` in pixels; NaN where the file holds ``nan``
        or an empty field. Ids in file order.
    """
    folder = Path(folder)
    files = sorted(folder.glob("all_*.csv"))
    if not files:
        raise DataError(f"{folder}: no all_<observer>.csv file in the CSV setup folder")
    out = {}
    for f in files:
        ids, px = read_landmark_csv(f, n_landmarks=n_landmarks, spacing_mm=spacing)
        out[f.stem[4:]] = ([image_id(i) for i in ids], px)
    return out


def read_splits(folder: str | os.PathLike) -> dict[str, list[str]]:
    """Split lists of a setup folder.

    ``<folder>/<name>.txt`` -> ``<name>`` (``train``, ``test1``, ``test2``,
    ``test_all``...), ``<folder>/cv/set<k>/<name>.txt`` -> ``cv<k>/<name>``
    (``cv1/train``, ``cv1/val``, ...). Ids keep the file order.
    """
    return {k: ids for k, (ids, _) in read_split_files(Path(folder)).items()}


# --------------------------------------------------------------------------------------
# Layout (c): JPEG images and CSVs with header
# --------------------------------------------------------------------------------------

def find_jpeg_images(root: str | os.PathLike) -> tuple[Path, dict[str, Path]] | None:
    """``(folder, id -> path)`` for ``<root>/cepha400/*.jpg`` (or ``root`` itself holding ``NNN.jpg``)."""
    root = Path(root)
    for folder in (root / "cepha400", root):
        if folder.is_dir():
            found = find_images(folder, (".jpg", ".jpeg"))
            if found:
                return folder, found
    return None


def find_jpeg_csvs(root: str | os.PathLike) -> dict[str, dict[str, Path]]:
    """observer -> {split: file} for ``<root>/{train,test1,test2}_<observer>.csv``.

    When ``root`` is the ``cepha400`` image folder, its parent is searched.
    """
    root = Path(root)
    out: dict[str, dict[str, Path]] = {}
    for base in (root, root.parent) if root.name == "cepha400" else (root,):
        for split in _JPEG_SPLITS:
            for f in sorted(base.glob(f"{split}_*.csv")):
                out.setdefault(f.stem[len(split) + 1:], {})[split] = f
        if out:
            break
    return out


def read_jpeg_csv(path: str | os.PathLike, n_landmarks: int = 19) -> tuple[list[str], np.ndarray]:
    """Read ``train_senior.csv`` & co: header ``image_path,1_x,1_y,...``, pixels.

    Raises
    ------
    DataError
        If the header is not ``image_path`` followed by ``k_x,k_y`` for
        ``k = 1..n_landmarks`` (naming the file and the first bad column).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: landmark file not found")
    try:
        with open(path, encoding="utf-8-sig") as fh:
            header = [h.strip() for h in fh.readline().strip().split(",")]
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read landmark file ({err})") from None
    expected = ["image_path"] + [f"{k}_{a}" for k in range(1, n_landmarks + 1) for a in "xy"]
    if header != expected:
        bad = next((k for k, (h, e) in enumerate(zip(header, expected)) if h != e), min(len(header), len(expected)))
        got = header[bad] if bad < len(header) else "<missing>"
        raise DataError(
            f"{path}: header has {len(header)} columns, expected {len(expected)} "
            f"(image_path,1_x,1_y,...,{n_landmarks}_y); column {bad + 1} is {got!r}"
        )
    ids, px = read_landmark_csv(path, n_landmarks=n_landmarks, header=True)
    return [image_id(i) for i in ids], px


# --------------------------------------------------------------------------------------
# 11-observer set
# --------------------------------------------------------------------------------------

def find_observer_folder(root: str | os.PathLike) -> Path | None:
    """The ``5_landmarks`` folder for ``root`` (see the module docstring), or None."""
    root = Path(root)
    for folder in (root, root / "5_landmarks", root / "setup_ann" / "5_landmarks", root.parent / "5_landmarks"):
        if (folder / "5lms_ann1.csv").is_file():
            return folder
    return None


class ObserverSet(NamedTuple):
    """The 11-observer annotations of Thaler et al. (2021); unpacks as a 5-tuple."""

    ids: list[str]                   #: 100 image ids, sorted
    landmark_names: tuple[str, ...]  #: the 5 landmark names
    observers: numpy.ndarray         #: ``(100, 11, 5, 2)`` pixels (``numpy.``: resolvable from the generated ``__new__``)
    observer_names: list[str]        #: ``['senior', 'junior', 'ann1', ..., 'ann9']``
    landmark_indices: tuple[int, ...]  #: 0-based indices into the 19 ISBI landmarks


def load_isbi_observers(annotations_root: str | os.PathLike, spacing: float = ISBI_SPACING_MM) -> ObserverSet:
    """Load the 11-observer set (100 images x 11 observers x 5 landmarks).

    Parameters
    ----------
    annotations_root : path
        The ``5_landmarks`` folder, or a folder it can be found from
        (``setup_ann``, the ``HeatmapUncertainty`` copy, ``all_landmarks``).
    spacing : float
        mm per pixel of the files (0.1).

    Returns
    -------
    ObserverSet
        ``(ids, landmark_names, observers, observer_names, landmark_indices)``:
        ``observers[i, o, k]`` is observer ``o``'s ``(x, y)`` in pixels for
        landmark ``landmark_indices[k]`` (0-based ISBI index: 8, 9, 2, 11, 14 =
        gnathion, gonion, orbitale, upper incisal incision, subnasale).

    Raises
    ------
    DataError
        If the folder or a file is missing, or the observers do not cover the
        same 100 images.
    """
    root = Path(annotations_root)
    folder = find_observer_folder(root)
    if folder is None:
        raise DataError(f"{root}: no 11-observer folder (5_landmarks/5lms_ann1.csv) found")
    n = len(ISBI_OBSERVER_LANDMARKS)
    per: dict[str, tuple[list[str], np.ndarray, Path]] = {}
    for obs in ISBI_OBSERVER_NAMES:
        f = folder / f"5lms_{obs}.csv"
        ids, px = read_landmark_csv(f, n_landmarks=n, spacing_mm=spacing)
        per[obs] = ([image_id(i) for i in ids], px, f)
    ids = sorted(per["ann1"][0])
    for obs in ISBI_OBSERVER_NAMES:
        have, _, f = per[obs]
        missing = sorted(set(ids) - set(have))
        if missing:
            raise DataError(f"{f}: {len(missing)} of the {len(ids)} observer-set images are missing: {missing[:5]}")
        extra = sorted(set(have) - set(ids))
        if extra and obs.startswith("ann"):
            raise DataError(f"{f}: images not in 5lms_ann1.csv: {extra[:5]}")
    arr = np.empty((len(ids), len(ISBI_OBSERVER_NAMES), n, 2))
    for o, obs in enumerate(ISBI_OBSERVER_NAMES):
        have, px, f = per[obs]
        pos = {i: k for k, i in enumerate(have)}
        arr[:, o] = px[[pos[i] for i in ids]]
        if np.isnan(arr[:, o]).any():
            i = int(np.argwhere(np.isnan(arr[:, o]).any(-1))[0][0])
            raise DataError(f"{f}: image {ids[i]!r} has a NaN landmark in the observer set")
    names = tuple(ISBI_LANDMARK_NAMES[k] for k in ISBI_OBSERVER_LANDMARKS)
    return ObserverSet(ids, names, arr, list(ISBI_OBSERVER_NAMES), tuple(ISBI_OBSERVER_LANDMARKS))


# --------------------------------------------------------------------------------------
# The loader
# --------------------------------------------------------------------------------------

@dataclass
class _Source:
    """One annotation file set for one observer."""

    observer: str
    kind: str                 # "challenge-txt" | "csv-setup" | "jpeg-csv" | "observer-set"
    ids: list[str]
    px: np.ndarray            # (K, N, 2)
    files: list[Path]         # per row
    classes: np.ndarray | None = None  # (K, 8) int, -1 = absent
    landmark_index: tuple[int, ...] | None = None  # columns of the 19 (observer set)
    label: str = ""


@dataclass
class _Merged:
    px: np.ndarray
    files: list
    classes: np.ndarray | None = None
    kinds: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _collect_sources(roots: list[Path], spacing: float, use_observers: bool, n_landmarks: int,
                     csv_folders: list[Path]) -> tuple[list[_Source], dict[str, tuple[list[str], Path]]]:
    """Annotation sources and split lists found under ``roots`` (plus explicit ``csv_folders``)."""
    sources: list[_Source] = []
    splits: list[tuple[str, list[str], Path]] = []
    seen: list[Path] = []

    def new(folder: Path) -> bool:
        if any(_same_dir(folder, s) for s in seen):
            return False
        seen.append(folder)
        return True

    setups = []
    for root in roots:
        for obs, folder in find_challenge_annotations(root).items():
            if new(folder):
                ids, px, classes, files = read_challenge_annotations(folder, n_landmarks)
                sources.append(_Source(obs, "challenge-txt", ids, px, files, classes, label=str(folder)))
        setup = find_csv_setup(root)
        if setup is not None:
            setups.append(setup)
        for obs, by_split in find_jpeg_csvs(root).items():
            for split, f in by_split.items():
                if new(f):
                    ids, px = read_jpeg_csv(f, n_landmarks)
                    sources.append(_Source(obs, "jpeg-csv", ids, px, [f] * len(ids), label=str(f)))
                    splits.append((split, sorted(ids), f))  # row order carries no meaning
    for setup in setups + csv_folders:
        if not new(setup):
            continue
        for obs, (ids, px) in read_csv_setup(setup, spacing, n_landmarks).items():
            f = setup / f"all_{obs}.csv"
            sources.append(_Source(obs, "csv-setup", ids, px, [f] * len(ids), label=str(f)))
        for name, (ids, f) in read_split_files(setup).items():
            splits.append((name, ids, f))
    if use_observers:
        for folder in [find_observer_folder(r) for r in roots] + [find_observer_folder(s) for s in setups + csv_folders]:
            if folder is None or not new(folder):
                continue
            obs_set = load_isbi_observers(folder, spacing)
            for o, obs in enumerate(obs_set.observer_names):
                f = folder / f"5lms_{obs}.csv"
                sources.append(_Source(obs, "observer-set", list(obs_set.ids), obs_set.observers[:, o],
                                       [f] * len(obs_set.ids), landmark_index=obs_set.landmark_indices, label=str(f)))
            for name, (ids, f) in read_split_files(folder).items():
                splits.append((f"obs_{name}", ids, f))
            if (folder / "cv" / "all.txt").is_file():
                splits.append(("obs_all", [image_id(i) for i in read_id_list(folder / "cv" / "all.txt")],
                               folder / "cv" / "all.txt"))
    merged: dict[str, tuple[list[str], Path]] = {}
    for name, ids, f in splits:
        if name in merged:
            other_ids, other = merged[name]
            if set(other_ids) != set(ids):
                diff = sorted(set(other_ids) ^ set(ids))
                raise DataError(
                    f"{f}: split {name!r} differs from {other} ({len(diff)} ids in only one of them, e.g. {diff[:5]})"
                )
            continue
        merged[name] = (list(ids), f)
    return sources, merged


def _merge(sources: list[_Source], ids: list[str], n_landmarks: int) -> tuple[dict[str, _Merged], dict[str, list[str]]]:
    """Per observer: ``(M, N, 2)`` pixels over the record ids, checking overlaps agree."""
    pos = {i: k for k, i in enumerate(ids)}
    out: dict[str, _Merged] = {}
    no_image: dict[str, list[str]] = {}
    for src in sources:
        m = out.setdefault(src.observer, _Merged(np.full((len(ids), n_landmarks, 2), np.nan), [None] * len(ids)))
        m.kinds.append(src.kind)
        m.labels.append(src.label)
        cols = list(src.landmark_index) if src.landmark_index is not None else list(range(n_landmarks))
        for r, i in enumerate(src.ids):
            k = pos.get(i)
            if k is None:
                no_image.setdefault(src.label, []).append(i)
                continue
            new = src.px[r]
            old = m.px[k, cols]
            both = ~np.isnan(old) & ~np.isnan(new)
            if both.any() and np.abs(old - new)[both].max() > _TOL_PX:
                j = int(np.argwhere(np.abs(np.where(both, old - new, 0)).max(-1) > _TOL_PX)[0][0])
                raise DataError(
                    f"{src.files[r]}: {src.observer} landmark {cols[j] + 1} of image {i!r} is "
                    f"{np.round(new[j], 3).tolist()} px but {np.round(old[j], 3).tolist()} px in {m.files[k]}"
                )
            m.px[k, cols] = np.where(np.isnan(old), new, old)
            if m.files[k] is None:
                m.files[k] = src.files[r]
            if src.classes is not None:
                if m.classes is None:
                    m.classes = np.full((len(ids), len(ISBI_CLASS_MEASURES)), -1, dtype=np.int64)
                m.classes[k] = src.classes[r]
    return out, no_image


_OPTIONS = {"spacing", "images", "observers", "missing_images", "verbose"}


@register("isbi2015")
def load(data_root, *, reference: str = "senior", annotations_root=None, **kw) -> LandmarkDataset:
    """Load the ISBI 2015 cephalometric dataset from any of its on-disk layouts.

    See the module docstring for the layouts and the detection rules.

    Parameters
    ----------
    data_root : path
        Folder with the images (challenge ``RawImage`` layout or ``cepha400``
        JPEG layout), possibly also with annotations.
    reference : {"senior", "junior", "mean", "challenge"}
        Ground truth. ``mean`` = (senior + junior) / 2; ``challenge`` = the
        challenge ground truth (``all_challenge.csv``: senior everywhere except
        landmark 16 on Test2). The 4-fold CV of the CSV setup (``cv1/train`` ...)
        is meant with ``reference="junior"`` ("CV jun.", Thaler et al.).
    annotations_root : path, optional
        A further folder searched for annotations (CSV setup, challenge text
        files, 11-observer set).
    spacing : float, keyword
        mm per pixel (default 0.1, :data:`ISBI_SPACING_MM`); used for every image
        and to convert the mm of the CSV setup files.
    images : {"auto", "challenge", "jpeg"}, keyword
        Which image layout to use when several are present.
    observers : bool, keyword
        Load the 11-observer set when found (default True).
    missing_images : {"error", "skip"}, keyword
        A split id without an image is an error (default) or dropped with a warning.
    verbose : bool, keyword
        Print what was detected (default True).

    Returns
    -------
    LandmarkDataset
        ``annotations``: every observer found (``senior``, ``junior``,
        ``ann1``..``ann9``; the ``ann`` sets are NaN except on their 100 images
        and 5 landmarks), plus ``mean`` or ``challenge`` when that is the reference
        (they are ground-truth variants, not observers, so they stay out of
        :attr:`~lmkcore.data.records.LandmarkDataset.observers` otherwise; the
        challenge coordinates are then in ``extras["challenge_annotations"]``).
        ``splits``: ``train``, ``test1``, ``test2`` (and ``test_all``), the CSV
        setup CV ``cv<k>/train|val``, the observer CV ``obs_cv<k>/train|val``
        and ``obs_all``. ``extras``:

        ``clinical_classes``
            dict measure -> ``(M,)`` int, measures :data:`ISBI_CLASS_MEASURES`,
            read from the class lines of the challenge text files of the reference
            (senior for ``mean``/``challenge``); ``-1`` where absent. Only set
            when class lines were found.
        ``clinical_classes_by_observer``
            observer -> the same dict.
        ``observer_names``
            The human observers present, in the order senior, junior, ann1..ann9.
        ``observer_landmarks``, ``observer_ids``
            The 5 landmark indices and the 100 ids of the observer set.
        ``layout``
            What was detected: image layout and folder, annotation files per observer.
        ``header_spacing``
            ``(M, 2)`` spacing in the image headers (1.0 = none stored).
        ``cv_target``
            ``"junior"`` (the reference the ``cv<k>`` splits are meant for).

    Raises
    ------
    DataError
        Missing folders/files, split ids without an image, wrong coordinate
        counts, NaN landmarks in text files, landmarks outside the image,
        unreadable image headers, disagreeing sources, non-uniform header
        spacings; each names the file.
    """
    unknown = set(kw) - _OPTIONS
    if unknown:
        raise ConfigError(f"isbi2015: unknown option(s) {sorted(unknown)}; known: reference, annotations_root, {', '.join(sorted(_OPTIONS))}")
    spacing = float(kw.get("spacing", ISBI_SPACING_MM))
    which = kw.get("images", "auto")
    use_observers = bool(kw.get("observers", True))
    missing = kw.get("missing_images", "error")
    verbose = bool(kw.get("verbose", True))
    if reference not in ISBI_REFERENCES:
        raise ConfigError(f"isbi2015: unknown reference {reference!r}; choose one of {', '.join(ISBI_REFERENCES)}")
    if which not in ("auto", "challenge", "jpeg"):
        raise ConfigError(f"isbi2015: images must be 'auto', 'challenge' or 'jpeg', got {which!r}")
    if missing not in ("error", "skip"):
        raise ConfigError(f"isbi2015: missing_images must be 'error' or 'skip', got {missing!r}")
    if not (spacing > 0 and math.isfinite(spacing)):
        raise ConfigError(f"isbi2015: spacing must be a positive number, got {spacing!r}")
    n = len(ISBI_LANDMARK_NAMES)

    root = existing_dir(data_root, "ISBI 2015 data_root")
    ann_root = existing_dir(annotations_root, "ISBI 2015 annotations_root") if annotations_root is not None else None

    # 1. images
    chal = find_challenge_images(root) if which in ("auto", "challenge") else {}
    jpeg = find_jpeg_images(root) if which in ("auto", "jpeg") and not chal else None
    if chal:
        layout_images, images = "challenge", chal
        image_folder = _raw_image_dir(root)
    elif jpeg:
        layout_images, (image_folder, images) = "jpeg", jpeg
    else:
        wanted = {"auto": "RawImage/{TrainingData,Test1Data,Test2Data}/*.bmp or cepha400/*.jpg",
                  "challenge": "RawImage/{TrainingData,Test1Data,Test2Data}/*.bmp", "jpeg": "cepha400/*.jpg"}[which]
        raise DataError(f"{root}: no ISBI 2015 images found (looked for {wanted})")
    ids = list(images)
    report(f"isbi2015: {len(ids)} images, {layout_images} layout in {image_folder}", verbose)

    # 2. annotations
    roots = [root] + ([ann_root] if ann_root is not None else [])
    extra_setups: list[Path] = []
    if ann_root is None and layout_images == "jpeg" and find_csv_setup(root) is None:
        base = root.parent if root.name == "cepha400" else root
        for rel in _SIBLING_SETUPS:
            cand = (base / rel).resolve()
            if find_csv_setup(cand) == cand:
                extra_setups.append(cand)
                report(f"isbi2015: no annotations_root given; using the sibling CSV setup {cand}", verbose)
                break
    sources, split_files = _collect_sources(roots, spacing, use_observers, n, extra_setups)
    if not sources:
        raise DataError(
            f"{root}: no ISBI 2015 annotations found (AnnotationsByMD/400_<observer>/*.txt, "
            f"all_<observer>.csv, or {{train,test1,test2}}_senior.csv)"
            + (f" here or in {ann_root}" if ann_root is not None else "; pass annotations_root")
        )
    merged, no_image = _merge(sources, ids, n)
    n_lost = {label: len(lost) for label, lost in no_image.items()}
    if n_lost:
        warn(
            "isbi2015: annotations for ids without an image are skipped: "
            + "; ".join(f"{Path(k).name}: {v}" for k, v in n_lost.items())
        )
    lines = []
    for obs, m in merged.items():
        if obs.startswith("ann") and obs != "ann1":
            continue
        files = ", ".join(sorted({Path(x).name for x in m.labels}))
        if obs == "ann1":
            obs, files = "ann1..ann9", files.replace("ann1", "ann*")
        lines.append(f"{obs} <- {files}")
    report("isbi2015: annotations " + "; ".join(lines), verbose)

    # 3. reference
    if reference == "mean":
        if not {"senior", "junior"} <= set(merged):
            raise DataError(f"{root}: reference 'mean' needs senior and junior annotations; found {sorted(merged)}")
    elif reference not in merged:
        hint = " (all_challenge.csv of the CSV setup layout)" if reference == "challenge" else ""
        raise DataError(f"{root}: no {reference} annotations{hint} found; found {sorted(merged)}")
    for obs in (["senior", "junior"] if reference == "mean" else [reference]):
        m = merged[obs]
        lacking = [i for k, i in enumerate(ids) if np.isnan(m.px[k]).all()]
        if lacking:
            raise DataError(
                f"{', '.join(sorted(set(m.labels)))}: no {obs} annotation for {len(lacking)} image(s) "
                f"of {image_folder}: {', '.join(lacking[:5])}{' ...' if len(lacking) > 5 else ''}"
            )
    for obs in ("senior", "junior", "challenge"):
        if obs in merged:
            m = merged[obs]
            covered = int((~np.isnan(m.px).all(axis=(1, 2))).sum())
            nan_lms = int(np.isnan(m.px).any(-1).sum()) - (len(ids) - covered) * n
            if covered < len(ids):
                warn(f"isbi2015: {obs} annotations cover {covered} of {len(ids)} images; NaN elsewhere")
            if nan_lms:
                warn(f"isbi2015: {nan_lms} {obs} landmark(s) are missing (NaN) in {', '.join(sorted(set(m.labels)))}")

    # 4. image headers: sizes, spacing
    paths = [images[i] for i in ids]
    infos = read_infos(paths)
    for info in infos:
        if info.ndim != 2:
            raise DataError(f"{info.path}: expected a 2D image, header says {info.ndim}D size {info.size}")
    sizes = np.array([info.size for info in infos], dtype=np.int64)
    header_spacing = np.array([info.spacing for info in infos], dtype=np.float64)
    informative = [info for info in infos if info.has_spacing]
    if informative:
        ref = informative[0]
        for info in infos:
            if not np.allclose(info.spacing, ref.spacing, rtol=1e-4):
                raise DataError(
                    f"{info.path}: mixed spacings: header spacing {info.spacing} differs from {ref.spacing} of {ref.path}"
                )
        if not np.allclose(ref.spacing, spacing, rtol=1e-4):
            warn(f"isbi2015: image headers say {ref.spacing} mm/px; using the dataset spacing {spacing} mm/px")

    annotations = {obs: m.px for obs, m in merged.items()}
    order = {o: k for k, o in enumerate(ISBI_OBSERVER_NAMES + ("challenge",))}
    annotations = dict(sorted(annotations.items(), key=lambda kv: (order.get(kv[0], 99), kv[0])))
    for obs, arr in annotations.items():
        check_landmarks(f"{obs} annotations", ids, arr, sizes, merged[obs].files, ISBI_LANDMARK_NAMES)
    if reference == "mean":
        annotations["mean"] = 0.5 * (annotations["senior"] + annotations["junior"])
    # 'challenge' is a ground-truth variant (senior with landmark 16 moved on Test2),
    # not an observer: it joins the annotation sets only as the reference.
    challenge = annotations.pop("challenge", None) if reference != "challenge" else None

    # 5. splits
    split_sources = dict(split_files)
    if layout_images == "challenge":
        for name, sids in challenge_image_splits(images).items():
            f = image_folder / {v: k for k, v in CHALLENGE_FOLDERS.items()}[name]
            if name in split_sources and set(split_sources[name][0]) != set(sids):
                other = split_sources[name][1]
                diff = sorted(set(split_sources[name][0]) ^ set(sids))
                raise DataError(f"{other}: split {name!r} differs from the image folder {f} (e.g. {diff[:5]})")
            split_sources.setdefault(name, (sids, f))
    splits = check_split_ids(split_sources, ids, missing=missing)
    splits = dict(sorted(splits.items(), key=lambda kv: _split_key(kv[0])))

    # 6. extras
    extras: dict = {
        "layout": {
            "images": layout_images,
            "image_folder": str(image_folder),
            "annotations": {obs: sorted(set(m.labels)) for obs, m in merged.items()},
        },
        "header_spacing": header_spacing,
        "cv_target": "junior",
        "observer_names": [o for o in ISBI_OBSERVER_NAMES if o in merged],
    }
    if challenge is not None:
        extras["challenge_annotations"] = challenge
    if any(o.startswith("ann") for o in merged):
        extras["observer_landmarks"] = tuple(ISBI_OBSERVER_LANDMARKS)
        extras["observer_ids"] = [i for k, i in enumerate(ids) if not np.isnan(merged["ann1"].px[k]).all()]
    by_obs = {
        obs: {meas: m.classes[:, j].copy() for j, meas in enumerate(ISBI_CLASS_MEASURES)}
        for obs, m in merged.items() if m.classes is not None and (m.classes >= 0).any()
    }
    if by_obs:
        key = reference if reference in by_obs else ("senior" if "senior" in by_obs else next(iter(by_obs)))
        extras["clinical_classes"] = by_obs[key]
        extras["clinical_classes_observer"] = key
        extras["clinical_classes_by_observer"] = by_obs

    return LandmarkDataset(
        name="isbi2015",
        ids=ids,
        image_paths=paths,
        landmark_names=tuple(ISBI_LANDMARK_NAMES),
        annotations=annotations,
        reference=reference,
        spacing=np.full((len(ids), 2), spacing),
        image_size=sizes,
        splits=splits,
        extras=extras,
    )


def _split_key(name: str):
    base = ["train", "test1", "test2", "test_all"]
    if name in base:
        return (0, base.index(name), name)
    head, _, tail = name.partition("/")
    digits = "".join(c for c in head if c.isdigit())
    return (1 if not name.startswith("obs_") else 2, int(digits) if digits else 0, head, tail)
