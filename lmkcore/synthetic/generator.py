"""The built-in synthetic cephalogram dataset: known truth, known annotation noise.

Subjects are drawn from a shape model of the 19 ISBI landmarks derived from the
real annotations (:mod:`lmkcore.synthetic.shape_model`); an anatomy is built around each
landmark set (:mod:`lmkcore.synthetic.anatomy`), posed (small rotation, scale,
translation) and rendered as an X-ray-like image (:mod:`lmkcore.synthetic.render`).
Eleven simulated observers annotate every image: the true point plus a draw
from a declared, per-image anisotropic Gaussian (:mod:`lmkcore.synthetic.observers`).

On disk (``generate_synthetic``) the dataset mixes the ISBI 2015 image layout
with the CSV setup layout of Payer et al. / Thaler et al., so that the same
reader serves real and synthetic data::

    root/dataset.json                      description, config, spacing, size, observers
    root/RawImage/TrainingData/001.bmp     8-bit grey images (train split)
    root/RawImage/Test1Data/...            (test1 split)
    root/RawImage/Test2Data/...            (test2 split)
    root/setup/all_senior.csv, all_junior.csv, all_ann1.csv ...   mm, ``id,x1,y1,...``
    root/setup/train.txt, test1.txt, test2.txt, test_all.txt
    root/setup/cv/set1..4/train.txt, val.txt
    root/truth.npz                         true landmarks, declared covariances, poses...
    root/MANIFEST.sha256                   SHA-256 of every file (verified before a cached copy is reused)

Determinism: everything derives from ``numpy.random.SeedSequence(config.seed)``
(independent child streams for shapes, anatomy, poses, observers, splits and
one per image for rendering); the same config gives bit-identical files.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from lmkcore.cachedir import default_cache_dir  # noqa: F401  (the one definition; re-exported)
from lmkcore.synthetic.anatomy import LANDMARK_KIND, build_anatomy, landmark_directions, sample_anatomy_params
from lmkcore.errors import ConfigError, DataError
from lmkcore.data.formats import (atomic_directory, atomic_write_bytes, atomic_write_text, read_id_list, read_landmark_csv,
                      write_id_list, write_landmark_csv)
from lmkcore.data.imageio import write_image
from lmkcore.data.integrity import (IntegrityError, file_lock, remove_stale_partials, repair_warning, verify_manifest,
                                    write_manifest)
from lmkcore.data.landmarks import ISBI_LANDMARK_NAMES
from lmkcore.synthetic.observers import (BIAS_MODES, biases_to_image, declared_covariances, draw_annotations, local_covariances,
                        observer_biases_local, observer_names, sigma_table)
from lmkcore.data.records import LandmarkDataset
from lmkcore.synthetic.render import Pose, RenderSettings, render_image
from lmkcore.synthetic.shape_model import SHAPE_MODEL_FILE, load_shape_model

#: Bump whenever the generated data change for the same config (invalidates caches).
GENERATOR_VERSION = "1"
#: Version of the on-disk layout read by :func:`load_synthetic`.
FORMAT_VERSION = 1
#: Field of view height in mm (as the ISBI images: 2400 px x 0.1 mm).
FIELD_OF_VIEW_MM = 240.0
#: ISBI split proportions (150 train, 150 test1, 100 test2 of 400).
SPLIT_FRACTIONS = (150 / 400, 150 / 400)
#: Number of cross-validation folds.
N_FOLDS = 4
_IMAGE_DIRS = {"train": "TrainingData", "test1": "Test1Data", "test2": "Test2Data"}
_MARGIN_MM = 6.0  # landmarks stay this far inside the image


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the synthetic dataset (all validated on construction).

    Attributes
    ----------
    n_images : int
        Number of images ``M`` (>= 8; split like ISBI: 37.5 % train, 37.5 %
        test1, 25 % test2).
    width : int
        Image width in pixels (>= 32); height is ``round(1.25 * width)``, the
        field of view is 240 mm high, so the isotropic spacing is
        ``240 / height`` mm (1.0 mm at width 192).
    seed : int
        Seed of every random choice (>= 0).
    n_extra_observers : int
        Observers besides ``senior`` and ``junior`` (``ann1`` ...), 0-99.
    noise : float
        Standard deviation of the additive image noise (intensity range 0-1).
    blur_mm : float
        Gaussian blur (focal-spot unsharpness) in mm.
    bias_field : float
        Amplitude of the smooth multiplicative intensity variation (0-0.5).
    pose_rotation_deg : float
        Head rotation drawn uniformly in ``[-r, r]`` degrees (0-45).
    pose_scale : float
        Scale drawn uniformly in ``[1 - s, 1 + s]`` (0-0.3).
    pose_translation_mm : float
        Standard deviation of the head translation per axis, mm (0-20).
    shape_variance_scale : float
        Multiplies the shape-model variances (1 = the real ISBI population).
    edge_to_edge_fraction : float
        Fraction of subjects with an edge-to-edge bite (incisal tips coincide,
        so the clinical MW measure is exactly 0 - its class "edge to edge"
        needs ``MW == 0``). Drawn per subject.
    annotation_scale : float
        Multiplies every declared annotation sigma.
    observer_bias : str
        ``"junior"`` (default: the junior is biased on menton and soft tissue
        pogonion, see :data:`lmkcore.synthetic.observers.JUNIOR_BIAS_MM`), ``"none"`` or
        ``"random"`` (every observer but the senior gets random biases).
    observer_bias_mm : float
        Size of the biases in mm.
    """

    n_images: int = 400
    width: int = 192
    seed: int = 0
    n_extra_observers: int = 9
    noise: float = 0.02
    blur_mm: float = 0.6
    bias_field: float = 0.15
    pose_rotation_deg: float = 6.0
    pose_scale: float = 0.05
    pose_translation_mm: float = 5.0
    shape_variance_scale: float = 1.0
    edge_to_edge_fraction: float = 0.03
    annotation_scale: float = 1.0
    observer_bias: str = "junior"
    observer_bias_mm: float = 1.0

    def __post_init__(self) -> None:
        def integer(name: str, low: int, high: int | None = None, why: str = "") -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ConfigError(f"{name} must be an integer, got {v!r}")
            if name == "width" and v <= 0:
                raise ConfigError(f"width must be a positive integer, got {v!r}")
            if v < low or (high is not None and v > high):
                rng = f"between {low} and {high}" if high is not None else f">= {low}"
                raise ConfigError(f"{name} must be {rng}{why}, got {v!r}")
            object.__setattr__(self, name, int(v))

        def real(name: str, low: float, high: float, low_open: bool = False) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v):
                raise ConfigError(f"{name} must be a finite number, got {v!r}")
            if v < low or v > high or (low_open and v == low):
                lo = f"> {low}" if low_open else f">= {low}"
                raise ConfigError(f"{name} must be {lo} and <= {high}, got {v!r}")
            object.__setattr__(self, name, float(v))

        integer("n_images", 8, None, " (two images per cross-validation fold)")
        integer("width", 32, None, " pixels (smaller images do not resolve the anatomy)")
        integer("seed", 0)
        integer("n_extra_observers", 0, 99)
        real("noise", 0.0, 0.5)
        real("blur_mm", 0.0, 5.0)
        real("bias_field", 0.0, 0.5)
        real("pose_rotation_deg", 0.0, 45.0)
        real("pose_scale", 0.0, 0.3)
        real("pose_translation_mm", 0.0, 20.0)
        real("shape_variance_scale", 0.0, 4.0, low_open=True)
        real("edge_to_edge_fraction", 0.0, 1.0)
        real("annotation_scale", 0.0, 5.0, low_open=True)
        real("observer_bias_mm", 0.0, 10.0)
        if self.observer_bias not in BIAS_MODES:
            raise ConfigError(f"observer_bias must be one of {', '.join(BIAS_MODES)}, got {self.observer_bias!r}")

    @property
    def height(self) -> int:
        """Image height in pixels, ``round(1.25 * width)``."""
        return int(round(1.25 * self.width))

    @property
    def spacing_mm(self) -> float:
        """Isotropic pixel spacing in mm (``240 / height``)."""
        return FIELD_OF_VIEW_MM / self.height

    @property
    def observers(self) -> list[str]:
        """Observer names: senior, junior, ann1 ..."""
        return observer_names(self.n_extra_observers)

    def key(self) -> str:
        """Short content hash of the config, generator version and shape model (for caching)."""
        model = resources.files("lmkcore.synthetic").joinpath(SHAPE_MODEL_FILE).read_bytes()
        payload = json.dumps({"generator": GENERATOR_VERSION, "config": asdict(self),
                              "shape_model": hashlib.sha256(model).hexdigest()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SyntheticConfig":
        """Build from a dict, with a clear error for unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown synthetic option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**d)


@dataclass
class SyntheticGeometry:
    """Everything about a synthetic dataset except the pixels (see :func:`sample_geometry`).

    Attributes
    ----------
    config : SyntheticConfig
    ids : list of str
        ``M`` zero-padded ids ("001", ...).
    shapes_mm : ndarray
        ``(M, N, 2)`` true landmarks in the canonical anatomical frame, mm.
    landmarks_px : ndarray
        ``(M, N, 2)`` true landmarks in the image, px ``(x, y)``.
    directions : ndarray
        ``(M, N, 2)`` unit landmark directions in the image frame (contour
        tangent of edge landmarks, tip axis of corners).
    annotation_cov_px : ndarray
        ``(M, N, 2, 2)`` declared annotation covariance, px^2, image frame.
    sigma_mm : ndarray
        ``(N, 2)`` declared ``(sigma_major, sigma_minor)`` in mm.
    rotation_deg, scale : ndarray
        ``(M,)`` pose parameters; ``translation_mm`` ``(M, 2)``; ``center_mm``
        ``(2,)`` centre of rotation (see :class:`~lmkcore.synthetic.render.Pose`).
    edge_to_edge : ndarray
        ``(M,)`` bool, subjects given an edge-to-edge bite.
    params : dict of str to ndarray
        ``(M,)`` nuisance parameters of the anatomy.
    """

    config: SyntheticConfig
    ids: list[str]
    shapes_mm: np.ndarray
    landmarks_px: np.ndarray
    directions: np.ndarray
    annotation_cov_px: np.ndarray
    sigma_mm: np.ndarray
    rotation_deg: np.ndarray
    scale: np.ndarray
    translation_mm: np.ndarray
    center_mm: np.ndarray
    edge_to_edge: np.ndarray
    params: dict[str, np.ndarray] = field(repr=False)

    @property
    def landmarks_mm(self) -> np.ndarray:
        """``(M, N, 2)`` true landmarks in image mm (``px * spacing``)."""
        return self.landmarks_px * self.config.spacing_mm

    @property
    def mm_to_px(self) -> np.ndarray:
        """``(M,)`` image pixels per anatomical mm."""
        return self.scale / self.config.spacing_mm

    def pose(self, i: int) -> Pose:
        """Pose of image ``i``."""
        return Pose(float(self.rotation_deg[i]), float(self.scale[i]), tuple(self.translation_mm[i]),
                    tuple(self.center_mm))

    def anatomy(self, i: int, step: float | None = None):
        """Anatomy of image ``i`` (polylines every ``step`` mm; default half a pixel)."""
        step = min(0.5, 0.5 * self.config.spacing_mm) if step is None else step
        return build_anatomy(self.shapes_mm[i], {k: float(v[i]) for k, v in self.params.items()}, step)


def _streams(seed: int) -> dict[str, np.random.SeedSequence]:
    names = ("shape", "anatomy", "pose", "observers", "splits", "render")
    return dict(zip(names, np.random.SeedSequence(seed).spawn(len(names))))


def image_ids(n: int) -> list[str]:
    """Zero-padded ids ``"001"`` ... (more digits when ``n > 999``)."""
    width = max(3, len(str(n)))
    return [str(i + 1).zfill(width) for i in range(n)]


def sample_geometry(config: SyntheticConfig | None = None) -> SyntheticGeometry:
    """Sample shapes, poses and declared covariances without rendering (fast).

    The result is exactly the geometry :func:`generate_synthetic` uses for the
    same config.
    """
    cfg = config or SyntheticConfig()
    st = _streams(cfg.seed)
    m = cfg.n_images
    model = load_shape_model()
    shapes = model.sample(np.random.Generator(np.random.PCG64(st["shape"])), m, cfg.shape_variance_scale)
    arng = np.random.Generator(np.random.PCG64(st["anatomy"]))
    edge = arng.random(m) < cfg.edge_to_edge_fraction
    li, ui = ISBI_LANDMARK_NAMES.index("lower_incisal_incision"), ISBI_LANDMARK_NAMES.index("upper_incisal_incision")
    shapes[edge, li] = shapes[edge, ui]
    params = sample_anatomy_params(arng, m)
    prng = np.random.Generator(np.random.PCG64(st["pose"]))
    rot = prng.uniform(-cfg.pose_rotation_deg, cfg.pose_rotation_deg, m)
    scale = prng.uniform(1.0 - cfg.pose_scale, 1.0 + cfg.pose_scale, m)
    trans = np.clip(prng.normal(0.0, cfg.pose_translation_mm, (m, 2)), -2.5 * cfg.pose_translation_mm,
                    2.5 * cfg.pose_translation_mm)
    center = model.mean.mean(axis=0)
    sp = cfg.spacing_mm
    fov = np.array([cfg.width * sp, cfg.height * sp]) - 0.5 * sp
    lms = np.empty_like(shapes)
    for i in range(m):
        pts = Pose(rot[i], scale[i], tuple(trans[i]), tuple(center)).apply(shapes[i])
        # Keep every landmark inside the image (shift the head back if needed).
        lo, hi = pts.min(0), pts.max(0)
        shift = np.maximum(_MARGIN_MM - lo, 0.0) - np.maximum(hi - (fov - _MARGIN_MM), 0.0)
        trans[i] += shift
        lms[i] = (pts + shift) / sp
    dirs = np.empty_like(shapes)
    for i in range(m):
        d = landmark_directions(shapes[i], {k: float(v[i]) for k, v in params.items()})
        dirs[i] = Pose(rot[i], 1.0, (0.0, 0.0), (0.0, 0.0)).rotate(d)
    sigma = sigma_table(scale=cfg.annotation_scale)
    cov = declared_covariances(dirs, sigma, scale / sp)
    return SyntheticGeometry(cfg, image_ids(m), shapes, lms, dirs, cov, sigma, rot, scale, trans, center, edge, params)


def split_ids(ids: list[str], seed: int) -> dict[str, list[str]]:
    """ISBI-like splits by id order plus a seeded 4-fold cross-validation over all ids."""
    m = len(ids)
    n_train = int(round(m * SPLIT_FRACTIONS[0]))
    n_test1 = int(round(m * SPLIT_FRACTIONS[1]))
    splits = {"train": ids[:n_train], "test1": ids[n_train:n_train + n_test1], "test2": ids[n_train + n_test1:]}
    splits["test_all"] = splits["test1"] + splits["test2"]
    perm = np.random.Generator(np.random.PCG64(_streams(seed)["splits"])).permutation(m)
    for k, fold in enumerate(np.array_split(perm, N_FOLDS)):
        val = set(fold.tolist())
        splits[f"cv{k + 1}/val"] = [ids[i] for i in sorted(val)]
        splits[f"cv{k + 1}/train"] = [ids[i] for i in range(m) if i not in val]
    return splits


def simulate_annotations(geo: SyntheticGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The observers' annotations of a geometry (as written by :func:`generate_synthetic`).

    Returns
    -------
    annotations : ndarray
        ``(K, M, N, 2)`` px, observers in ``geo.config.observers`` order:
        true point + N(0, declared covariance) + observer bias.
    bias_local_mm : ndarray
        ``(K, N, 2)`` bias per observer and landmark in mm, in the landmark's
        frame (along its direction, across it).
    bias_px : ndarray
        ``(M, K, N, 2)`` the same biases in image px.
    """
    cfg = geo.config
    names = cfg.observers
    rng = np.random.Generator(np.random.PCG64(_streams(cfg.seed)["observers"]))
    bias_local = observer_biases_local(cfg.observer_bias, names, cfg.observer_bias_mm, rng)
    bias_px = biases_to_image(bias_local, geo.directions, geo.mm_to_px)
    noise = draw_annotations(geo.landmarks_px, geo.annotation_cov_px, len(names), rng)
    return noise + np.moveaxis(bias_px, 1, 0), bias_local, bias_px


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A deterministic (fixed timestamps), atomic, uncompressed ``.npz``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(info, member.getvalue())
    atomic_write_bytes(path, buf.getvalue())


def generate_synthetic(config: SyntheticConfig | None, root: str | os.PathLike) -> Path:
    """Generate the dataset into ``root`` (atomically: complete or absent).

    Parameters
    ----------
    config : SyntheticConfig or None
        Parameters (default: ``SyntheticConfig()``).
    root : path
        Output folder; replaced if it exists.

    Returns
    -------
    Path
        ``root``.
    """
    cfg = config or SyntheticConfig()
    geo = sample_geometry(cfg)
    m = len(geo.ids)
    names = cfg.observers
    sp = cfg.spacing_mm
    annotations, bias_local, bias_px = simulate_annotations(geo)
    splits = split_ids(geo.ids, cfg.seed)
    folder = {i: _IMAGE_DIRS[s] for s in ("train", "test1", "test2") for i in splits[s]}
    settings = RenderSettings(noise=cfg.noise, blur_mm=cfg.blur_mm, bias_field=cfg.bias_field)
    render_seeds = _streams(cfg.seed)["render"].spawn(m)
    root = Path(root)
    with atomic_directory(root) as tmp:
        for i, image_id in enumerate(geo.ids):
            img = render_image(geo.anatomy(i), geo.pose(i), (cfg.height, cfg.width), sp,
                               np.random.Generator(np.random.PCG64(render_seeds[i])), settings)
            write_image(tmp / "RawImage" / folder[image_id] / f"{image_id}.bmp", img)
        setup = tmp / "setup"
        for k, name in enumerate(names):
            write_landmark_csv(setup / f"all_{name}.csv", geo.ids, annotations[k], sp)
        for s in ("train", "test1", "test2", "test_all"):
            write_id_list(setup / f"{s}.txt", splits[s])
        for k in range(N_FOLDS):
            for part in ("train", "val"):
                write_id_list(setup / "cv" / f"set{k + 1}" / f"{part}.txt", splits[f"cv{k + 1}/{part}"])
        _write_npz(tmp / "truth.npz", {
            "ids": np.array(geo.ids),
            "landmarks_px": geo.landmarks_px,
            "landmarks_mm": geo.landmarks_mm,
            "shape_mm": geo.shapes_mm,
            "annotation_cov_px": geo.annotation_cov_px,
            "annotation_cov_mm": local_covariances(geo.sigma_mm),
            "annotation_sigma_mm": geo.sigma_mm,
            "tangent_angle": np.arctan2(geo.directions[..., 1], geo.directions[..., 0]),
            "landmark_kind": np.array(LANDMARK_KIND),
            "observers": np.array(names),
            "observer_bias_mm": bias_local,
            "observer_bias_px": bias_px,
            "pose_rotation_deg": geo.rotation_deg,
            "pose_scale": geo.scale,
            "pose_translation_mm": geo.translation_mm,
            "pose_center_mm": geo.center_mm,
            "edge_to_edge": geo.edge_to_edge,
        })
        meta = {
            "name": "synthetic",
            "format_version": FORMAT_VERSION,
            "generator_version": GENERATOR_VERSION,
            "key": cfg.key(),
            "config": asdict(cfg),
            "spacing_mm": [sp, sp],
            "image_size": [cfg.width, cfg.height],
            "landmark_names": list(ISBI_LANDMARK_NAMES),
            "landmark_kind": list(LANDMARK_KIND),
            "annotation_sigma_mm": geo.sigma_mm.tolist(),
            "observers": names,
            "target": "senior",
            "n_images": m,
            "image_dirs": _IMAGE_DIRS,
        }
        atomic_write_text(tmp / "dataset.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")
        # Written last: the checksums of every file; its presence marks a complete dataset.
        write_manifest(tmp)
    return root


def _read_meta(root: Path) -> dict[str, Any]:
    path = root / "dataset.json"
    if not path.is_file():
        raise DataError(f"{path}: not found; {root} is not a generated synthetic dataset")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: unreadable dataset description ({err})") from None
    required = ("name", "format_version", "spacing_mm", "image_size", "landmark_names", "observers", "target")
    missing = [k for k in required if k not in meta]
    if missing:
        raise DataError(f"{path}: missing field(s) {', '.join(missing)}")
    if meta["name"] != "synthetic":
        raise DataError(f"{path}: dataset name is {meta['name']!r}, not 'synthetic'")
    if meta["format_version"] != FORMAT_VERSION:
        raise DataError(f"{path}: format version {meta['format_version']} is not supported (expected {FORMAT_VERSION})")
    return meta


def _read_truth(path: Path, m: int, n: int) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"{path}: truth file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            truth = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{path}: corrupt truth file ({err})") from None
    for key, shape in (("landmarks_px", (m, n, 2)), ("annotation_cov_px", (m, n, 2, 2))):
        if key not in truth:
            raise DataError(f"{path}: missing array {key!r}")
        if truth[key].shape != shape:
            raise DataError(f"{path}: {key} has shape {truth[key].shape}, expected {shape}")
    return truth


def load_synthetic(root: str | os.PathLike) -> LandmarkDataset:
    """Read a generated synthetic dataset into a :class:`LandmarkDataset`.

    Annotations (``senior``, ``junior``, ``ann1`` ...) are read from the CSV
    setup files and converted from mm to px with the stored spacing; the
    target is ``senior``. Splits: ``train``, ``test1``, ``test2``,
    ``test_all``, ``cv1/train``, ``cv1/val`` ... ``cv4/val``.

    ``truth`` holds the per-image arrays: ``landmarks`` ``(M, N, 2)`` px,
    ``annotation_cov`` ``(M, N, 2, 2)`` px^2 (image frame), ``landmarks_mm``,
    ``tangent_angle`` ``(M, N)`` radians (image frame, from +x towards +y),
    ``observer_bias`` ``(M, K, N, 2)`` px (observers in ``extras["observers"]``
    order), ``shape_mm``, ``pose_rotation_deg``, ``pose_scale``,
    ``pose_translation_mm``, ``edge_to_edge``. ``extras`` holds the
    per-landmark constants: ``annotation_sigma_mm`` ``(N, 2)``,
    ``annotation_cov_mm`` ``(N, 2, 2)`` (in each landmark's own frame: axis 0
    along its direction), ``landmark_kind``, ``observer_bias_mm`` ``(K, N, 2)``
    (along, across), ``observers``, ``config``, ``generator_version``, ``key``.

    Raises
    ------
    DataError
        Naming the file, for a missing or corrupt piece.
    """
    root = Path(root)
    meta = _read_meta(root)
    names = tuple(meta["landmark_names"])
    n = len(names)
    spacing = np.asarray(meta["spacing_mm"], dtype=np.float64)
    setup = root / "setup"
    annotations: dict[str, np.ndarray] = {}
    ids: list[str] | None = None
    for obs in meta["observers"]:
        path = setup / f"all_{obs}.csv"
        obs_ids, arr = read_landmark_csv(path, n_landmarks=n, spacing_mm=spacing)
        if ids is None:
            ids = obs_ids
        elif obs_ids != ids:
            raise DataError(f"{path}: image ids differ from those of all_{meta['observers'][0]}.csv")
        annotations[obs] = arr
    assert ids is not None
    m = len(ids)
    raw = root / "RawImage"
    found = {p.stem: p for p in sorted(raw.glob("*/*.bmp"))} if raw.is_dir() else {}
    missing = [i for i in ids if i not in found]
    if missing:
        raise DataError(f"{raw}: image file(s) missing for id(s) {', '.join(missing[:5])}")
    splits = {s: read_id_list(setup / f"{s}.txt") for s in ("train", "test1", "test2", "test_all")}
    for k in range(N_FOLDS):
        for part in ("train", "val"):
            splits[f"cv{k + 1}/{part}"] = read_id_list(setup / "cv" / f"set{k + 1}" / f"{part}.txt")
    truth_raw = _read_truth(root / "truth.npz", m, n)
    if "ids" in truth_raw and truth_raw["ids"].tolist() != ids:
        raise DataError(f"{root / 'truth.npz'}: image ids differ from the annotation files")
    truth = {"landmarks": truth_raw["landmarks_px"], "annotation_cov": truth_raw["annotation_cov_px"]}
    renames = {"observer_bias_px": "observer_bias"}
    for key in ("landmarks_mm", "tangent_angle", "observer_bias_px", "shape_mm", "pose_rotation_deg", "pose_scale",
                "pose_translation_mm", "edge_to_edge"):
        if key in truth_raw:
            truth[renames.get(key, key)] = truth_raw[key]
    extras = {k: truth_raw[k] for k in ("annotation_sigma_mm", "annotation_cov_mm", "landmark_kind",
                                        "observer_bias_mm", "observers", "pose_center_mm") if k in truth_raw}
    extras.update({"config": meta.get("config", {}), "generator_version": meta.get("generator_version"),
                   "key": meta.get("key"), "root": root})
    return LandmarkDataset(
        name="synthetic",
        ids=ids,
        image_paths=[found[i] for i in ids],
        landmark_names=names,
        annotations=annotations,
        reference=meta.get("reference", meta["target"]),
        spacing=np.tile(spacing, (m, 1)),
        image_size=np.tile(np.asarray(meta["image_size"], dtype=np.int64), (m, 1)),
        splits=splits,
        truth=truth,
        extras=extras,
    )


def synthetic_dataset(config: SyntheticConfig | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of the dataset for ``config``, generated on first use and cached.

    The folder is ``cache_dir / f"synthetic-{config.key()}"``; an existing
    folder is reused when every file matches its ``MANIFEST.sha256`` and its
    ``dataset.json`` names the same key. Otherwise (a truncated or replaced
    image, a missing file, a folder from an older version) it is generated
    again, with a :class:`~lmkcore.data.integrity.CacheRepairWarning` naming
    the bad file. Generation holds a per-key file lock, so concurrent callers
    generate once; ``.synthetic-*.partial`` folders of killed runs are removed.
    """
    cfg = config or SyntheticConfig()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / f"synthetic-{cfg.key()}"
    problem = _check_cached(path, cfg)
    if problem is None:
        return path
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(path):
        remove_stale_partials(root, "synthetic-*")
        problem = _check_cached(path, cfg)  # another process may have generated it while we waited
        if problem is None:
            return path
        if path.exists():
            repair_warning(problem, "generating the synthetic dataset again")
        return generate_synthetic(cfg, path)


def _check_cached(path: Path, cfg: SyntheticConfig) -> IntegrityError | None:
    """None when ``path`` is a complete, verified dataset for ``cfg``; else the problem."""
    meta_path = path / "dataset.json"
    if not path.is_dir():
        return IntegrityError(path, "not generated yet")
    try:
        verify_manifest(path)
        key = json.loads(meta_path.read_text(encoding="utf-8")).get("key")
    except IntegrityError as err:
        return err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
        return IntegrityError(meta_path, f"unreadable dataset description ({err})")
    if key != cfg.key():
        return IntegrityError(meta_path, f"describes dataset {key!r}, expected {cfg.key()!r}")
    return None


__all__ = [
    "GENERATOR_VERSION", "FORMAT_VERSION", "SyntheticConfig", "SyntheticGeometry", "sample_geometry",
    "generate_synthetic", "load_synthetic", "synthetic_dataset", "split_ids", "image_ids", "default_cache_dir",
    "draw_annotations", "simulate_annotations",
]
