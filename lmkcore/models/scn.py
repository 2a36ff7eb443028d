"""SpatialConfiguration-Net (Payer, Stern, Bischof, Urschler; Medical Image Analysis 54, 2019).

Architecture as implemented (quotes from Payer et al. 2019, Sec. 2.2 and 3)
---------------------------------------------------------------------------
``H = H^LA * H^SC`` (Eq. 4, element-wise).

Local appearance (LA) component, ``num_levels`` (4) levels of ``num_filters`` (128) channels:
"four levels, each consisting of three consecutive 3 x 3 (3D: 3 x 3 x 3) convolution layers having
128 outputs, while a 2 x 2 (3D: 2 x 2 x 2) average pooling after the second convolution layer
generates the level below. We include dropout of 0.5 after the first convolution layer at each
level". Per level ``l``::

    a_l  = LReLU(conv1(in_l));  a_l = Dropout(a_l)
    b_l  = LReLU(conv2(a_l))                  # "average pooling ... before the last convolution"
    in_{l+1} = AvgPool2(b_l)                  # (not at the deepest level)
    s_l  = LReLU(conv3(b_l))                  # the level's output ("parallel" conv)

Expanding path: "the outputs of each level are linearly upsampled to double the resolution.
These upsampled outputs are added to the outputs of the final convolution layer from the next
higher level" -> ``o_L = s_L``, ``o_l = s_l + LinearUp(o_{l+1})`` (no activation after the
addition); "A last convolution layer at the highest level ... generates ... H^LA":
``H^LA = conv_3x3(o_0)`` with N outputs and a linear activation.

Spatial configuration (SC) component: "calculated at 1/16 (3D: 1/4) of the input resolution. It
consists of three consecutive 11 x 11 (3D: 7 x 7 x 7) convolution layers with 128 outputs and an
additional 11 x 11 (3D: 7 x 7 x 7) convolution layer having a number of outputs equal to the number
of landmarks. These outputs are upsampled back to the input resolution with bi/tricubic
interpolation to generate H^SC" and "the convolution layer generating H^SC has a TanH activation".
Downsampling is non-overlapping average pooling by ``sc_factor``; the order is
``pool -> 3 x (conv, LReLU) -> conv -> tanh -> cubic upsampling`` (tanh before the upsampling,
so bicubic overshoot can leave [-1, 1] by a few percent).

Activations / initialisation: "Each intermediate convolution layer of the whole SCN has a LeakyReLU
activation function with a negative slope of 0.1"; "The biases of the convolution layers are
initialized with 0, the weights with the method described in (He et al., 2015), except the layers
generating heatmaps H^LA and H^SC. Here, initial weights are drawn from a Gaussian distribution with
standard deviation of 0.001." He init uses ``std = sqrt(2 / ((1 + 0.1^2) fan_in))``.

Deviations / choices (not specified by the paper)
-------------------------------------------------
* Linear upsampling uses half-pixel centres (``align_corners=False``), consistent with average
  pooling, so a pooled-then-upsampled map stays aligned with the input grid.
* 3D "tricubic": PyTorch has no tricubic mode; :func:`upsample_cubic` applies the bicubic (Keys,
  a = -0.75) kernel separably, which equals tensor-product tricubic convolution.
  ``sc_upsample="linear"`` selects bi-/trilinear instead.
* Inputs whose size is not a multiple of ``lcm(2**(num_levels-1), sc_factor)`` (16 for the 2D and
  8 for the 3D defaults) are zero-padded at the far end (right/bottom/back) and all outputs are
  cropped back, so coordinates are unchanged (``pad_mode`` selects another ``F.pad`` mode).
"""
from __future__ import annotations

import math
from typing import Optional

from torch import Tensor, nn

from lmkcore.models.common import (
    avg_pool,
    conv_layer,
    crop_to,
    he_normal_,
    pad_to_multiple,
    small_normal_,
    upsample_cubic,
    upsample_linear,
)

__all__ = ["LocalAppearance", "SpatialConfiguration", "SpatialConfigurationNet"]

#: Paper defaults of the spatial configuration component per ``spatial_dims``: (factor, kernel).
SC_DEFAULTS = {2: (16, 11), 3: (4, 7)}


class LocalAppearance(nn.Module):
    """Local appearance component of the SCN: ``(B, C, *S) -> H^LA (B, N, *S)``.

    ``S`` must be divisible by ``2 ** (num_levels - 1)`` (the SCN pads for you).

    Parameters
    ----------
    in_channels, num_landmarks : int
        Input channels ``C`` and output heatmaps ``N``.
    spatial_dims : {2, 3}
    num_filters : int
        Channels of every intermediate convolution (paper: 128; 64 for 3D hands/spine).
    num_levels : int
        Resolution levels (paper: 4).
    dropout : float
        Dropout probability after the first convolution of every level (paper: 0.5).
    negative_slope : float
        LeakyReLU slope (paper: 0.1).
    kernel_size : int
        Kernel size of all LA convolutions (paper: 3).
    heatmap_init_std : float
        Std of the Gaussian init of the ``H^LA`` layer (paper: 0.001).
    """

    def __init__(
        self,
        in_channels: int,
        num_landmarks: int,
        spatial_dims: int = 2,
        num_filters: int = 128,
        num_levels: int = 4,
        dropout: float = 0.5,
        negative_slope: float = 0.1,
        kernel_size: int = 3,
        heatmap_init_std: float = 1e-3,
    ) -> None:
        super().__init__()
        if num_levels < 1:
            raise ValueError("num_levels must be >= 1")
        self.spatial_dims = spatial_dims
        self.num_levels = num_levels
        conv = lambda i, o: he_normal_(conv_layer(spatial_dims, i, o, kernel_size), negative_slope)  # noqa: E731
        self.conv1 = nn.ModuleList()
        self.conv2 = nn.ModuleList()
        self.conv3 = nn.ModuleList()
        for level in range(num_levels):
            self.conv1.append(conv(in_channels if level == 0 else num_filters, num_filters))
            self.conv2.append(conv(num_filters, num_filters))
            self.conv3.append(conv(num_filters, num_filters))
        self.dropout = nn.Dropout(dropout)
        self.act = nn.LeakyReLU(negative_slope)
        self.heatmap = small_normal_(conv_layer(spatial_dims, num_filters, num_landmarks, kernel_size), heatmap_init_std)

    @property
    def size_multiple(self) -> int:
        return 2 ** (self.num_levels - 1)

    def forward(self, x: Tensor) -> Tensor:
        bad = [s for s in x.shape[2:] if s % self.size_multiple]
        if bad:
            raise ValueError(
                f"LocalAppearance needs spatial sizes divisible by {self.size_multiple}, got {tuple(x.shape[2:])}"
            )
        outputs = []
        h = x
        for level in range(self.num_levels):
            h = self.dropout(self.act(self.conv1[level](h)))
            h = self.act(self.conv2[level](h))
            outputs.append(self.act(self.conv3[level](h)))
            if level < self.num_levels - 1:
                h = avg_pool(h, 2)
        out = outputs[-1]
        for level in reversed(range(self.num_levels - 1)):
            out = outputs[level] + upsample_linear(out, outputs[level].shape[2:])
        return self.heatmap(out)


class SpatialConfiguration(nn.Module):
    """Spatial configuration component: ``H^LA (B, N, *S) -> H^SC (B, N, *S)`` in [-1, 1] (+ overshoot).

    ``AvgPool(sc_factor) -> num_convs x (conv k, LReLU) -> conv k to N -> tanh -> upsample``.
    The low-resolution stack is ``self.convs`` (a forward hook on it sees the ``1/sc_factor``
    resolution maps). ``S`` must be divisible by ``sc_factor`` (the SCN pads for you).
    """

    def __init__(
        self,
        num_landmarks: int,
        spatial_dims: int = 2,
        sc_factor: int = 16,
        sc_kernel: int = 11,
        sc_filters: int = 128,
        num_convs: int = 3,
        negative_slope: float = 0.1,
        upsample: str = "cubic",
        heatmap_init_std: float = 1e-3,
    ) -> None:
        super().__init__()
        if upsample not in ("cubic", "linear"):
            raise ValueError(f"upsample must be 'cubic' or 'linear', got {upsample!r}")
        self.sc_factor = int(sc_factor)
        self.upsample_mode = upsample
        layers: list[nn.Module] = []
        channels = num_landmarks
        for _ in range(num_convs):
            layers += [he_normal_(conv_layer(spatial_dims, channels, sc_filters, sc_kernel), negative_slope),
                       nn.LeakyReLU(negative_slope)]
            channels = sc_filters
        layers.append(small_normal_(conv_layer(spatial_dims, channels, num_landmarks, sc_kernel), heatmap_init_std))
        layers.append(nn.Tanh())
        self.convs = nn.Sequential(*layers)

    def forward(self, la: Tensor) -> Tensor:
        size = la.shape[2:]
        bad = [s for s in size if s % self.sc_factor]
        if bad:
            raise ValueError(f"SpatialConfiguration needs sizes divisible by {self.sc_factor}, got {tuple(size)}")
        low = self.convs(avg_pool(la, self.sc_factor) if self.sc_factor > 1 else la)
        if self.sc_factor == 1:
            return low
        up = upsample_cubic if self.upsample_mode == "cubic" else upsample_linear
        return up(low, size)


class SpatialConfigurationNet(nn.Module):
    """SpatialConfiguration-Net, 2D or 3D (Payer et al. 2019); see the module docstring.

    Parameters
    ----------
    in_channels : int
        Image channels ``C``.
    num_landmarks : int
        Number of landmarks / output heatmaps ``N``.
    spatial_dims : {2, 3}
        2: input ``(B, C, H, W)``; 3: ``(B, C, D, H, W)``.
    num_filters : int
        Channels of the LA convolutions (paper: 128 in 2D, 64 in 3D).
    num_levels : int
        LA levels (paper: 4).
    sc_factor : int or None
        SC downsampling factor; None -> paper default 16 (2D) / 4 (3D).
    sc_kernel : int or None
        SC kernel size; None -> paper default 11 (2D) / 7 (3D).
    sc_filters : int
        Channels of the SC intermediate convolutions (paper: 128; 64 in 3D).
    sc_num_convs : int
        Intermediate SC convolutions before the N-channel one (paper: 3).
    dropout : float
        Dropout after the first conv of every LA level (paper: 0.5).
    negative_slope : float
        LeakyReLU slope (paper: 0.1).
    mode : {"scn", "la_only"}
        ``"la_only"``: LA-Net ablation (Sec. 4.1.3), the output is ``H^LA`` and no SC is built.
    sc_upsample : {"cubic", "linear"}
        Upsampling of the SC output (paper: bi/tricubic).
    pad_mode : str
        ``F.pad`` mode used for inputs whose size is not a multiple of :attr:`size_multiple`.
    heatmap_init_std : float
        Gaussian std of the two heatmap-generating layers (paper: 0.001).

    Examples
    --------
    >>> net = SpatialConfigurationNet(1, 19)                  # full 2D paper model
    >>> quick = SpatialConfigurationNet(1, 19, num_filters=32, sc_filters=32)
    >>> out, la, sc = quick(torch.zeros(2, 1, 240, 192), return_components=True)
    """

    def __init__(
        self,
        in_channels: int,
        num_landmarks: int,
        spatial_dims: int = 2,
        num_filters: int = 128,
        num_levels: int = 4,
        sc_factor: Optional[int] = None,
        sc_kernel: Optional[int] = None,
        sc_filters: int = 128,
        sc_num_convs: int = 3,
        dropout: float = 0.5,
        negative_slope: float = 0.1,
        mode: str = "scn",
        sc_upsample: str = "cubic",
        pad_mode: str = "constant",
        heatmap_init_std: float = 1e-3,
    ) -> None:
        super().__init__()
        if spatial_dims not in SC_DEFAULTS:
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        if mode not in ("scn", "la_only"):
            raise ValueError(f"mode must be 'scn' or 'la_only', got {mode!r}")
        default_factor, default_kernel = SC_DEFAULTS[spatial_dims]
        self.spatial_dims = spatial_dims
        self.num_landmarks = num_landmarks
        self.mode = mode
        self.pad_mode = pad_mode
        self.sc_factor = int(sc_factor if sc_factor is not None else default_factor)
        self.la = LocalAppearance(
            in_channels, num_landmarks, spatial_dims, num_filters, num_levels, dropout, negative_slope,
            heatmap_init_std=heatmap_init_std,
        )
        self.sc: Optional[SpatialConfiguration] = None
        if mode == "scn":
            self.sc = SpatialConfiguration(
                num_landmarks, spatial_dims, self.sc_factor,
                int(sc_kernel if sc_kernel is not None else default_kernel), sc_filters, sc_num_convs,
                negative_slope, sc_upsample, heatmap_init_std,
            )

    @property
    def size_multiple(self) -> int:
        """Spatial sizes that need no internal padding are multiples of this."""
        m = self.la.size_multiple
        return m * self.sc_factor // math.gcd(m, self.sc_factor) if self.sc is not None else m

    def forward(self, x: Tensor, return_components: bool = False):
        """Heatmaps ``(B, N, *S)`` for images ``(B, C, *S)``.

        Parameters
        ----------
        x : Tensor
            ``(B, C, H, W)`` (2D) or ``(B, C, D, H, W)`` (3D); any spatial size.
        return_components : bool
            Also return the components.

        Returns
        -------
        out : Tensor
            ``H = H^LA * H^SC`` (``H^LA`` when ``mode="la_only"``), ``(B, N, *S)``.
        la, sc : Tensor, Tensor or None
            Only with ``return_components``: ``H^LA`` and ``H^SC`` (None for ``la_only``),
            both ``(B, N, *S)``; ``out == la * sc`` exactly.
        """
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(f"expected a {self.spatial_dims + 2}D input (B, C, *spatial), got {tuple(x.shape)}")
        xp, size = pad_to_multiple(x, self.size_multiple, self.pad_mode)
        la = self.la(xp)
        if self.sc is None:
            la = crop_to(la, size)
            return (la, la, None) if return_components else la
        sc = self.sc(la)
        la, sc = crop_to(la, size), crop_to(sc, size)
        out = la * sc
        return (out, la, sc) if return_components else out
