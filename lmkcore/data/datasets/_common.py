"""Helpers shared by the real-data loaders (headers, id lists, checks, reporting).

Nothing here decodes pixel data: image sizes and spacings come from the file
headers (:func:`image_info`), which is cheap even for hundreds of JPEGs.
"""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from lmkcore.errors import DataError
from lmkcore.data.formats import read_id_list

logger = logging.getLogger("lmkcore.data.datasets")

#: File endings recognised as images when a folder is scanned (lower case).
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff",
    ".mha", ".mhd", ".nii", ".nii.gz", ".nrrd", ".nhdr", ".dcm", ".gipl",
)


class LoaderWarning(UserWarning):
    """An explicit, reported deviation while loading (e.g. annotated ids without an image)."""


def report(message: str, verbose: bool = True) -> None:
    """Tell the user something the loader decided (which folder it used...).

    Logged at INFO on ``lmkcore.data.datasets`` and, when ``verbose``, printed, so it
    is visible in a notebook without configuring logging.
    """
    logger.info(message)
    if verbose:
        print(f"lmkcore: {message}")


def warn(message: str) -> None:
    """Issue a :class:`LoaderWarning` (also logged)."""
    logger.info(message)
    warnings.warn(message, LoaderWarning, stacklevel=3)


def split_extension(name: str) -> tuple[str, str]:
    """``"a/b/017.nii.gz"`` -> ``("017", ".nii.gz")`` (known double endings kept together)."""
    base = Path(name).name
    low = base.lower()
    for ext in sorted(IMAGE_EXTENSIONS + (".txt", ".csv"), key=len, reverse=True):
        if low.endswith(ext) and len(base) > len(ext):
            return base[: -len(ext)], base[-len(ext):]
    stem, dot, ext = base.rpartition(".")
    return (stem, "." + ext) if dot and stem else (base, "")


def image_id(name: str) -> str:
    """The image id of a file name or path: the name without folder and image extension."""
    return split_extension(name)[0]


def find_images(folder: Path, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> dict[str, Path]:
    """Map id -> image file for the images directly in ``folder`` (sorted by id).

    Raises
    ------
    DataError
        If two files share an id (e.g. ``001.bmp`` and ``001.png``).
    """
    exts = tuple(e.lower() for e in extensions)
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        stem, ext = split_extension(path.name)
        if ext.lower() not in exts:
            continue
        if stem in found:
            raise DataError(f"{folder}: two images with id {stem!r}: {found[stem].name} and {path.name}")
        found[stem] = path
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class ImageInfo:
    """What the header of an image says (no pixels read)."""

    path: Path
    size: tuple[int, ...]       #: ``(W, H[, D])`` in pixels
    spacing: tuple[float, ...]  #: mm per pixel along ``(x, y[, z])``
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    components: int             #: channels per pixel (3 for the RGB JPEGs)
    pixel_type: str             #: SimpleITK pixel type name, e.g. ``"8-bit unsigned integer"``

    @property
    def ndim(self) -> int:
        return len(self.size)

    @property
    def has_spacing(self) -> bool:
        """False when the header carries no spacing (all 1.0, e.g. BMP and JPEG)."""
        return not np.allclose(self.spacing, 1.0)


def image_info(path: str | os.PathLike) -> ImageInfo:
    """Read an image header with SimpleITK (``ReadImageInformation``), no decoding.

    3D headers with a single slice (e.g. the hand ``.mha`` files, ``W x H x 1``)
    are reported as 2D.

    Raises
    ------
    DataError
        If the file is missing or its header cannot be read (naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
        raise DataError(f"{path}: unreadable image ({lines[-1].strip() if lines else 'unknown reason'})") from None
    size = tuple(int(s) for s in reader.GetSize())
    spacing = tuple(float(s) for s in reader.GetSpacing())
    origin = tuple(float(s) for s in reader.GetOrigin())
    direction = tuple(float(s) for s in reader.GetDirection())
    if len(size) == 3 and size[2] == 1:
        size, spacing, origin = size[:2], spacing[:2], origin[:2]
        direction = (direction[0], direction[1], direction[3], direction[4])
    if any(s <= 0 for s in size):
        raise DataError(f"{path}: image has an empty dimension, size {size}")
    return ImageInfo(
        path=path,
        size=size,
        spacing=spacing,
        origin=origin,
        direction=direction,
        components=int(reader.GetNumberOfComponents()),
        pixel_type=sitk.GetPixelIDValueAsString(reader.GetPixelID()),
    )


def read_infos(paths: Sequence[Path]) -> list[ImageInfo]:
    """Headers of all ``paths`` (see :func:`image_info`)."""
    return [image_info(p) for p in paths]


def check_landmarks(
    name: str,
    ids: Sequence[str],
    landmarks: np.ndarray,
    sizes: np.ndarray,
    sources: Sequence[Path] | Path,
    landmark_names: Sequence[str] | None = None,
    allow_nan: bool = True,
) -> None:
    """Check that every finite landmark lies inside its image.

    The image covers ``[-0.5, size - 0.5]`` along each axis (integer
    coordinates are pixel centres).

    Parameters
    ----------
    name : str
        What is checked, e.g. ``"senior annotations"`` (used in messages).
    ids, landmarks, sizes :
        ``M`` ids, ``(M, N, D)`` pixels and ``(M, D)`` image sizes.
    sources : path or sequence of paths
        The annotation file (one for all rows, or one per row) named in errors.
    allow_nan : bool
        If False, a NaN coordinate is an error too.

    Raises
    ------
    DataError
        Naming the file, the image id, the landmark and the coordinate.
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.float64)

    def source(row: int) -> Path:
        return sources if isinstance(sources, (str, Path)) else sources[row]

    def lm(k: int) -> str:
        return f"landmark {k + 1}" + (f" ({landmark_names[k]})" if landmark_names is not None else "")

    nan = np.isnan(landmarks)
    partial = nan.any(-1) & ~nan.all(-1)
    if partial.any():
        i, k = np.argwhere(partial)[0]
        raise DataError(f"{source(i)}: image {ids[i]!r}, {lm(k)}: some coordinates are NaN ({landmarks[i, k].tolist()})")
    if not allow_nan and nan.any():
        i, k = np.argwhere(nan.any(-1))[0]
        raise DataError(f"{source(i)}: image {ids[i]!r}, {lm(k)}: NaN coordinate in {name} (missing landmarks are not allowed here)")
    with np.errstate(invalid="ignore"):
        outside = (landmarks < -0.5) | (landmarks > sizes[:, None, :] - 0.5)
    outside &= ~nan
    if outside.any():
        i, k, _ = np.argwhere(outside)[0]
        raise DataError(
            f"{source(i)}: image {ids[i]!r}, {lm(k)} of {name} at {np.round(landmarks[i, k], 3).tolist()} px "
            f"is outside the image (size {sizes[i].astype(int).tolist()} px); "
            f"{int(outside.any(-1).sum())} landmark(s) outside in total"
        )


def read_split_files(
    folder: Path, skip: Iterable[str] = (), cv_subdir: str | None = "cv"
) -> dict[str, tuple[list[str], Path]]:
    """Read the split files of a setup folder, keeping where each came from.

    ``folder/<name>.txt`` -> split ``<name>``; ``folder/cv/set<k>/<name>.txt`` ->
    split ``cv<k>/<name>``. With ``cv_subdir=None`` the ``set<k>`` folders are
    directly in ``folder`` (and top-level files are not read). Files named in
    ``skip`` (file names) are ignored. Lines are ids; an id written with an
    extension (``017.jpg``) is reduced to the id.
    """
    out: dict[str, tuple[list[str], Path]] = {}
    skip = set(skip)
    folder = Path(folder)
    if not folder.is_dir():
        return out
    if cv_subdir is not None:
        for path in sorted(folder.glob("*.txt")):
            if path.name not in skip:
                out[path.stem] = ([image_id(i) for i in read_id_list(path)], path)
    cv = folder / cv_subdir if cv_subdir is not None else folder
    if cv.is_dir():
        for set_dir in sorted(cv.glob("set*"), key=lambda p: (len(p.name), p.name)):
            k = set_dir.name[3:]
            if not set_dir.is_dir() or not k.isdigit():
                continue
            for path in sorted(set_dir.glob("*.txt")):
                if path.name not in skip:
                    out[f"cv{int(k)}/{path.stem}"] = ([image_id(i) for i in read_id_list(path)], path)
    return out


def check_split_ids(
    splits: Mapping[str, tuple[list[str], Path | str]],
    known: Iterable[str],
    *,
    missing: str = "error",
    what: str = "image",
) -> dict[str, list[str]]:
    """Check that every id of every split has an image.

    Parameters
    ----------
    splits : mapping split name -> (ids, source file)
    known : ids with an image
    missing : ``"error"`` (raise, naming the split file) or ``"skip"`` (drop the
        ids from the split with one :class:`LoaderWarning` summarising the drops).

    Returns
    -------
    dict split name -> ids (order kept)
    """
    known = set(known)
    out: dict[str, list[str]] = {}
    dropped: dict[str, int] = {}
    for name, (ids, src) in splits.items():
        bad = [i for i in ids if i not in known]
        if bad and missing == "error":
            raise DataError(
                f"{src}: split {name!r} names {len(bad)} id(s) without an {what}: "
                f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}"
            )
        if bad:
            dropped[name] = len(bad)
        out[name] = [i for i in ids if i in known]
    if dropped:
        total = sum(len(ids) for ids, _ in splits.values())
        warn(
            f"splits filtered to the {len(known)} ids with an {what}: dropped {sum(dropped.values())} of "
            f"{total} split entries ({', '.join(f'{k}: -{v}' for k, v in list(dropped.items())[:6])}"
            f"{' ...' if len(dropped) > 6 else ''})"
        )
    return out


def existing_dir(path: str | os.PathLike | None, what: str) -> Path:
    """``path`` as a Path, or a DataError if it is None or not a folder."""
    if path is None:
        raise DataError(f"{what}: no folder given (data_root=None)")
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: {what} not found")
    if not path.is_dir():
        raise DataError(f"{path}: {what} is not a folder")
    return path
