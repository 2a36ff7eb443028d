"""Torch dataset over a :class:`~lmkcore.data.records.LandmarkDataset` at a working resolution.

Images are decoded once, resized to the working size and cached on disk
(:mod:`lmkcore.data.image_cache`); landmarks, spacing and every observer's
annotations are mapped to the same working pixel grid. Augmentation happens
later, batched on the device (:mod:`lmkcore.training.augment`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lmkcore.data.geometry import resize_landmarks, working_size  # noqa: F401  (re-exported)
from lmkcore.errors import ConfigError
from lmkcore.data.records import LandmarkDataset


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
    """

    def __init__(self, record: LandmarkDataset, ids: list[str] | None = None,
                 size: tuple[int, int] | None = None, cache_dir: str | Path | None = None):
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
        self.images = cached_images(self.record, self.size, cache_dir)
        orig = self.record.image_size.astype(np.float64)
        self.observer_names = self.record.observers
        obs = np.stack([self.record.annotations[k] for k in self.observer_names], axis=1)  # (M, K, N, 2)
        m, k, n, _ = obs.shape
        resized = np.stack([resize_landmarks(obs[i].reshape(k * n, 2), orig[i], self.size) for i in range(m)])
        self.observers = resized.reshape(m, k, n, 2).astype(np.float32)
        self.landmarks = self.observers[:, 0]
        self.spacing = (self.record.spacing * orig / np.asarray(self.size, dtype=np.float64)).astype(np.float32)

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
