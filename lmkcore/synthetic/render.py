"""Render an :class:`~lmkcore.synthetic.anatomy.Anatomy` as an X-ray-like 8-bit image.

The layers' attenuations add up along the beam (overlapping structures are
brighter, as in a radiograph); the sum is blurred (focal-spot unsharpness),
mapped to brightness by ``1 - exp(-attenuation)``, multiplied by a smooth
bias field and corrupted by noise. Bright = dense (bone), dark = air.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lmkcore.synthetic.anatomy import Anatomy
from lmkcore.synthetic.raster import add_polygon


@dataclass(frozen=True)
class Pose:
    """Similarity transform from the canonical frame (mm) to the image (mm).

    ``image_mm = center + scale * Rot(rotation_deg) @ (canonical_mm - center) + translation_mm``.
    A positive rotation turns +x towards +y (clockwise on screen, y down).
    """

    rotation_deg: float
    scale: float
    translation_mm: tuple[float, float]
    center_mm: tuple[float, float]

    @property
    def matrix(self) -> np.ndarray:
        """``(2, 2)`` linear part ``scale * Rot``."""
        a = np.radians(self.rotation_deg)
        return self.scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])

    def apply(self, pts_mm: np.ndarray) -> np.ndarray:
        """Map ``(..., 2)`` canonical mm to image mm."""
        c = np.asarray(self.center_mm)
        return (np.asarray(pts_mm) - c) @ self.matrix.T + c + np.asarray(self.translation_mm)

    def rotate(self, vectors: np.ndarray) -> np.ndarray:
        """Rotate ``(..., 2)`` directions (no scaling, no translation)."""
        a = np.radians(self.rotation_deg)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        return np.asarray(vectors) @ rot.T


@dataclass(frozen=True)
class RenderSettings:
    """Image formation parameters (see :class:`~lmkcore.synthetic.generator.SyntheticConfig`)."""

    noise: float = 0.02
    blur_mm: float = 0.6
    bias_field: float = 0.15
    texture: float = 0.12
    gain: float = 1.1
    subsamples: int = 4


def render_attenuation(anatomy: Anatomy, pose: Pose, shape: tuple[int, int], spacing_mm: float,
                       texture_field: np.ndarray | None = None, texture: float = 0.12,
                       subsamples: int = 4) -> np.ndarray:
    """Sum of layer attenuations on the ``(H, W)`` pixel grid (float32, unblurred)."""
    plain = np.zeros(shape, np.float32)
    textured = np.zeros(shape, np.float32)
    for layer in anatomy.layers:
        loops = [pose.apply(loop) / spacing_mm for loop in layer.loops]
        add_polygon(textured if layer.textured else plain, loops, layer.attenuation, subsamples)
    if texture_field is not None:
        textured *= 1.0 + texture * texture_field
    return plain + textured


def render_image(anatomy: Anatomy, pose: Pose, shape: tuple[int, int], spacing_mm: float,
                 rng: np.random.Generator, settings: RenderSettings = RenderSettings()) -> np.ndarray:
    """Render one ``(H, W)`` uint8 image.

    Parameters
    ----------
    anatomy : Anatomy
        Layers in canonical mm.
    pose : Pose
        Canonical mm -> image mm.
    shape : (int, int)
        ``(H, W)`` in pixels.
    spacing_mm : float
        Isotropic pixel spacing (mm per pixel).
    rng : numpy.random.Generator
        Source of the texture, bias field and noise (the only randomness used).
    settings : RenderSettings
        Noise level, blur, bias field amplitude, texture strength.
    """
    h, w = shape
    tex = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 0.8 / spacing_mm)
    tex /= max(float(tex.std()), 1e-6)
    att = render_attenuation(anatomy, pose, shape, spacing_mm, tex, settings.texture, settings.subsamples)
    sigma = settings.blur_mm / spacing_mm
    if sigma > 0.05:
        att = ndimage.gaussian_filter(att, sigma)
    img = 1.0 - np.exp(-settings.gain * np.maximum(att, 0.0))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xn, yn = 2.0 * xx / max(w - 1, 1) - 1.0, 2.0 * yy / max(h - 1, 1) - 1.0
    c = rng.uniform(-settings.bias_field, settings.bias_field, 4)
    bias = 1.0 + c[0] * xn + c[1] * yn + c[2] * (xn * xn + yn * yn - 0.66) + c[3] * xn * yn
    img = img * bias + 0.04
    img = img + settings.noise * rng.standard_normal(shape)
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
