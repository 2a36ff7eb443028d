"""Reading and writing the on-disk formats shared by real and synthetic data.

The *CSV setup layout* of the ISBI 2015 experiments (Payer et al. 2019,
Thaler et al. 2021) stores one landmark file per observer, one row per image::

    image_id,x1,y1,x2,y2,...     (no header, coordinates in mm)

with mm = pixel * spacing, and plain-text id lists (one id per line) for the
splits. The synthetic dataset is written in exactly this layout, so the same
reader serves both. All writes are atomic: a file appears complete or not at all.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from lmkcore.errors import DataError


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file + rename)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name and move it to ``path`` at the end.

    If the block raises, the partial directory is removed and ``path`` is left
    untouched. An existing ``path`` is replaced only after the block succeeded.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial"))
    try:
        yield tmp
        if path.exists():
            # a unique name: concurrent writers of the same folder never share it (stale ones are
            # removed by lmkcore.data.integrity.remove_stale_partials)
            old = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.partial")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _format_number(value: float, decimals: int) -> str:
    if math.isnan(value):
        return "nan"
    text = f"{value:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def write_landmark_csv(
    path: str | os.PathLike,
    ids: Sequence[str],
    landmarks_px: np.ndarray,
    spacing_mm: np.ndarray | float,
    decimals: int = 4,
) -> None:
    """Write landmarks in the CSV setup layout (mm, no header), atomically.

    Parameters
    ----------
    path : path
        Output file.
    ids : sequence of str
        ``M`` image ids (first column).
    landmarks_px : ndarray
        ``(M, N, D)`` coordinates in pixels, ``(x, y[, z])``; NaN is written as ``nan``.
    spacing_mm : float or ndarray
        Pixel spacing in mm: a scalar, ``(D,)`` or ``(M, D)``.
    decimals : int
        Decimals kept in mm.
    """
    landmarks_px = np.asarray(landmarks_px, dtype=np.float64)
    if landmarks_px.ndim != 3 or landmarks_px.shape[0] != len(ids):
        raise ValueError(f"landmarks_px must be (M, N, D) with M={len(ids)}, got {landmarks_px.shape}")
    spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (len(ids), landmarks_px.shape[2]))
    mm = landmarks_px * spacing[:, None, :]
    lines = []
    for image_id, row in zip(ids, mm.reshape(len(ids), -1)):
        lines.append(",".join([str(image_id)] + [_format_number(v, decimals) for v in row]))
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_landmark_csv(
    path: str | os.PathLike,
    n_landmarks: int | None = None,
    ndim: int = 2,
    spacing_mm: float | np.ndarray | None = None,
    header: bool = False,
) -> tuple[list[str], np.ndarray]:
    """Read a landmark CSV (one row per image: ``id,x1,y1,...``).

    Parameters
    ----------
    path : path
        The file.
    n_landmarks : int, optional
        Expected number of landmarks ``N``; rows with another count are an error.
    ndim : int
        Coordinates per landmark ``D``.
    spacing_mm : float or ndarray, optional
        If given, the file is in mm and is converted to pixels (mm / spacing);
        scalar or ``(D,)``. If None, the values are returned as stored.
    header : bool
        Skip the first line.

    Returns
    -------
    ids : list of str
        ``M`` image ids, in file order (a leading path and extension such as
        ``"017.jpg"`` are kept as written; strip them in the caller).
    landmarks : ndarray
        ``(M, N, D)`` float64; NaN where the file holds ``nan`` or an empty field.

    Raises
    ------
    DataError
        Naming the file and line for a missing file, a non-numeric value, a
        wrong number of coordinates or a duplicate id.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: landmark file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read landmark file ({err})") from None
    ids: list[str] = []
    rows: list[list[float]] = []
    lines = text.splitlines()
    for lineno, line in enumerate(lines[1:] if header else lines, start=2 if header else 1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        values = fields[1:]
        if n_landmarks is not None and len(values) != n_landmarks * ndim:
            raise DataError(
                f"{path}, line {lineno}: {len(values)} coordinates for image {fields[0]!r}, "
                f"expected {n_landmarks} landmarks x {ndim} = {n_landmarks * ndim}"
            )
        if len(values) % ndim:
            raise DataError(f"{path}, line {lineno}: {len(values)} coordinates is not a multiple of {ndim}")
        try:
            rows.append([float(v) if v else math.nan for v in values])
        except ValueError:
            bad = next(v for v in values if not _is_float(v))
            raise DataError(f"{path}, line {lineno}: non-numeric coordinate {bad!r}") from None
        if fields[0] in ids:
            raise DataError(f"{path}, line {lineno}: duplicate image id {fields[0]!r}")
        ids.append(fields[0])
    if not rows:
        raise DataError(f"{path}: no landmark rows")
    if len({len(r) for r in rows}) != 1:
        raise DataError(f"{path}: rows have different numbers of coordinates")
    arr = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1, ndim)
    if spacing_mm is not None:
        arr = arr / np.asarray(spacing_mm, dtype=np.float64)
    return ids, arr


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_id_list(path: str | os.PathLike) -> list[str]:
    """Read a split file: one image id per line (blank lines ignored)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: split file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read split file ({err})") from None
    ids = [line.strip() for line in text.splitlines() if line.strip()]
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: duplicate ids in split file")
    return ids


def write_id_list(path: str | os.PathLike, ids: Sequence[str]) -> None:
    """Write a split file atomically: one id per line."""
    atomic_write_text(path, "".join(f"{i}\n" for i in ids))
