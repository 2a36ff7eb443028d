"""3D volumes for the networks: read, resample to an isotropic working grid, normalise, window.

A :class:`VolumeSet` holds the images of a 3D :class:`~lmkcore.data.records.LandmarkDataset`
(e.g. the synthetic spine of :mod:`lmkcore.synthetic.spine` or a user's ``folder`` dataset of CT
volumes) in memory on the working grid, with the landmarks mapped onto it exactly.

Conventions
-----------
Volumes are ``(D, H, W)`` = ``(z, y, x)`` float32 arrays; landmarks ``(N, 3)`` ``(x, y, z)`` voxels,
integer = voxel centre. The working grid shares the centre of voxel 0 with the original image, so
``work_px = orig_px * orig_spacing / work_spacing`` (per axis) and back.
Intensities are CT numbers mapped as in Payer et al.'s spine code: ``I / 2048`` clamped to
``[-1, 1]``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lmkcore.errors import ConfigError, DataError

__all__ = ["read_volume", "resample_volume", "normalise_ct", "extract_window", "VolumeSet", "CT_SCALE"]

#: Intensity divisor (Payer et al., spine code: ``I / 2048``, clamped to [-1, 1]).
CT_SCALE = 2048.0


def read_volume(path: str | Path) -> np.ndarray:
    """``(D, H, W)`` float32 array of a 3D image file SimpleITK reads.

    Raises
    ------
    DataError
        Naming the file if it is missing, unreadable or not 3D.
    """
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: volume file not found")
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise DataError(f"{path}: cannot read the volume ({str(err).strip().splitlines()[-1]})") from None
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(f"{path}: expected a 3D single-channel volume, got {img.GetDimension()}D "
                        f"with {img.GetNumberOfComponentsPerPixel()} component(s)")
    return sitk.GetArrayFromImage(img).astype(np.float32)


def resample_volume(volume: np.ndarray, spacing: Sequence[float], work_spacing: float) -> np.ndarray:
    """Trilinear resampling of ``(D, H, W)`` with ``spacing`` ``(x, y, z)`` mm onto an isotropic grid of
    ``work_spacing`` mm sharing the centre of voxel 0; size ``floor((size - 1) * s / w) + 1`` per axis."""
    sp = np.asarray(spacing, dtype=np.float64)
    if np.allclose(sp, work_spacing):
        return np.asarray(volume, dtype=np.float32)
    size_xyz = np.array(volume.shape[::-1])
    out_xyz = np.floor((size_xyz - 1) * sp / work_spacing + 1e-6).astype(int) + 1
    coords = []  # normalised grid_sample coordinates (align_corners=True: -1 = centre of voxel 0)
    for k in range(3):
        pos = np.arange(out_xyz[k]) * work_spacing / sp[k]
        coords.append(torch.as_tensor(2 * pos / max(size_xyz[k] - 1, 1) - 1, dtype=torch.float32))
    gz, gy, gx = torch.meshgrid(coords[2], coords[1], coords[0], indexing="ij")
    grid = torch.stack([gx, gy, gz], -1)[None]
    vol = torch.as_tensor(np.asarray(volume, dtype=np.float32))[None, None]
    return F.grid_sample(vol, grid, mode="bilinear", align_corners=True)[0, 0].numpy()


def normalise_ct(volume: np.ndarray) -> np.ndarray:
    """``clip(I / 2048, -1, 1)`` (float32)."""
    return np.clip(np.asarray(volume, dtype=np.float32) / CT_SCALE, -1.0, 1.0)


def extract_window(volume: np.ndarray | torch.Tensor, start_zyx: Sequence[int], size_zyx: Sequence[int],
                   fill: float = 0.0):
    """The box ``[start, start + size)`` (voxels, z, y, x) of a ``(D, H, W)`` volume; parts outside the
    volume are ``fill``. ``start`` may be negative (padding before). Landmarks move by ``-start``."""
    t = torch.as_tensor(volume)
    out = torch.full(tuple(int(s) for s in size_zyx), float(fill), dtype=t.dtype)
    src, dst = [], []
    for k in range(3):
        a, n, dim = int(start_zyx[k]), int(size_zyx[k]), t.shape[k]
        lo, hi = max(a, 0), min(a + n, dim)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - a, hi - a))
    out[tuple(dst)] = t[tuple(src)]
    return out


@dataclass
class VolumeSet:
    """Volumes of a 3D dataset on the isotropic working grid.

    Attributes
    ----------
    ids : list of str
    volumes : list of Tensor
        ``(D_j, H_j, W_j)`` float32, normalised (:func:`normalise_ct`).
    landmarks : ndarray
        ``(M, N, 3)`` ``(x, y, z)`` working voxels; NaN = missing.
    scale : ndarray
        ``(M, 3)`` original voxels per working voxel (``work_spacing / orig_spacing``).
    work_spacing : float
        mm per working voxel.
    """

    ids: list[str]
    volumes: list[torch.Tensor]
    landmarks: np.ndarray
    scale: np.ndarray
    work_spacing: float

    @classmethod
    def from_record(cls, record, work_spacing: float, ids: Sequence[str] | None = None,
                    landmarks: np.ndarray | None = None) -> "VolumeSet":
        """Read (and resample) the volumes of ``ids`` (default all) of a 3D ``record``.

        ``landmarks`` ``(M_all, N, 3)`` original voxels (default ``record.landmarks``).
        """
        if record.ndim != 3:
            raise ConfigError(f"dataset {record.name!r} is {record.ndim}D; the 3D pipeline needs 3D volumes")
        if not (isinstance(work_spacing, (int, float)) and work_spacing > 0):
            raise ConfigError(f"work_spacing must be a positive number (mm), got {work_spacing!r}")
        ids = list(record.ids if ids is None else ids)
        rows = record.index_of(ids)
        lm_all = record.landmarks if landmarks is None else landmarks
        vols, scales = [], []
        for r in rows:
            sp = np.asarray(record.spacing[r], dtype=np.float64)
            vol = resample_volume(read_volume(record.image_paths[r]), sp, float(work_spacing))
            vols.append(torch.from_numpy(normalise_ct(vol)))
            scales.append(float(work_spacing) / sp)
        scale = np.asarray(scales, dtype=np.float64).reshape(len(rows), 3)
        lm = np.asarray(lm_all, dtype=np.float64)[rows] / scale[:, None, :]
        return cls(ids, vols, lm, scale, float(work_spacing))

    def to_original(self, points_work: np.ndarray) -> np.ndarray:
        """``(M, N, 3)`` working voxels -> original voxels."""
        return np.asarray(points_work, dtype=np.float64) * self.scale[:, None, :]
