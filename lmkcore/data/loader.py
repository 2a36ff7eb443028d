"""Torch dataset over a :class:`~lmkcore.data.records.LandmarkDataset` at a working resolution.

Images are decoded once, resized to the working size and cached on disk
(:mod:`lmkcore.data.image_cache`); landmarks, spacing and every observer's
annotations are mapped to the same working pixel grid. Augmentation happens
later, batched on the device (:mod:`lmkcore.training.augment`).

Frames. By default every image is resized to the working size as a whole (its aspect may change a
little). With ``pad=True`` each image is first zero-padded on the right or at the bottom to the aspect
``W / H`` of the working size and the padded image is resized (McCouat & Voiculescu's
``PadToAspectRatio(0.8, position='right-bottom')`` before their 640 x 800 resize). The top-left corner
stays in place, so original and working pixels are related by :func:`resize_landmarks` between the
**frame** (the padded size, :func:`padded_frame_size`) and the working size, in both directions.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lmkcore.data.geometry import resize_landmarks, working_size  # noqa: F401  (re-exported)
from lmkcore.errors import ConfigError
from lmkcore.data.records import LandmarkDataset

__all__ = ["GaussianPresmooth", "LandmarkImageDataset", "make_loader", "padded_frame_size", "PadToAspect",
           "resize_landmarks", "working_size"]


def padded_frame_size(image_size, work_size) -> np.ndarray:
    """Size ``(W_f, H_f)`` px of each image after zero padding on the right or at the bottom to the aspect
    of ``work_size``: the smallest integer frame holding the image whose ``W_f / H_f`` is closest to
    ``W / H`` of ``work_size`` (one side is the image's own, the other is rounded up).

    Parameters
    ----------
    image_size : array ``(2,)`` or ``(M, 2)``
        ``(W, H)`` original px.
    work_size : ``(W', H')``
        Working size whose aspect the frame takes.

    Returns
    -------
    ndarray, int64, same shape as ``image_size``.

    Examples
    --------
    ISBI 2015 (1935 x 2400) to 640 x 800 (aspect 0.8): 1935 / 2400 > 0.8, so the bottom is padded to
    ``ceil(1935 / 0.8) = 2419`` rows: ``(1935, 2419)``.
    """
    size = np.asarray(image_size, dtype=np.int64)
    aspect = float(work_size[0]) / float(work_size[1])
    w, h = size[..., 0], size[..., 1]
    wider = w > aspect * h  # too wide: pad the bottom
    # a small tolerance keeps exact ratios exact (e.g. 1600 x 2000 at 0.8)
    hf = np.where(wider, np.ceil(w / aspect - 1e-9), h).astype(np.int64)
    wf = np.where(wider, w, np.ceil(h * aspect - 1e-9)).astype(np.int64)
    return np.stack([np.maximum(wf, w), np.maximum(hf, h)], -1)


class _ChainedStep:
    """A picklable preprocessing step applied after ``then`` (a record's own preprocessing, or None).

    :attr:`cache_key` is ``"<own key>|<then's key>"``, so images made by the step get their own entries in
    the image cache (:mod:`lmkcore.data.image_cache`).
    """

    def __init__(self, own_key: str, then=None) -> None:
        self.then = then
        inner = None if then is None else (getattr(then, "cache_key", None) or repr(then))
        self.cache_key = f"{own_key}|{inner}"

    def _input(self, image: np.ndarray) -> np.ndarray:
        """``image`` after ``then``, as float32 ``(H, W)``."""
        return np.asarray(self.then(image) if self.then is not None else image, dtype=np.float32)


class PadToAspect(_ChainedStep):
    """Picklable preprocessing step: zero-pad a ``(H, W)`` image on the right / at the bottom to the frame
    of :func:`padded_frame_size` (then applies ``then``, a record's own preprocessing, first).

    Its :attr:`cache_key` names the aspect (and ``then``'s key), so padded images get their own entries in
    the image cache (:mod:`lmkcore.data.image_cache`).
    """

    def __init__(self, work_size: tuple[int, int], then=None) -> None:
        self.work_size = (int(work_size[0]), int(work_size[1]))
        super().__init__(f"pad-right-bottom-{self.work_size[0]}:{self.work_size[1]}", then)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        img = self._input(image)
        h, w = img.shape
        wf, hf = padded_frame_size(np.array([w, h]), self.work_size)
        out = np.zeros((int(hf), int(wf)), dtype=np.float32)
        out[:h, :w] = img
        return out


class GaussianPresmooth(_ChainedStep):
    """Picklable preprocessing step: Gaussian smoothing of a full-resolution ``(H, W)`` image (after ``then``,
    a record's own preprocessing), before it is resized to the working size (Thaler et al.'s / Payer et al.'s
    code: ``image_gaussian_sigma=0.15`` mm on the 0.1 mm/px cephalograms, i.e. 1.5 px).

    ``scipy.ndimage.gaussian_filter(image, (sigma_y, sigma_x), mode="nearest")`` (kernel truncated at 4 std).
    Its :attr:`cache_key` names the stds, so smoothed images get their own entries in the image cache.

    Parameters
    ----------
    sigma_px : (float, float)
        ``(sigma_x, sigma_y)`` in original px (``sigma_mm / spacing``).
    then : callable, optional
    """

    def __init__(self, sigma_px: tuple[float, float], then=None) -> None:
        self.sigma_px = (float(sigma_px[0]), float(sigma_px[1]))
        if not all(np.isfinite(self.sigma_px)) or min(self.sigma_px) <= 0:
            raise ConfigError(f"GaussianPresmooth: sigma_px must be > 0, got {sigma_px!r}")
        super().__init__(f"gauss-{self.sigma_px[0]:.6g},{self.sigma_px[1]:.6g}", then)

    @classmethod
    def for_record(cls, record: LandmarkDataset, sigma_mm: float, then=None) -> "GaussianPresmooth":
        """The step for ``record``'s images: ``sigma_mm`` over the record's (uniform) original spacing.

        Raises
        ------
        ConfigError
            If the record's images differ in spacing (one std per record).
        """
        spacings = np.unique(np.asarray(record.spacing, dtype=np.float64), axis=0)
        if len(spacings) != 1:
            raise ConfigError(f"{record.name}: input smoothing of {sigma_mm} mm needs one pixel spacing for all "
                              f"images; found {len(spacings)} different spacings")
        return cls(tuple(float(sigma_mm) / spacings[0]), then)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from scipy.ndimage import gaussian_filter

        img = self._input(image)
        return gaussian_filter(img, sigma=(self.sigma_px[1], self.sigma_px[0]), mode="nearest")


class LandmarkImageDataset(Dataset):
    """Images and landmarks of ``record`` resampled to a working size ``(W, H)``.

    Each item is a dict:

    ``image``
        ``(1, H, W)`` float32, grey values scaled to ``[0, 1]``.
    ``landmarks``
        ``(N, 2)`` float32 target landmarks in working pixels, ``(x, y)``; NaN if missing.
    ``observers``
        ``(K, N, 2)`` float32, every annotation set in :attr:`observer_names` order.
    ``spacing``
        ``(2,)`` float32 mm per working pixel along ``(x, y)``.
    ``index`` (int) and ``id`` (str)
        Row in :attr:`record` and image id.

    Parameters
    ----------
    record : LandmarkDataset
    ids : list of str, optional
        Subset of ids (default all).
    size : (int, int), optional
        Working ``(W, H)``; default the images' own size (must then be uniform).
    cache_dir : path, optional
        Where decoded, resized images are cached (see :mod:`lmkcore.data.image_cache`).
    pad : bool
        Zero-pad each image on the right / at the bottom to the aspect of ``size`` before resizing
        (module docstring); default False (resize the whole image).
    smoothing_mm : float
        Gaussian std in mm of a smoothing at the original resolution before padding and resizing
        (:class:`GaussianPresmooth`); 0 (default): none.

    Attributes
    ----------
    frame_size : ndarray ``(M, 2)`` int
        ``(W, H)`` original px that the working grid covers: the image size, or the padded frame
        (:func:`padded_frame_size`) with ``pad=True``. Map points with
        ``resize_landmarks(p, frame_size[i], size)`` and back with ``resize_landmarks(q, size, frame_size[i])``.
    """

    def __init__(self, record: LandmarkDataset, ids: list[str] | None = None,
                 size: tuple[int, int] | None = None, cache_dir: str | Path | None = None, pad: bool = False,
                 smoothing_mm: float = 0.0):
        from dataclasses import replace

        from lmkcore.data.image_cache import cached_images

        self.record = record.subset(ids) if ids is not None else record
        if record.ndim != 2:
            raise ConfigError("LandmarkImageDataset handles 2D images; 3D volumes are not supported yet")
        if size is None:
            sizes = np.unique(self.record.image_size, axis=0)
            if len(sizes) != 1:
                raise ConfigError(f"{record.name}: images differ in size; pass a working size")
            size = (int(sizes[0][0]), int(sizes[0][1]))
        self.size = (int(size[0]), int(size[1]))
        self.pad = bool(pad)
        if smoothing_mm:
            pre = GaussianPresmooth.for_record(self.record, smoothing_mm, self.record.extras.get("preprocess"))
            self.record = replace(self.record, extras={**self.record.extras, "preprocess": pre})
        if self.pad:
            self.frame_size = padded_frame_size(self.record.image_size, self.size)
            padded = replace(self.record, extras={**self.record.extras, "preprocess": PadToAspect(
                self.size, self.record.extras.get("preprocess"))})
            self.images = cached_images(padded, self.size, cache_dir)
        else:
            self.frame_size = np.asarray(self.record.image_size, dtype=np.int64)
            self.images = cached_images(self.record, self.size, cache_dir)
        orig = self.frame_size.astype(np.float64)
        self.observer_names = self.record.observers
        obs = np.stack([self.record.annotations[k] for k in self.observer_names], axis=1)  # (M, K, N, 2)
        m, k, n, _ = obs.shape
        resized = np.stack([resize_landmarks(obs[i].reshape(k * n, 2), orig[i], self.size) for i in range(m)])
        self.observers = resized.reshape(m, k, n, 2).astype(np.float32)
        self.landmarks = self.observers[:, 0]
        self.spacing = (self.record.spacing * orig / np.asarray(self.size, dtype=np.float64)).astype(np.float32)

    def to_original(self, points_work: np.ndarray) -> np.ndarray:
        """``(M, K, D)`` points in working px of this dataset's ``M`` images -> original-image px, through
        each image's :attr:`frame_size` (the padded frame with ``pad=True``)."""
        return np.stack([resize_landmarks(p, self.size, s) for p, s in zip(points_work, self.frame_size)])

    def __len__(self) -> int:
        return len(self.record.ids)

    def __getitem__(self, i: int) -> dict:
        img = np.asarray(self.images[i])
        img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
        return {
            "image": torch.from_numpy(img)[None],
            "landmarks": torch.from_numpy(self.landmarks[i]),
            "observers": torch.from_numpy(self.observers[i]),
            "spacing": torch.from_numpy(self.spacing[i]),
            "index": i,
            "id": self.record.ids[i],
        }


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False) -> DataLoader:
    """A single-process DataLoader whose shuffling is fixed by ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=gen, drop_last=drop_last, num_workers=0)
