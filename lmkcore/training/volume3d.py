"""Training and sliding-window inference of 3D heatmap networks (Payer et al. 2019, 3D spine setup).

One :class:`Train3DConfig` describes a run; :func:`train_3d` trains an SCN or U-Net on a
:class:`~lmkcore.data.volumes.VolumeSet`; :func:`predict_sliding_z` applies it to whole volumes.

Per iteration (batch ``B``):

1. a window of ``input_size`` voxels is cut from each volume: centred in x-y, at a random z position
   when the volume is longer than the window (Payer's code: random z shift, ``cropped_training``),
   padded with air where it is shorter (:func:`training_windows`);
2. the batch is augmented with :func:`lmkcore.training.augment.augment_batch` (affine + B-spline
   elastic, landmarks mapped exactly; intensity shift/scale);
3. targets are Gaussians with one learned isotropic sigma per landmark
   (:class:`~lmkcore.training.targets.HeatmapTarget`, ``learned_iso``; Payer 3D: gamma = 1000,
   alpha = 1000); landmarks outside the window stay valid (their heatmap is (partly) outside),
   NaN landmarks (not in the scan) are masked: they add nothing to the loss (:func:`masked_loss`).

Inference (:func:`predict_sliding_z`): windows of ``input_size[2]`` slices with stride
``input_size[2] - overlap`` along z (the last one aligned with the end), full x-y extent; the
heatmaps of overlapping windows are merged by their voxel-wise maximum (Payer et al., Sec. 4.2:
"overlapping by 96 pixels ... merged by taking the maximum"; their code overlaps by 128 of 192).
Determinism: windows, augmentation and dropout masks are drawn from generators seeded by
``(seed, iteration)``; the same seed on CPU gives the same weights.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from lmkcore.data.volumes import CT_SCALE, VolumeSet, extract_window
from lmkcore.errors import ConfigError
from lmkcore.models import build_model
from lmkcore.models.common import paper_optimizer
from lmkcore.training.augment import AugmentConfig, augment_batch
from lmkcore.training.targets import HeatmapTarget

__all__ = ["Train3DConfig", "build_network_3d", "training_windows", "training_batch", "masked_loss", "train_3d",
           "predict_sliding_z", "window_starts", "AIR"]

#: Normalised intensity of air (-1000 HU / 2048), used to pad windows.
AIR = -1000.0 / CT_SCALE


@dataclass(frozen=True)
class Train3DConfig:
    """Everything that defines one 3D training run.

    Attributes
    ----------
    model : {"scn", "unet"}
        3D SCN (Payer: 64 filters, 4 levels, SC at 1/4 with 7x7x7 kernels) or the localization U-Net
        (4 levels, 64 filters).
    input_size : (int, int, int)
        Network window ``(x, y, z)`` voxels (Payer: 96 x 96 x 192 at 2 mm).
    iterations, batch_size : int
    num_filters : int
        Filters of every convolution (LA, SC and U-Net; Payer: 64).
    sc_factor, sc_kernel : int
        SC downsampling and kernel (Payer text: 4 and 7; their code downsamples by 8).
    optimizer : {"nesterov", "adam"}
        ``nesterov``: SGD, momentum 0.99 (Payer); ``adam`` for short runs.
    lr : float
        Learning rate (Payer text 1e-6; their spine code 5e-8 for the SCN).
    lr_schedule : {"constant", "cosine"}
    l2_lambda : float
        Weight term ``lambda ||w||^2`` (Payer: 0.0005).
    gamma, alpha, init_sigma : float
        Heatmap scale (1000), sigma regulariser (1000; their code: 100), initial sigma in working voxels.
    target_lr_scale : float
        Learning-rate factor of the learned sigmas.
    augment : tuple
        :class:`~lmkcore.training.augment.AugmentConfig` fields as ``(name, value)`` pairs.
    dropout : float
    clip_grad_norm : float or None
    overlap : int
        Sliding-window overlap along z at inference (voxels).
    seed : int
    """

    model: str = "scn"
    input_size: tuple[int, int, int] = (96, 96, 192)
    iterations: int = 40000
    batch_size: int = 1
    num_filters: int = 64
    sc_factor: int = 4
    sc_kernel: int = 7
    optimizer: str = "nesterov"
    lr: float = 1e-6
    lr_schedule: str = "constant"
    l2_lambda: float = 5e-4
    gamma: float = 1000.0
    alpha: float = 1000.0
    init_sigma: float = 4.0
    target_lr_scale: float = 1.0
    augment: tuple = ()
    dropout: float = 0.5
    clip_grad_norm: float | None = None
    overlap: int = 96
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model not in ("scn", "unet"):
            raise ConfigError(f"Train3DConfig.model must be 'scn' or 'unet', got {self.model!r}")
        if len(self.input_size) != 3 or any(int(s) < 8 for s in self.input_size):
            raise ConfigError(f"Train3DConfig.input_size must be three sizes >= 8 (x, y, z), got {self.input_size!r}")
        if self.optimizer not in ("nesterov", "adam"):
            raise ConfigError(f"Train3DConfig.optimizer must be 'nesterov' or 'adam', got {self.optimizer!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"Train3DConfig.lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if not 0 <= self.overlap < self.input_size[2]:
            raise ConfigError(f"Train3DConfig.overlap must be in [0, input z size), got {self.overlap!r}")
        if self.iterations < 1 or self.batch_size < 1:
            raise ConfigError("Train3DConfig.iterations and batch_size must be >= 1")
        AugmentConfig(**dict(self.augment))  # validates the fields

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["augment"] = [list(p) for p in self.augment]
        return d


def build_network_3d(config: Train3DConfig, num_landmarks: int) -> torch.nn.Module:
    """The 3D SCN or U-Net of ``config`` (1 input channel)."""
    if config.model == "scn":
        return build_model("scn", 1, num_landmarks, 3, num_filters=config.num_filters, sc_filters=config.num_filters,
                           sc_factor=config.sc_factor, sc_kernel=config.sc_kernel, dropout=config.dropout)
    return build_model("unet", 1, num_landmarks, 3, num_filters=config.num_filters, num_levels=4,
                       dropout=config.dropout)


def _xy_start(shape_zyx: Sequence[int], size_xyz: Sequence[int]) -> tuple[int, int]:
    """Start (y, x) of the centred x-y window."""
    return (shape_zyx[1] - size_xyz[1]) // 2, (shape_zyx[2] - size_xyz[0]) // 2


def training_windows(volumes: VolumeSet, rows: Sequence[int], size_xyz: Sequence[int],
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Training windows of the volumes ``rows``: centred in x-y, random z position.

    A volume longer than the window gets a uniformly random start in ``[0, D - Z]``; a shorter one a
    random placement inside the window (the rest is air).

    Returns
    -------
    images : Tensor
        ``(B, 1, Z, Y, X)`` float32.
    landmarks : Tensor
        ``(B, N, 3)`` ``(x, y, z)`` window voxels (float64; NaN kept).
    """
    X, Y, Z = (int(s) for s in size_xyz)
    imgs, lms = [], []
    for r in rows:
        vol = volumes.volumes[r]
        d = vol.shape[0]
        span = abs(d - Z)
        off = int(torch.randint(0, span + 1, (1,), generator=generator)) if span else 0
        z0 = off if d >= Z else -off
        y0, x0 = _xy_start(vol.shape, (X, Y, Z))
        imgs.append(extract_window(vol, (z0, y0, x0), (Z, Y, X), fill=AIR))
        lms.append(torch.as_tensor(volumes.landmarks[r] - np.array([x0, y0, z0], dtype=np.float64)))
    return torch.stack(imgs)[:, None], torch.stack(lms)


def training_batch(volumes: VolumeSet, rows: Sequence[int], size_xyz: Sequence[int], augment: AugmentConfig,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of ``rows`` (:func:`training_windows`) augmented as one batch (affine + elastic, landmarks
    mapped exactly by :func:`lmkcore.training.augment.augment_batch`): ``(B, 1, Z, Y, X)``, ``(B, N, 3)``."""
    imgs, lms = training_windows(volumes, rows, size_xyz, generator)
    return augment_batch(imgs, lms, augment, generator=generator)


def masked_loss(pred: torch.Tensor, landmarks: torch.Tensor,
                target: HeatmapTarget) -> tuple[torch.Tensor, torch.Tensor]:
    """Data term of a batch, NaN landmarks masked (Payer Eq. 2; :meth:`HeatmapTarget.data_loss`: the
    ``"payer"`` convention halves the summed squares as the authors' ``l2_loss``, beside ``(alpha/2) sum sigma^2``).

    Parameters
    ----------
    pred : Tensor
        ``(B, N, Z, Y, X)`` network heatmaps.
    landmarks : Tensor
        ``(B, N, 3)`` ``(x, y, z)`` voxels of the same grid; NaN = missing.
    target : HeatmapTarget

    Returns
    -------
    loss : Tensor
        Scalar ``(c/B) sum_b sum_{i valid} sum_x (pred - g_i)^2`` (``c`` = 1/2 for ``"payer"``; no regulariser).
    targets : Tensor
        The target heatmaps (zero for missing landmarks).
    """
    size = tuple(pred.shape[2:][::-1])  # (X, Y, Z)
    tgt, mask = target(landmarks.to(pred.dtype), size, return_mask=True)
    return target.data_loss(pred, tgt, mask), tgt


def _optimizer(config: Train3DConfig, model: torch.nn.Module, target: HeatmapTarget) -> torch.optim.Optimizer:
    if config.optimizer == "nesterov":
        opt = paper_optimizer(model, (), lr=config.lr, momentum=0.99, l2_lambda=config.l2_lambda)
        opt.add_param_group({"params": list(target.parameters()), "lr": config.lr * config.target_lr_scale,
                             "weight_decay": 0.0})
        return opt
    decay = [p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1]
    other = [p for n, p in model.named_parameters() if not (n.endswith("weight") and p.dim() > 1)]
    return torch.optim.Adam([{"params": decay, "weight_decay": 2 * config.l2_lambda}, {"params": other},
                             {"params": list(target.parameters()), "lr": config.lr * config.target_lr_scale}],
                            lr=config.lr)


def train_3d(volumes: VolumeSet, config: Train3DConfig, device: str = "cpu",
             progress: Callable[[int, dict], None] | None = None, log_every: int = 0
             ) -> tuple[torch.nn.Module, HeatmapTarget, list[dict]]:
    """Train ``config`` on all volumes of ``volumes``.

    Returns
    -------
    model, target : the trained network (eval mode, on ``device``) and heatmap target
    history : list of dict
        ``iteration``, ``loss`` (data term), ``reg``, ``sigma_mean`` (voxels) every ``log_every``
        iterations (default: 20 entries per run).
    """
    n_lm = volumes.landmarks.shape[1]
    torch.manual_seed(config.seed)
    model = build_network_3d(config, n_lm).to(device)
    target = HeatmapTarget(n_lm, "learned_iso", init_sigma=config.init_sigma, gamma=config.gamma,
                           alpha=config.alpha, spatial_dims=3, convention="payer").to(device)
    opt = _optimizer(config, model, target)
    base = [g["lr"] for g in opt.param_groups]
    aug = AugmentConfig(**dict(config.augment))
    log_every = log_every or max(config.iterations // 20, 1)
    history: list[dict] = []
    m = len(volumes.ids)
    model.train()
    for it in range(config.iterations):
        if config.lr_schedule == "cosine":
            f = 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * it / config.iterations))
            for g, lr in zip(opt.param_groups, base):
                g["lr"] = lr * f
        gen = torch.Generator().manual_seed(config.seed * 1_000_003 + it)
        rows = torch.randint(0, m, (config.batch_size,), generator=gen).tolist()
        imgs, lms = training_batch(volumes, rows, config.input_size, aug, gen)
        torch.manual_seed(config.seed * 7919 + it)  # dropout masks
        pred = model(imgs.to(device))
        loss, _ = masked_loss(pred, lms.to(device), target)
        reg = target.regularization()
        opt.zero_grad(set_to_none=True)
        (loss + reg).backward()
        if config.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(target.parameters()), config.clip_grad_norm)
        opt.step()
        if (it + 1) % log_every == 0 or it + 1 == config.iterations:
            entry = {"iteration": it + 1, "loss": loss.item(), "reg": reg.item(),
                     "sigma_mean": target.sigmas().mean().item()}
            history.append(entry)
            if progress is not None:
                progress(it + 1, entry)
    model.eval()
    return model, target, history


def window_starts(length: int, window: int, overlap: int) -> list[int]:
    """z starts of the sliding windows covering ``length`` slices: stride ``window - overlap``, the last
    window aligned with the end; ``[0]`` when the volume fits one window."""
    if length <= window:
        return [0]
    stride = window - overlap
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


@torch.no_grad()
def predict_sliding_z(model: torch.nn.Module, volume: torch.Tensor, size_xyz: Sequence[int], overlap: int,
                      device: str = "cpu") -> tuple[torch.Tensor, tuple[int, int]]:
    """Heatmaps of a whole volume by z windows merged with the voxel-wise maximum.

    Parameters
    ----------
    model : nn.Module
        ``(1, 1, Z, Y, X) -> (1, N, Z, Y, X)``.
    volume : Tensor
        ``(D, H, W)`` normalised volume.
    size_xyz : (X, Y, Z)
        Network window; x-y is centred (cropped or padded with air), z slides.
    overlap : int
        Overlap of consecutive windows (voxels).

    Returns
    -------
    heatmaps : Tensor
        ``(N, max(D, Z), Y, X)`` on the CPU (float32).
    xy_start : (int, int)
        ``(y0, x0)`` of the x-y window in the volume: volume voxel = window voxel + ``(x0, y0, 0)``.
    """
    X, Y, Z = (int(s) for s in size_xyz)
    d = volume.shape[0]
    y0, x0 = _xy_start(volume.shape, (X, Y, Z))
    length = max(d, Z)
    out = None
    for z0 in window_starts(length, Z, overlap):
        win = extract_window(volume, (z0, y0, x0), (Z, Y, X), fill=AIR)
        hm = model(win[None, None].to(device))[0].float().cpu()
        if out is None:
            out = torch.full((hm.shape[0], length, Y, X), -float("inf"))
        np_slice = out[:, z0:z0 + Z]
        torch.maximum(np_slice, hm, out=np_slice)
    return out, (y0, x0)
