"""Simulated annotators with a declared (known) annotation distribution.

Each observer's annotation of a landmark is the true point plus a draw from an
anisotropic Gaussian whose covariance is *declared*: its major axis follows
the local direction of the structure at that landmark (the contour tangent for
edge landmarks, the tip axis for corners) in that very image, so it rotates
with pose and shape. Sizes (:data:`ANNOTATION_SIGMA_MM`) are loosely based on
the 11-observer spread measured by Thaler et al. (2021, Table 3) and on the
kind of landmark: elongated along the edge for edge landmarks, small and
nearly round for corners. An observer may also have a systematic bias
(:func:`observer_biases_local`).
"""
from __future__ import annotations

import numpy as np

from lmkcore.synthetic.anatomy import LANDMARK_KIND
from lmkcore.data.landmarks import ISBI_LANDMARK_NAMES

#: Declared annotation spread ``(sigma_major, sigma_minor)`` in mm per landmark,
#: major axis along the landmark's direction. For the five landmarks with 11
#: real observers, Thaler et al. (2021) Table 3 (product and ratio of the
#: per-image fits) implies about gnathion 0.97 x 0.38, gonion 2.41 x 1.13,
#: orbitale 1.89 x 1.24, upper incisal incision 0.54 x 0.48 and subnasale
#: 1.28 x 0.88 mm; the pooled spread of those annotations around their
#: per-image mean is 1.03 x 0.40, 2.53 x 1.19, 1.97 x 1.30, 0.56 x 0.50 and
#: 1.35 x 0.92 mm. Here edges are elongated (ratio 2-4, major 1.5-3 mm) and
#: corners small and nearly round (0.55-1.2 mm).
ANNOTATION_SIGMA_MM: dict[str, tuple[float, float]] = {
    "sella": (0.9, 0.7),
    "nasion": (2.0, 0.7),
    "orbitale": (2.2, 1.0),
    "porion": (2.0, 0.9),
    "subspinale": (2.4, 0.8),
    "supramentale": (2.4, 0.8),
    "pogonion": (2.2, 0.7),
    "menton": (0.9, 0.6),
    "gnathion": (1.5, 0.6),
    "gonion": (2.8, 1.1),
    "lower_incisal_incision": (0.6, 0.5),
    "upper_incisal_incision": (0.55, 0.5),
    "upper_lip": (1.8, 0.6),
    "lower_lip": (1.8, 0.6),
    "subnasale": (1.1, 0.8),
    "soft_tissue_pogonion": (2.6, 0.8),
    "posterior_nasal_spine": (1.2, 0.8),
    "anterior_nasal_spine": (1.0, 0.6),
    "articulare": (1.0, 0.8),
}

#: The junior observer's systematic bias, ``landmark -> (along direction, across)`` in
#: mm (multiplied by ``SyntheticConfig.observer_bias_mm``): menton placed 1 mm
#: further along the chin contour (towards gnathion) and soft tissue pogonion
#: 1 mm further down the soft chin. Inspired by the systematic shift of
#: landmarks 8 and 16 reported for the ISBI annotations (Thaler et al. 2021).
JUNIOR_BIAS_MM: dict[str, tuple[float, float]] = {
    "menton": (1.0, 0.0),
    "soft_tissue_pogonion": (1.0, 0.0),
}

BIAS_MODES = ("none", "junior", "random")


def observer_names(n_extra: int) -> list[str]:
    """``['senior', 'junior', 'ann1', ..., 'ann<n_extra>']``."""
    return ["senior", "junior"] + [f"ann{i + 1}" for i in range(n_extra)]


def sigma_table(names: tuple[str, ...] = ISBI_LANDMARK_NAMES, scale: float = 1.0) -> np.ndarray:
    """``(N, 2)`` declared ``(sigma_major, sigma_minor)`` in mm."""
    return scale * np.array([ANNOTATION_SIGMA_MM[n] for n in names], dtype=np.float64)


def local_covariances(sigma_mm: np.ndarray) -> np.ndarray:
    """``(N, 2, 2)`` covariance in each landmark's own frame (axis 0 = its direction), mm^2."""
    cov = np.zeros(sigma_mm.shape[:-1] + (2, 2))
    cov[..., 0, 0] = sigma_mm[..., 0] ** 2
    cov[..., 1, 1] = sigma_mm[..., 1] ** 2
    return cov


def image_frames(directions: np.ndarray) -> np.ndarray:
    """``(..., 2, 2)`` rotation whose columns are the unit direction and its normal ``(-d_y, d_x)``."""
    d = directions / np.linalg.norm(directions, axis=-1, keepdims=True)
    nrm = np.stack([-d[..., 1], d[..., 0]], axis=-1)
    return np.stack([d, nrm], axis=-1)


def declared_covariances(directions: np.ndarray, sigma_mm: np.ndarray, mm_to_px: np.ndarray) -> np.ndarray:
    """Declared annotation covariance in the image, px^2.

    Parameters
    ----------
    directions : ndarray
        ``(M, N, 2)`` landmark directions in the image frame ``(x, y)``.
    sigma_mm : ndarray
        ``(N, 2)`` ``(sigma_major, sigma_minor)`` in mm of anatomy.
    mm_to_px : ndarray
        ``(M,)`` pixels per anatomical mm in each image (pose scale / spacing).

    Returns
    -------
    ndarray
        ``(M, N, 2, 2)`` covariance ``k^2 U diag(s_maj^2, s_min^2) U^T`` with ``U``
        the image-frame (direction, normal) basis and ``k = mm_to_px``.
    """
    u = image_frames(directions)
    cov = u @ local_covariances(sigma_mm)[None] @ np.swapaxes(u, -1, -2)
    return cov * (np.asarray(mm_to_px, dtype=np.float64) ** 2)[:, None, None, None]


def draw_annotations(true_px: np.ndarray, cov_px: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` annotations of every landmark: true point + N(0, cov).

    Parameters
    ----------
    true_px : ndarray
        ``(..., 2)`` true positions (any unit, e.g. px).
    cov_px : ndarray
        ``(..., 2, 2)`` covariances (same unit squared), positive definite.
    n : int
        Number of independent draws.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    ndarray
        ``(n, ..., 2)`` annotations.
    """
    true_px = np.asarray(true_px, dtype=np.float64)
    chol = np.linalg.cholesky(np.asarray(cov_px, dtype=np.float64))
    z = rng.standard_normal((n,) + true_px.shape)
    return true_px[None] + np.einsum("...ij,...j->...i", chol[None], z)


def observer_biases_local(mode: str, names: list[str], magnitude: float, rng: np.random.Generator,
                          landmark_names: tuple[str, ...] = ISBI_LANDMARK_NAMES) -> np.ndarray:
    """Systematic bias of each observer, ``(K, N, 2)`` mm in the landmark frame (along, across).

    ``mode``: ``"none"`` (no bias), ``"junior"`` (:data:`JUNIOR_BIAS_MM` for the
    junior only), ``"random"`` (every observer but the senior gets an
    independent N(0, (magnitude/2)^2) bias per landmark and axis).
    """
    bias = np.zeros((len(names), len(landmark_names), 2))
    if mode == "junior" and "junior" in names:
        k = names.index("junior")
        for lm_name, vec in JUNIOR_BIAS_MM.items():
            bias[k, landmark_names.index(lm_name)] = magnitude * np.asarray(vec)
    elif mode == "random":
        bias[1:] = rng.normal(0.0, 0.5 * magnitude, bias[1:].shape)
    return bias


def biases_to_image(bias_local_mm: np.ndarray, directions: np.ndarray, mm_to_px: np.ndarray) -> np.ndarray:
    """``(M, K, N, 2)`` image-frame bias in px from ``(K, N, 2)`` local mm biases."""
    u = image_frames(directions)  # (M, N, 2, 2)
    out = np.einsum("mnij,knj->mkni", u, bias_local_mm)
    return out * np.asarray(mm_to_px, dtype=np.float64)[:, None, None, None]


__all__ = [
    "ANNOTATION_SIGMA_MM", "JUNIOR_BIAS_MM", "BIAS_MODES", "LANDMARK_KIND", "observer_names", "sigma_table",
    "local_covariances", "image_frames", "declared_covariances", "draw_annotations", "observer_biases_local",
    "biases_to_image",
]
