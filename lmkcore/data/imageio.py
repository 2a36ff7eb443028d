"""Reading and writing images (any format SimpleITK handles) with clear errors."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lmkcore.errors import DataError


def open_image(path: str | os.PathLike) -> sitk.Image:
    """The SimpleITK image of ``path``; a missing or undecodable file is one :class:`DataError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as err:
        lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
        raise DataError(f"{path}: unreadable image ({lines[-1].strip() if lines else 'unknown reason'})") from None


def read_image(path: str | os.PathLike, with_spacing: bool = False):
    """Read a 2D or 3D image as a grey-value float32 array.

    Colour images (e.g. the 3-channel JPEG cephalograms) are averaged to grey.

    Parameters
    ----------
    path : path
        Image file (BMP, PNG, JPEG, MHA/MHD, NIfTI, NRRD, DICOM...).
    with_spacing : bool
        Also return the header spacing.

    Returns
    -------
    image : ndarray
        ``(H, W)`` or ``(D, H, W)`` float32, i.e. row-major (y, x) indexing.
    spacing : ndarray, optional
        ``(2,)`` or ``(3,)`` header spacing in mm along ``(x, y[, z])``.

    Raises
    ------
    DataError
        If the file is missing or cannot be decoded (naming the file).
    """
    img = open_image(path)
    arr = sitk.GetArrayFromImage(img)
    if img.GetNumberOfComponentsPerPixel() > 1:
        arr = arr.mean(axis=-1)
    # Some 2D formats come back as (1, H, W).
    if img.GetDimension() == 3 and arr.shape[0] == 1:
        arr = arr[0]
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if with_spacing:
        spacing = np.asarray(img.GetSpacing(), dtype=np.float64)[: arr.ndim]
        return arr, spacing
    return arr


def write_image(path: str | os.PathLike, image: np.ndarray, spacing: tuple[float, ...] | None = None) -> None:
    """Write a ``(H, W)`` or ``(D, H, W)`` array, choosing the pixel type from its dtype.

    8-bit formats (BMP, PNG, JPEG) need a ``uint8`` array. The write is atomic.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(np.asarray(image))
    if spacing is not None:
        img.SetSpacing(tuple(float(s) for s in spacing))
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    sitk.WriteImage(img, str(tmp))
    os.replace(tmp, path)
