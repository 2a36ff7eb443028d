"""Localization U-Net baseline (Payer et al. 2019, Sec. 3.1), 2D or 3D.

Quotes (Payer et al. 2019, Sec. 3.1): "we set up our Localization U-Net with 5 levels and 128
outputs for all intermediate convolution layers"; "Dropout is implemented in the deepest two
levels, as proposed by the authors in Ronneberger et al. (2015). We use padded convolutions to keep
input and output image size the same. Furthermore, we use average instead of max pooling and fixed
linear upsampling instead of deconvolutions." For 3D (Sec. 4.2): "For the U-Net implementation we
use 3 x 3 x 3 kernels and four depth levels ... 64" filters.

As implemented, following Ronneberger et al. (2015) where Payer et al. do not say otherwise:

* contracting level ``l``: ``2 x (conv 3x3, LReLU)``; in the deepest ``dropout_levels`` (2) levels
  a dropout (0.5) follows the second convolution (Ronneberger's "drop-out layers at the end of the
  contracting path", placed after conv4_2 / conv5_2 in their released model); the result is both
  the skip connection and the input of the 2x2 average pooling;
* expanding level ``l``: linear upsampling (x2, half-pixel centres) of the level below,
  **concatenation** with the skip (U-Net style, 2F channels), ``2 x (conv 3x3, LReLU)``;
* output: a ``1 x 1`` convolution to N heatmaps (Ronneberger's final 1x1 layer), linear.

Choices not fixed by the paper: LeakyReLU(0.1) as in the SCN (same training framework; Ronneberger
use ReLU); He init for all convs and N(0, 0.001^2) for the heatmap layer, as for the SCN heatmap
layers (same heatmap loss, the small init keeps initial responses near 0). Inputs whose size is
not a multiple of ``2**(num_levels-1)`` are padded at the far end and the output cropped back.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from lmkcore.models.common import avg_pool, conv_layer, crop_to, he_normal_, pad_to_multiple, small_normal_, upsample_linear

__all__ = ["LocalizationUNet"]


class LocalizationUNet(nn.Module):
    """Localization U-Net baseline; ``(B, C, *S) -> (B, N, *S)``.

    Parameters
    ----------
    in_channels, num_landmarks : int
        Image channels ``C`` and heatmaps ``N``.
    spatial_dims : {2, 3}
    num_filters : int
        Channels of every intermediate convolution (paper: 128 in 2D, 64 in 3D).
    num_levels : int
        Resolution levels (paper: 5 in 2D, 4 in 3D).
    dropout : float
        Dropout probability (0.5 as in Ronneberger et al.).
    dropout_levels : int
        Number of deepest levels with dropout (paper: 2).
    negative_slope : float
        LeakyReLU slope.
    kernel_size : int
        Kernel of the intermediate convolutions (3).
    out_kernel_size : int
        Kernel of the heatmap layer (1 as in Ronneberger et al.).
    pad_mode : str
        ``F.pad`` mode for non-divisible inputs.
    heatmap_init_std : float
        Gaussian std of the heatmap layer init.
    """

    def __init__(
        self,
        in_channels: int,
        num_landmarks: int,
        spatial_dims: int = 2,
        num_filters: int = 128,
        num_levels: int = 5,
        dropout: float = 0.5,
        dropout_levels: int = 2,
        negative_slope: float = 0.1,
        kernel_size: int = 3,
        out_kernel_size: int = 1,
        pad_mode: str = "constant",
        heatmap_init_std: float = 1e-3,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        if num_levels < 1:
            raise ValueError("num_levels must be >= 1")
        self.spatial_dims = spatial_dims
        self.num_levels = num_levels
        self.num_landmarks = num_landmarks
        self.dropout_levels = dropout_levels
        self.pad_mode = pad_mode
        conv = lambda i, o: he_normal_(conv_layer(spatial_dims, i, o, kernel_size), negative_slope)  # noqa: E731
        self.down = nn.ModuleList(
            nn.ModuleList([conv(in_channels if level == 0 else num_filters, num_filters), conv(num_filters, num_filters)])
            for level in range(num_levels)
        )
        self.up = nn.ModuleList(
            nn.ModuleList([conv(2 * num_filters, num_filters), conv(num_filters, num_filters)])
            for _ in range(num_levels - 1)
        )
        self.dropout = nn.Dropout(dropout)
        self.act = nn.LeakyReLU(negative_slope)
        self.heatmap = small_normal_(conv_layer(spatial_dims, num_filters, num_landmarks, out_kernel_size), heatmap_init_std)

    @property
    def size_multiple(self) -> int:
        """Spatial sizes that need no internal padding are multiples of this."""
        return 2 ** (self.num_levels - 1)

    def forward(self, x: Tensor) -> Tensor:
        """Heatmaps ``(B, N, *S)`` for images ``(B, C, *S)`` of any spatial size."""
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(f"expected a {self.spatial_dims + 2}D input (B, C, *spatial), got {tuple(x.shape)}")
        h, size = pad_to_multiple(x, self.size_multiple, self.pad_mode)
        skips = []
        for level, (c1, c2) in enumerate(self.down):
            h = self.act(c2(self.act(c1(h))))
            if level >= self.num_levels - self.dropout_levels:
                h = self.dropout(h)
            skips.append(h)
            if level < self.num_levels - 1:
                h = avg_pool(h, 2)
        for level in reversed(range(self.num_levels - 1)):
            skip = skips[level]
            h = torch.cat([skip, upsample_linear(h, skip.shape[2:])], dim=1)
            c1, c2 = self.up[level]
            h = self.act(c2(self.act(c1(h))))
        return crop_to(self.heatmap(h), size)
