"""The compact PHD-Net patch network (Schobs et al., ISBI 2021, Sec. 2; backbone of Noothout et al. 2018).

Three 3x3 conv layers of 32 filters, each followed by 2x2 max pooling (so every
output cell covers an 8x8-pixel patch), three more 3x3 conv layers, then two
branches of 1x1 convolutions ("fully connected" layers of 64 and 96 filters):
one outputs the 2D (log-)displacement of every patch, the other its heatmap
value. One single-landmark model has about 0.06M parameters.

Several landmarks
-----------------
``independent=True`` builds ``N`` fully independent single-landmark models in one
module with grouped convolutions (group ``i`` = the paper's model of landmark
``i``; their losses add, so gradients and Adam updates do not mix). With
``independent=False`` the conv trunk is shared by all landmarks and only the
two 1x1-conv branches are per landmark (about 8x cheaper for 19 landmarks). With
``shared_heads=True`` as well, the 64- and 96-filter layers of each branch are shared too and
only the last 1x1 conv is per landmark (the cheapest variant; used by the ``quick`` profile).
"""
from __future__ import annotations

import torch
from torch import nn

from lmkcore.errors import ConfigError

#: Side in pixels of the image patch covered by one output cell (three 2x2 poolings).
PATCH = 8


class PHDNet(nn.Module):
    """Patch network with a displacement and a heatmap branch for ``n_landmarks`` landmarks.

    The constructor's ``n_landmarks``, ``filters``, ``head_filters`` and ``independent`` are kept as
    attributes; ``patch`` is the side (px) of the image patch behind one output cell (:data:`PATCH`).

    Parameters
    ----------
    n_landmarks : int
    filters : int
        Filters of every 3x3 conv layer (paper: 32).
    head_filters : tuple of int
        Filters of the 1x1-conv layers of each branch (paper: 64, 96).
    independent : bool
        One independent model per landmark (grouped convs) instead of a shared trunk.
    shared_heads : bool
        Share the hidden 1x1-conv layers of each branch between landmarks (needs
        ``independent=False``).

    Forward
    -------
    ``(B, 1, H, W)`` images with ``H, W`` multiples of 8 -> ``(displacement (B, N, 2, H/8, W/8),
    heatmap (B, N, H/8, W/8))``; the displacement is in the log-transformed label space of
    :func:`lmkcore.training.phdnet_targets.encode_displacement`.
    """

    patch: int = PATCH

    def __init__(self, n_landmarks: int, filters: int = 32, head_filters: tuple[int, ...] = (64, 96),
                 independent: bool = False, shared_heads: bool = False):
        super().__init__()
        if independent and shared_heads:
            raise ConfigError("PHDNet: independent models cannot share heads")
        self.shared_heads = bool(shared_heads)
        if n_landmarks < 1 or filters < 1:
            raise ConfigError(f"PHDNet needs n_landmarks >= 1 and filters >= 1, got {n_landmarks}, {filters}")
        self.n_landmarks, self.independent = int(n_landmarks), bool(independent)
        self.filters, self.head_filters = int(filters), tuple(int(f) for f in head_filters)
        g = self.n_landmarks if independent else 1
        width = filters * g
        layers: list[nn.Module] = []
        in_ch = 1
        for i in range(6):
            layers += [nn.Conv2d(in_ch, width, 3, padding=1, groups=1 if i == 0 else g), nn.ReLU(inplace=True)]
            if i < 3:
                layers.append(nn.MaxPool2d(2))
            in_ch = width
        self.trunk = nn.Sequential(*layers)
        self.displacement = self._branch(width, head_filters, 2, g)
        self.heatmap = self._branch(width, head_filters, 1, g)

    def _branch(self, in_ch: int, head_filters: tuple[int, ...], out_per_landmark: int, g: int) -> nn.Sequential:
        n = self.n_landmarks
        layers: list[nn.Module] = []
        groups = g  # the first layer reads the (shared or grouped) trunk
        m = 1 if self.shared_heads else n
        for f in head_filters:
            layers += [nn.Conv2d(in_ch, f * m, 1, groups=groups), nn.ReLU(inplace=True)]
            in_ch, groups = f * m, m
        layers.append(nn.Conv2d(in_ch, out_per_landmark * n, 1, groups=m))
        return nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = images.shape
        if h % PATCH or w % PATCH:
            raise ConfigError(f"PHDNet input size must be a multiple of {PATCH} px, got {h}x{w}")
        feats = self.trunk(images)
        gh, gw = feats.shape[-2:]
        disp = self.displacement(feats).reshape(b, self.n_landmarks, 2, gh, gw)
        heat = self.heatmap(feats).reshape(b, self.n_landmarks, gh, gw)
        return disp, heat


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
