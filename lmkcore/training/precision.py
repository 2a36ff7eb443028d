"""Mixed precision (bfloat16 autocast) and channels-last memory layout for network steps, and the check
that they keep a network's outputs within a stated tolerance of the float32 result.

bfloat16 keeps float32's exponent range with an 8-bit mantissa (relative rounding ~ 2^-8 = 0.39 %), so a
forward pass under autocast differs from float32 by a small relative amount that grows slowly with depth.
:data:`BF16_TOLERANCE` is the bound this package accepts for one forward pass (relative L2 error of the
outputs); :func:`forward_precision_error` measures it for a given network and input, and the GPU check
(``benchmarks/gpu_check.sh``) only times bf16 / channels-last steps for networks within it.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["BF16_TOLERANCE", "device_type", "autocast", "channels_last", "PrecisionError", "forward_precision_error"]

#: Largest accepted relative L2 error ``||y_bf16 - y_fp32|| / ||y_fp32||`` of one forward pass.
BF16_TOLERANCE = 0.03


def device_type(device: str | torch.device) -> str:
    """``"cuda"`` or ``"cpu"`` (the ``device_type`` of :func:`torch.autocast`)."""
    return "cuda" if str(device).startswith("cuda") else "cpu"


def autocast(device: str | torch.device, enabled: bool = True):
    """bfloat16 autocast on ``device`` (a no-op context when ``enabled`` is False)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type(device), dtype=torch.bfloat16)


def channels_last(module_or_tensor, enabled: bool = True):
    """``module_or_tensor`` in channels-last (NHWC) layout for 4-D tensors; unchanged if not enabled or not 4-D."""
    if not enabled:
        return module_or_tensor
    if isinstance(module_or_tensor, Tensor):
        return module_or_tensor.contiguous(memory_format=torch.channels_last) if module_or_tensor.dim() == 4 \
            else module_or_tensor
    return module_or_tensor.to(memory_format=torch.channels_last)


@dataclass
class PrecisionError:
    """Difference between a float32 and a bf16 (+ channels-last) forward pass.

    Attributes
    ----------
    rel_l2 : float
        ``||y_bf16 - y_fp32|| / ||y_fp32||`` over all outputs.
    max_abs : float
        Largest absolute difference.
    argmax_agreement : float
        Fraction of output channels (each ``(H, W)`` map) whose hottest pixel is the same.
    within_tolerance : bool
        ``rel_l2 <= tolerance``.
    """

    rel_l2: float
    max_abs: float
    argmax_agreement: float
    within_tolerance: bool


@torch.no_grad()
def forward_precision_error(model: nn.Module, x: Tensor, use_channels_last: bool = True,
                            tolerance: float = BF16_TOLERANCE) -> PrecisionError:
    """Run ``model`` (eval mode) on ``x`` in float32 and under bf16 autocast (+ channels-last) and compare.

    A model returning a tuple (e.g. PHD-Net) is compared on all its outputs concatenated; the argmax
    agreement uses the last two dims of the first output. The model is left in its original layout
    and mode.

    Parameters
    ----------
    model : nn.Module
    x : Tensor ``(B, C, H, W)``
    """
    was_training = model.training
    model.eval()
    try:
        ref = model(x.float())
        with autocast(x.device):
            low = channels_last(model, use_channels_last)(channels_last(x.float(), use_channels_last))
    finally:
        model.to(memory_format=torch.contiguous_format)
        model.train(was_training)
    ref_t = ref if isinstance(ref, (tuple, list)) else (ref,)
    low_t = low if isinstance(low, (tuple, list)) else (low,)
    a = torch.cat([r.float().reshape(-1) for r in ref_t])
    b = torch.cat([r.float().reshape(-1) for r in low_t])
    rel = float(torch.linalg.vector_norm(b - a) / torch.linalg.vector_norm(a).clamp_min(1e-30))
    first_ref, first_low = ref_t[0].float(), low_t[0].float()
    agree = float((first_ref.flatten(-2).argmax(-1) == first_low.flatten(-2).argmax(-1)).float().mean())
    return PrecisionError(rel, float((b - a).abs().max()), agree, rel <= tolerance)
