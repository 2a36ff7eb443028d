"""Batched random augmentation of images and landmarks, in pure torch.

Everything here is device-agnostic: tensors are created on the device of the
input and no data leaves it (apart from a handful of scalars when a CPU
``torch.Generator`` is used for a GPU batch, see :func:`sample_params`).

Conventions
-----------
Coordinates
    Points are ``(x, y)`` in 2D and ``(x, y, z)`` in 3D, in **pixels** (voxels),
    with x = column (last array axis), y = row, z = slice. Integer coordinates
    are pixel *centres*; ``(0, 0)`` is the centre of the top-left pixel, so the
    image covers ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``. This is the convention
    of :mod:`lmkcore.data.landmarks`.
Spatial transform
    The augmentation is stored as a *backward* map ``T``: output pixel
    location ``q`` -> input location ``T(q)``, i.e. ``out[q] = in[T(q)]``::

        T(q) = A @ (q + u(q)) + b

    where ``u`` is a smooth cubic B-spline displacement field (pixels) defined
    on the output grid and ``(A, b)`` is the inverse of the forward affine map
    ``F(x) = c + t + R @ diag(s) @ (x - c)`` (rotation ``R`` about the image
    centre ``c = (size - 1) / 2``, per-axis scale ``s`` (> 1 magnifies),
    translation ``t`` in pixels). A feature at input location ``p`` therefore
    appears at the output location ``q`` solving ``T(q) = p``, which is what
    :func:`transform_points` returns (the affine part is inverted exactly, the
    elastic part by a safeguarded Newton iteration).
grid_sample
    Images are resampled with ``torch.nn.functional.grid_sample(...,
    align_corners=False)``. With ``align_corners=False`` the normalised
    coordinate ``-1`` is the *outer edge* of the first pixel and a pixel
    coordinate ``x`` maps to ``(2 x + 1) / W - 1``; this is exactly the
    pixel-centre convention above and also works for axes of size 1. The
    default ``padding_mode="zeros"`` fills locations outside the input with 0
    (use ``"border"`` to repeat edge pixels instead).
Rotation sign
    In 2D, ``R = [[cos a, -sin a], [sin a, cos a]]`` acting on ``(x, y)``; with
    y pointing down the image a positive angle turns content *clockwise* on
    screen. In 3D the angles ``(a_x, a_y, a_z)`` are about the x, y and z axes
    and ``R = R_z(a_z) @ R_y(a_y) @ R_x(a_x)``; ``R_z`` acts in the x-y plane
    exactly like the 2D rotation.
Elastic field
    ``G`` control points per axis; control ``i`` sits at pixel coordinate
    ``(i - 1) * h`` with spacing ``h = (size - 1) / (G - 3)``, so control 1 is
    on the first pixel centre and control ``G - 2`` on the last one and every
    pixel has full cubic support. The spline is continued with zero
    coefficients outside the control grid, so the field is C^2 everywhere and
    decays to zero beyond the image. Control coefficients are drawn i.i.d.
    ``N(0, elastic_magnitude^2)`` (pixels) and then, per image, shrunk by a
    common factor if needed so that a rigorous bound on the Lipschitz constant
    of ``u`` (see :func:`bspline_lipschitz_bound`) stays below
    ``AugmentConfig.elastic_max_lipschitz`` (< 1). This guarantees that
    ``q -> q + u(q)`` is a diffeomorphism (no folding) and that the point
    inversion converges. The bound is conservative (about twice the true
    maximum slope); for i.i.d. coefficients its median is about
    ``14 * elastic_magnitude / h`` in 2D, so with the default cap of 0.5 fields
    get shrunk once ``elastic_magnitude`` exceeds roughly ``h / 30``. With the
    defaults (8 control points, 2 px) that happens for images smaller than
    about 170 px (always below ~130 px, never above ~190 px); use fewer
    control points (larger ``h``) or a cap closer to 1 for stronger
    deformations of small images.
Intensity
    Each image is mapped to ``scale * image + shift`` *before* resampling, so
    regions coming from outside the input stay at the padding value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lmkcore.errors import ConfigError, LmkcoreError

__all__ = [
    "AugmentConfig",
    "AugmentParams",
    "InversionError",
    "affine_from_parameters",
    "apply_intensity",
    "apply_params",
    "augment_batch",
    "bspline_basis",
    "bspline_displacement",
    "bspline_evaluate",
    "bspline_lipschitz_bound",
    "control_spacing",
    "cubic_bspline",
    "inverse_transform_points",
    "random_affine",
    "random_bspline_control",
    "sample_params",
    "sampling_grid",
    "transform_points",
    "warp",
]

_PADDING_MODES = ("zeros", "border", "reflection")

#: :class:`AugmentConfig` fields added after the first cached runs, with their defaults (left out of
#: :meth:`AugmentConfig.to_dict` at these values).
LATER_FIELDS = {"intensity_scale_center": 1.0, "translate_px": 0.0, "elastic_magnitude_uniform": False,
                "intensity_pivot": 0.0, "intensity_shift_first": False, "intensity_clamp": False,
                "translate_mm": 0.0, "elastic_distribution": "normal", "elastic_unit": "px"}
_ELASTIC_DISTRIBUTIONS = ("normal", "uniform")
_ELASTIC_UNITS = ("px", "mm")
_MODES = ("bilinear", "nearest", "bicubic")


class InversionError(LmkcoreError, RuntimeError):
    """The elastic point inversion did not reach its tolerance."""


# --------------------------------------------------------------------------
# configuration and parameters
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random augmentation (all sampled independently per image).

    Parameters
    ----------
    intensity_shift : float
        Additive intensity offset, uniform in ``[-s, s]`` (image units; images
        are assumed roughly in ``[0, 1]`` or ``[-1, 1]``). ``>= 0``.
    intensity_scale : float
        Multiplicative intensity factor, uniform in ``[c - s, c + s]`` with ``c`` =
        ``intensity_scale_center`` (default 1). ``0 <= s <= c``.
    intensity_scale_center : float
        Centre ``c`` of the multiplicative factor (McCouat & Voiculescu: ``[0.5, 1]`` is
        ``c = 0.75, s = 0.25``). ``> 0``.
    translate : float
        Translation per axis, uniform in ``[-f, f] * size`` pixels (fraction of
        the image size along that axis). ``0 <= f <= 1``.
    translate_px : float
        Translation in pixels added to the half-width of ``translate``: per axis uniform in
        ``[-(f * size + p), f * size + p]`` (McCouat & Voiculescu: 10 px, ``translate = 0``). ``>= 0``.
    rotate_deg : float
        Rotation angle in degrees, uniform in ``[-r, r]`` (per axis in 3D).
        ``0 <= r <= 180``.
    scale : float
        Isotropic scale factor, uniform in ``[1 - s, 1 + s]``. ``0 <= s < 1``.
    aniso_scale : float
        Extra per-axis scale factor, uniform in ``[1 - a, 1 + a]``,
        multiplied with the isotropic one. ``0 <= a < 1``.
    elastic_grid : int
        Control points per axis of the cubic B-spline displacement grid;
        ``>= 4`` when ``elastic_magnitude > 0`` (ignored otherwise).
    elastic_magnitude : float
        Standard deviation in pixels of each control-point displacement
        component; ``0`` disables the elastic part.
    elastic_max_lipschitz : float
        Cap, in ``(0, 1)``, on the Lipschitz bound of the displacement field;
        fields above it are scaled down (see module docstring).
    elastic_magnitude_uniform : bool
        Multiply each image's control coefficients by a factor uniform in ``[0, 1]`` (so its
        displacement SD is uniform in ``[0, elastic_magnitude]``, like imgaug's ``alpha ~ U(0, 500)``
        in McCouat & Voiculescu's code). Default False.
    intensity_pivot : float
        Grey value the intensity scale keeps fixed: ``p + scale * (image - p) + shift`` (default 0:
        ``scale * image + shift``). Thaler et al.'s code scales network values in ``[-1, 1]`` about 0,
        i.e. ``p = 0.5`` for the ``[0, 1]`` images augmented here.
    intensity_shift_first : bool
        Add the shift before scaling: ``p + scale * (image + shift - p)`` (Thaler et al.'s code,
        ``ShiftScaleClamp``: random shift, then random scale). Default False.
    intensity_clamp : bool
        Clamp augmented images to ``[0, 1]`` (the network's ``[-1, 1]``; Thaler et al.'s code clamps
        after the intensity change). Applied by :func:`apply_params` with ``clamp``
        (:attr:`clamp_range`) and by :func:`augment_batch`. Default False.
    translate_mm : float
        Translation in mm added to the half-width of ``translate`` / ``translate_px``, converted to
        pixels per image and axis with the working spacing passed to :func:`sample_params` (Thaler et
        al.'s code: 10 mm). ``>= 0``.
    elastic_distribution : str
        ``"normal"`` (default: control coefficients ``N(0, elastic_magnitude^2)``) or ``"uniform"``
        (``U[-elastic_magnitude, elastic_magnitude]`` per component, as SimpleITK B-spline
        parameters in Thaler et al.'s / Payer et al.'s code).
    elastic_unit : str
        ``"px"`` (default) or ``"mm"``: ``elastic_magnitude`` in mm, converted per image and axis with
        the working spacing passed to :func:`sample_params`.
    mode : str
        ``grid_sample`` interpolation for images: ``"bilinear"``,
        ``"nearest"`` or ``"bicubic"`` (2D only).
    padding_mode : str
        ``grid_sample`` padding: ``"zeros"`` (default), ``"border"`` or
        ``"reflection"``.

    Raises
    ------
    lmkcore.errors.ConfigError
        (a ``ValueError``) naming the field and value, if a value is invalid.
    """

    intensity_shift: float = 0.2
    intensity_scale: float = 0.2
    translate: float = 0.05
    rotate_deg: float = 15.0
    scale: float = 0.1
    aniso_scale: float = 0.05
    elastic_grid: int = 8
    elastic_magnitude: float = 2.0
    elastic_max_lipschitz: float = 0.5
    mode: str = "bilinear"
    padding_mode: str = "zeros"
    intensity_scale_center: float = 1.0
    translate_px: float = 0.0
    elastic_magnitude_uniform: bool = False
    intensity_pivot: float = 0.0
    intensity_shift_first: bool = False
    intensity_clamp: bool = False
    translate_mm: float = 0.0
    elastic_distribution: str = "normal"
    elastic_unit: str = "px"

    def __post_init__(self) -> None:
        # (name, upper bound, upper bound inclusive?)
        real_fields = (
            ("intensity_shift", None, True),
            ("intensity_scale", None, True),
            ("intensity_scale_center", None, True),
            ("translate_px", None, True),
            ("translate_mm", None, True),
            ("intensity_pivot", None, True),
            ("translate", 1.0, True),
            ("rotate_deg", 180.0, True),
            ("scale", 1.0, False),
            ("aniso_scale", 1.0, False),
            ("elastic_magnitude", None, True),
            ("elastic_max_lipschitz", 1.0, False),
        )
        for name, upper, inclusive in real_fields:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"AugmentConfig.{name} must be a real number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"AugmentConfig.{name} must be finite and >= 0, got {value!r}")
            if upper is not None and (value > upper if inclusive else value >= upper):
                op = "<=" if inclusive else "<"
                raise ConfigError(f"AugmentConfig.{name} must be {op} {upper:g}, got {value!r}")
        if not 0 < self.intensity_scale_center or self.intensity_scale > self.intensity_scale_center:
            raise ConfigError(f"AugmentConfig.intensity_scale must be <= intensity_scale_center "
                              f"({self.intensity_scale_center!r}) and the centre > 0, got {self.intensity_scale!r}")
        for name in ("elastic_magnitude_uniform", "intensity_shift_first", "intensity_clamp"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"AugmentConfig.{name} must be a bool, got {getattr(self, name)!r}")
        if self.elastic_distribution not in _ELASTIC_DISTRIBUTIONS:
            raise ConfigError(f"AugmentConfig.elastic_distribution must be one of {_ELASTIC_DISTRIBUTIONS}, "
                              f"got {self.elastic_distribution!r}")
        if self.elastic_unit not in _ELASTIC_UNITS:
            raise ConfigError(f"AugmentConfig.elastic_unit must be one of {_ELASTIC_UNITS}, got {self.elastic_unit!r}")
        if self.elastic_max_lipschitz == 0:
            raise ConfigError(
                f"AugmentConfig.elastic_max_lipschitz must be > 0, got {self.elastic_max_lipschitz!r}"
            )
        grid = self.elastic_grid
        if isinstance(grid, bool) or not isinstance(grid, int):
            raise ConfigError(f"AugmentConfig.elastic_grid must be an int, got {grid!r}")
        if grid < 0 or (self.elastic_magnitude > 0 and grid < 4):
            raise ConfigError(
                f"AugmentConfig.elastic_grid must be >= 4 when elastic_magnitude > 0, got {grid!r}"
            )
        if self.mode not in _MODES:
            raise ConfigError(f"AugmentConfig.mode must be one of {_MODES}, got {self.mode!r}")
        if self.padding_mode not in _PADDING_MODES:
            raise ConfigError(
                f"AugmentConfig.padding_mode must be one of {_PADDING_MODES}, got {self.padding_mode!r}"
            )

    def to_dict(self) -> dict:
        """Plain-JSON fields; those added later (:data:`LATER_FIELDS`) only when not at their defaults, so
        cache keys made from earlier configurations are unchanged."""
        from dataclasses import asdict

        d = asdict(self)
        for name, default in LATER_FIELDS.items():
            if d[name] == default:
                del d[name]
        return d

    @property
    def needs_spacing(self) -> bool:
        """True when a range is in mm (``translate_mm``, ``elastic_unit="mm"``): :func:`sample_params`
        then needs the working spacing."""
        return bool(self.translate_mm) or (self.elastic_unit == "mm" and self.elastic_magnitude > 0)

    @property
    def clamp_range(self) -> tuple[float, float] | None:
        """``(0, 1)`` with ``intensity_clamp``, else None (the ``clamp`` of :func:`apply_params`)."""
        return (0.0, 1.0) if self.intensity_clamp else None

    @classmethod
    def identity(cls) -> "AugmentConfig":
        """A configuration that leaves images and landmarks unchanged."""
        return cls(
            intensity_shift=0.0,
            intensity_scale=0.0,
            translate=0.0,
            rotate_deg=0.0,
            scale=0.0,
            aniso_scale=0.0,
            elastic_magnitude=0.0,
        )


@dataclass
class AugmentParams:
    """The sampled per-image parameters of one augmentation of a batch.

    Keep this to apply the very same transform to other tensors (heatmaps,
    masks) with :func:`warp` and to points with :func:`transform_points`.

    Attributes
    ----------
    spatial_shape : tuple of int
        ``(H, W)`` or ``(D, H, W)`` of the images (input and output).
    matrix : Tensor, shape (B, n, n)
        Linear part ``A`` of the backward affine map, acting on ``(x, y[, z])``.
    offset : Tensor, shape (B, n)
        Offset ``b`` of the backward affine map, pixels.
    control : Tensor or None, shape (B, n, G, ..., G)
        B-spline coefficients of the displacement ``u`` in pixels. Dim 1 is the
        component ``(x, y[, z])``; the grid dims are in array order
        (``(G_y, G_x)`` or ``(G_z, G_y, G_x)``). ``None`` means no elastic part.
    intensity_scale, intensity_shift : Tensor, shape (B,)
        Per-image ``scale * image + shift``.
    """

    spatial_shape: tuple[int, ...]
    matrix: Tensor
    offset: Tensor
    control: Tensor | None
    intensity_scale: Tensor
    intensity_shift: Tensor

    def __post_init__(self) -> None:
        self.spatial_shape = tuple(int(s) for s in self.spatial_shape)
        n = len(self.spatial_shape)
        if n not in (2, 3) or any(s < 1 for s in self.spatial_shape):
            raise ValueError(f"spatial_shape must be (H, W) or (D, H, W) of sizes >= 1, got {self.spatial_shape}")
        B = self.matrix.shape[0] if isinstance(self.matrix, Tensor) and self.matrix.ndim == 3 else -1
        _check_shape("matrix", self.matrix, (B, n, n), f"(B, {n}, {n})")
        _check_shape("offset", self.offset, (B, n), f"(B, {n})")
        _check_shape("intensity_scale", self.intensity_scale, (B,), "(B,)")
        _check_shape("intensity_shift", self.intensity_shift, (B,), "(B,)")
        if self.control is not None:
            c = self.control
            if c.ndim != n + 2 or c.shape[:2] != (B, n) or len(set(c.shape[2:])) != 1 or c.shape[2] < 4:
                raise ValueError(
                    f"control must have shape (B, {n}, G{', G' * (n - 1)}) with B = {B} and G >= 4, "
                    f"got {tuple(c.shape)}"
                )

    @property
    def batch_size(self) -> int:
        return self.matrix.shape[0]

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return len(self.spatial_shape)

    @property
    def device(self) -> torch.device:
        return self.matrix.device

    def to(self, device: torch.device | str) -> "AugmentParams":
        """Copy to ``device`` (returns ``self`` if already there)."""
        device = torch.device(device)
        if self.matrix.device == device:
            return self
        dtype = _param_dtype(device)
        mv = lambda t: None if t is None else t.to(device=device, dtype=dtype)  # noqa: E731
        return AugmentParams(
            self.spatial_shape,
            mv(self.matrix),
            mv(self.offset),
            mv(self.control),
            mv(self.intensity_scale),
            mv(self.intensity_shift),
        )

    @classmethod
    def identity(
        cls, batch_size: int, spatial_shape: Sequence[int], device: torch.device | str | None = None
    ) -> "AugmentParams":
        """Parameters of the identity transform for a batch."""
        device = torch.device("cpu") if device is None else torch.device(device)
        dtype = _param_dtype(device)
        n = len(spatial_shape)
        eye = torch.eye(n, dtype=dtype, device=device).expand(batch_size, n, n).clone()
        z = torch.zeros(batch_size, dtype=dtype, device=device)
        return cls(tuple(spatial_shape), eye, torch.zeros(batch_size, n, dtype=dtype, device=device), None, z + 1, z)


def _param_dtype(device: torch.device) -> torch.dtype:
    # Parameters and point computations use float64 except where unsupported.
    return torch.float32 if device.type == "mps" else torch.float64


def _check_shape(name: str, t: object, expected: tuple[int, ...], text: str) -> None:
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {text}, got {type(t).__name__}")
    ok = t.ndim == len(expected) and all(e < 0 or e == s for e, s in zip(expected, t.shape))
    if not ok:
        raise ValueError(f"{name} must have shape {text}, got {tuple(t.shape)}")


# --------------------------------------------------------------------------
# cubic B-splines
# --------------------------------------------------------------------------


def cubic_bspline(t: Tensor, derivative: bool = False) -> Tensor:
    """Centred uniform cubic B-spline ``beta3(t)`` (or its derivative), elementwise.

    ``beta3(t) = 2/3 - t^2 + |t|^3 / 2`` for ``|t| < 1``,
    ``(2 - |t|)^3 / 6`` for ``1 <= |t| < 2`` and 0 otherwise.
    """
    a = t.abs()
    zero = torch.zeros_like(t)
    if not derivative:
        inner = 2.0 / 3.0 - a * a + 0.5 * a * a * a
        outer = (2.0 - a) ** 3 / 6.0
    else:
        inner = t * (1.5 * a - 2.0)
        outer = -torch.sign(t) * 0.5 * (2.0 - a) ** 2
    return torch.where(a < 1.0, inner, torch.where(a < 2.0, outer, zero))


def control_spacing(spatial_shape: Sequence[int], grid: int) -> tuple[float, ...]:
    """Control-point spacing ``h`` in pixels per axis, in ``(x, y[, z])`` order.

    ``h = max(size - 1, 1) / (grid - 3)``; control ``i`` lies at ``(i - 1) * h``.
    """
    if grid < 4:
        raise ValueError(f"grid must be >= 4 control points per axis, got {grid}")
    return tuple(max(int(s) - 1, 1) / (grid - 3) for s in reversed(tuple(spatial_shape)))


def bspline_basis(coords: Tensor, spacing: float, grid: int, derivative: bool = False) -> Tensor:
    """Weights of the ``grid`` control points of one axis at pixel coordinates.

    Parameters
    ----------
    coords : Tensor, shape (...)
        Pixel coordinates along the axis.
    spacing : float
        Control spacing ``h`` in pixels (see :func:`control_spacing`).
    grid : int
        Number of control points ``G``.
    derivative : bool
        Return ``d weight / d coord`` (per pixel) instead.

    Returns
    -------
    Tensor, shape (..., G)
        ``beta3(coords / h + 1 - i)`` for ``i = 0 .. G-1`` (divided by ``h``
        for the derivative). Rows sum to 1 wherever all four supporting
        controls exist (``0 <= coords <= size - 1``).
    """
    u = coords / spacing + 1.0
    idx = torch.arange(grid, dtype=coords.dtype, device=coords.device)
    w = cubic_bspline(u.unsqueeze(-1) - idx, derivative=derivative)
    return w / spacing if derivative else w


def _check_control(control: Tensor, spatial_shape: Sequence[int]) -> tuple[int, int]:
    n = len(spatial_shape)
    if n not in (2, 3):
        raise ValueError(f"spatial_shape must be (H, W) or (D, H, W), got {tuple(spatial_shape)}")
    if not isinstance(control, Tensor) or control.ndim != n + 2 or control.shape[1] != n \
            or len(set(control.shape[2:])) != 1 or control.shape[2] < 4:
        got = tuple(control.shape) if isinstance(control, Tensor) else type(control).__name__
        raise ValueError(f"control must have shape (B, {n}, G{', G' * (n - 1)}) with G >= 4, got {got}")
    return n, control.shape[2]


def _dense_field(control: Tensor, spatial_shape: Sequence[int], dtype: torch.dtype) -> Tensor:
    """Channel-last dense field ``(B, *spatial, n)`` evaluated at pixel centres."""
    n, G = _check_control(control, spatial_shape)
    h = control_spacing(spatial_shape, G)
    dev = control.device
    sizes = tuple(reversed(tuple(spatial_shape)))  # x, y, z
    # Basis matrices (size, G) per axis, computed in float64 where possible.
    pdt = _param_dtype(dev)
    bases = [bspline_basis(torch.arange(s, dtype=pdt, device=dev), h[j], G).to(dtype) for j, s in enumerate(sizes)]
    c = control.to(dtype)
    B = c.shape[0]
    # Contract the small axes first and finish with plain matmuls so that the
    # (large) result is produced contiguous and channel-last, as grid_sample wants.
    if n == 2:
        bx, by = bases
        W, H = sizes
        t = torch.einsum("bkji,xi->bjxk", c, bx).reshape(B, G, W * n)
        return torch.matmul(by, t).reshape(B, H, W, n)
    bx, by, bz = bases
    W, H, D = sizes
    t = torch.einsum("bklji,xi->bljxk", c, bx).reshape(B, G, G, W * n)
    t = torch.matmul(by, t).reshape(B, G, H * W * n)
    return torch.matmul(bz, t).reshape(B, D, H, W, n)


def bspline_displacement(control: Tensor, spatial_shape: Sequence[int]) -> Tensor:
    """Dense B-spline displacement field at every pixel centre.

    Parameters
    ----------
    control : Tensor, shape (B, n, G, ..., G)
        Coefficients in pixels; dim 1 = component ``(x, y[, z])``, grid dims in
        array order.
    spatial_shape : (H, W) or (D, H, W)

    Returns
    -------
    Tensor, shape (B, n, *spatial_shape), dtype of ``control``
        ``out[b, k, y, x]`` = component ``k`` of the displacement at pixel
        ``(x, y)``. Equal to :func:`bspline_evaluate` at integer points.
    """
    _check_control(control, spatial_shape)
    return _dense_field(control, spatial_shape, control.dtype).movedim(-1, 1).contiguous()


def bspline_evaluate(
    control: Tensor, points: Tensor, spatial_shape: Sequence[int], jacobian: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """Evaluate the B-spline displacement at arbitrary sub-pixel points.

    Parameters
    ----------
    control : Tensor, shape (B, n, G, ..., G)
        As in :func:`bspline_displacement`.
    points : Tensor, shape (B, N, n)
        ``(x, y[, z])`` pixel coordinates (finite).
    spatial_shape : (H, W) or (D, H, W)
    jacobian : bool
        Also return the Jacobian.

    Returns
    -------
    u : Tensor, shape (B, N, n)
        Displacement in pixels, same dtype as ``points``.
    jac : Tensor, shape (B, N, n, n), only if ``jacobian``
        ``jac[..., k, j] = d u_k / d x_j``.
    """
    n, G = _check_control(control, spatial_shape)
    _check_shape("points", points, (control.shape[0], -1, n), f"(B={control.shape[0]}, N, {n})")
    h = control_spacing(spatial_shape, G)
    c = control.to(points.dtype)
    w = [bspline_basis(points[..., j], h[j], G) for j in range(n)]  # each (B, N, G)
    eq = "bkji,bnj,bni->bnk" if n == 2 else "bklji,bnl,bnj,bni->bnk"

    def contract(ws: list[Tensor]) -> Tensor:  # ws in x, y[, z] order
        return torch.einsum(eq, c, *reversed(ws))

    u = contract(w)
    if not jacobian:
        return u
    cols = []
    for j in range(n):
        ws = list(w)
        ws[j] = bspline_basis(points[..., j], h[j], G, derivative=True)
        cols.append(contract(ws))
    return u, torch.stack(cols, dim=-1)


def bspline_lipschitz_bound(control: Tensor, spatial_shape: Sequence[int]) -> Tensor:
    """Rigorous upper bound on the Lipschitz constant of the displacement field.

    Uses ``d/dx sum_i c_i beta3(u - i) = sum_i (c_i - c_{i-1}) beta2(u - i + 1/2) / h``
    with nonnegative, partition-of-unity weights, so
    ``|d u_k / d x_j| <= max |forward difference of c_k along j| / h_j`` (the
    zero coefficients outside the grid included) and the spectral norm of the
    Jacobian is at most the Frobenius norm of these bounds.

    Returns
    -------
    Tensor, shape (B,)
    """
    n, G = _check_control(control, spatial_shape)
    h = control_spacing(spatial_shape, G)
    total = torch.zeros(control.shape[0], dtype=control.dtype, device=control.device)
    for j in range(n):
        dim = control.ndim - 1 - j  # x is the last dim
        pad_shape = list(control.shape)
        pad_shape[dim] = 1
        zeros = control.new_zeros(pad_shape)
        diff = torch.cat([zeros, control, zeros], dim=dim).diff(dim=dim).abs()
        m = diff.flatten(2).amax(dim=-1)  # (B, n)
        total = total + ((m / h[j]) ** 2).sum(dim=1)
    return total.sqrt()


# --------------------------------------------------------------------------
# random sampling
# --------------------------------------------------------------------------


def _uniform(shape: tuple[int, ...], half_width: float, center: float, generator, device, dtype) -> Tensor:
    gdev = generator.device if generator is not None else device
    u = torch.rand(shape, generator=generator, device=gdev, dtype=torch.float64)
    return (center + (2.0 * u - 1.0) * half_width).to(device=device, dtype=dtype)


def _resolve(spatial_shape: Sequence[int], device) -> tuple[tuple[int, ...], torch.device, torch.dtype]:
    spatial_shape = tuple(int(s) for s in spatial_shape)
    if len(spatial_shape) not in (2, 3) or any(s < 1 for s in spatial_shape):
        raise ValueError(f"spatial_shape must be (H, W) or (D, H, W) of sizes >= 1, got {spatial_shape}")
    device = torch.device("cpu") if device is None else torch.device(device)
    return spatial_shape, device, _param_dtype(device)


def _rotation_matrix(angles_deg: Tensor, n: int) -> Tensor:
    a = torch.deg2rad(angles_deg)
    c, s = torch.cos(a), torch.sin(a)
    one, zero = torch.ones_like(c), torch.zeros_like(c)
    if n == 2:
        c, s = c[:, 0], s[:, 0]
        one, zero = one[:, 0], zero[:, 0]
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    cx, cy, cz = c.unbind(-1)
    sx, sy, sz = s.unbind(-1)
    o, z = one[:, 0], zero[:, 0]
    rx = torch.stack([torch.stack([o, z, z], -1), torch.stack([z, cx, -sx], -1), torch.stack([z, sx, cx], -1)], -2)
    ry = torch.stack([torch.stack([cy, z, sy], -1), torch.stack([z, o, z], -1), torch.stack([-sy, z, cy], -1)], -2)
    rz = torch.stack([torch.stack([cz, -sz, z], -1), torch.stack([sz, cz, z], -1), torch.stack([z, z, o], -1)], -2)
    return rz @ ry @ rx


def affine_from_parameters(
    spatial_shape: Sequence[int],
    rotation_deg: Tensor | float,
    scale: Tensor | float,
    translation: Tensor | Sequence[float],
    *,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Backward affine map for given rotation, scale and translation.

    The forward map is ``F(x) = c + t + R @ diag(s) @ (x - c)`` with
    ``c = (size - 1) / 2`` (the image centre, pixels, ``(x, y[, z])``);
    the returned ``(A, b)`` satisfy ``F^{-1}(y) = A @ y + b``.

    Parameters
    ----------
    spatial_shape : (H, W) or (D, H, W)
    rotation_deg : float or Tensor, shape (B,) in 2D / (B, 3) in 3D
        Angle(s) in degrees (about x, y, z in 3D; see module docstring).
    scale : float or Tensor, shape (B,) or (B, n)
        Scale factor(s) per axis ``(x, y[, z])``; > 1 magnifies.
    translation : sequence or Tensor, shape (n,) or (B, n)
        Translation ``t`` in pixels, ``(x, y[, z])``.
    batch_size : int, optional
        Batch size when all inputs are unbatched (default 1).
    device : optional
        Device of the result (default: that of a tensor argument, else CPU).

    Returns
    -------
    matrix : Tensor, shape (B, n, n)
    offset : Tensor, shape (B, n)
    """
    if device is None:
        for v in (rotation_deg, scale, translation):
            if isinstance(v, Tensor):
                device = v.device
                break
    spatial_shape, device, dtype = _resolve(spatial_shape, device)
    n = len(spatial_shape)
    n_rot = 1 if n == 2 else 3
    rot = torch.as_tensor(rotation_deg, dtype=dtype, device=device)
    sc = torch.as_tensor(scale, dtype=dtype, device=device)
    tr = torch.as_tensor(translation, dtype=dtype, device=device)
    # Normalise shapes to (B, n_rot), (B, n), (B, n).
    if rot.ndim == 0:
        rot = rot.reshape(1, 1)
    elif rot.ndim == 1:
        rot = rot.reshape(-1, 1) if n == 2 else rot.reshape(1, -1)
    if sc.ndim == 0:
        sc = sc.reshape(1, 1)
    elif sc.ndim == 1:
        sc = sc.reshape(-1, 1)
    if sc.ndim == 2 and sc.shape[-1] == 1:
        sc = sc.expand(-1, n)
    if tr.ndim == 1:
        tr = tr.reshape(1, -1)
    if rot.ndim != 2 or sc.ndim != 2 or tr.ndim != 2:
        raise ValueError(
            f"affine parameters must be at most 2-D, got rotation {tuple(rot.shape)}, scale {tuple(sc.shape)}, "
            f"translation {tuple(tr.shape)}"
        )
    sizes = {v.shape[0] for v in (rot, sc, tr) if v.shape[0] != 1}
    if len(sizes) > 1 or rot.shape[-1] != n_rot or sc.shape[-1] != n or tr.shape[-1] != n:
        raise ValueError(
            f"inconsistent affine parameters for {n}D: rotation {tuple(rot.shape)} (expected (B, {n_rot})), "
            f"scale {tuple(sc.shape)} (expected (B,) or (B, {n})), translation {tuple(tr.shape)} "
            f"(expected ({n},) or (B, {n}))"
        )
    B = sizes.pop() if sizes else (batch_size or 1)
    if batch_size is not None and B != batch_size:
        raise ValueError(f"affine parameters have batch size {B}, but batch_size={batch_size}")
    rot, sc, tr = rot.expand(B, n_rot), sc.expand(B, n), tr.expand(B, n)
    if bool((sc <= 0).any()):
        raise ValueError("scale factors must be > 0")
    R = _rotation_matrix(rot, n)
    A = R.transpose(-1, -2) / sc.unsqueeze(-1)  # diag(1/s) @ R^T
    c = torch.tensor([(s - 1) / 2.0 for s in reversed(spatial_shape)], dtype=dtype, device=device)
    b = c - torch.einsum("bij,bj->bi", A, c + tr)
    return A.contiguous(), b


def _spacing_tensor(spacing, batch_size: int, n: int, device, dtype) -> Tensor:
    """``(B, n)`` mm per pixel ``(x, y[, z])`` from ``(n,)`` or ``(B, n)`` values (ValueError if invalid)."""
    if spacing is None:
        raise ValueError("this AugmentConfig has ranges in mm (translate_mm or elastic_unit='mm'): pass the "
                         "working spacing (mm per px, (x, y[, z])) as spacing=")
    sp = torch.as_tensor(spacing, dtype=torch.float64).detach().cpu()
    if sp.ndim == 1:
        sp = sp.reshape(1, -1).expand(batch_size, -1)
    if sp.shape != (batch_size, n) or not bool(torch.isfinite(sp).all()) or bool((sp <= 0).any()):
        raise ValueError(f"spacing must be positive finite mm per px of shape ({n},) or ({batch_size}, {n}), "
                         f"got shape {tuple(sp.shape)}")
    return sp.to(device=device, dtype=dtype)


def random_affine(
    batch_size: int,
    spatial_shape: Sequence[int],
    config: AugmentConfig,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    spacing=None,
) -> tuple[Tensor, Tensor]:
    """Sample backward affine maps (see :func:`affine_from_parameters`).

    Rotation uniform in ``[-rotate_deg, rotate_deg]`` (per axis in 3D), scale
    ``iso * aniso_k`` with ``iso ~ U[1 - scale, 1 + scale]`` and
    ``aniso_k ~ U[1 - aniso_scale, 1 + aniso_scale]``, translation
    ``t_k ~ U[-1, 1] * (translate * size_k + translate_px + translate_mm / spacing_k)`` pixels
    (``spacing``: ``(n,)`` or ``(B, n)`` mm per px, needed only with ``translate_mm``).

    Returns
    -------
    matrix : Tensor, shape (B, n, n)
    offset : Tensor, shape (B, n)
    """
    spatial_shape, device, dtype = _resolve(spatial_shape, device)
    n = len(spatial_shape)
    B = int(batch_size)
    rot = _uniform((B, 1 if n == 2 else 3), config.rotate_deg, 0.0, generator, device, dtype)
    iso = _uniform((B, 1), config.scale, 1.0, generator, device, dtype)
    aniso = _uniform((B, n), config.aniso_scale, 1.0, generator, device, dtype)
    sizes = torch.tensor(list(reversed(spatial_shape)), dtype=dtype, device=device)
    if config.translate_mm or config.translate_px:  # one uniform draw per axis either way: the same random stream
        half = config.translate * sizes + config.translate_px
        if config.translate_mm:
            half = half + config.translate_mm / _spacing_tensor(spacing, B, n, device, dtype)
        tr = _uniform((B, n), 1.0, 0.0, generator, device, dtype) * half
    else:
        tr = _uniform((B, n), config.translate, 0.0, generator, device, dtype) * sizes
    return affine_from_parameters(spatial_shape, rot, iso * aniso, tr, device=device)


def random_bspline_control(
    batch_size: int,
    spatial_shape: Sequence[int],
    config: AugmentConfig,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    spacing=None,
) -> Tensor | None:
    """Sample B-spline coefficients ``(B, n, G, ..., G)`` in pixels (or ``None``).

    Coefficients are i.i.d. ``N(0, elastic_magnitude^2)`` (``elastic_distribution="uniform"``:
    ``U[-elastic_magnitude, elastic_magnitude]``); with ``elastic_unit="mm"`` component ``k`` is divided
    by ``spacing_k`` (mm per px, ``(n,)`` or ``(B, n)``, ``(x, y[, z])``). Each image's set is
    then multiplied by ``min(1, elastic_max_lipschitz / L)`` where ``L`` is
    :func:`bspline_lipschitz_bound`, so the field never folds.
    """
    spatial_shape, device, dtype = _resolve(spatial_shape, device)
    if config.elastic_magnitude == 0:
        return None
    n, G = len(spatial_shape), config.elastic_grid
    gdev = generator.device if generator is not None else device
    shape = (int(batch_size), n) + (G,) * n
    if config.elastic_distribution == "uniform":
        c = 2.0 * torch.rand(shape, generator=generator, device=gdev, dtype=torch.float64) - 1.0
    else:
        c = torch.randn(shape, generator=generator, device=gdev, dtype=torch.float64)
    c = (c * config.elastic_magnitude).to(device=device, dtype=dtype)
    if config.elastic_unit == "mm":
        c = c / _spacing_tensor(spacing, int(batch_size), n, device, dtype).reshape((-1, n) + (1,) * n)
    if config.elastic_magnitude_uniform:  # drawn only then: the stream of other configurations is unchanged
        u = torch.rand((int(batch_size),), generator=generator, device=gdev, dtype=torch.float64)
        c = c * u.to(device=device, dtype=dtype).reshape((-1,) + (1,) * (n + 1))
    lip = bspline_lipschitz_bound(c, spatial_shape)
    factor = torch.clamp(config.elastic_max_lipschitz / lip.clamp_min(1e-300), max=1.0)
    return c * factor.reshape((-1,) + (1,) * (n + 1))


def sample_params(
    batch_size: int,
    spatial_shape: Sequence[int],
    config: AugmentConfig,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    spacing=None,
) -> AugmentParams:
    """Sample all augmentation parameters of a batch.

    Random numbers are drawn in float64 on the generator's device (or on
    ``device`` from its default generator when ``generator`` is ``None``) in
    a fixed order, so a seeded CPU generator gives bit-identical parameters
    whatever ``device`` is.

    Parameters
    ----------
    batch_size : int
    spatial_shape : (H, W) or (D, H, W)
    config : AugmentConfig
    generator : torch.Generator, optional
    device : optional
        Device of the returned parameters (default CPU).
    spacing : array-like, optional
        ``(n,)`` or ``(B, n)`` working spacing, mm per px ``(x, y[, z])``; needed when the config has
        ranges in mm (:attr:`AugmentConfig.needs_spacing`).
    """
    if not isinstance(config, AugmentConfig):
        raise ValueError(f"config must be an AugmentConfig, got {type(config).__name__}")
    spatial_shape, device, dtype = _resolve(spatial_shape, device)
    B = int(batch_size)
    iscale = _uniform((B,), config.intensity_scale, config.intensity_scale_center, generator, device, dtype)
    ishift = _uniform((B,), config.intensity_shift, 0.0, generator, device, dtype)
    pivot = config.intensity_pivot
    if config.intensity_shift_first:  # p + s (x + t - p) = s x + s (t - p) + p
        ishift = iscale * (ishift - pivot) + pivot
    elif pivot:  # p + s (x - p) + t = s x + t + p (1 - s)
        ishift = ishift + pivot * (1.0 - iscale)
    A, b = random_affine(B, spatial_shape, config, generator=generator, device=device, spacing=spacing)
    control = random_bspline_control(B, spatial_shape, config, generator=generator, device=device, spacing=spacing)
    return AugmentParams(spatial_shape, A, b, control, iscale, ishift)


# --------------------------------------------------------------------------
# applying a transform
# --------------------------------------------------------------------------


def sampling_grid(params: AugmentParams, dtype: torch.dtype = torch.float32, normalized: bool = True) -> Tensor:
    """Backward map ``T`` evaluated at every output pixel centre.

    Parameters
    ----------
    params : AugmentParams
    dtype : torch.dtype
        Floating dtype of the result.
    normalized : bool
        If True, coordinates are normalised for
        ``grid_sample(..., align_corners=False)`` (``(2 x + 1) / size - 1``);
        otherwise they are input pixel coordinates.

    Returns
    -------
    Tensor, shape (B, *spatial_shape, n)
        ``out[b, y, x] = T(x, y)`` as ``(x, y[, z])``, on ``params.device``.
    """
    n = params.ndim
    dev = params.device
    sizes = list(reversed(params.spatial_shape))
    A, b = params.matrix, params.offset
    if normalized:
        sz = torch.tensor(sizes, dtype=A.dtype, device=dev)
        A = A * (2.0 / sz).unsqueeze(-1)
        b = (2.0 * b + 1.0) / sz - 1.0
    B = params.batch_size
    Ad = A.to(dtype)
    if params.control is not None:
        # A @ u(q) is a B-spline with coefficients A @ c (components mixed).
        mixed = torch.einsum("bkm,bm...->bk...", A, params.control.to(A.dtype))
        grid = _dense_field(mixed, params.spatial_shape, dtype)
    else:
        grid = torch.zeros((B,) + params.spatial_shape + (n,), dtype=dtype, device=dev)
    grid += b.to(dtype).reshape((B,) + (1,) * n + (n,))
    for j, s in enumerate(sizes):  # affine part is separable: sum_j A[:, :, j] * x_j
        view = [1] * (n + 2)
        view[1 + n - 1 - j] = s
        coord = torch.arange(s, dtype=dtype, device=dev).reshape(view)
        grid += coord * Ad[:, :, j].reshape((B,) + (1,) * n + (n,))
    return grid


def _check_batch_tensor(name: str, t: object, params: AugmentParams) -> None:
    n = params.ndim
    axes = "(B, C, H, W)" if n == 2 else "(B, C, D, H, W)"
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {axes}, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    expected = (params.batch_size, "C") + params.spatial_shape
    if t.ndim != n + 2 or t.shape[0] != params.batch_size or tuple(t.shape[2:]) != params.spatial_shape:
        raise ValueError(
            f"{name} must have shape {axes} = ({', '.join(map(str, expected))}), got {tuple(t.shape)}"
        )


def warp(params: AugmentParams, tensor: Tensor, *, mode: str = "bilinear", padding_mode: str = "zeros") -> Tensor:
    """Resample a batch with the spatial part of ``params`` (no intensity change).

    Use this to apply the same transform as :func:`apply_params` to heatmaps,
    masks etc.

    Parameters
    ----------
    params : AugmentParams
    tensor : Tensor, shape (B, C, *params.spatial_shape), floating point
    mode, padding_mode : str
        Passed to ``grid_sample`` (``align_corners=False``).

    Returns
    -------
    Tensor, same shape, dtype and device as ``tensor``.
    """
    _check_batch_tensor("tensor", tensor, params)
    if mode not in _MODES or (mode == "bicubic" and params.ndim == 3):
        raise ValueError(f"mode must be one of {_MODES} ('bicubic' only in 2D), got {mode!r}")
    if padding_mode not in _PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
    params = params.to(tensor.device)
    work = tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()
    grid = sampling_grid(params, dtype=work.dtype)
    out = F.grid_sample(work, grid, mode=mode, padding_mode=padding_mode, align_corners=False)
    return out.to(tensor.dtype)


def apply_intensity(params: AugmentParams, images: Tensor) -> Tensor:
    """``intensity_scale[b] * images[b] + intensity_shift[b]`` per image.

    Parameters
    ----------
    images : Tensor, shape (B, C, *spatial)

    Returns
    -------
    Tensor, same shape, dtype and device.
    """
    _check_batch_tensor("images", images, params)
    params = params.to(images.device)
    view = (-1,) + (1,) * (images.ndim - 1)
    scale = params.intensity_scale.to(images.dtype).reshape(view)
    shift = params.intensity_shift.to(images.dtype).reshape(view)
    return images * scale + shift


def _check_points(points: object, params: AugmentParams) -> None:
    n = params.ndim
    coords = "(x, y)" if n == 2 else "(x, y, z)"
    if not isinstance(points, Tensor):
        raise ValueError(f"landmarks must be a torch.Tensor of shape (B, N, {n}), got {type(points).__name__}")
    if not points.is_floating_point():
        raise ValueError(f"landmarks must be a floating-point tensor, got dtype {points.dtype}")
    if points.ndim != 3 or points.shape[0] != params.batch_size or points.shape[2] != n:
        raise ValueError(
            f"landmarks must have shape (B, N, {n}) = ({params.batch_size}, N, {n}) with {coords} "
            f"pixel coordinates, got {tuple(points.shape)}"
        )
    if bool(torch.isinf(points).any()):
        raise ValueError("landmarks must be finite or NaN (missing), got infinite values")


def inverse_transform_points(params: AugmentParams, points: Tensor) -> Tensor:
    """Backward map ``T``: output locations -> input locations.

    Parameters
    ----------
    params : AugmentParams
    points : Tensor, shape (B, N, n)
        Output-image pixel coordinates ``(x, y[, z])``; NaN marks missing.

    Returns
    -------
    Tensor, shape (B, N, n), dtype/device of ``points``
        ``T(q) = A @ (q + u(q)) + b``; a point with any NaN coordinate is all NaN.
    """
    _check_points(points, params)
    params = params.to(points.device)
    missing = torch.isnan(points).any(dim=-1, keepdim=True)
    q = torch.where(missing, torch.zeros_like(points), points).to(params.matrix.dtype)
    if params.control is not None:
        q = q + bspline_evaluate(params.control, q, params.spatial_shape)
    p = torch.einsum("bij,bnj->bni", params.matrix, q) + params.offset.unsqueeze(1)
    return torch.where(missing, torch.full_like(points, float("nan")), p.to(points.dtype))


def _solve_small(m: Tensor, v: Tensor) -> Tensor:
    """Solve ``m @ x = v`` for batches of 2x2 / 3x3 systems (closed form)."""
    if m.shape[-1] == 2:
        a, b_, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
        det = a * d - b_ * c
        x0 = (d * v[..., 0] - b_ * v[..., 1]) / det
        x1 = (a * v[..., 1] - c * v[..., 0]) / det
        return torch.stack([x0, x1], dim=-1)
    r0, r1, r2 = m[..., 0, :], m[..., 1, :], m[..., 2, :]
    adj = torch.stack([torch.linalg.cross(r1, r2), torch.linalg.cross(r2, r0), torch.linalg.cross(r0, r1)], dim=-1)
    det = (r0 * adj[..., :, 0]).sum(-1)
    return torch.einsum("...ij,...j->...i", adj, v) / det.unsqueeze(-1)


def transform_points(params: AugmentParams, points: Tensor, *, tol: float = 1e-4, max_iter: int = 50) -> Tensor:
    """Forward map ``T^{-1}``: where input locations appear in the output.

    Solves ``T(q) = p`` per point: the affine part is inverted exactly,
    ``r = A^{-1} (p - b)``, then ``q + u(q) = r`` is solved in float64 by a
    safeguarded Newton iteration (per point, the better of a Newton step and
    a fixed-point step ``q <- r - u(q)`` is kept). If the field's Lipschitz
    constant ``L`` is < 1 (guaranteed for sampled parameters, see
    :func:`bspline_lipschitz_bound`), the solution is unique, the residual
    shrinks at least by ``L`` per iteration and ``|q - q*| <= residual / (1 - L)``.
    Iteration stops when every residual is below ``tol / 1000``.

    Parameters
    ----------
    params : AugmentParams
    points : Tensor, shape (B, N, n)
        Input-image pixel coordinates ``(x, y[, z])``; NaN marks missing.
    tol : float
        Required accuracy in pixels.
    max_iter : int

    Returns
    -------
    Tensor, shape (B, N, n), dtype/device of ``points``
        Output-image coordinates; a point with any NaN coordinate is all NaN.

    Raises
    ------
    InversionError
        If some residual is still above ``tol`` after ``max_iter`` iterations
        (only possible for hand-made, folding displacement fields).
    """
    _check_points(points, params)
    params = params.to(points.device)
    missing = torch.isnan(points).any(dim=-1, keepdim=True)
    p = torch.where(missing, torch.zeros_like(points), points).to(params.matrix.dtype)
    r = torch.einsum("bij,bnj->bni", torch.linalg.inv(params.matrix), p - params.offset.unsqueeze(1))
    if params.control is not None and r.numel() > 0:
        r = _invert_elastic(params.control, r, params.spatial_shape, tol, max_iter)
    return torch.where(missing, torch.full_like(points, float("nan")), r.to(points.dtype))


def _invert_elastic(control: Tensor, r: Tensor, spatial_shape: tuple[int, ...], tol: float, max_iter: int) -> Tensor:
    """Solve ``q + u(q) = r`` for ``q`` (all (B, N, n))."""
    n = r.shape[-1]
    eye = torch.eye(n, dtype=r.dtype, device=r.device)
    q = r - bspline_evaluate(control, r, spatial_shape)
    u, jac = bspline_evaluate(control, q, spatial_shape, jacobian=True)
    res_vec = q + u - r
    res = res_vec.norm(dim=-1)
    stop = tol * 1e-3
    for _ in range(max_iter):
        if float(res.max()) <= stop:
            break
        q_newton = q - _solve_small(eye + jac, res_vec)
        q_fixed = q - res_vec
        cand = torch.cat([q_newton, q_fixed], dim=1)
        cu, cj = bspline_evaluate(control, cand, spatial_shape, jacobian=True)
        cres_vec = cand + cu - torch.cat([r, r], dim=1)
        cres = cres_vec.norm(dim=-1)
        N = r.shape[1]
        use_newton = (cres[:, :N] < cres[:, N:]).unsqueeze(-1)  # NaN -> fixed-point step
        pick = lambda t: torch.where(use_newton, t[:, :N], t[:, N:])  # noqa: E731
        q, res_vec = pick(cand), pick(cres_vec)
        jac = torch.where(use_newton.unsqueeze(-1), cj[:, :N], cj[:, N:])
        res = res_vec.norm(dim=-1)
    worst = float(res.max())
    if not worst <= tol:
        raise InversionError(
            f"elastic point inversion did not converge: max residual {worst:.3g} px > tol {tol:g} px after "
            f"{max_iter} iterations; the displacement field probably folds (keep its Lipschitz bound < 1, "
            "i.e. control displacements small relative to the control spacing)"
        )
    return q


def apply_params(
    params: AugmentParams,
    images: Tensor,
    landmarks: Tensor,
    *,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    clamp: tuple[float, float] | None = None,
) -> tuple[Tensor, Tensor]:
    """Apply intensity change, spatial warp and landmark mapping of ``params``.

    Parameters
    ----------
    params : AugmentParams
    images : Tensor, shape (B, C, *spatial), floating point
    landmarks : Tensor, shape (B, N, n), ``(x, y[, z])`` pixels, NaN = missing
    clamp : (float, float), optional
        Clamp the warped images to this range (:attr:`AugmentConfig.clamp_range`).

    Returns
    -------
    images : Tensor, same shape/dtype/device as ``images``
    landmarks : Tensor, same shape/dtype/device as ``landmarks``
    """
    _check_batch_tensor("images", images, params)
    _check_points(landmarks, params)
    out = warp(params, apply_intensity(params, images), mode=mode, padding_mode=padding_mode)
    if clamp is not None:
        out = out.clamp(float(clamp[0]), float(clamp[1]))
    return out, transform_points(params, landmarks)


def augment_batch(
    images: Tensor,
    landmarks: Tensor,
    config: AugmentConfig,
    generator: torch.Generator | None = None,
    spacing=None,
) -> tuple[Tensor, Tensor]:
    """Randomly augment a batch of images and their landmarks.

    Parameters
    ----------
    images : Tensor, shape (B, C, H, W) or (B, C, D, H, W)
        Floating-point images.
    landmarks : Tensor, shape (B, N, 2) or (B, N, 3)
        ``(x, y)`` / ``(x, y, z)`` pixel coordinates (x = column, integer
        values at pixel centres, ``(0, 0)`` = centre of the top-left pixel);
        NaN marks a missing landmark. Same device as ``images``.
    config : AugmentConfig
    generator : torch.Generator, optional
        Source of randomness; the same seed gives bit-identical results on
        CPU. Default: the global generator of ``images.device``.
    spacing : array-like, optional
        ``(n,)`` or ``(B, n)`` mm per px, for configs with ranges in mm.

    Returns
    -------
    images : Tensor
        Augmented images, same shape, dtype and device.
    landmarks : Tensor
        Landmarks mapped through the same spatial transform (a feature at
        input location ``p`` appears at the returned location, to 1e-4 px),
        same shape, dtype and device; missing ones stay NaN.

    Notes
    -----
    To apply the same transform to other tensors, use :func:`sample_params`,
    then :func:`apply_params` / :func:`warp` / :func:`transform_points`.
    """
    if not isinstance(config, AugmentConfig):
        raise ValueError(f"config must be an AugmentConfig, got {type(config).__name__}")
    if not isinstance(images, Tensor):
        raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim not in (4, 5):
        raise ValueError(f"images must have shape (B, C, H, W) or (B, C, D, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a floating-point tensor, got dtype {images.dtype}")
    if not isinstance(landmarks, Tensor):
        raise ValueError(f"landmarks must be a torch.Tensor, got {type(landmarks).__name__}")
    n = images.ndim - 2
    if landmarks.ndim != 3 or landmarks.shape[2] != n:
        raise ValueError(
            f"landmarks must have shape (B, N, {n}) for {n}D images, got {tuple(landmarks.shape)}"
        )
    if landmarks.shape[0] != images.shape[0]:
        raise ValueError(
            f"batch sizes differ: images have B = {images.shape[0]}, landmarks have B = {landmarks.shape[0]}"
        )
    if landmarks.device != images.device:
        raise ValueError(f"landmarks are on {landmarks.device} but images on {images.device}")
    if config.mode == "bicubic" and n == 3:
        raise ConfigError("AugmentConfig.mode='bicubic' is only supported for 2D images")
    params = sample_params(images.shape[0], images.shape[2:], config, generator=generator, device=images.device,
                           spacing=spacing)
    return apply_params(params, images, landmarks, mode=config.mode, padding_mode=config.padding_mode,
                        clamp=config.clamp_range)
