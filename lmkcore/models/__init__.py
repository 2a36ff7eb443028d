"""Heatmap regression networks: SpatialConfiguration-Net and the Localization U-Net (Payer et al. 2019).

Conventions: images ``(B, C, H, W)`` (3D ``(B, C, D, H, W)``) -> heatmaps ``(B, N, H, W)``
(3D ``(B, N, D, H, W)``) on the same grid; any spatial size (padded internally, cropped back).
"""
from __future__ import annotations

from torch import nn

from lmkcore.models.common import enable_mc_dropout, paper_optimizer, upsample_cubic
from lmkcore.models.scn import LocalAppearance, SpatialConfiguration, SpatialConfigurationNet
from lmkcore.models.resnet_unet import ResNet34UNet
from lmkcore.models.unet import LocalizationUNet

__all__ = [
    "SpatialConfigurationNet",
    "LocalAppearance",
    "SpatialConfiguration",
    "LocalizationUNet",
    "ResNet34UNet",
    "build_model",
    "count_parameters",
    "enable_mc_dropout",
    "paper_optimizer",
    "upsample_cubic",
]


def build_model(name: str, in_channels: int, num_landmarks: int, spatial_dims: int = 2, **kwargs) -> nn.Module:
    """Model by name: ``"scn"``, ``"la_only"`` (LA-Net ablation) or ``"unet"`` or ``"resnet34_unet"`` (McCouat & Voiculescu 2022).

    ``kwargs`` go to the constructor (e.g. ``num_filters=32`` for a quick model).
    """
    if name in ("scn", "la_only"):
        return SpatialConfigurationNet(in_channels, num_landmarks, spatial_dims, mode=name, **kwargs)
    if name == "unet":
        return LocalizationUNet(in_channels, num_landmarks, spatial_dims, **kwargs)
    if name == "resnet34_unet":
        if spatial_dims != 2:
            raise ValueError("resnet34_unet is 2D only")
        return ResNet34UNet(in_channels, num_landmarks, **kwargs)
    raise ValueError(f"unknown model {name!r}; expected 'scn', 'la_only', 'unet' or 'resnet34_unet'")


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
