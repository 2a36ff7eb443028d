"""Digital Hand Atlas radiographs (37 landmarks), as set up by Payer et al. (2019).

Layout (``hand_xray/hand_xray_dataset`` of Payer's HeatmapRegression code)::

    <dataset>/images/<id>.mha               radiographs (any SimpleITK format)
    <dataset>/setup/all.csv                 id,x1,y1,...,x37,y37 in PIXELS, no header
    <dataset>/setup/cv/set{1,2,3}/{train,test}.txt           3-fold CV (895 images)
    <dataset>/setup/cv/set{k}/train_10.txt                   10 training images per fold
    <dataset>/setup/cv_rand/{10,50,100}/{1,2}/set{k}/{train,test}.txt   reduced training sets
    <dataset>/setup/cv_reduced/set{k}/{train,test}.txt       tiny CV over the sample images

``data_root`` may be ``<dataset>`` itself, ``hand_xray`` or the
``HeatmapRegression`` folder above it. Only a few sample images ship with the
code (9 here); the full atlas has to be obtained from its providers (ipilab.org
BAAweb) and put into ``images/`` (or passed as ``images_root``).

Physical scale: the radiographs carry no reliable pixel size, so the papers
normalise every image by a wrist width of 50 mm between landmarks 1 and 5
(0-based; Payer et al. 2019, Sec. 4.1, after Lindner et al. 2015). The loader
expresses this as the per-image spacing ``50 / ||x_1 - x_5||`` mm/px
(:func:`wrist_spacing`); the header spacing is kept in
``extras["header_spacing"]`` (in the Payer sample ``.mha`` files the header
spacing already equals this wrist spacing).
"""
from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import numpy as np

from lmkcore.errors import ConfigError, DataError
from lmkcore.data.formats import read_landmark_csv
from lmkcore.data.imageio import read_image
from lmkcore.data.records import LandmarkDataset
from lmkcore.data.datasets import register
from lmkcore.data.datasets._common import (
    check_landmarks,
    check_split_ids,
    existing_dir,
    find_images,
    image_id,
    read_infos,
    read_split_files,
    report,
    warn,
)

#: Landmarks per hand.
HAND_N_LANDMARKS = 37

#: 0-based indices of the two wrist landmarks used for the 50 mm normalisation.
HAND_WRIST_LANDMARKS: tuple[int, int] = (1, 5)

#: Assumed wrist width in mm.
HAND_WRIST_MM = 50.0

#: Landmark names (the annotation defines no names; ``L1``..``L37`` = 1-based index).
HAND_LANDMARK_NAMES: tuple[str, ...] = tuple(f"L{k}" for k in range(1, HAND_N_LANDMARKS + 1))

_CANDIDATES = (".", "hand_xray_dataset", "hand_xray/hand_xray_dataset")


def find_hand_dataset(root: str | os.PathLike) -> Path | None:
    """The folder holding ``setup/all.csv`` under ``root`` (see the module docstring), or None."""
    root = Path(root)
    for cand in _CANDIDATES:
        folder = root if cand == "." else root / cand
        if (folder / "setup" / "all.csv").is_file():
            return folder
    return None


def read_hand_annotations(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Read ``all.csv``: ids (file order) and ``(M, 37, 2)`` pixels."""
    ids, px = read_landmark_csv(path, n_landmarks=HAND_N_LANDMARKS)
    return [image_id(i) for i in ids], px


def read_hand_splits(setup: str | os.PathLike) -> dict[str, tuple[list[str], Path]]:
    """Split lists of the hand setup folder, with the file each came from.

    Names: ``cv<k>/train``, ``cv<k>/val`` and ``cv<k>/test`` (both = the fold's
    ``test.txt``), ``cv<k>/train_10``; ``cv_rand/<n>/<r>/cv<k>/{train,val,test}``
    for the reduced training sets (``n`` = 10, 50, 100 training images, ``r`` =
    random draw 1, 2); ``cv_reduced/cv<k>/{train,val,test}``.
    ``cv/set3/test_single.txt`` is not read (it repeats one id).
    """
    setup = Path(setup)
    out: dict[str, tuple[list[str], Path]] = {}

    def add(prefix: str, folder: Path, cv_subdir: str | None) -> None:
        for name, (ids, f) in read_split_files(folder, skip=("test_single.txt",), cv_subdir=cv_subdir).items():
            if not name.startswith("cv"):
                continue
            out[prefix + name] = (ids, f)
            if name.endswith("/test"):
                out[prefix + name[:-4] + "val"] = (ids, f)

    add("", setup, "cv")
    rand = setup / "cv_rand"
    if rand.is_dir():
        for n_dir in sorted((p for p in rand.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
            for r_dir in sorted((p for p in n_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
                add(f"cv_rand/{n_dir.name}/{r_dir.name}/", r_dir, None)
    if (setup / "cv_reduced").is_dir():
        add("cv_reduced/", setup / "cv_reduced", None)
    order = {"train": 0, "val": 1, "test": 2}

    def key(name: str):
        head, _, last = name.rpartition("/")
        natural = tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", head))
        return (head.count("/"), natural, order.get(last, 3), last)

    return dict(sorted(out.items(), key=lambda kv: key(kv[0])))


def wrist_spacing(
    landmarks_px: np.ndarray,
    wrist: tuple[int, int] = HAND_WRIST_LANDMARKS,
    width_mm: float = HAND_WRIST_MM,
) -> np.ndarray:
    """Per-image isotropic spacing (mm/px) that makes the wrist ``width_mm`` wide.

    ``spacing = width_mm / ||landmarks[:, wrist[0]] - landmarks[:, wrist[1]]||``
    (pixels), returned as ``(M,)``; NaN where a wrist landmark is missing.
    """
    lm = np.asarray(landmarks_px, dtype=np.float64)
    dist = np.linalg.norm(lm[:, wrist[0]] - lm[:, wrist[1]], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(dist > 0, width_mm / dist, np.nan)


# --------------------------------------------------------------------------------------
# The papers' preprocessing: histogram matching inside the Otsu outline of the hand
# --------------------------------------------------------------------------------------

def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (maximum between-class variance over ``bins`` bins)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        m0 = s0 / w0
        m1 = (s0[-1] - s0) / w1
        between = w0 * w1 * (m0 - m1) ** 2
    between = np.nan_to_num(between, nan=-1.0)
    return float(edges[int(np.argmax(between)) + 1])


def _foreground_quantiles(arr: np.ndarray, q: np.ndarray, max_samples: int = 1 << 18) -> np.ndarray:
    """Quantiles ``q`` of the Otsu foreground of ``arr`` (a regular subsample of at most ``max_samples``)."""
    fg = arr[arr > otsu_threshold(arr)]
    if fg.size < 2:
        fg = arr.ravel()
    if fg.size > max_samples:
        fg = fg[:: -(-fg.size // max_samples)]
    return np.quantile(fg, q)


def _matching_table(img: np.ndarray, xs: np.ndarray, ref_q: np.ndarray, ref_lo: float, ref_hi: float):
    xs = np.concatenate([[min(float(img.min()), xs[0])], xs, [max(float(img.max()), xs[-1])]])
    ys = np.concatenate([[min(ref_lo, ref_q[0])], ref_q, [max(ref_hi, ref_q[-1])]])
    keep = np.concatenate([[True], np.diff(xs) > 0])          # strictly increasing support for np.interp
    return xs[keep], np.maximum.accumulate(ys[keep])


def hand_histogram_matching(image: np.ndarray, reference: np.ndarray, n_quantiles: int = 1024) -> np.ndarray:
    """Match the grey-value histogram of ``image`` to ``reference`` inside the hands.

    The hand outline of each image is the Otsu foreground (``> threshold``);
    the quantiles of the image inside its outline are mapped to the quantiles
    of the reference inside its outline (piecewise linear), and the mapping is
    extended linearly to each image's minimum and maximum so the background
    stays ordered. This is the preprocessing of Payer et al. (2019, Sec. 4.1)
    and Štern et al. (2016) for the hand radiographs. Quantiles are taken from
    a regular subsample of at most 262144 foreground pixels.

    Returns
    -------
    ndarray
        float32, same shape as ``image``, in the reference's grey-value range.
    """
    ref = np.asarray(reference, dtype=np.float32)
    q = np.linspace(0.0, 1.0, n_quantiles)
    return _apply_matching(image, _foreground_quantiles(ref, q), float(ref.min()), float(ref.max()), q)


def _apply_matching(image, ref_q, ref_lo, ref_hi, q) -> np.ndarray:
    img = np.asarray(image, dtype=np.float32)
    xs, ys = _matching_table(img, _foreground_quantiles(img, q), ref_q, ref_lo, ref_hi)
    if xs.size < 2:
        return np.full(img.shape, float(np.median(ref_q)), dtype=np.float32)
    return np.interp(img, xs, ys).astype(np.float32)


class HandHistogramMatching:
    """Picklable preprocessing step ``image -> image`` (see :func:`hand_histogram_matching`).

    Stored as ``record.extras["preprocess"]``; :func:`lmkcore.data.image_cache.cached_images`
    applies it to every full-resolution image before resizing, and keys its
    cache on :attr:`cache_key`. The reference quantiles are computed once.
    """

    def __init__(self, reference_path: str | os.PathLike, n_quantiles: int = 1024):
        self.reference_path = Path(reference_path)
        self.n_quantiles = int(n_quantiles)
        self._ref: tuple | None = None
        self._lock = threading.Lock()

    @property
    def cache_key(self) -> str:
        st = self.reference_path.stat()
        return f"hand_histogram_matching:{self.reference_path.resolve()}:{st.st_mtime_ns}:{st.st_size}:{self.n_quantiles}"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        q = np.linspace(0.0, 1.0, self.n_quantiles)
        with self._lock:
            if self._ref is None:
                ref = read_image(self.reference_path)
                self._ref = (_foreground_quantiles(ref, q), float(ref.min()), float(ref.max()))
        return _apply_matching(image, *self._ref, q)

    def __getstate__(self):
        return {"reference_path": self.reference_path, "n_quantiles": self.n_quantiles}

    def __setstate__(self, state):
        self.__init__(state["reference_path"], state["n_quantiles"])

    def __repr__(self) -> str:
        return f"HandHistogramMatching(reference={str(self.reference_path)!r})"


# --------------------------------------------------------------------------------------
# The loader
# --------------------------------------------------------------------------------------

_OPTIONS = {"normalisation", "preprocess", "reference_id", "images_root", "missing_images", "verbose"}


@register("hand")
def load(data_root, *, reference: str = "gt", **kw) -> LandmarkDataset:
    """Load the Digital Hand Atlas setup of Payer et al. (2019).

    Parameters
    ----------
    data_root : path
        The dataset folder (see the module docstring for what is accepted).
    reference : "gt"
        The single annotation set (each image was annotated by one expert).
    normalisation : {"wrist", "header"}, keyword
        ``"wrist"`` (default): spacing = 50 mm / wrist width in pixels
        (landmarks 1 and 5, 0-based), as in the papers. ``"header"``: the spacing
        in the image headers.
    preprocess : {None, "histogram_matching"}, keyword
        ``"histogram_matching"`` sets ``extras["preprocess"]`` to a
        :class:`HandHistogramMatching` step (the papers' preprocessing: histogram
        matching to a reference image inside the Otsu outline of the hand) that
        :mod:`lmkcore.data.image_cache` applies when decoding. The papers also scale
        grey values to [-1, 1] with the dataset's min/max and resize with a fixed
        aspect ratio; those belong to the training pipeline.
    reference_id : str, keyword
        Reference image for the histogram matching (default: the first id
        loaded; the papers do not name theirs).
    images_root : path, keyword
        Image folder (default ``<dataset>/images``), e.g. the full atlas converted
        to ``<id>.mha``.
    missing_images : {"skip", "error"}, keyword
        Annotated ids without an image are skipped with one warning (default;
        the splits are filtered to the ids kept) or are an error.
    verbose : bool, keyword
        Print what was found (default True).

    Returns
    -------
    LandmarkDataset
        ``name="hand"``, reference ``"gt"``, ids in ``all.csv`` order restricted to
        those with an image. ``extras``: ``header_spacing`` ``(M, 2)``,
        ``wrist_spacing`` ``(M,)``, ``wrist_landmarks`` (1, 5), ``wrist_mm`` 50,
        ``normalisation``, ``annotated_ids`` (all ids of ``all.csv``),
        ``skipped_ids`` (annotated ids without an image), ``preprocess`` (when
        requested).
    """
    unknown = set(kw) - _OPTIONS
    if unknown:
        raise ConfigError(f"hand: unknown option(s) {sorted(unknown)}; known: reference, {', '.join(sorted(_OPTIONS))}")
    if reference != "gt":
        raise ConfigError(f"hand: unknown reference {reference!r}; the hand dataset has one annotation set, 'gt'")
    normalisation = kw.get("normalisation", "wrist")
    preprocess = kw.get("preprocess")
    missing = kw.get("missing_images", "skip")
    verbose = bool(kw.get("verbose", True))
    if normalisation not in ("wrist", "header"):
        raise ConfigError(f"hand: normalisation must be 'wrist' or 'header', got {normalisation!r}")
    if preprocess not in (None, "histogram_matching"):
        raise ConfigError(f"hand: preprocess must be None or 'histogram_matching', got {preprocess!r}")
    if missing not in ("skip", "error"):
        raise ConfigError(f"hand: missing_images must be 'skip' or 'error', got {missing!r}")

    root = existing_dir(data_root, "hand data_root")
    ds = find_hand_dataset(root)
    if ds is None:
        raise DataError(f"{root}: no hand dataset found (looked for setup/all.csv, hand_xray_dataset/setup/all.csv, "
                        f"hand_xray/hand_xray_dataset/setup/all.csv)")
    csv = ds / "setup" / "all.csv"
    img_dir = existing_dir(kw["images_root"], "hand images_root") if kw.get("images_root") else ds / "images"
    if not img_dir.is_dir():
        raise DataError(f"{img_dir}: hand image folder not found")
    all_ids, all_px = read_hand_annotations(csv)
    images = find_images(img_dir)
    annotated = set(all_ids)
    unannotated = [i for i in images if i not in annotated]
    if unannotated:
        warn(f"hand: {len(unannotated)} image(s) in {img_dir} have no row in {csv} and are not loaded: {unannotated[:5]}")
    keep = [k for k, i in enumerate(all_ids) if i in images]
    skipped = [i for i in all_ids if i not in images]
    if not keep:
        raise DataError(f"{img_dir}: none of the {len(all_ids)} ids of {csv} has an image here")
    if skipped:
        if missing == "error":
            raise DataError(f"{img_dir}: {len(skipped)} id(s) of {csv} have no image: {skipped[:5]}")
        warn(
            f"hand: {len(skipped)} of {len(all_ids)} annotated ids have no image in {img_dir} and are skipped; "
            f"{len(keep)} images loaded"
        )
    ids = [all_ids[k] for k in keep]
    px = all_px[keep]
    paths = [images[i] for i in ids]
    report(f"hand: {len(ids)} images from {img_dir}, annotations {csv}", verbose)

    infos = read_infos(paths)
    for info in infos:
        if info.ndim != 2:
            raise DataError(f"{info.path}: expected a 2D radiograph, header says size {info.size}")
    sizes = np.array([info.size for info in infos], dtype=np.int64)
    header_spacing = np.array([info.spacing for info in infos], dtype=np.float64)
    check_landmarks("hand annotations", ids, px, sizes, csv, HAND_LANDMARK_NAMES)
    if np.isnan(px).any():
        warn(f"hand: {int(np.isnan(px).any(-1).sum())} landmark(s) are missing (NaN) in {csv}")

    wrist = wrist_spacing(px)
    bad = [i for i, s in zip(ids, wrist) if not np.isfinite(s)]
    if bad:
        raise DataError(f"{csv}: wrist landmarks {HAND_WRIST_LANDMARKS} missing or coincident for image(s) {bad[:5]}; "
                        f"cannot normalise to {HAND_WRIST_MM} mm")
    spacing = np.repeat(wrist[:, None], 2, axis=1) if normalisation == "wrist" else header_spacing.copy()

    split_files = read_hand_splits(ds / "setup")
    for name, (sids, f) in split_files.items():
        unknown_ids = [i for i in sids if i not in annotated]
        if unknown_ids:
            raise DataError(f"{f}: split {name!r} names {len(unknown_ids)} id(s) not in {csv}: {unknown_ids[:5]}")
    splits = check_split_ids(split_files, ids, missing="skip" if missing == "skip" else "error")

    extras = {
        "header_spacing": header_spacing,
        "wrist_spacing": wrist,
        "wrist_landmarks": HAND_WRIST_LANDMARKS,
        "wrist_mm": HAND_WRIST_MM,
        "normalisation": normalisation,
        "annotated_ids": list(all_ids),
        "skipped_ids": skipped,
        "layout": {"images": str(img_dir), "annotations": str(csv), "setup": str(ds / "setup")},
    }
    if preprocess == "histogram_matching":
        ref_id = kw.get("reference_id") or ids[0]
        if ref_id not in images:
            raise DataError(f"{img_dir}: reference image {ref_id!r} for the histogram matching not found")
        extras["preprocess"] = HandHistogramMatching(images[ref_id])
        extras["preprocess_reference_id"] = ref_id
    return LandmarkDataset(
        name="hand",
        ids=ids,
        image_paths=paths,
        landmark_names=HAND_LANDMARK_NAMES,
        annotations={"gt": px},
        reference="gt",
        spacing=spacing,
        image_size=sizes,
        splits=splits,
        extras=extras,
    )
