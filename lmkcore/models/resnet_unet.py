"""U-Net with a ResNet-34 encoder (McCouat & Voiculescu 2022, Sec. 3.1), 2D.

Paper (Sec. 3.1): "a U-Net with a ResNet-34 encoder pretrained on ImageNet ... Our decoder has 5 levels
of upsampling with 256, 128, 64, 32 and 32 channels in each of the levels from the bottom level to the
top. After each convolution there is a batch normalisation layer and a ReLU activation function. We
then have a final 1 x 1 convolutional layer to squash the 32 channels in the top layer into N channels".

As implemented here (own code):

* encoder: the ResNet-34 of He et al. (2016): stem ``conv 7x7 /2 -> BN -> ReLU`` (stride-2 feature),
  ``max-pool 3x3 /2``, then four stages of BasicBlocks ``[3, 4, 6, 3]`` with ``64, 128, 256, 512``
  channels (strides 1, 2, 2, 2; a ``1x1 conv + BN`` shortcut where the shape changes). Features at
  strides 2, 4, 8, 16, 32 feed the decoder.
* decoder: 5 blocks, each ``nearest x2 upsampling -> concatenate the encoder feature of that stride
  (none for the top block) -> 2 x (conv 3x3 -> BN -> ReLU)``, with 256, 128, 64, 32, 32 channels.
* head: ``1 x 1`` convolution to one channel per landmark (raw logits; the 2D softmax lives in
  :mod:`lmkcore.analysis.calibration`).

``base_channels`` scales every width by ``base_channels / 64`` (64: the paper's network; 8 or 16 for
the smoke/quick profiles). Inputs whose size is not a multiple of 32 are zero-padded at the far end and
the output is cropped back, so output pixel ``(x, y)`` is input pixel ``(x, y)``.

Encoder weights: the parameter names follow the usual ResNet naming (``conv1``, ``bn1``,
``layer1.0.conv1`` ...), so a local state dict of a ResNet-34 (e.g. ImageNet weights saved earlier)
can be loaded with :func:`load_encoder_weights` (``torch.load(..., weights_only=True)``; ``fc.*``
classifier entries are ignored; a 3-channel first convolution is summed over its input channels for
grey images). Nothing is ever downloaded.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmkcore.errors import ConfigError
from lmkcore.models.common import crop_to, pad_to_multiple

__all__ = ["BasicBlock", "ResNet34Encoder", "ResNet34UNet", "load_encoder_weights", "read_state_dict"]

RESNET34_BLOCKS = (3, 4, 6, 3)
PAPER_DECODER = (256, 128, 64, 32, 32)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout)]


class BasicBlock(nn.Module):
    """ResNet basic block: ``conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN``, plus the shortcut, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = nn.Sequential(*_conv_bn(cin, cout, 1, stride)) if stride != 1 or cin != cout else None

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(out + skip)


class ResNet34Encoder(nn.Module):
    """ResNet-34 feature extractor; returns the features at strides 2, 4, 8, 16, 32.

    Parameters
    ----------
    in_channels : int
    base_channels : int
        Channels of the stem and first stage (64 in ResNet-34); stages have 1, 2, 4, 8 times this.
    blocks : sequence of int
        BasicBlocks per stage (ResNet-34: 3, 4, 6, 3).
    """

    def __init__(self, in_channels: int = 1, base_channels: int = 64, blocks: Sequence[int] = RESNET34_BLOCKS) -> None:
        super().__init__()
        c = int(base_channels)
        self.conv1 = nn.Conv2d(in_channels, c, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.channels = [c] + [c * 2**i for i in range(len(blocks))]
        cin = c
        for i, n in enumerate(blocks):
            cout = c * 2**i
            stage = [BasicBlock(cin, cout, 1 if i == 0 else 2)] + [BasicBlock(cout, cout) for _ in range(n - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            cin = cout
        self.num_stages = len(blocks)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> list[Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        feats = [x]
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
            feats.append(x)
        return feats


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """The ``{name: tensor}`` state dict stored at ``path`` (``torch.load(weights_only=True)``, on CPU).

    A checkpoint ``{"state_dict": {...}}`` is unwrapped. A missing or unreadable file, or a file that
    does not hold a mapping of names to tensors, raises one :class:`~lmkcore.errors.ConfigError` that
    names the file (``encoder_weights``) and the problem.
    """
    name = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"encoder_weights: no file {name!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors differ by version; one message for all
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"encoder_weights {name!r}: not a readable PyTorch weights file "
                          f"(torch.load(weights_only=True) failed: {reason[:200]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"encoder_weights {name!r}: holds a {type(state).__name__}, not a state dict "
                          "(a mapping of parameter names to tensors, e.g. torchvision's resnet34().state_dict())")
    bad = sorted(str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor))
    if bad:
        raise ConfigError(f"encoder_weights {name!r}: not a state dict, {len(bad)} entries are not "
                          f"name -> tensor: {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}")
    return state


def load_encoder_weights(encoder: ResNet34Encoder, path: str | os.PathLike) -> ResNet34Encoder:
    """Load a local ResNet state dict into ``encoder`` (``torch.load(weights_only=True)``).

    ``fc.*`` (classifier) entries are dropped; a first convolution with 3 input channels is summed
    over them when the encoder takes 1 channel. Any other missing, unexpected or mis-shaped entry
    raises a :class:`~lmkcore.errors.ConfigError` that lists them (e.g. ResNet-18 weights, or a
    ``base_channels`` other than 64).
    """
    state = read_state_dict(path)
    state = {k.removeprefix("module.").removeprefix("encoder."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = encoder.state_dict()
    w = state.get("conv1.weight")
    if w is not None and w.shape[1] == 3 and own["conv1.weight"].shape[1] == 1:
        state["conv1.weight"] = w.sum(1, keepdim=True)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(state) if tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                parts.append(f"{label} ({len(items)}): {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}")
        raise ConfigError(f"encoder_weights {os.fspath(path)!r}: not a ResNet-34 state dict for this encoder "
                          f"(base_channels {encoder.channels[0]}); " + "; ".join(parts))
    encoder.load_state_dict(state)
    return encoder


class _DecoderBlock(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.block = nn.Sequential(*_conv_bn(cin + cskip, cout, 3), nn.ReLU(inplace=True),
                                   *_conv_bn(cout, cout, 3), nn.ReLU(inplace=True))

    def forward(self, x: Tensor, skip: Tensor | None) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], 1)
        return self.block(x)


class ResNet34UNet(nn.Module):
    """U-Net with a ResNet-34 encoder; ``(B, C, H, W) -> (B, N, H, W)`` logits.

    Parameters
    ----------
    in_channels, num_landmarks : int
    base_channels : int
        Encoder width (64 = ResNet-34); the decoder widths scale by ``base_channels / 64``.
    decoder_channels : sequence of 5 int, optional
        Decoder widths bottom to top at ``base_channels = 64`` (paper: 256, 128, 64, 32, 32).
    encoder_weights : path, optional
        Local ResNet-34 state dict, see :func:`load_encoder_weights`.
    """

    def __init__(self, in_channels: int, num_landmarks: int, base_channels: int = 64,
                 decoder_channels: Sequence[int] = PAPER_DECODER, encoder_weights: str | os.PathLike | None = None,
                 ) -> None:
        super().__init__()
        if len(decoder_channels) != 5:
            raise ConfigError(f"decoder_channels must have 5 entries, got {tuple(decoder_channels)}")
        if base_channels < 1:
            raise ConfigError(f"base_channels must be >= 1, got {base_channels!r}")
        self.encoder = ResNet34Encoder(in_channels, base_channels)
        if encoder_weights is not None:
            load_encoder_weights(self.encoder, encoder_weights)
        scale = base_channels / 64.0
        dec = [max(1, int(round(c * scale))) for c in decoder_channels]
        skips = self.encoder.channels[:-1][::-1] + [0]  # strides 16, 8, 4, 2, then none at stride 1
        cin = self.encoder.channels[-1]
        blocks = []
        for cskip, cout in zip(skips, dec):
            blocks.append(_DecoderBlock(cin, cskip, cout))
            cin = cout
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(cin, num_landmarks, 1)
        self.decoder_channels = dec

    def forward(self, x: Tensor) -> Tensor:
        x, size = pad_to_multiple(x, 32)
        feats = self.encoder(x)
        y = feats[-1]
        skips = feats[:-1][::-1] + [None]
        for block, skip in zip(self.decoder, skips):
            y = block(y, skip)
        return crop_to(self.head(y), size)
