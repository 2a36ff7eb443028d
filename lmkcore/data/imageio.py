"""Reading and writing images (any format SimpleITK handles) with clear errors."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lmkcore.errors import DataError


def open_image(path: str | os.PathLike) -> sitk.Image:
    """The SimpleITK image of ``path``; a missing, truncated or undecodable file is one :class:`DataError` naming it.

    The file's structure is checked first (:func:`check_image_file`) because
    some decoders accept truncated files silently (libjpeg only prints a
    warning and pads with grey; BMP and NIfTI readers fill with zeros).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    check_image_file(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise DataError(f"{path}: unreadable image ({_sitk_reason(err)})") from None


def _sitk_reason(err: Exception) -> str:
    """The informative part of a SimpleITK error (its last line is often a stale ``errno`` text)."""
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Reason:", "sitk::ERROR", "ITK ERROR:"))
              and "No such file or directory" not in ln and not ln.startswith("/")]
    informative = [ln for ln in lines if any(w in ln.lower() for w in ("not read completely", "ideal", "error while",
                                                                      "corrupt", "truncat", "premature"))]
    text = "; ".join(informative or useful[-1:] or lines[-1:]) or "unknown reason"
    return f"corrupt or truncated file? SimpleITK: {text[:300]}"


# -------------------------------------------------------------------- structure checks

_NIFTI_BYTES = {2: 1, 4: 2, 8: 4, 16: 4, 32: 8, 64: 8, 128: 3, 256: 1, 512: 2, 768: 4, 1024: 8, 1280: 8,
                1536: 16, 1792: 16, 2048: 32, 2304: 4}
_MET_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
              "MET_DOUBLE": 8}


def check_image_file(path: str | os.PathLike) -> None:
    """Check the container structure of an image file; raise :class:`DataError` naming it if truncated or corrupt.

    Cheap checks that do not decode pixels:

    * JPEG: starts with SOI ``FFD8`` and its end-of-image marker ``FFD9`` is
      among the last 64 bytes (a truncated JPEG has none: entropy-coded data
      never contain ``FFD9``).
    * BMP: the header's pixel-data offset plus ``rows x padded row size`` (for
      uncompressed bitmaps) fits in the file, and a non-zero ``bfSize`` does
      not exceed the file size.
    * PNG: a chain of chunks with valid CRCs ending in ``IEND``.
    * MetaImage (``.mha``/``.mhd``) with uncompressed data: the pixel data (in
      the file, or the data file it names) are at least
      ``prod(DimSize) x channels x element size`` bytes.
    * NIfTI-1/-2 (``.nii``, ``.nii.gz``): ``vox_offset + prod(dim) x bitpix / 8``
      bytes (after decompression; a truncated gzip stream is detected too).

    Other formats are left to the decoder.
    """
    path = Path(path)
    name = path.name.lower()
    try:
        size = path.stat().st_size
        if size == 0:
            raise DataError(f"{path}: empty image file (0 bytes)")
        with open(path, "rb") as fh:
            head = fh.read(600)
            if name.endswith((".jpg", ".jpeg")) or head[:2] == b"\xff\xd8":
                _check_jpeg(path, fh, head, size)
            elif head[:2] == b"BM":
                _check_bmp(path, head, size)
            elif head[:8] == b"\x89PNG\r\n\x1a\n":
                _check_png(path, fh, size)
            elif name.endswith((".mha", ".mhd")):
                _check_metaimage(path, fh)
            elif name.endswith(".nii") or name.endswith(".nii.gz"):
                _check_nifti(path)
    except OSError as err:
        raise DataError(f"{path}: unreadable image file ({err})") from None


def _check_jpeg(path: Path, fh, head: bytes, size: int) -> None:
    if head[:2] != b"\xff\xd8":
        raise DataError(f"{path}: not a JPEG file (no start-of-image marker)")
    fh.seek(max(0, size - 64))
    if b"\xff\xd9" not in fh.read(64):
        raise DataError(f"{path}: truncated or corrupt JPEG (no end-of-image marker; {size} bytes)")


def _check_bmp(path: Path, head: bytes, size: int) -> None:
    if len(head) < 30:
        raise DataError(f"{path}: truncated BMP header ({size} bytes)")
    bf_size = int.from_bytes(head[2:6], "little")
    offset = int.from_bytes(head[10:14], "little")
    dib = int.from_bytes(head[14:18], "little")
    if dib == 12:  # OS/2 BITMAPCOREHEADER
        width, height = int.from_bytes(head[18:20], "little"), int.from_bytes(head[20:22], "little")
        bpp, compression = int.from_bytes(head[24:26], "little"), 0
    elif len(head) >= 34:
        width = int.from_bytes(head[18:22], "little", signed=True)
        height = int.from_bytes(head[22:26], "little", signed=True)
        bpp, compression = int.from_bytes(head[28:30], "little"), int.from_bytes(head[30:34], "little")
    else:
        raise DataError(f"{path}: truncated BMP header ({size} bytes)")
    if bf_size and bf_size > size:
        raise DataError(f"{path}: truncated BMP ({size} bytes, header says {bf_size})")
    if compression in (0, 3, 6):  # BI_RGB, BI_BITFIELDS, BI_ALPHABITFIELDS: uncompressed rows
        need = offset + abs(height) * (((abs(width) * bpp + 31) // 32) * 4)
        if need > size:
            raise DataError(f"{path}: truncated BMP ({size} bytes, {abs(width)} x {abs(height)} x {bpp} bit "
                            f"pixels need {need})")


def _check_png(path: Path, fh, size: int) -> None:
    import zlib

    fh.seek(8)
    while True:
        hdr = fh.read(8)
        if len(hdr) < 8:
            raise DataError(f"{path}: truncated PNG (no IEND chunk; {size} bytes)")
        length, ctype = int.from_bytes(hdr[:4], "big"), hdr[4:8]
        data = fh.read(length)
        crc = fh.read(4)
        if len(data) < length or len(crc) < 4:
            raise DataError(f"{path}: truncated PNG (chunk {ctype!r} cut off; {size} bytes)")
        if zlib.crc32(ctype + data) != int.from_bytes(crc, "big"):
            raise DataError(f"{path}: corrupt PNG (CRC mismatch in chunk {ctype!r})")
        if ctype == b"IEND":
            return


def _check_metaimage(path: Path, fh) -> None:
    fh.seek(0)
    fields: dict[str, str] = {}
    header_len = 0
    for _ in range(200):
        line = fh.readline()
        if not line:
            break
        header_len += len(line)
        key, sep, value = line.decode("latin-1").partition("=")
        if not sep:
            raise DataError(f"{path}: corrupt MetaImage header (line {line[:40]!r})")
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            break
    if "ElementDataFile" not in fields or "DimSize" not in fields:
        raise DataError(f"{path}: corrupt or truncated MetaImage header (no DimSize/ElementDataFile)")
    if fields.get("CompressedData", "False").lower() == "true":
        return  # the decoder detects a truncated compressed stream
    try:
        n = 1
        for d in fields["DimSize"].split():
            n *= int(d)
        n *= int(fields.get("ElementNumberOfChannels", "1"))
        need = n * _MET_BYTES[fields.get("ElementType", "")]
    except (ValueError, KeyError):
        return  # unusual header: leave it to the decoder
    data_file = fields["ElementDataFile"]
    if data_file == "LOCAL":
        have = path.stat().st_size - header_len
        where = path
    elif data_file.upper() == "LIST" or "%" in data_file:
        return
    else:
        where = path.parent / data_file
        if not where.is_file():
            raise DataError(f"{path}: its pixel data file {where} is missing")
        have = where.stat().st_size
    if have < need:
        raise DataError(f"{where}: truncated MetaImage pixel data ({have} of {need} bytes)")


def _check_nifti(path: Path) -> None:
    import gzip
    import zlib

    if path.name.lower().endswith(".gz"):
        try:
            with gzip.open(path, "rb") as gz:
                head = gz.read(544)
                total = len(head)
                for block in iter(lambda: gz.read(1 << 20), b""):
                    total += len(block)
        except (EOFError, OSError, zlib.error) as err:
            raise DataError(f"{path}: truncated or corrupt gzip stream ({err})") from None
    else:
        with open(path, "rb") as fh:
            head = fh.read(544)
        total = path.stat().st_size
    if len(head) < 348:
        raise DataError(f"{path}: truncated NIfTI header ({len(head)} bytes)")
    for order in ("<", ">"):
        hdr_size = int.from_bytes(head[:4], "little" if order == "<" else "big")
        if hdr_size in (348, 540):
            break
    else:
        raise DataError(f"{path}: not a NIfTI file (header size field {int.from_bytes(head[:4], 'little')})")
    endian = "little" if order == "<" else "big"
    import struct

    if hdr_size == 348:
        dims = struct.unpack(order + "8h", head[40:56])
        datatype = int.from_bytes(head[70:72], endian)
        offset = int(struct.unpack(order + "f", head[108:112])[0])
    else:
        if len(head) < 540:
            raise DataError(f"{path}: truncated NIfTI-2 header ({len(head)} bytes)")
        dims = struct.unpack(order + "8q", head[16:80])
        datatype = int.from_bytes(head[12:14], endian)
        offset = struct.unpack(order + "q", head[168:176])[0]
    nd = dims[0]
    if not 1 <= nd <= 7 or datatype not in _NIFTI_BYTES:
        return  # unusual header: leave it to the decoder
    n = 1
    for d in dims[1:nd + 1]:
        n *= max(int(d), 1)
    need = max(offset, hdr_size) + n * _NIFTI_BYTES[datatype]
    if total < need:
        raise DataError(f"{path}: truncated NIfTI ({total} of {need} bytes)")


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
    # unique per writer (the extension stays last: SimpleITK picks the format from it)
    ext = ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix
    tmp = path.with_name(f".{path.name[: len(path.name) - len(ext)]}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp{ext}")
    try:
        sitk.WriteImage(img, str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
