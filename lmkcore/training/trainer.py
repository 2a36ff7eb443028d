"""Training heatmap networks (SCN, LA-only, U-Net) with fixed or learned Gaussian targets.

One :class:`TrainConfig` says everything about a run; :func:`train` runs it
with checkpoints at intervals and resumes exactly from the last one.

Determinism: the batch order of each epoch, the augmentation of each
iteration and the dropout masks of each iteration are all drawn from
generators seeded by ``(seed, epoch)`` / ``(seed, iteration)``, so a run that
is interrupted and resumed from a checkpoint produces the same weights as an
uninterrupted run (on CPU; GPU kernels may add non-determinism).
"""
from __future__ import annotations

import io
import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from lmkcore.progress import progress as tqdm  # plain-text bars (final state kept in executed notebooks)

from lmkcore.training.augment import AugmentConfig, apply_params, sample_params
from lmkcore.training.losses import gaussian_nll, onehot_nll
from lmkcore.data.loader import LandmarkImageDataset
from lmkcore.data.integrity import IntegrityError, read_verified, write_verified
from lmkcore.errors import ConfigError, DataError
from lmkcore.training.targets import CONVENTIONS, HeatmapTarget
from lmkcore.models import build_model
from lmkcore.models.common import paper_optimizer


#: Training objectives of :class:`TrainConfig` (``loss``).
LOSSES = ("heatmap", "onehot_nll", "gaussian_nll")
#: Learning-rate schedules of :class:`TrainConfig` (``lr_schedule``).
LR_SCHEDULES = ("constant", "cosine", "step", "multistep")


@dataclass
class TrainConfig:
    """Everything that defines a training run.

    Attributes
    ----------
    model : str
        ``"scn"``, ``"la_only"``, ``"unet"`` or ``"resnet34_unet"`` (McCouat & Voiculescu 2022;
        its encoder width is ``min(num_filters, 64)``).
    target : str
        ``"fixed"`` (isotropic ``init_sigma``), ``"learned_iso"`` (sigma-target:
        Thaler et al. 2021 / Payer et al. 2019, Eq. 3) or ``"learned_aniso"``
        (Sigma-target, Thaler et al. 2021, Eq. 7).
    convention : str
        Target convention (:mod:`lmkcore.training.targets`): ``"authors_code"``
        (default; Thaler et al.'s code: ``init_sigma`` and the learned values are
        variances in px^2, penalty on their product, half squared error),
        ``"paper_text"`` (Thaler's text: standard deviations, penalty
        ``alpha s_maj s_min``, full squared error) or ``"payer"`` (Payer et al.
        2019: standard deviations, ``(alpha/2) sum sigma^2`` beside the half squared error).
    num_filters : int
        Filters per conv layer (papers: 128).
    init_sigma : float
        Initial / fixed value of the papers' heatmap "sigma" in working pixels
        (papers: 3): a variance (px^2) under ``convention="authors_code"``, a
        standard deviation (px) otherwise and for ``loss="gaussian_nll"``.
    alpha : float or None
        Sigma regulariser weight; None uses the papers' value for the target.
    gamma : float
        Heatmap scale (papers: 100).
    optimizer : str
        ``"nesterov"`` (the papers: SGD with Nesterov momentum) or ``"adam"``.
    lr, momentum, l2_lambda : float
        Learning rate, momentum (Nesterov only) and the weight term
        ``l2_lambda * ||w||^2`` added to the loss as computed (conv weights;
        gradient ``2 l2_lambda w``). The authors' ``0.001 * l2_loss(w)`` =
        ``0.0005 ||w||^2`` is ``l2_lambda = 0.0005``.
    target_lr_scale : float
        Learning-rate multiplier of the learned target parameters (sigma,
        theta): the papers use 1; short runs need larger steps to converge.
    clip_grad_norm : float or None
        Clip the global gradient norm to this value.
    lr_schedule : str
        ``"constant"``, ``"cosine"`` (decay to 1 % over the run), ``"step"``
        (Thaler et al.'s code: x0.5 from 50 % and x0.1 of the base from 75 % of
        the iterations; 20,000 and 30,000 of 40,000) or ``"multistep"`` (epoch based,
        ``torch.optim.lr_scheduler.MultiStepLR`` stepped once per epoch: during epoch ``e``
        (0-based) the lr is ``lr * lr_gamma ** (number of lr_milestones <= e)``; needs ``epochs``;
        McCouat & Voiculescu: milestones 4, 6, 8, gamma 0.1).
    lr_milestones : tuple of int
        Epochs of the ``"multistep"`` schedule (increasing).
    lr_gamma : float
        Factor of the ``"multistep"`` schedule at each milestone.
    iterations, batch_size : int
        ``iterations`` is the run's length unless ``epochs`` is set.
    epochs : int or None
        Train for this many epochs over the training images instead of ``iterations``: each epoch is one
        pass over a fresh permutation in ``ceil(n / batch_size)`` batches (the last one smaller when
        ``batch_size`` does not divide ``n``), as a PyTorch ``DataLoader(shuffle=True)``; see
        :func:`total_iterations`.
    encoder_weights : str or None
        Path of a local ResNet-34 state dict loaded into the encoder of ``"resnet34_unet"`` before
        training (:func:`lmkcore.models.resnet_unet.load_encoder_weights`; e.g. ImageNet weights saved
        earlier; nothing is downloaded). Checked when the config is made (one ConfigError naming the file).
        Not part of :meth:`to_dict`: the file's SHA-256 is (``encoder_weights_sha256``), so a model
        trained from other weights is never reused.
    encoder_weights_sha256 : str or None
        SHA-256 of ``encoder_weights`` (computed from the file; a stored config carries only this).
    heatmap_init_std : float
        Std of the Gaussian init of the heatmap-generating layers of ``"scn"`` / ``"la_only"``
        (:class:`~lmkcore.models.scn.SpatialConfigurationNet`): 1e-3 (default, Payer et al. 2019's text) or
        1e-4 (the authors' code, Thaler et al.'s paper methods).
    input_smoothing_mm : float
        Gaussian std in mm of a smoothing of every image at its original resolution before it is resized
        to the working size (:class:`lmkcore.data.loader.GaussianPresmooth`, through the image cache's
        preprocess hook); 0 (default): none. Thaler et al.'s / Payer et al.'s code: 0.15.
    augment : AugmentConfig
    dropout : float
    checkpoint_every : int
        Iterations between checkpoints (0: only at the end).
    log_every : int
        Iterations between entries of the training history.
    seed : int
    amp : bool or None
        Mixed precision (bfloat16 autocast); None = on for CUDA, off on CPU.
    loss : str
        ``"heatmap"`` (default: L2 regression of the ``target`` heatmaps), ``"onehot_nll"`` (2D softmax
        over each output channel, NLL of the ground-truth pixel -- nearest pixel of the sub-pixel
        landmark; McCouat & Voiculescu 2022) or ``"gaussian_nll"`` (2D softmax, cross-entropy with a
        normalised Gaussian of std ``init_sigma`` px). With the NLL losses the target module is unused
        (no regulariser). Only written to :meth:`to_dict` when not ``"heatmap"``, so the cache keys of
        heatmap runs are unchanged.
    """

    model: str = "scn"
    target: str = "learned_aniso"
    convention: str = "authors_code"
    num_filters: int = 32
    init_sigma: float = 3.0
    alpha: float | None = None
    gamma: float = 100.0
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.99
    l2_lambda: float = 5e-4
    target_lr_scale: float = 1.0
    clip_grad_norm: float | None = 1000.0
    lr_schedule: str = "cosine"
    iterations: int = 1000
    batch_size: int = 4
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    dropout: float = 0.5
    checkpoint_every: int = 250
    log_every: int = 25
    seed: int = 0
    amp: bool | None = None
    loss: str = "heatmap"
    epochs: int | None = None
    lr_milestones: tuple = ()
    lr_gamma: float = 0.1
    encoder_weights: str | None = None
    encoder_weights_sha256: str | None = None
    heatmap_init_std: float = 1e-3
    input_smoothing_mm: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
        self.lr_milestones = tuple(int(m) for m in self.lr_milestones)
        choices = {"model": ("scn", "la_only", "unet", "resnet34_unet"), "loss": LOSSES,
                   "target": ("fixed", "learned_iso", "learned_aniso"), "optimizer": ("adam", "nesterov"),
                   "lr_schedule": LR_SCHEDULES, "convention": CONVENTIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"TrainConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("num_filters", "iterations", "batch_size", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value <= 0:
                raise ConfigError(f"TrainConfig.{name} must be a positive integer, got {value!r}")
        for name in ("init_sigma", "gamma", "lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"TrainConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if not self.heatmap_init_std > 0:
            raise ConfigError(f"TrainConfig.heatmap_init_std must be > 0, got {self.heatmap_init_std!r}")
        if self.heatmap_init_std != 1e-3 and self.model not in ("scn", "la_only"):
            raise ConfigError(f"TrainConfig.heatmap_init_std applies to the 'scn' and 'la_only' models, not {self.model!r}")
        if not (isinstance(self.input_smoothing_mm, (int, float)) and 0 <= self.input_smoothing_mm < float("inf")):
            raise ConfigError(f"TrainConfig.input_smoothing_mm must be a finite number >= 0, got {self.input_smoothing_mm!r}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"TrainConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.convention == "payer" and self.target == "learned_aniso" and self.loss == "heatmap":
            raise ConfigError("TrainConfig: convention 'payer' (Payer et al. 2019) has no learned_aniso target")
        if self.epochs is not None and (isinstance(self.epochs, bool) or not isinstance(self.epochs, (int, np.integer))
                                        or self.epochs <= 0):
            raise ConfigError(f"TrainConfig.epochs must be a positive integer or None, got {self.epochs!r}")
        if self.lr_schedule == "multistep" and self.epochs is None:
            raise ConfigError("TrainConfig.lr_schedule 'multistep' is epoch based: set TrainConfig.epochs")
        if list(self.lr_milestones) != sorted(set(self.lr_milestones)) or any(m <= 0 for m in self.lr_milestones):
            raise ConfigError(f"TrainConfig.lr_milestones must be increasing positive epochs, got {self.lr_milestones!r}")
        if not 0 < self.lr_gamma <= 1:
            raise ConfigError(f"TrainConfig.lr_gamma must be in (0, 1], got {self.lr_gamma!r}")
        if self.encoder_weights is not None:
            self._check_encoder_weights()

    def _check_encoder_weights(self) -> None:
        from lmkcore.data.integrity import sha256_file
        from lmkcore.models.resnet_unet import ResNet34Encoder, load_encoder_weights

        path = os.fspath(self.encoder_weights)
        if self.model != "resnet34_unet":
            raise ConfigError(f"TrainConfig.encoder_weights {path!r}: only the 'resnet34_unet' model has a "
                              f"ResNet-34 encoder (model is {self.model!r})")
        load_encoder_weights(ResNet34Encoder(1, min(int(self.num_filters), 64)), path)  # one ConfigError if wrong
        digest = sha256_file(path)
        if self.encoder_weights_sha256 not in (None, digest):
            raise ConfigError(f"TrainConfig.encoder_weights {path!r}: SHA-256 {digest[:12]}... is not the "
                              f"configuration's {self.encoder_weights_sha256[:12]}... (the file changed)")
        self.encoder_weights, self.encoder_weights_sha256 = path, digest

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON representation (used for cache keys and checkpoints).

        Fields added after the first cached runs are written only when not at their defaults, so the keys
        of earlier runs are unchanged; ``encoder_weights`` (a path) is never written, its SHA-256 is.
        """
        d = json.loads(json.dumps(asdict(self)))
        if d["loss"] == "heatmap":  # keep the cache keys of runs made before the field existed
            del d["loss"]
        del d["encoder_weights"]
        for name, default in (("epochs", None), ("lr_milestones", []), ("lr_gamma", 0.1),
                              ("encoder_weights_sha256", None), ("heatmap_init_std", 1e-3),
                              ("input_smoothing_mm", 0.0)):
            if d[name] == default:
                del d[name]
        d["augment"] = self.augment.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown TrainConfig fields: {sorted(unknown)}")
        return cls(**d)


def build_network(config: TrainConfig, num_landmarks: int, spatial_dims: int = 2) -> torch.nn.Module:
    """The network of ``config`` (1 input channel)."""
    if config.model == "resnet34_unet":
        return build_model(config.model, 1, num_landmarks, spatial_dims=spatial_dims,
                           base_channels=min(int(config.num_filters), 64), encoder_weights=config.encoder_weights)
    kw: dict[str, Any] = {"num_filters": config.num_filters, "dropout": config.dropout}
    if config.model in ("scn", "la_only"):
        kw["sc_filters"] = config.num_filters
        kw["heatmap_init_std"] = config.heatmap_init_std
    return build_model(config.model, 1, num_landmarks, spatial_dims=spatial_dims, **kw)


def build_target(config: TrainConfig, num_landmarks: int) -> HeatmapTarget:
    """The (possibly learnable) target heatmap module of ``config``."""
    return HeatmapTarget(num_landmarks, mode=config.target, init_sigma=config.init_sigma,
                         gamma=config.gamma, alpha=config.alpha, convention=config.convention)


def build_optimizer(config: TrainConfig, model: torch.nn.Module, target: HeatmapTarget) -> torch.optim.Optimizer:
    """Nesterov SGD as in the papers, or Adam with decoupled L2 on conv weights for fast runs."""
    target_group = {"params": list(target.parameters()), "weight_decay": 0.0, "lr": config.lr * config.target_lr_scale}
    if config.optimizer == "nesterov":
        opt = paper_optimizer(model, (), lr=config.lr, momentum=config.momentum, l2_lambda=config.l2_lambda)
        if target_group["params"]:
            opt.add_param_group(target_group)
        return opt
    decay = [p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters() if not (n.endswith("weight") and p.dim() > 1)]
    groups = [{"params": decay, "weight_decay": 2.0 * config.l2_lambda}, {"params": no_decay, "weight_decay": 0.0}]
    if target_group["params"]:
        groups.append(target_group)
    return torch.optim.Adam(groups, lr=config.lr)


#: ``lr_schedule="step"`` (Thaler et al.'s code, ``tf.train.piecewise_constant`` with boundaries at 50 % and
#: 75 % of ``max_iter``): (fraction of the iterations, lr factor of the base).
STEP_SCHEDULE: tuple[tuple[float, float], ...] = ((0.5, 0.5), (0.75, 0.1))


def _steps(n_images: int, batch_size: int) -> int:
    return max(1, -(-int(n_images) // int(batch_size)))


def steps_per_epoch(config: TrainConfig, n_images: int) -> int:
    """Batches of one epoch over ``n_images`` (``ceil(n / batch_size)``, the last batch may be smaller)."""
    return _steps(n_images, config.batch_size)


def total_iterations(config: TrainConfig, n_images: int) -> int:
    """Optimiser steps of the run: ``config.iterations``, or ``epochs * steps_per_epoch`` with ``epochs`` set."""
    if config.epochs is None:
        return int(config.iterations)
    return int(config.epochs) * steps_per_epoch(config, n_images)


def _lr_factor(config: TrainConfig, iteration: int, n_images: int | None = None) -> float:
    """Learning-rate multiplier of the (0-based) ``iteration`` (``n_images``: for epoch-based schedules)."""
    if config.lr_schedule == "constant":
        return 1.0
    if config.lr_schedule == "multistep":  # MultiStepLR stepped after every epoch
        epoch = iteration // steps_per_epoch(config, n_images if n_images is not None else config.batch_size)
        return float(config.lr_gamma ** sum(m <= epoch for m in config.lr_milestones))
    if config.lr_schedule == "step":
        factor = 1.0
        for fraction, value in STEP_SCHEDULE:  # tf piecewise_constant: the earlier value while step <= boundary
            if iteration > fraction * config.iterations:
                factor = value
        return factor
    progress = iteration / max(total_iterations(config, n_images or config.batch_size), 1)
    return float(0.01 + 0.99 * 0.5 * (1.0 + np.cos(np.pi * progress)))


def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(n)


def _epoch_batch_indices(n: int, batch_size: int, seed: int, iteration: int) -> np.ndarray:
    """Indices of the batch of ``iteration`` in epoch mode: batch ``k`` of epoch ``e``'s permutation."""
    epoch, k = divmod(iteration, _steps(n, batch_size))
    return _epoch_order(n, seed, epoch)[k * batch_size: (k + 1) * batch_size]


def _batch_indices(n: int, batch_size: int, seed: int, iteration: int) -> np.ndarray:
    """Indices of the batch of ``iteration``: consecutive slices of per-epoch permutations."""
    start = iteration * batch_size
    out = []
    while len(out) < batch_size:
        epoch, pos = divmod(start + len(out), n)
        order = _epoch_order(n, seed, epoch)
        out.extend(order[pos: pos + batch_size - len(out)].tolist())
    return np.asarray(out)


def normalise_images(images: torch.Tensor) -> torch.Tensor:
    """Grey values in ``[0, 1]`` to the papers' network input range ``[-1, 1]``."""
    return images * 2.0 - 1.0


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file, then rename: a checkpoint is complete or absent."""
    buf = io.BytesIO()
    torch.save(state, buf)
    write_verified(path, buf.getvalue())  # unique temporary name + SHA-256 beside it (lmkcore.data.integrity)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``: tensors and plain containers only).

    Raises
    ------
    DataError
        Naming the file, if it is unreadable or holds anything but tensors and plain containers.
    """
    import pickle

    try:
        data = read_verified(path)  # checked against its SHA-256 (lmkcore.data.integrity)
    except IntegrityError as err:
        raise DataError(f"{err}; delete {path} to retrain") from None
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: not a loadable lmkcore checkpoint ({first[:120]}); delete it to retrain") from None


@dataclass
class TrainedModel:
    """A trained network with its target module, config and training history."""

    config: TrainConfig
    model: torch.nn.Module
    target: HeatmapTarget
    history: list[dict[str, Any]]
    size: tuple[int, int]
    seconds: float = 0.0


def train(
    config: TrainConfig,
    dataset: LandmarkImageDataset,
    device: str = "cpu",
    checkpoint_path: str | os.PathLike | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
) -> TrainedModel:
    """Train a heatmap network on ``dataset`` (resuming from ``checkpoint_path`` if it exists).

    Parameters
    ----------
    config : TrainConfig
    dataset : LandmarkImageDataset
        Training images at the working size; its target landmarks (working px)
        are the regression targets.
    device : str
        ``"cpu"``, ``"cuda"``...
    checkpoint_path : path, optional
        Written every ``config.checkpoint_every`` iterations and at the end;
        an existing file is resumed from (its config must match).
    progress : bool
        Show a tqdm progress bar.
    stop_after : int, optional
        Stop (after checkpointing) once this iteration is reached; used to
        simulate interruptions in tests.
    on_log : callable, optional
        Called with each history entry.

    Returns
    -------
    TrainedModel
        In eval mode, on ``device``.
    """
    n_landmarks = dataset.landmarks.shape[1]
    torch.manual_seed(config.seed)
    model = build_network(config, n_landmarks).to(device)
    target = build_target(config, n_landmarks).to(device)
    optimizer = build_optimizer(config, model, target)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    start, history, seconds_before = 0, [], 0.0
    if checkpoint_path is not None and Path(checkpoint_path).is_file():
        state = load_checkpoint(checkpoint_path)
        saved = json.loads(state["config"])
        if saved != config.to_dict():
            raise ConfigError(f"{checkpoint_path}: checkpoint belongs to another configuration; delete it to retrain")
        model.load_state_dict(state["model"])
        target.load_state_dict(state["target"])
        optimizer.load_state_dict(state["optimizer"])
        start, history = int(state["iteration"]), list(state["history"])
        seconds_before = float(state.get("seconds", 0.0))
    clock = time.perf_counter()
    use_amp = config.amp if config.amp is not None else str(device).startswith("cuda")
    width, height = dataset.size
    images_all = dataset
    n_images = len(images_all)
    total = total_iterations(config, n_images)
    end = total if stop_after is None else min(stop_after, total)

    def checkpoint(iteration: int) -> None:
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, {
                "model": model.state_dict(), "target": target.state_dict(),
                "optimizer": optimizer.state_dict(), "iteration": iteration,
                "history": history, "config": json.dumps(config.to_dict()),
                "seconds": seconds_before + time.perf_counter() - clock,
            })

    model.train()
    bar = tqdm(range(start, end), initial=start, total=total, disable=not progress,
               desc=f"train {config.model}/{config.target}", leave=False)
    running = []
    for it in bar:
        if config.epochs is None:
            idx = _batch_indices(n_images, config.batch_size, config.seed, it)
        else:
            idx = _epoch_batch_indices(n_images, config.batch_size, config.seed, it)
        items = [images_all[int(i)] for i in idx]
        images = torch.stack([b["image"] for b in items]).to(device)
        landmarks = torch.stack([b["landmarks"] for b in items]).to(device)
        aug_gen = torch.Generator().manual_seed(int(np.random.SeedSequence([config.seed, it, 1]).generate_state(1)[0]))
        spacing = torch.stack([b["spacing"] for b in items]) if config.augment.needs_spacing else None
        params = sample_params(len(idx), (height, width), config.augment, generator=aug_gen, spacing=spacing).to(device)
        images, landmarks = apply_params(params, images, landmarks, clamp=config.augment.clamp_range)
        torch.manual_seed(int(np.random.SeedSequence([config.seed, it, 2]).generate_state(1)[0]))  # dropout masks
        for g, lr in zip(optimizer.param_groups, base_lrs):
            g["lr"] = lr * _lr_factor(config, it, n_images)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
            pred = model(normalise_images(images))
        if config.loss == "onehot_nll":
            loss = onehot_nll(pred.float(), landmarks.float())
        elif config.loss == "gaussian_nll":
            loss = gaussian_nll(pred.float(), landmarks.float(), config.init_sigma)
        else:
            targets, mask = target(landmarks.float(), (width, height), return_mask=True)
            loss = target.loss(pred.float(), targets, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(target.parameters()), config.clip_grad_norm)
        optimizer.step()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training diverged at iteration {it} (loss {loss.item()}); lower the learning rate")
        running.append(loss.item())
        if (it + 1) % config.log_every == 0 or it + 1 == total:
            table = target.parameters_table()
            entry = {"iteration": it + 1, "loss": float(np.mean(running)),
                     **{k: np.asarray(v, dtype=float).tolist() for k, v in table.items()}}
            history.append(entry)
            running = []
            bar.set_postfix(loss=f"{entry['loss']:.3g}")
            if on_log is not None:
                on_log(entry)
        if config.checkpoint_every and (it + 1) % config.checkpoint_every == 0 and it + 1 < end:
            checkpoint(it + 1)
    bar.close()
    checkpoint(end)
    model.eval()
    return TrainedModel(config, model, target, history, dataset.size, seconds_before + time.perf_counter() - clock)
