"""Decoded-image cache: every image decoded once, resized, stored as one memory map.

Training at a working resolution (e.g. 240 x 300 for the 1935 x 2400
cephalograms) should not decode full-size JPEG/BMP files every epoch.
:func:`cached_images` decodes each image of a record once, resizes it to the
working size with an anti-aliased linear filter and stores the stack as a
``.npy`` file under ``cache_dir``; later calls (and other processes) memory-map
it. The file name holds a hash of the image paths, their modification times
and byte sizes, the working size, the dtype and the preprocessing, so a changed
image or size gives a new cache entry. Files are written atomically under a
per-key file lock (two processes decode once), with a SHA-256 checksum beside
them (``<file>.sha256``) that every read verifies; a file that fails (truncated,
overwritten, wrong dtype) is decoded again (see :mod:`lmkcore.data.integrity`).

Geometry: integer coordinates are pixel centres, so resizing from ``W`` to
``W'`` pixels maps ``x' = (x + 0.5) * W' / W - 0.5`` (:func:`resize_landmarks`),
and the image resampling (Pillow, same convention) puts a structure at
pixel ``x`` of the original at ``x'`` of the cached image.

JPEG files are decoded with libjpeg's DCT scaling (Pillow ``draft``) to at most
1/8 but never below twice the working size, then resized exactly (the scaled
decode covers the same image extent); this is several times faster than a full
decode and equivalent up to the JPEG's own quantisation noise.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lmkcore.data.geometry import resize_landmarks  # noqa: F401  (defined once, in the geometry module)
from lmkcore.data.integrity import (IntegrityError, file_lock, remove_stale_partials, repair_warning, sha256_file,
                                    temp_path, verify_file, write_checksum)
from lmkcore.errors import ConfigError, DataError

#: Bumped whenever the cached pixels would change for the same inputs.
CACHE_VERSION = 1

_JPEG = (".jpg", ".jpeg")


def default_images_dir() -> Path:
    """``images/`` in :func:`lmkcore.cachedir.default_cache_dir`."""
    from lmkcore.cachedir import default_cache_dir

    return default_cache_dir() / "images"


def resize_image(image: np.ndarray, size: tuple[int, int], box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """Resize a ``(H, W)`` grey image to ``size = (W', H')`` (anti-aliased bilinear).

    Pillow's bilinear filter widens its support by the reduction factor when
    shrinking (an area-like, anti-aliased average) and is plain bilinear when
    enlarging. ``box`` (source region in pixel-edge coordinates) defaults to the
    whole image. Returns float32 ``(H', W')``.
    """
    from PIL import Image

    arr = np.ascontiguousarray(image, dtype=np.float32)
    if arr.ndim != 2:
        raise ConfigError(f"resize_image: expected a 2D (H, W) image, got shape {arr.shape}")
    im = Image.fromarray(arr)  # float32 (H, W) -> mode "F"
    w, h = int(size[0]), int(size[1])
    if box is None:
        box = (0.0, 0.0, float(arr.shape[1]), float(arr.shape[0]))
    out = im.resize((w, h), Image.BILINEAR, box=box)
    return np.asarray(out, dtype=np.float32)


def decode_resized(path: str | os.PathLike, size: tuple[int, int],
                   preprocess: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Decode one 2D image as grey float32 and resize it to ``size = (W, H)``.

    JPEGs without ``preprocess`` use a scaled DCT decode (see the module
    docstring); everything else is read with :func:`read_grey` (as :func:`lmkcore.data.imageio.read_image`),
    passed through ``preprocess`` at full resolution, then resized.

    Raises
    ------
    DataError
        If the file is missing, cannot be decoded or is not 2D (naming the file).
    """
    path = Path(path)
    w, h = int(size[0]), int(size[1])
    if preprocess is None and path.suffix.lower() in _JPEG:
        out = _decode_jpeg_scaled(path, w, h)
        if out is not None:
            return out
    img = read_grey(path)
    if img.ndim != 2:
        raise DataError(f"{path}: expected a 2D image for the image cache, got shape {img.shape}")
    if preprocess is not None:
        img = np.asarray(preprocess(img), dtype=np.float32)
    return resize_image(img, (w, h))


def read_grey(path: str | os.PathLike) -> np.ndarray:
    """Like :func:`lmkcore.data.imageio.read_image` (grey float32, channels averaged), but faster for colour files.

    Averages the channels one at a time in float32 instead of a float64 mean
    over the last axis (about 5x faster for the 3-channel cephalograms).
    """
    import SimpleITK as sitk

    from lmkcore.data.imageio import open_image

    img = open_image(path)
    arr = sitk.GetArrayViewFromImage(img)
    n = img.GetNumberOfComponentsPerPixel()
    if n > 1:
        out = arr[..., 0].astype(np.float32)
        for c in range(1, n):
            out += arr[..., c]
        out /= n
    else:
        out = np.array(arr, dtype=np.float32)
    if out.ndim == 3 and out.shape[0] == 1:
        out = out[0]
    return np.ascontiguousarray(out)


def _decode_jpeg_scaled(path: Path, w: int, h: int) -> np.ndarray | None:
    from PIL import Image, UnidentifiedImageError

    from lmkcore.data.imageio import check_image_file

    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    check_image_file(path)
    try:
        with Image.open(path) as im:
            if im.format != "JPEG":
                return None
            full = im.size
            res = im.draft("L", (2 * w, 2 * h))
            box = res[1] if res else (0, 0, full[0], full[1])
            im.load()
            if im.mode in ("L", "I", "F"):
                grey = im.convert("F")
            else:  # average the channels like read_image does
                grey = Image.fromarray(np.asarray(im.convert("RGB"), dtype=np.float32).mean(axis=-1))
            out = grey.resize((w, h), Image.BILINEAR, box=tuple(float(b) for b in box))
            return np.asarray(out, dtype=np.float32)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: unreadable image ({err})") from None


def _cache_key(paths: Sequence[Path], size: tuple[int, int], dtype: str, preprocess) -> str:
    items = []
    for p in paths:
        try:
            st = Path(p).stat()
        except FileNotFoundError:
            raise DataError(f"{p}: image file not found") from None
        items.append([str(Path(p).resolve()), st.st_mtime_ns, st.st_size])
    pre = None
    if preprocess is not None:
        pre = getattr(preprocess, "cache_key", None) or repr(preprocess)
    blob = json.dumps({"v": CACHE_VERSION, "images": items, "size": list(size), "dtype": dtype, "pre": pre})
    return hashlib.sha256(blob.encode()).hexdigest()


def _auto_dtype(paths: Sequence[Path]) -> str:
    from lmkcore.data.datasets._common import image_info

    types = {image_info(p).pixel_type for p in paths}
    return "uint8" if types <= {"8-bit unsigned integer", "vector of 8-bit unsigned integer"} else "float16"


def cache_file(record, size: tuple[int, int], cache_dir: str | os.PathLike | None = None, dtype: str = "auto") -> Path:
    """The file :func:`cached_images` uses for these arguments (it may not exist yet)."""
    paths = [Path(p) for p in record.image_paths]
    dtype = _auto_dtype(paths) if dtype == "auto" else dtype
    key = _cache_key(paths, (int(size[0]), int(size[1])), dtype, record.extras.get("preprocess"))
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_images_dir()
    return folder / f"{record.name}-{int(size[0])}x{int(size[1])}-{dtype}-{key[:20]}.npy"


def cached_images(
    record,
    size: tuple[int, int],
    cache_dir: str | os.PathLike | None = None,
    *,
    dtype: str = "auto",
    workers: int = 2,
    progress: bool = True,
) -> np.memmap:
    """All images of ``record`` at working size ``(W, H)``, decoded once and memory-mapped.

    Parameters
    ----------
    record : LandmarkDataset
        2D images. A callable ``record.extras["preprocess"]`` (e.g. the hand
        histogram matching) is applied to each full-resolution image first.
    size : (int, int)
        Working ``(W, H)``. Each image is resized to exactly this size (no
        padding; map landmarks with :func:`resize_landmarks` and the record's
        ``image_size``).
    cache_dir : path, optional
        Cache folder (default :func:`default_images_dir`).
    dtype : {"auto", "uint8", "float16", "float32"}
        ``auto``: ``uint8`` when every image header is 8-bit unsigned (rounded,
        clipped to 0..255), else ``float16``.
    workers : int
        Decoding threads (Pillow and SimpleITK release the GIL while decoding).
    progress : bool
        Show a tqdm progress bar while decoding.

    Returns
    -------
    numpy.memmap
        ``(M, H, W)`` read-only, rows in ``record.ids`` order.

    Raises
    ------
    DataError
        If an image is missing or unreadable (naming it); nothing is cached then.
    """
    if record.ndim != 2:
        raise ConfigError(f"{record.name}: the image cache handles 2D images; this record is {record.ndim}D")
    w, h = int(size[0]), int(size[1])
    if w <= 0 or h <= 0:
        raise ConfigError(f"cached_images: size must be positive (W, H), got {size!r}")
    if dtype not in ("auto", "uint8", "float16", "float32"):
        raise ConfigError(f"cached_images: dtype must be auto, uint8, float16 or float32, got {dtype!r}")
    paths = [Path(p) for p in record.image_paths]
    path = cache_file(record, (w, h), cache_dir, dtype)
    shape = (len(paths), h, w)
    out_dtype = path.name.split("-")[-2]
    problem: IntegrityError | None = None
    if path.is_file():
        try:
            return _load_verified(path, shape, out_dtype)
        except IntegrityError as err:
            problem = err
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path):
        remove_stale_partials(path.parent, f"{record.name}-*")
        if path.is_file():  # another process may have (re)built it while we waited
            try:
                return _load_verified(path, shape, out_dtype)
            except IntegrityError as err:
                problem = err
        if problem is not None:
            repair_warning(problem, "decoding the images again")
        preprocess = record.extras.get("preprocess")
        tmp = temp_path(path)
        try:
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(out_dtype), shape=shape)
            _fill(mm, paths, (w, h), preprocess, out_dtype, max(1, int(workers)), progress, record.name)
            mm.flush()
            del mm
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            digest = sha256_file(tmp)
            os.replace(tmp, path)
            write_checksum(path, digest)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return _load_verified(path, shape, out_dtype)


def _load_verified(path: Path, shape: tuple[int, ...], dtype: str) -> np.memmap:
    """Memory-map a cache file after checking its checksum, shape and dtype (:class:`IntegrityError` if not)."""
    verify_file(path)
    try:
        arr = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as err:
        raise IntegrityError(path, f"not a readable .npy array ({err})") from None
    if arr.shape != shape or arr.dtype != np.dtype(dtype):
        raise IntegrityError(path, f"holds {arr.dtype} {arr.shape}, expected {dtype} {shape}")
    return arr


def _convert(img: np.ndarray, dtype: str, path: Path) -> np.ndarray:
    if dtype == "uint8":
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if dtype == "float16" and np.nanmax(np.abs(img)) > np.finfo(np.float16).max:
        raise DataError(f"{path}: grey values up to {np.nanmax(np.abs(img)):.0f} overflow float16; use dtype='float32'")
    return img.astype(dtype)


def _fill(mm, paths, size, preprocess, dtype, workers, progress, name) -> None:
    try:
        from lmkcore.progress import progress as tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        tqdm = None
    bar = tqdm(total=len(paths), desc=f"decoding {name} at {size[0]}x{size[1]}", unit="img",
               disable=not progress) if tqdm is not None else None
    lock = threading.Lock()

    def job(i: int) -> int:
        img = _convert(decode_resized(paths[i], size, preprocess), dtype, paths[i])
        with lock:
            mm[i] = img
        return i

    try:
        if workers == 1 or len(paths) < 4:
            for i in range(len(paths)):
                job(i)
                if bar is not None:
                    bar.update(1)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(job, i) for i in range(len(paths))]
                try:
                    for fut in as_completed(futures):
                        fut.result()
                        if bar is not None:
                            bar.update(1)
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
    finally:
        if bar is not None:
            bar.close()
