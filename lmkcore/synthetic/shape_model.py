"""A statistical shape model of the 19 ISBI cephalometric landmarks.

The model is *derived* from the real ISBI 2015 annotations (the mean of the
senior and junior observer per image, 400 images, mm) by rigid generalised
Procrustes alignment (rotation + translation, no scaling, so that size
variation stays in the model, in mm) followed by a principal component
analysis. Only the derived numbers (mean shape, ``k`` modes, their variances)
are stored, in ``lmkcore/data/shape_model.json``; :func:`load_shape_model`
reads that file and never needs the raw annotations.

The canonical frame is the average frame of the real images: mm, ``(x, y)``
with x to the right (the patient faces right) and y downwards, origin at the
image corner. Re-derive the stored file with::

    python -m lmkcore.synthetic.shape_model /path/to/HeatmapRegression/cep/setup
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from lmkcore.errors import DataError
from lmkcore.data.formats import atomic_write_text, read_landmark_csv
from lmkcore.data.landmarks import ISBI_LANDMARK_NAMES

#: Stored model, relative to the package.
SHAPE_MODEL_FILE = "shape_model.json"
#: Fraction of the total variance the stored modes explain (the rest is
#: mostly annotation noise of the two observers).
DEFAULT_EXPLAINED = 0.97


@dataclass(frozen=True)
class ShapeModel:
    """Linear shape model ``shape = mean + sum_j b_j * sqrt(var_j) * mode_j``.

    Attributes
    ----------
    mean : ndarray
        ``(N, 2)`` mean shape in mm, canonical frame, ``(x, y)``.
    modes : ndarray
        ``(k, N, 2)`` orthonormal modes (unit norm over all ``2N`` numbers).
    variances : ndarray
        ``(k,)`` variance of each mode coefficient in mm^2, decreasing.
    residual_variance : float
        Mean variance per coordinate (mm^2) of the discarded modes.
    landmark_names : tuple of str
        ``N`` landmark names.
    n_shapes : int
        Number of shapes the model was derived from.
    """

    mean: np.ndarray
    modes: np.ndarray
    variances: np.ndarray
    residual_variance: float
    landmark_names: tuple[str, ...]
    n_shapes: int

    @property
    def n_modes(self) -> int:
        """Number of stored modes ``k``."""
        return len(self.variances)

    def sample(self, rng: np.random.Generator, n: int, variance_scale: float = 1.0) -> np.ndarray:
        """Draw ``n`` shapes with Gaussian mode coefficients.

        Parameters
        ----------
        rng : numpy.random.Generator
            Source of randomness (the only one used).
        n : int
            Number of shapes.
        variance_scale : float
            Multiplies every mode variance (1 = the real population).

        Returns
        -------
        ndarray
            ``(n, N, 2)`` shapes in mm, canonical frame, ``(x, y)``.
        """
        b = rng.standard_normal((n, self.n_modes)) * np.sqrt(self.variances * variance_scale)
        return self.mean[None] + np.einsum("sk,knd->snd", b, self.modes)


def rigid_align(shape: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Rotate and translate ``shape`` (``(N, 2)``) onto ``reference`` (least squares, no reflection)."""
    sc, rc = shape.mean(0), reference.mean(0)
    u, _, vt = np.linalg.svd((shape - sc).T @ (reference - rc))
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, d]) @ vt
    return (shape - sc) @ rot + rc


def procrustes(shapes: np.ndarray, iterations: int = 20) -> np.ndarray:
    """Rigid generalised Procrustes alignment of ``(M, N, 2)`` shapes.

    The gauge (overall position and rotation) is fixed to that of the plain
    mean of the input shapes, so the aligned shapes stay in the image frame.
    """
    start = shapes.mean(0)
    ref = start
    for _ in range(iterations):
        aligned = np.stack([rigid_align(s, ref) for s in shapes])
        new_ref = rigid_align(aligned.mean(0), start)
        if np.abs(new_ref - ref).max() < 1e-9:
            break
        ref = new_ref
    return np.stack([rigid_align(s, ref) for s in shapes])


def derive_shape_model(shapes_mm: np.ndarray, explained: float = DEFAULT_EXPLAINED) -> ShapeModel:
    """Derive a :class:`ShapeModel` from ``(M, N, 2)`` shapes in mm.

    Keeps the fewest modes explaining at least ``explained`` of the variance.
    """
    shapes_mm = np.asarray(shapes_mm, dtype=np.float64)
    if shapes_mm.ndim != 3 or shapes_mm.shape[-1] != 2 or np.isnan(shapes_mm).any():
        raise DataError(f"shape model needs (M, N, 2) finite shapes, got {shapes_mm.shape}")
    aligned = procrustes(shapes_mm)
    m, n, _ = aligned.shape
    mean = aligned.mean(0)
    x = (aligned - mean).reshape(m, -1)
    _, sv, vt = np.linalg.svd(x, full_matrices=False)
    var = sv**2 / (m - 1)
    k = int(np.searchsorted(np.cumsum(var) / var.sum(), explained) + 1)
    modes = vt[:k]
    # Fix the sign of each mode so that the derivation is reproducible.
    modes = modes * np.sign(modes[np.arange(k), np.abs(modes).argmax(1)])[:, None]
    names = ISBI_LANDMARK_NAMES if n == len(ISBI_LANDMARK_NAMES) else tuple(f"L{i + 1}" for i in range(n))
    return ShapeModel(
        mean=mean,
        modes=modes.reshape(k, n, 2),
        variances=var[:k],
        residual_variance=float(var[k:].sum() / (2 * n)),
        landmark_names=names,
        n_shapes=m,
    )


def derive_from_isbi_setup(setup_dir: str | Path, explained: float = DEFAULT_EXPLAINED) -> ShapeModel:
    """Derive the model from ``all_senior.csv`` and ``all_junior.csv`` in ``setup_dir``.

    The shape of an image is the mean of its senior and junior annotation (mm).
    """
    setup_dir = Path(setup_dir)
    ids_s, senior = read_landmark_csv(setup_dir / "all_senior.csv", n_landmarks=19)
    ids_j, junior = read_landmark_csv(setup_dir / "all_junior.csv", n_landmarks=19)
    if ids_s != ids_j:
        raise DataError(f"{setup_dir}: senior and junior files list different image ids")
    return derive_shape_model(0.5 * (senior + junior), explained)


def shape_model_to_dict(model: ShapeModel, decimals: int = 6) -> dict:
    """JSON-ready dict of a model (numbers rounded to ``decimals``)."""
    r = lambda a: np.round(np.asarray(a, dtype=np.float64), decimals).tolist()  # noqa: E731
    return {
        "description": "Rigid-Procrustes PCA shape model of the 19 ISBI 2015 cephalometric landmarks "
        "(mean of senior and junior annotation per image), mm, x right, y down.",
        "landmark_names": list(model.landmark_names),
        "n_shapes": model.n_shapes,
        "mean_mm": r(model.mean),
        "variances_mm2": r(model.variances),
        "modes": r(model.modes),
        "residual_variance_mm2": round(model.residual_variance, decimals),
    }


def shape_model_from_dict(d: dict, source: str = "shape model") -> ShapeModel:
    """Inverse of :func:`shape_model_to_dict`, with a clear error for bad content."""
    try:
        mean = np.asarray(d["mean_mm"], dtype=np.float64)
        modes = np.asarray(d["modes"], dtype=np.float64)
        var = np.asarray(d["variances_mm2"], dtype=np.float64)
        model = ShapeModel(mean, modes, var, float(d["residual_variance_mm2"]),
                           tuple(d["landmark_names"]), int(d["n_shapes"]))
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{source}: invalid shape model ({err})") from None
    n = len(model.landmark_names)
    if mean.shape != (n, 2) or modes.shape != (len(var), n, 2):
        raise DataError(f"{source}: inconsistent shapes mean {mean.shape}, modes {modes.shape}, {len(var)} variances")
    return model


def load_shape_model(path: str | Path | None = None) -> ShapeModel:
    """Load the stored model (the package file unless ``path`` is given)."""
    if path is None:
        ref = resources.files("lmkcore.synthetic").joinpath(SHAPE_MODEL_FILE)
        source, text = str(ref), ref.read_text(encoding="utf-8")
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as err:
            raise DataError(f"{path}: cannot read shape model ({err})") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{source}: shape model is not valid JSON ({err})") from None
    return shape_model_from_dict(d, source)


def save_shape_model(model: ShapeModel, path: str | Path) -> None:
    """Write ``model`` as JSON, atomically."""
    atomic_write_text(path, json.dumps(shape_model_to_dict(model), indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Command line: re-derive the stored model from an ISBI setup folder."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (1, 2):
        print("usage: python -m lmkcore.synthetic.shape_model SETUP_DIR [OUT_JSON]", file=sys.stderr)
        return 2
    model = derive_from_isbi_setup(argv[0])
    out = Path(argv[1]) if len(argv) == 2 else Path(__file__).parent / SHAPE_MODEL_FILE
    save_shape_model(model, out)
    print(f"{out}: {model.n_modes} modes, {model.variances.sum():.1f} mm^2 kept, "
          f"residual {model.residual_variance:.3f} mm^2 per coordinate")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
