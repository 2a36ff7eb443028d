"""Synthetic spine CT phantoms rendered around real vertebra centroids (CSI 2014 layout).

Payer et al. (2019), Sec. 4.2 / Table 5 evaluate the SCN on the MICCAI CSI 2014 spine CTs (Glocker et al.
2013): up to 26 vertebrae per scan (C1-C7, T1-T12, L1-L5, S1, S2), most scans showing only part of the
spine. The CT volumes are not available here, but the vertebra centroids are
(``HeatmapRegression/spine/spine_localization_dataset/setup/points_world_coordinates.csv``: one row per
scan, ``id, x1, y1, z1, ..., x26, y26, z26`` in world mm, ``NaN`` for a vertebra outside the field of
view, plus the paper's ``train_all.txt`` / ``test_all.txt`` and 2-fold ``cv/{0,1}`` lists). This module
renders, for each scan, a CT-like volume around a spine curve through that scan's centroids, so that the
3D pipeline has data with the real spatial configuration and exactly known truth:

* vertebral bodies (soft-edged elliptic cylinders with a bright cortical rim, oriented along the local
  spine tangent, sized by level), intervertebral discs, posterior elements (neural arch, spinous and
  transverse processes), ribs on T1-T12, sacral alae on S1-S2;
* soft tissue, lungs at the thoracic levels, air outside the body; a smooth intensity bias, a random
  global intensity scale/shift and Gaussian noise;
* the field of view ends between the last annotated vertebra and the next one (a random fraction
  ``fov_margin`` of the local vertebra distance), so the NaN vertebrae lie outside it; the volume's x-y
  extent is ``fov_xy_mm`` around the spine. Neighbouring vertebrae look alike: only their size changes
  slowly with the level, so mostly the spatial configuration tells them apart.

The real coordinates are read from the user's copy of the file (parameter or ``$LMKCORE_SHARED_DATA``, which
``run_all.sh`` sets to ``../shared/data`` beside the repository when present); nothing of them is shipped.
Without the file, :func:`constructed_centroids` draws a stand-in table from textbook vertebra distances.

Output layout (the generic folder layout of :mod:`lmkcore.data.datasets.folder`, so the same reader
serves the user's real 3D data)::

    <root>/images/<id>.mha          int16 HU-like volume, isotropic spacing_mm, origin 0
    <root>/landmarks.csv            image, C1_x, C1_y, C1_z, ..., S2_z  (voxels, x = column, z = slice)
    <root>/splits/train.txt, test.txt, cv/set1/{train,val}.txt, ...
    <root>/truth.npz                ids, landmarks_px (M, 26, 3), centroids_world_mm, origin_mm, spacing_mm
    <root>/dataset.json             written last: marks a complete dataset

Conventions: landmark arrays are ``(M, 26, 3)`` ``(x, y, z)`` in voxels of the volume, integer =
voxel centre; volumes are ``(D, H, W)`` = ``(z, y, x)`` arrays. World mm ``= origin + spacing * px``.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmkcore.data.formats import atomic_directory, atomic_write_bytes, atomic_write_text, read_id_list, write_id_list
from lmkcore.errors import ConfigError, DataError

__all__ = [
    "VERTEBRA_NAMES",
    "SPINE_GENERATOR_VERSION",
    "CENTROID_FILE",
    "SpineConfig",
    "CentroidTable",
    "find_centroid_file",
    "read_centroid_table",
    "constructed_centroids",
    "render_spine_volume",
    "generate_spine",
    "spine_dataset",
    "load_spine",
]

#: The 26 CSI 2014 vertebrae, in the column order of the centroid file.
VERTEBRA_NAMES: tuple[str, ...] = tuple(
    [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)] + ["S1", "S2"]
)
#: Bump whenever the rendered data change for the same config (invalidates caches).
SPINE_GENERATOR_VERSION = 1
#: The centroid file, relative to the shared data folder.
CENTROID_FILE = Path("HeatmapRegression/spine/spine_localization_dataset/setup/points_world_coordinates.csv")

_N = len(VERTEBRA_NAMES)
_THORACIC = np.arange(7, 19)
_SACRAL = np.array([24, 25])
# Textbook centroid-to-centroid distances (mm) between consecutive levels (adult; used for the stand-in
# table and to extrapolate the curve beyond the annotated vertebrae).
_LEVEL_GAP_MM = np.array([12, 16, 15, 15, 15, 16, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30,
                          32, 33, 34, 35, 33, 22], dtype=np.float64)  # gap i -> i + 1, 25 entries
# Half width (lateral), half depth (antero-posterior) of the vertebral body by level (mm).
_BODY_HALF_WIDTH = np.interp(np.arange(_N), [0, 6, 7, 18, 19, 23, 24, 25], [9, 10, 11, 17, 19, 24, 26, 20])
_BODY_HALF_DEPTH = np.interp(np.arange(_N), [0, 6, 7, 18, 19, 23, 24, 25], [7, 8, 9, 14, 15, 17, 17, 13])


# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpineConfig:
    """What is rendered.

    Attributes
    ----------
    spacing_mm : float
        Isotropic voxel size (Payer et al.: 2 mm).
    fov_xy_mm : float
        x-y extent of every volume (Payer et al.'s 96 x 96 voxels at 2 mm = 192 mm), widened where a
        scan's centroids need more.
    max_scans : int or None
        Render only the first ``max_scans`` scans of the table (in file order; splits are kept for them).
    noise_hu : float
        Std of the additive Gaussian noise (HU).
    fov_margin : tuple of float
        The z field of view extends beyond the first/last annotated centroid by ``U(lo, hi)`` times the
        distance to the next vertebra.
    seed : int
        Seed of every random choice (the same seed and table give identical volumes).
    """

    spacing_mm: float = 2.0
    fov_xy_mm: float = 192.0
    max_scans: int | None = None
    noise_hu: float = 30.0
    fov_margin: tuple[float, float] = (0.25, 0.5)
    seed: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.spacing_mm, (int, float)) and 0.5 <= self.spacing_mm <= 16):
            raise ConfigError(f"SpineConfig.spacing_mm must be in [0.5, 16] mm, got {self.spacing_mm!r}")
        if not (isinstance(self.fov_xy_mm, (int, float)) and self.fov_xy_mm >= 64):
            raise ConfigError(f"SpineConfig.fov_xy_mm must be >= 64 mm, got {self.fov_xy_mm!r}")
        if self.max_scans is not None and (not isinstance(self.max_scans, int) or self.max_scans < 1):
            raise ConfigError(f"SpineConfig.max_scans must be None or a positive int, got {self.max_scans!r}")
        lo, hi = self.fov_margin
        if not 0 <= lo <= hi < 1:
            raise ConfigError(f"SpineConfig.fov_margin must satisfy 0 <= lo <= hi < 1, got {self.fov_margin!r}")
        if self.noise_hu < 0:
            raise ConfigError(f"SpineConfig.noise_hu must be >= 0, got {self.noise_hu!r}")

    def key(self, table: "CentroidTable") -> str:
        """Cache key: this config, the table's content and the generator version."""
        blob = json.dumps({"config": asdict(self), "table": table.fingerprint(), "v": SPINE_GENERATOR_VERSION},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class CentroidTable:
    """Vertebra centroids of a set of scans.

    Attributes
    ----------
    ids : list of str
        Scan ids (``M``).
    centroids_mm : ndarray
        ``(M, 26, 3)`` world ``(x, y, z)`` mm; NaN = vertebra not in the scan.
    splits : dict
        Split name -> ids (``train``, ``test``, ``cv1/train``, ...).
    source : str
        The file it was read from, or ``"constructed"``.
    """

    ids: list[str]
    centroids_mm: np.ndarray
    splits: dict[str, list[str]]
    source: str

    def fingerprint(self) -> str:
        h = hashlib.sha256("\n".join(self.ids).encode())
        h.update(np.ascontiguousarray(self.centroids_mm, dtype=np.float64).tobytes())
        h.update(json.dumps(self.splits, sort_keys=True).encode())
        return h.hexdigest()

    def head(self, n: int | None) -> "CentroidTable":
        """``n`` scans (all if None), with the splits restricted to them. With ``train`` and ``test``
        splits, the first scans of each in proportion (so a subset keeps a test set), else the first ``n``."""
        if n is None or n >= len(self.ids):
            return self
        if "train" in self.splits and "test" in self.splits:
            n_test = min(len(self.splits["test"]), max(1, round(n * len(self.splits["test"]) / len(self.ids))))
            keep = set(self.splits["test"][:n_test]) | set(self.splits["train"][:n - n_test])
        else:
            keep = set(self.ids[:n])
        rows = [k for k, i in enumerate(self.ids) if i in keep]
        splits = {k: [i for i in v if i in keep] for k, v in self.splits.items()}
        return CentroidTable([self.ids[k] for k in rows], self.centroids_mm[rows],
                             {k: v for k, v in splits.items() if v}, self.source)


def find_centroid_file(path: str | os.PathLike | None = None) -> Path | None:
    """The CSI 2014 centroid file: ``path`` (a file, or a folder holding ``CENTROID_FILE``), else
    ``$LMKCORE_SHARED_DATA/<CENTROID_FILE>`` (``run_all.sh`` and the tests set it to ``../shared/data`` beside the
    repository when present; never looked up beside the installed package); None if absent.

    Raises
    ------
    DataError
        If an explicitly given ``path`` does not lead to the file.
    """
    if path not in (None, ""):
        p = Path(path).expanduser()
        if p.is_dir():
            p = p / CENTROID_FILE if (p / CENTROID_FILE).is_file() else p / "points_world_coordinates.csv"
        if not p.is_file():
            raise DataError(f"{path}: no spine centroid file there (expected {CENTROID_FILE} or the csv itself)")
        return p
    env = os.environ.get("LMKCORE_SHARED_DATA")
    candidate = Path(env).expanduser() / CENTROID_FILE if env else None
    return candidate if candidate is not None and candidate.is_file() else None


def read_centroid_table(path: str | os.PathLike) -> CentroidTable:
    """Read ``points_world_coordinates.csv`` and the split lists beside it.

    Raises
    ------
    DataError
        Naming the file and line for a malformed row.
    """
    path = Path(path)
    ids, rows = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the spine centroid file ({err})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 1 + 3 * _N:
            raise DataError(f"{path}, line {lineno}: expected an id and {3 * _N} coordinates, got {len(fields) - 1}")
        try:
            rows.append([float(f) for f in fields[1:]])
        except ValueError:
            raise DataError(f"{path}, line {lineno}: non-numeric coordinate") from None
        ids.append(fields[0])
    if not ids:
        raise DataError(f"{path}: no scans in the spine centroid file")
    cents = np.asarray(rows, dtype=np.float64).reshape(len(ids), _N, 3)
    cents[np.isnan(cents).any(-1)] = np.nan
    splits: dict[str, list[str]] = {}
    known = set(ids)
    lists = {"train": path.parent / "train_all.txt", "test": path.parent / "test_all.txt"}
    for k in (0, 1):
        for part in ("train", "val"):
            lists[f"cv{k + 1}/{part}"] = path.parent / "cv" / str(k) / f"{part}.txt"
    for name, f in lists.items():
        if f.is_file():
            splits[name] = [i for i in read_id_list(f) if i in known]
    return CentroidTable(ids, cents, splits, str(path))


def constructed_centroids(n_scans: int = 24, seed: int = 0) -> CentroidTable:
    """A stand-in centroid table drawn from textbook vertebra distances (no real coordinates).

    Each scan: a full 26-level spine with the gaps of ``_LEVEL_GAP_MM`` scaled by ``U(0.9, 1.1)``,
    a sagittal curve (cervical/lumbar lordosis, thoracic kyphosis) and a slight scoliosis of random
    amplitude, z decreasing from C1 to S2 as in the CSI files; then a random window of 7-17
    consecutive vertebrae is kept and the rest set to NaN. Splits: ``train`` (first 75 %), ``test``.

    Returns
    -------
    CentroidTable
        ``(n_scans, 26, 3)`` world mm.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1729]))
    out = np.full((n_scans, _N, 3), np.nan)
    for m in range(n_scans):
        gaps = _LEVEL_GAP_MM * rng.uniform(0.9, 1.1)
        s = np.concatenate([[0.0], np.cumsum(gaps)])  # arc length from C1
        t = s / s[-1]
        y = 70 + rng.uniform(8, 16) * np.sin(2 * np.pi * t) * (1 - t) + rng.uniform(5, 12) * np.sin(np.pi * t)
        x = 90 + rng.uniform(-6, 6) * np.sin(np.pi * t * rng.uniform(1, 2))
        z = s[-1] + 20 - s
        full = np.stack([x, y, z], -1)
        count = int(rng.integers(7, 18))
        start = int(rng.integers(0, _N - count + 1))
        keep = slice(start, start + count)
        window = full[keep].copy()
        window[:, 2] -= window[:, 2].min() - rng.uniform(10, 30)
        out[m, keep] = window
    ids = [f"spine{m:03d}" for m in range(n_scans)]
    n_train = max(1, int(round(0.75 * n_scans)))
    splits = {"train": ids[:n_train], "test": ids[n_train:] or ids[-1:]}
    return CentroidTable(ids, out, splits, "constructed")


# --------------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------------


def _complete_curve(cent: np.ndarray) -> np.ndarray:
    """All 26 centroids ``(26, 3)`` mm: the valid ones, gaps interpolated, ends extrapolated along the
    end tangents with the textbook gaps (scaled to the scan's mean observed gap ratio)."""
    valid = ~np.isnan(cent).any(-1)
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        raise DataError("a scan without any vertebra centroid")
    full = cent.copy()
    s_ref = np.concatenate([[0.0], np.cumsum(_LEVEL_GAP_MM)])
    if idx.size >= 2:
        ratio = np.linalg.norm(np.diff(cent[idx], axis=0), axis=-1).sum() / (s_ref[idx[-1]] - s_ref[idx[0]])
        ratio = float(np.clip(ratio, 0.6, 1.6))
        for k in range(3):  # interior gaps: interpolate in the textbook arc length
            full[idx[0]:idx[-1] + 1, k] = np.interp(s_ref[idx[0]:idx[-1] + 1], s_ref[idx], cent[idx, k])
        head = cent[idx[1]] - cent[idx[0]]
        tail = cent[idx[-1]] - cent[idx[-2]]
    else:
        ratio = 1.0
        head = tail = np.array([0.0, 0.0, -1.0])
    head, tail = head / np.linalg.norm(head), tail / np.linalg.norm(tail)
    for i in range(idx[0] - 1, -1, -1):
        full[i] = full[i + 1] - head * _LEVEL_GAP_MM[i] * ratio
    for i in range(idx[-1] + 1, _N):
        full[i] = full[i - 1] + tail * _LEVEL_GAP_MM[i - 1] * ratio
    return full


def _frames(curve: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per level: unit axial tangent (towards the caudal neighbour), lateral (~+x) and posterior (~+y) axes."""
    tang = np.gradient(curve, axis=0)
    tang /= np.linalg.norm(tang, axis=-1, keepdims=True)
    lat = np.array([1.0, 0.0, 0.0]) - tang[:, :1] * tang
    lat /= np.linalg.norm(lat, axis=-1, keepdims=True)
    post = np.cross(tang, lat)
    post *= np.sign(post[:, 1:2] + 1e-12)  # +y is posterior (LPS world)
    return tang, lat, post


def _smoothstep(d: np.ndarray, width: float) -> np.ndarray:
    """Soft inside indicator of a signed distance ``d`` (mm, > 0 inside), edge ``width`` mm."""
    return 1.0 / (1.0 + np.exp(-np.clip(d / width, -30, 30)))


class _Canvas:
    """A volume ``(D, H, W)`` with world geometry and local-box drawing helpers (all in mm)."""

    def __init__(self, origin: np.ndarray, shape: tuple[int, int, int], spacing: float) -> None:
        self.origin, self.shape, self.spacing = origin, shape, spacing
        self.bone = np.zeros(shape, dtype=np.float32)  # max-combined bone intensity above soft tissue
        self.edge = max(0.6, 0.5 * spacing)

    def box(self, centre: np.ndarray, radius: float):
        """Slices and world coordinates ``(d, h, w, 3)`` of the voxels within ``radius`` mm of ``centre``."""
        lo = np.floor((centre - radius - self.origin) / self.spacing).astype(int)
        hi = np.ceil((centre + radius - self.origin) / self.spacing).astype(int) + 1
        size = np.array(self.shape[::-1])  # x, y, z
        lo, hi = np.clip(lo, 0, size), np.clip(hi, 0, size)
        if np.any(hi <= lo):
            return None, None
        axes = [self.origin[k] + self.spacing * np.arange(lo[k], hi[k]) for k in range(3)]
        zz, yy, xx = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
        sl = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
        return sl, np.stack([xx, yy, zz], -1)

    def put(self, sl, values: np.ndarray) -> None:
        np.maximum(self.bone[sl], values.astype(np.float32), out=self.bone[sl])

    def tube(self, points: np.ndarray, radius: float, value: float) -> None:
        """A soft tube of ``radius`` mm through the densely sampled ``points`` ``(K, 3)`` mm (distance to
        the nearest sample; samples closer than ``radius`` apart)."""
        pts = np.asarray(points, dtype=np.float64)
        reach = radius + 3 * self.edge
        lo, hi = pts.min(0) - reach, pts.max(0) + reach
        lo_i = np.clip(np.floor((lo - self.origin) / self.spacing).astype(int), 0, np.array(self.shape[::-1]))
        hi_i = np.clip(np.ceil((hi - self.origin) / self.spacing).astype(int) + 1, 0, np.array(self.shape[::-1]))
        if np.any(hi_i <= lo_i):
            return
        axes = [self.origin[k] + self.spacing * np.arange(lo_i[k], hi_i[k]) for k in range(3)]
        d2 = np.full((len(axes[2]), len(axes[1]), len(axes[0])), np.inf)
        for p in pts:  # separable squared distances, no (voxels x K) temporary
            dz, dy, dx = (axes[2] - p[2]) ** 2, (axes[1] - p[1]) ** 2, (axes[0] - p[0]) ** 2
            np.minimum(d2, dz[:, None, None] + dy[None, :, None] + dx[None, None, :], out=d2)
        sl = (slice(lo_i[2], hi_i[2]), slice(lo_i[1], hi_i[1]), slice(lo_i[0], hi_i[0]))
        self.put(sl, value * _smoothstep(radius - np.sqrt(d2), self.edge))


def render_spine_volume(centroids_mm: np.ndarray, config: SpineConfig, rng: np.random.Generator
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one scan.

    Parameters
    ----------
    centroids_mm : ndarray
        ``(26, 3)`` world ``(x, y, z)`` mm, NaN for vertebrae outside the field of view.
    config : SpineConfig
    rng : numpy Generator
        Source of all randomness of this scan.

    Returns
    -------
    volume : ndarray
        ``(D, H, W)`` int16 HU-like intensities (air -1000, soft tissue ~40, bone 300-1000).
    origin_mm : ndarray
        ``(3,)`` world ``(x, y, z)`` of the centre of voxel ``(0, 0, 0)``.
    landmarks_px : ndarray
        ``(26, 3)`` ``(x, y, z)`` voxel coordinates of the centroids (NaN where missing).
    """
    cent = np.asarray(centroids_mm, dtype=np.float64)
    if cent.shape != (_N, 3):
        raise DataError(f"centroids must be ({_N}, 3), got {cent.shape}")
    valid = ~np.isnan(cent).any(-1)
    curve = _complete_curve(cent)
    tang, lat, post = _frames(curve)
    sp = float(config.spacing_mm)
    idx = np.flatnonzero(valid)
    # field of view: x-y box around the spine, z up to a random fraction of the next gap beyond the ends
    centre_xy = np.nanmean(cent[:, :2], axis=0)
    half_xy = max(config.fov_xy_mm / 2, float(np.nanmax(np.abs(cent[:, :2] - centre_xy))) + 20.0)
    n_xy = int(np.ceil(2 * half_xy / sp))
    z_vals = cent[idx, 2]
    z_hi_i, z_lo_i = idx[np.argmax(z_vals)], idx[np.argmin(z_vals)]

    def beyond(i: int, other: int) -> float:
        return float(np.linalg.norm(curve[other] - curve[i])) if 0 <= other < _N else 25.0

    lo, hi = config.fov_margin
    up = beyond(z_hi_i, z_hi_i - 1 if z_hi_i == idx[0] else z_hi_i + 1) * rng.uniform(lo, hi)
    down = beyond(z_lo_i, z_lo_i + 1 if z_lo_i == idx[-1] else z_lo_i - 1) * rng.uniform(lo, hi)
    z0, z1 = z_vals.min() - down, z_vals.max() + up
    n_z = max(int(np.ceil((z1 - z0) / sp)) + 1, 4)
    origin = np.array([centre_xy[0] - (n_xy - 1) * sp / 2, centre_xy[1] - (n_xy - 1) * sp / 2,
                       0.5 * (z0 + z1) - (n_z - 1) * sp / 2])
    canvas = _Canvas(origin, (n_z, n_xy, n_xy), sp)

    # soft tissue and lungs (x-y ellipses, constant along z), computed on the whole grid
    xs = origin[0] + sp * np.arange(n_xy)
    ys = origin[1] + sp * np.arange(n_xy)
    zs = origin[2] + sp * np.arange(n_z)
    spine_y = np.interp(zs, curve[::-1, 2], curve[::-1, 1])
    spine_x = np.interp(zs, curve[::-1, 2], curve[::-1, 0])
    ax, ay = rng.uniform(150, 190), rng.uniform(105, 135)
    body_cy = spine_y - ay + rng.uniform(65, 80)
    X = xs[None, None, :] - spine_x[:, None, None]
    Y = ys[None, :, None] - body_cy[:, None, None]
    r_body = np.sqrt((X / ax) ** 2 + (Y / ay) ** 2)
    vol = -1000.0 + 1040.0 * _smoothstep((1 - r_body) * ay, 2.0)
    z_t1, z_t12 = curve[7, 2], curve[18, 2]
    lung_z = _smoothstep(np.minimum(z_t1 + 10 - zs, zs - (z_t12 - 15)), 8.0)[:, None, None]
    for side in (-1, 1):
        lx = X - side * rng.uniform(60, 75)
        ly = ys[None, :, None] - (spine_y[:, None, None] - rng.uniform(45, 60))
        r_lung = np.sqrt((lx / rng.uniform(45, 55)) ** 2 + (ly / rng.uniform(60, 75)) ** 2)
        vol -= 820.0 * _smoothstep((1 - r_lung) * 40, 2.0) * lung_z

    # bone: bodies, discs, posterior elements, ribs, sacral alae
    for i in range(_N):
        c, t, u, v = curve[i], tang[i], lat[i], post[i]
        gap_up = np.linalg.norm(curve[i] - curve[i - 1]) if i > 0 else _LEVEL_GAP_MM[0]
        gap_dn = np.linalg.norm(curve[i + 1] - curve[i]) if i < _N - 1 else _LEVEL_GAP_MM[-1]
        half_h = 0.36 * min(gap_up, gap_dn) if i > 0 else 0.25 * gap_dn
        a, b = _BODY_HALF_WIDTH[i], _BODY_HALF_DEPTH[i]
        sl, xyz = canvas.box(c, max(a, b, half_h) + 4 * canvas.edge)
        if sl is not None:
            d = xyz - c
            pu, pv, pt = d @ u, d @ v, d @ t
            r = np.sqrt((pu / a) ** 2 + (pv / b) ** 2)
            inside_r = (1 - r) * min(a, b)
            body = _smoothstep(inside_r, canvas.edge) * _smoothstep(half_h - np.abs(pt), canvas.edge)
            rim = np.exp(-0.5 * (np.minimum(np.abs(inside_r), np.abs(half_h - np.abs(pt))) / 1.5) ** 2)
            canvas.put(sl, body * (260.0 + 500.0 * rim))
            # disc below: a thinner, dimmer slab (tissue contrast)
            if i < _N - 1:
                disc = _smoothstep(inside_r, canvas.edge) * _smoothstep(gap_dn / 2 - np.abs(pt - gap_dn / 2), 1.0)
                canvas.put(sl, disc * 60.0 * (pt > half_h))
        # neural arch around the canal, spinous and transverse processes
        canal_r = 7.0 if i < 7 else 8.0
        cc = c + v * (b + canal_r + 2.0)
        ang = np.linspace(-np.pi * 0.85, np.pi * 0.85, 14)
        ring = cc[None] + (canal_r + 2.5) * (np.sin(ang)[:, None] * u + np.cos(ang)[:, None] * v)
        canvas.tube(ring, 2.2, 700.0)
        sp_len = (18.0 if i < 7 else 28.0) * (0.6 if i >= 24 else 1.0)
        k = np.linspace(0, 1, 8)[:, None]
        tip = cc + v * (canal_r + 2.5 + sp_len) - t * 0.5 * sp_len
        canvas.tube(cc + v * (canal_r + 2.5) + k * (tip - cc - v * (canal_r + 2.5)), 2.5, 650.0)
        for side in (-1, 1):
            tp_len = a * (0.9 if i < 19 else 1.3)
            root = cc + side * u * (canal_r + 2.0)
            canvas.tube(root + k * (side * u * tp_len + v * 3.0), 2.5, 650.0)
            if i in _THORACIC:  # rib: from the transverse process around the chest, sloping caudally
                th = np.linspace(0.0, 0.6 * np.pi, 24)
                rx, ry = rng.uniform(0.55, 0.65) * ax, rng.uniform(0.7, 0.85) * ay
                start = root + side * u * tp_len
                rib = (start[None] + side * np.sin(th)[:, None] * rx * u
                       + (np.cos(th)[:, None] - 1) * ry * v + t * (th[:, None] * 12.0))
                canvas.tube(rib, 3.0, 600.0)
            if i in _SACRAL:  # sacral alae
                canvas.tube(c + k * (side * u * (a + 30.0) + v * 8.0), 9.0 if i == 24 else 7.0, 450.0)

    vol = np.where(canvas.bone > 1.0, np.maximum(vol, 40.0) + canvas.bone, vol)  # bone sits in soft tissue
    # intensity variation: a smooth bias along z and x, global scale/shift, noise
    bias = 1.0 + rng.uniform(-0.08, 0.08) * np.cos(np.pi * (zs - zs[0]) / max(zs[-1] - zs[0], 1.0)
                                                   + rng.uniform(0, np.pi))
    vol = vol * bias[:, None, None]
    vol = vol * rng.uniform(0.92, 1.08) + rng.uniform(-30, 30)
    vol = vol + rng.normal(0.0, config.noise_hu, size=vol.shape)
    volume = np.clip(np.round(vol), -1024, 3000).astype(np.int16)
    landmarks_px = (cent - origin) / sp
    return volume, origin, landmarks_px


# --------------------------------------------------------------------------------------------------
# dataset on disk
# --------------------------------------------------------------------------------------------------


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arrays[name]), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), member.getvalue())
    atomic_write_bytes(path, buf.getvalue())


def _write_mha(path: Path, volume: np.ndarray, spacing: float) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(volume)  # (z, y, x) array -> x, y, z image
    img.SetSpacing((spacing,) * 3)
    img.SetOrigin((0.0, 0.0, 0.0))
    sitk.WriteImage(img, str(path), useCompression=False)


def generate_spine(table: CentroidTable, config: SpineConfig, root: str | os.PathLike) -> Path:
    """Render every scan of ``table`` into ``root`` (atomically: complete or absent); see the module doc."""
    table = table.head(config.max_scans)
    root = Path(root)
    seeds = np.random.SeedSequence([config.seed, 2014]).spawn(len(table.ids))
    lms, origins = [], []
    with atomic_directory(root) as tmp:
        (tmp / "images").mkdir()
        for k, sid in enumerate(table.ids):
            rng = np.random.Generator(np.random.PCG64(seeds[k]))
            try:
                vol, origin, lm = render_spine_volume(table.centroids_mm[k], config, rng)
            except DataError as err:
                raise DataError(f"{table.source}, scan {sid}: {err}") from None
            _write_mha(tmp / "images" / f"{sid}.mha", vol, float(config.spacing_mm))
            lms.append(lm)
            origins.append(origin)
        lm_all = np.stack(lms)
        header = ["image"] + [f"{n}_{a}" for n in VERTEBRA_NAMES for a in "xyz"]
        lines = [",".join(header)]
        for sid, lm in zip(table.ids, lm_all):
            vals = ["nan" if np.isnan(v) else f"{v:.4f}" for v in lm.reshape(-1)]
            lines.append(",".join([f"images/{sid}.mha"] + vals))
        atomic_write_text(tmp / "landmarks.csv", "\n".join(lines) + "\n")
        for name, ids in table.splits.items():
            parts = name.split("/")
            target = tmp / "splits" / (f"cv/set{parts[0][2:]}/{parts[1]}.txt" if len(parts) == 2 else f"{name}.txt")
            write_id_list(target, ids)
        _write_npz(tmp / "truth.npz", {"ids": np.array(table.ids), "landmarks_px": lm_all,
                                       "centroids_world_mm": table.centroids_mm, "origin_mm": np.stack(origins),
                                       "spacing_mm": np.array(float(config.spacing_mm))})
        meta = {"name": "synthetic_spine", "generator_version": SPINE_GENERATOR_VERSION, "key": config.key(table),
                "config": asdict(config), "centroid_source": table.source, "n_scans": len(table.ids),
                "landmark_names": list(VERTEBRA_NAMES)}
        atomic_write_text(tmp / "dataset.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return root


def spine_dataset(config: SpineConfig | None = None, centroids: str | os.PathLike | CentroidTable | None = None,
                  cache_dir: str | os.PathLike | None = None, verbose: bool = True) -> Path:
    """Folder of the synthetic spine dataset for ``config``, rendered on first use and cached.

    Parameters
    ----------
    config : SpineConfig, optional
    centroids : path, CentroidTable or None
        The CSI 2014 centroid file (or a folder holding it, or a table); None: found by
        :func:`find_centroid_file`, else the :func:`constructed_centroids` stand-in (with a message).
    cache_dir : path, optional
        Default ``$LMKCORE_CACHE`` or ``~/.cache/lmkcore``. The dataset is ``cache_dir / "spine-<key>"``.
    """
    from lmkcore.synthetic.generator import default_cache_dir

    cfg = config or SpineConfig()
    if isinstance(centroids, CentroidTable):
        table = centroids
    else:
        f = find_centroid_file(centroids)
        if f is None:
            if verbose:
                print("spine: the CSI 2014 centroid file was not found (pass centroids= or set LMKCORE_SHARED_DATA); "
                      "using the constructed stand-in table")
            table = constructed_centroids(24 if cfg.max_scans is None else cfg.max_scans, cfg.seed)
        else:
            table = read_centroid_table(f)
    table = table.head(cfg.max_scans)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / f"spine-{cfg.key(table)}"
    meta = path / "dataset.json"
    if meta.is_file():
        try:
            if json.loads(meta.read_text(encoding="utf-8")).get("key") == cfg.key(table):
                return path
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            pass
    return generate_spine(table, cfg, path)


def load_spine(root: str | os.PathLike, verbose: bool = False):
    """Read a rendered spine dataset as a :class:`~lmkcore.data.records.LandmarkDataset` (3D, voxels),
    with ``truth["landmarks"]`` the exact centroids and ``extras["spine"]`` the generator metadata."""
    from lmkcore.data.datasets.folder import load as load_folder

    root = Path(root)
    try:
        meta: dict[str, Any] = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{root}: not a complete spine dataset ({err})") from None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the folder loader warns about the (expected) NaN vertebrae
        record = load_folder(root, name="synthetic_spine", verbose=verbose)
    with np.load(root / "truth.npz") as z:
        record.truth["landmarks"] = z["landmarks_px"]
    record.extras["spine"] = meta
    return record
