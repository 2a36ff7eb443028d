"""Building blocks shared by the SpatialConfiguration-Net and the Localization U-Net.

Everything here is dimension generic: ``spatial_dims = 2`` works on ``(B, C, H, W)``
tensors, ``spatial_dims = 3`` on ``(B, C, D, H, W)`` tensors.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "conv_layer",
    "he_normal_",
    "small_normal_",
    "avg_pool",
    "upsample_linear",
    "upsample_cubic",
    "pad_to_multiple",
    "crop_to",
    "enable_mc_dropout",
    "paper_optimizer",
]


def _check_dims(spatial_dims: int) -> int:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return spatial_dims


def conv_layer(spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int) -> nn.Module:
    """``Conv2d``/``Conv3d`` with 'same' zero padding (odd ``kernel_size``), stride 1 and a bias."""
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
    cls = nn.Conv2d if _check_dims(spatial_dims) == 2 else nn.Conv3d
    return cls(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=True)


def he_normal_(conv: nn.Module, negative_slope: float = 0.1) -> nn.Module:
    """He et al. (2015) initialisation for a convolution followed by a leaky rectifier.

    Weights ~ N(0, std^2) with ``std = sqrt(2 / ((1 + a^2) * fan_in))`` (He et al. 2015,
    Eq. 15 with the rectifier's negative slope ``a``; ``fan_in = in_channels * prod(kernel)``),
    bias = 0.
    """
    fan_in = conv.weight[0].numel()
    std = math.sqrt(2.0 / ((1.0 + negative_slope**2) * fan_in))
    with torch.no_grad():
        conv.weight.normal_(0.0, std)
        if conv.bias is not None:
            conv.bias.zero_()
    return conv


def small_normal_(conv: nn.Module, std: float = 1e-3) -> nn.Module:
    """Payer et al. (2019) init of the heatmap-generating layers: weights ~ N(0, std^2), bias 0."""
    with torch.no_grad():
        conv.weight.normal_(0.0, std)
        if conv.bias is not None:
            conv.bias.zero_()
    return conv


def avg_pool(x: Tensor, factor: int) -> Tensor:
    """Non-overlapping average pooling by an integer ``factor`` over all spatial dims."""
    if x.dim() == 4:
        return F.avg_pool2d(x, factor, factor)
    if x.dim() == 5:
        return F.avg_pool3d(x, factor, factor)
    raise ValueError(f"expected a 4D or 5D tensor, got shape {tuple(x.shape)}")


def upsample_linear(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bi-/trilinear resize to ``size`` (half-pixel centres, ``align_corners=False``)."""
    mode = {4: "bilinear", 5: "trilinear"}[x.dim()]
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)


def upsample_cubic(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bi-/tricubic resize to ``size`` (half-pixel centres, ``align_corners=False``).

    2D uses ``F.interpolate(mode="bicubic")`` (Keys cubic convolution, a = -0.75). PyTorch has no
    tricubic mode, so 3D is done *separably* with the same 1D cubic kernel: a bicubic pass over
    (H, W) for every depth slice, then a bicubic pass over (D, 1), whose second axis is an exact
    identity (scale 1 samples the cubic kernel at 0 -> weights (0, 1, 0, 0)). The result equals
    the tensor-product tricubic convolution.
    """
    size = tuple(int(s) for s in size)
    if x.dim() == 4:
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False)
    if x.dim() != 5:
        raise ValueError(f"expected a 4D or 5D tensor, got shape {tuple(x.shape)}")
    b, c, d, h, w = x.shape
    d2, h2, w2 = size
    y = F.interpolate(x.reshape(b, c * d, h, w), size=(h2, w2), mode="bicubic", align_corners=False)
    y = y.reshape(b * c, 1, d, h2 * w2)
    y = F.interpolate(y, size=(d2, h2 * w2), mode="bicubic", align_corners=False)
    return y.reshape(b, c, d2, h2, w2)


def pad_to_multiple(x: Tensor, multiple: int, mode: str = "constant") -> tuple[Tensor, tuple[int, ...]]:
    """Pad the spatial dims of ``x`` at their far end (right/bottom/back) up to a multiple.

    Padding only at the far end keeps pixel coordinates unchanged, so cropping the output back
    with :func:`crop_to` restores the input grid exactly.

    Returns
    -------
    padded : Tensor
        ``x`` padded (``x`` itself when no padding is needed).
    size : tuple of int
        The original spatial size, for :func:`crop_to`.
    """
    size = tuple(x.shape[2:])
    extra = [(-s) % multiple for s in size]
    if not any(extra):
        return x, size
    pads: list[int] = []
    for e in reversed(extra):  # F.pad lists the last dim first
        pads += [0, e]
    if mode == "constant":
        return F.pad(x, pads, mode="constant", value=0.0), size
    return F.pad(x, pads, mode=mode), size


def crop_to(x: Tensor, size: Sequence[int]) -> Tensor:
    """Crop the spatial dims of ``x`` to ``size`` (keeping the origin)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return x[(slice(None), slice(None)) + tuple(slice(0, s) for s in size)]


def enable_mc_dropout(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode but keep its dropout layers sampling (Monte Carlo dropout)."""
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.train()
    return model


def paper_optimizer(
    model: nn.Module,
    extra_params: Iterable[nn.Parameter] = (),
    lr: float = 1e-6,
    momentum: float = 0.99,
    l2_lambda: float = 5e-4,
) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum as in Payer et al. (2019), Sec. 3.

    "We minimize the objective function with Nesterov's Accelerated Gradient with learning rate
    1e-6 and momentum 0.99" with a mini-batch size of 1 and the *summed* (not averaged) pixel loss.
    The weight term ``lambda * ||w||_2^2`` of Eq. (2) (lambda = 0.0005; Thaler et al. 2021 use
    0.001) acts on convolution weights only (not biases) and equals a PyTorch ``weight_decay`` of
    ``2 * lambda``. ``extra_params`` (e.g. the learned heatmap sigmas of
    :class:`lmkcore.training.targets.HeatmapTarget`, which have their own alpha-regulariser) get no
    weight decay.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if name.endswith("weight") and p.dim() > 1 else no_decay).append(p)
    no_decay += [p for p in extra_params if p.requires_grad]
    groups = [{"params": decay, "weight_decay": 2.0 * l2_lambda}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
