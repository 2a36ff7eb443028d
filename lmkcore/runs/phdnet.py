"""Training, predicting and caching PHD-Net runs (Schobs et al. 2021, Sec. 3).

Training: random ``subimage`` x ``subimage`` crops (paper: 128) of the working images (augmented
except in the ``paper`` profile: the paper names no augmentation), Adam (paper: lr 1e-3, batch 32),
loss ``L_d + L_h``. The ``paper`` profile runs up to 500 epochs with early stopping after 75 epochs
without a lower validation loss and keeps the best weights; ``smoke``/``quick`` run a short fixed
schedule. An epoch draws one sub-image from every training image (the paper does not define it).

Validation: the last ``val_fraction`` of the training split (after a seeded shuffle) is held
out; it gives the validation loss (early stopping) and the confidence thresholds (the error-weighted
mean peak of the :data:`THRESHOLD_FRACTION` least accurate validation predictions, per landmark).

Every ``paper``-profile value is checked against the fidelity ledger
(:func:`lmkcore.training.ledger.check_paper_configs`, rows of ``schobs2021``).

Results are cached by the run store (:mod:`lmkcore.runs.store`: ``phdnet/<key>``, key: content hash
of the config, the splits and the data fingerprint), written atomically; the model weights go
through :func:`lmkcore.training.trainer.save_checkpoint`.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lmkcore.training.augment import AugmentConfig, apply_params, sample_params
from lmkcore.analysis.metrics import point_errors
from lmkcore.data.geometry import resize_landmarks, working_size, working_spacing
from lmkcore.data.loader import LandmarkImageDataset
from lmkcore.errors import ConfigError
from lmkcore.data.records import LandmarkDataset
from lmkcore.runs.result import PointResult
from lmkcore.runs.store import RunStore, forward_batches, has_result, read_result, write_result
from lmkcore.training.trainer import load_checkpoint, normalise_images, save_checkpoint
from lmkcore.analysis.phdnet_coordinates import candidate_smoothing, landmark_thresholds, simple_coordinates
from lmkcore.training.phdnet_targets import phdnet_loss
from lmkcore.models.phdnet import PATCH, PHDNet, count_parameters

RESULT_VERSION = 1
STRATEGIES = ("simple", "smoothing")
#: Share of the least accurate validation predictions whose error-weighted mean peak is the
#: confidence threshold (Schobs et al. Sec. 2.2: "the 10 % least accurate predictions").
THRESHOLD_FRACTION = 0.1


@dataclass(frozen=True)
class PHDNetConfig:
    """One PHD-Net run.

    Attributes
    ----------
    heatmap : str
        ``"gaussian"`` (PHD-Net) or ``"binary"`` (Noothout et al.) patch map.
    sigma_patches : float
        Std of the Gaussian patch heatmap and of the displacement-loss weight, in patches (paper: 2).
    subimage : int
        Side of the training sub-images in working px (paper: 128; clipped to the image, multiple of 8).
    region_px, blob_sigma_px, smooth_px : int, float, float
        Candidate smoothing: window side (128), vote blob std (1) and heatmap smoothing std (px).
    filters : int
        3x3 conv filters (paper: 32).
    independent : bool
        One independent model per landmark (the paper) or a shared trunk with per-landmark heads.
    shared_heads : bool
        With a shared trunk, share the hidden 1x1 layers of the branches too (only the output
        layer per landmark).
    input_width : int
        Working width in px (height follows the aspect ratio).
    iterations : int
        Fixed schedule (used when ``max_epochs`` is 0).
    max_epochs, patience : int
        Epoch-based schedule with early stopping on the validation loss (paper: 500, 75).
    batch_size, lr : int, float
        Adam (paper: 32, 1e-3).
    val_fraction : float
        Share of the training split held out for validation (paper: not stated).
    augment : AugmentConfig
        Augmentation of the training images before the sub-images are cut; ``AugmentConfig.identity()``
        (the ``paper`` profile: the paper names none) skips it and the resampling altogether.
    seed : int
    """

    heatmap: str = "gaussian"
    sigma_patches: float = 2.0
    subimage: int = 128
    region_px: int = 128
    blob_sigma_px: float = 1.0
    smooth_px: float = 4.0
    filters: int = 32
    independent: bool = False
    shared_heads: bool = False
    input_width: int = 128
    iterations: int = 300
    max_epochs: int = 0
    patience: int = 75
    batch_size: int = 32
    lr: float = 1e-3
    val_fraction: float = 0.15
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            object.__setattr__(self, "augment", AugmentConfig(**self.augment))
        if self.heatmap not in ("gaussian", "binary"):
            raise ConfigError(f"PHDNetConfig.heatmap must be 'gaussian' or 'binary', got {self.heatmap!r}")
        for name in ("subimage", "region_px", "filters", "input_width", "iterations", "batch_size", "patience"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise ConfigError(f"PHDNetConfig.{name} must be a positive integer, got {v!r}")
        if not isinstance(self.max_epochs, (int, np.integer)) or self.max_epochs < 0:
            raise ConfigError(f"PHDNetConfig.max_epochs must be an integer >= 0, got {self.max_epochs!r}")
        for name in ("sigma_patches", "blob_sigma_px", "lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"PHDNetConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"PHDNetConfig.val_fraction must be in (0, 1), got {self.val_fraction!r}")

    def to_dict(self) -> dict[str, Any]:
        d = json.loads(json.dumps(asdict(self)))
        d["augment"] = self.augment.to_dict()  # AugmentConfig fields added later only when set: keys unchanged
        return d


def phdnet_config(profile, **overrides: Any) -> PHDNetConfig:
    """The :class:`PHDNetConfig` of a :class:`~lmkcore.training.profiles.Profile` (by name).

    ``paper``: the paper's schedule (500 epochs, early stopping 75, batch 32, Adam 1e-3, one model per
    landmark), 128 px sub-images and smoothing region, no augmentation (none is stated), at the
    profile's input width (``paper-dry``: the same with 1 epoch). ``quick``: a shared trunk with per-landmark heads,
    1,500 iterations of batch 8 on 96 px sub-images (150 iterations left it at ~12 mm on the
    synthetic data, 1,500 reach ~3 mm), a 64 px candidate-smoothing region (the
    paper's 128 px is a quarter of its 512 px images; the quick working images are 128 px wide) and 8 px
    heatmap smoothing. ``smoke``: a few iterations of a thin network.
    """
    aug = AugmentConfig(**dict(profile.augment))
    base = dict(input_width=profile.input_width, augment=aug)
    per_profile = {
        "smoke": dict(filters=8, iterations=4, batch_size=4, shared_heads=True),
        "quick": dict(iterations=1500, batch_size=8, subimage=96, shared_heads=False, region_px=64, smooth_px=8.0),
        "paper": dict(max_epochs=500, patience=75, batch_size=32, lr=1e-3, independent=True, shared_heads=False,
                      subimage=128, region_px=128, sigma_patches=2.0, heatmap="gaussian", filters=32,
                      augment=AugmentConfig.identity()),
    }
    base.update(per_profile.get(getattr(profile, "sizes", profile.name), per_profile["quick"]))
    if getattr(profile, "max_epochs", None):  # paper-dry: 1 epoch
        base["max_epochs"] = min(int(base.get("max_epochs") or profile.max_epochs), int(profile.max_epochs))
    base.update(overrides)
    return PHDNetConfig(**base)


# --------------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------------


@dataclass
class PHDNetResult(PointResult):
    """Predictions of one PHD-Net run on its eval split and on its validation images.

    Implements :class:`lmkcore.runs.result.LandmarkResult` (no Gaussian-heatmap uncertainty:
    ``fit_cov_mm`` etc. are None). Coordinates are ``(x, y)`` pixels of the original images;
    ``M`` eval images, ``V`` validation images, ``N`` landmarks. ``pred_px[s]`` / ``peak[s]`` per
    strategy ``s`` in ``("simple", "smoothing")`` (:attr:`predictions`); ``threshold[s]`` ``(N,)``
    per-landmark confidence thresholds from the validation set
    (:func:`~lmkcore.analysis.phdnet_coordinates.confidence_threshold` on the reference errors in mm).
    ``work_size`` ``(W, H)`` and ``work_spacing`` ``(M, 2)`` mm/working px: the resolution the network saw.
    """

    key: str
    config: dict
    ids: list
    val_ids: list
    landmark_names: list
    spacing: np.ndarray
    reference_px: np.ndarray
    truth_px: np.ndarray | None
    pred_px: dict
    peak: dict
    val_spacing: np.ndarray
    val_reference_px: np.ndarray
    val_pred_px: dict
    val_peak: dict
    threshold: dict
    history: list = field(default_factory=list)
    train_seconds: float = 0.0
    predict_seconds: float = 0.0
    n_parameters: int = 0
    work_size: tuple = ()
    work_spacing: np.ndarray | None = None

    DEFAULT_PREDICTION = "smoothing"
    ALTERNATIVE_PREDICTION = "simple"
    _ARRAYS = ("spacing", "reference_px", "truth_px", "val_spacing", "val_reference_px", "work_spacing")
    _PER_STRATEGY = ("pred_px", "peak", "val_pred_px", "val_peak", "threshold")

    @property
    def predictions(self) -> dict[str, np.ndarray]:
        """``"simple"`` and ``"smoothing"`` (candidate smoothing) predictions, ``(M, N, 2)`` px."""
        return self.pred_px

    # PHD-Net has no Gaussian heatmaps: no Sigma-hat, no learned Sigma, no heatmap crops, no MC dropout.
    fit_cov_mm = property(lambda self: None, doc="None: PHD-Net fits no Gaussians.")
    fit_ok = property(lambda self: None, doc="None: PHD-Net fits no Gaussians.")
    learned_cov_mm = property(lambda self: None, doc="None: PHD-Net learns no target covariance.")
    heatmap_crops = property(lambda self: None, doc="None: no heatmap crops are stored.")
    crop_origin = property(lambda self: None, doc="None: no heatmap crops are stored.")
    mc_fit_cov_mm = property(lambda self: None, doc="None: no MC dropout.")

    def confidence(self, strategy: str | None = None) -> np.ndarray:
        """``(M, N)`` peak confidence of ``strategy`` (default candidate smoothing)."""
        strategy = strategy or self.default_prediction
        self._check(strategy)
        return self.peak[strategy]

    def val_errors_mm(self, strategy: str = "smoothing") -> np.ndarray:
        """``(V, N)`` validation errors (mm) against the reference."""
        self._check(strategy)
        return point_errors(self.val_pred_px[strategy], self.val_reference_px, self.val_spacing,
                            missing_prediction="ignore")

    def high_confidence(self, strategy: str = "smoothing", ids: list[str] | None = None) -> np.ndarray:
        """``(M, N)`` bool: peak >= the landmark's validation threshold."""
        self._check(strategy)
        return self.peak[strategy][self.rows(ids)] >= self.threshold[strategy][None, :]

    def errors_mm(self, prediction: str | None = None, against: str = "reference",
                  ids: list[str] | None = None) -> np.ndarray:
        """``(M, N)`` point errors (mm) of strategy ``prediction`` (default candidate smoothing)
        against ``"reference"`` or ``"truth"`` (synthetic); see :meth:`PointResult.errors_mm`."""
        self._check(prediction or self.default_prediction)
        return super().errors_mm(prediction, against, ids)

    def optional_numbers(self, prediction: str | None = None) -> dict[str, np.ndarray]:
        """PHD-Net confidence (peak), its per-landmark threshold and the high-confidence flag, ``(M, N)``."""
        s = prediction or self.default_prediction
        self._check(s)
        m, n = len(self.ids), len(self.landmark_names)
        thr = np.broadcast_to(self.threshold[s][None, :], (m, n))
        return {"PHD-Net confidence (peak)": self.peak[s], "PHD-Net confidence threshold": thr,
                "PHD-Net high confidence": (self.peak[s] >= thr).astype(np.float64)}

    def _check(self, strategy: str) -> None:
        if strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")

    def save(self, folder: str | Path) -> None:
        """Write to a result folder (:func:`lmkcore.runs.store.write_result`)."""
        arrays: dict[str, np.ndarray] = {k: getattr(self, k) for k in self._ARRAYS}
        for k in self._PER_STRATEGY:
            for s, v in getattr(self, k).items():
                arrays[f"{k}.{s}"] = v
        meta = {k: getattr(self, k) for k in ("key", "config", "ids", "val_ids", "landmark_names", "history",
                                               "train_seconds", "predict_seconds", "n_parameters")}
        meta["work_size"] = list(self.work_size)
        write_result(folder, arrays, meta)

    @classmethod
    def load(cls, folder: str | Path) -> "PHDNetResult":
        """Read a result folder (also those written before ``target_px`` became ``reference_px``)."""
        meta, z = read_result(folder)
        renamed = {"target_px": "reference_px", "val_target_px": "val_reference_px"}
        kw: dict[str, Any] = {k: {} for k in cls._PER_STRATEGY}
        for name, arr in z.items():
            if "." in name:
                k, s = name.split(".", 1)
                kw[k][s] = arr
            else:
                kw[renamed.get(name, name)] = arr
        kw.setdefault("truth_px", None)
        meta["work_size"] = tuple(meta.get("work_size", ()))
        return cls(**meta, **kw)


def phdnet_key(config: PHDNetConfig, record: LandmarkDataset, train_split: str, eval_split: str) -> str:
    """Content hash of the config, the splits and the data."""
    blob = json.dumps({"config": config.to_dict(), "train": train_split, "eval": eval_split, "target": record.reference,
                       "data": RunStore.fingerprint(record), "v": RESULT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


def split_validation(ids: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """``(train ids, validation ids)``: a seeded shuffle, the last ``ceil(fraction n)`` held out."""
    if len(ids) < 2:
        raise ConfigError(f"need at least 2 training images to hold out a validation set, got {len(ids)}")
    order = np.random.default_rng([seed, 0xFA1]).permutation(len(ids))
    n_val = min(len(ids) - 1, max(1, int(math.ceil(fraction * len(ids)))))
    val = sorted(order[-n_val:].tolist())
    tr = sorted(order[:-n_val].tolist())
    return [ids[i] for i in tr], [ids[i] for i in val]


def _stack(ds: LandmarkImageDataset) -> tuple[torch.Tensor, torch.Tensor]:
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([b["image"] for b in items]), torch.stack([b["landmarks"] for b in items])


def _pad8(images: torch.Tensor) -> torch.Tensor:
    h, w = images.shape[-2:]
    return F.pad(images, (0, (-w) % PATCH, 0, (-h) % PATCH))


def _crop_size(config: PHDNetConfig, h: int, w: int) -> tuple[int, int]:
    s = config.subimage // PATCH * PATCH
    return max(PATCH, min(s, h // PATCH * PATCH)), max(PATCH, min(s, w // PATCH * PATCH))


def build_model(config: PHDNetConfig, n_landmarks: int) -> PHDNet:
    """The (untrained) :class:`~lmkcore.models.phdnet.PHDNet` that :func:`train_phdnet` trains for ``config``."""
    return PHDNet(n_landmarks, config.filters, independent=config.independent, shared_heads=config.shared_heads)


def make_optimizer(model: torch.nn.Module, config: PHDNetConfig) -> torch.optim.Optimizer:
    """The optimiser of :func:`train_phdnet`: Adam at ``config.lr`` (Schobs et al. Sec. 3), PyTorch defaults
    otherwise (betas 0.9, 0.999; no weight decay)."""
    return torch.optim.Adam(model.parameters(), lr=config.lr)


@torch.no_grad()
def _val_loss(model: PHDNet, images: torch.Tensor, landmarks: torch.Tensor, config: PHDNetConfig, device: str) -> float:
    model.eval()
    total = 0.0
    for s in range(0, len(images), 16):
        disp, heat = model(normalise_images(_pad8(images[s:s + 16].to(device))))
        l_d, l_h = phdnet_loss(disp, heat, landmarks[s:s + 16].to(device), config.sigma_patches, config.heatmap)
        total += float(l_d + l_h) * len(images[s:s + 16])
    model.train()
    return total / len(images)


def train_phdnet(config: PHDNetConfig, train_ds: LandmarkImageDataset, val_ds: LandmarkImageDataset,
                 device: str = "cpu", checkpoint_path: str | Path | None = None, progress: bool = True):
    """Train PHD-Net; returns ``(model in eval mode, history)``.

    Each iteration draws ``batch_size`` training images (seeded per-epoch permutations),
    augments them (:mod:`lmkcore.training.augment`), and crops one random sub-image per image. With
    ``max_epochs > 0`` the validation loss is computed after every epoch and training stops
    after ``patience`` epochs without improvement (the best weights are kept). A finished
    model found at ``checkpoint_path`` (same config) is loaded instead of retraining.
    """
    images, landmarks = _stack(train_ds)
    val_images, val_landmarks = _stack(val_ds)
    n_lm = landmarks.shape[1]
    torch.manual_seed(config.seed)
    model = build_model(config, n_lm).to(device)
    if checkpoint_path is not None and Path(checkpoint_path).is_file():
        state = load_checkpoint(checkpoint_path)
        if json.loads(state["config"]) != config.to_dict():
            raise ConfigError(f"{checkpoint_path}: checkpoint belongs to another configuration; delete it")
        model.load_state_dict(state["model"])
        model.eval()
        return model, list(state["history"])
    opt = make_optimizer(model, config)
    h, w = images.shape[-2:]
    ch, cw = _crop_size(config, h, w)
    n = len(images)
    steps_per_epoch = max(1, math.ceil(n / config.batch_size))
    total = config.max_epochs * steps_per_epoch if config.max_epochs else config.iterations
    history: list[dict] = []
    best, best_state, since_best = float("inf"), None, 0
    running: list[float] = []
    augment = config.augment != AugmentConfig.identity()
    model.train()
    for it in range(total):
        epoch, pos = divmod(it, steps_per_epoch)
        order = np.random.default_rng([config.seed, epoch, 0x5EED]).permutation(n)
        idx = order[pos * config.batch_size:(pos + 1) * config.batch_size]
        if len(idx) < config.batch_size:  # fill the last batch of an epoch (cycling when there are fewer images)
            idx = np.concatenate([idx, np.resize(order, config.batch_size - len(idx))])
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([config.seed, it, 1]).generate_state(1)[0]))
        if augment:
            params = sample_params(len(idx), (h, w), config.augment, generator=gen).to(device)
            img, lm = apply_params(params, images[idx].to(device), landmarks[idx].to(device))
        else:  # the paper's setting: no augmentation, no resampling
            img, lm = images[idx].to(device), landmarks[idx].to(device)
        oy = torch.randint(0, h - ch + 1, (len(idx),), generator=gen)
        ox = torch.randint(0, w - cw + 1, (len(idx),), generator=gen)
        rows = (oy[:, None] + torch.arange(ch)).to(device)
        cols = (ox[:, None] + torch.arange(cw)).to(device)
        crops = img[torch.arange(len(idx), device=device)[:, None, None, None], 0:1, rows[:, None, :, None], cols[:, None, None, :]]
        crops = crops.reshape(len(idx), 1, ch, cw)
        lm = lm - torch.stack([ox, oy], -1).to(device=device, dtype=lm.dtype)[:, None, :]
        disp, heat = model(normalise_images(crops))
        l_d, l_h = phdnet_loss(disp, heat, lm.float(), config.sigma_patches, config.heatmap)
        loss = l_d + l_h
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"PHD-Net training diverged at iteration {it}; lower the learning rate")
        running.append(loss.item())
        end_of_epoch = (it + 1) % steps_per_epoch == 0 or it + 1 == total
        if end_of_epoch:
            entry = {"iteration": it + 1, "epoch": epoch + 1, "loss": float(np.mean(running))}
            running = []
            if config.max_epochs or it + 1 == total:
                entry["val_loss"] = _val_loss(model, val_images, val_landmarks, config, device)
            history.append(entry)
            if progress and (epoch % 10 == 0 or it + 1 == total):
                print(f"  epoch {epoch + 1}: loss {entry['loss']:.4g}" +
                      (f", val {entry['val_loss']:.4g}" if "val_loss" in entry else ""))
            if config.max_epochs:
                if entry["val_loss"] < best:
                    best, since_best = entry["val_loss"], 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    since_best += 1
                    if since_best >= config.patience:
                        break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    if checkpoint_path is not None:
        save_checkpoint(checkpoint_path, {"model": model.state_dict(), "history": history,
                                          "config": json.dumps(config.to_dict())})
    return model, history


def predict_phdnet(model: PHDNet, ds: LandmarkImageDataset, config: PHDNetConfig, device: str = "cpu",
                   batch_size: int = 16) -> tuple[dict, dict]:
    """Predictions ``{strategy: (M, N, 2) original px}`` and peaks ``{strategy: (M, N)}`` of whole images."""
    out: dict[str, list] = {f"{s}.{k}": [] for s in STRATEGIES for k in ("xy", "peak")}
    for batch in forward_batches(model, ds, device, batch_size, pad_multiple=PATCH):
        disp, heat = batch.output
        with torch.no_grad():
            decoded = (("simple", simple_coordinates(heat, disp)),
                       ("smoothing", candidate_smoothing(heat, disp, config.region_px, config.blob_sigma_px,
                                                         config.smooth_px)))
        for name, (xy, peak) in decoded:
            out[f"{name}.xy"].append(xy.cpu().numpy())
            out[f"{name}.peak"].append(peak.cpu().numpy())
    orig = ds.record.image_size
    pred = {s: np.stack([resize_landmarks(p, ds.size, o) for p, o in zip(np.concatenate(out[f"{s}.xy"]).astype(np.float64), orig)])
            for s in STRATEGIES}
    peak = {s: np.concatenate(out[f"{s}.peak"]).astype(np.float64) for s in STRATEGIES}
    return pred, peak


def load_cached_phdnet(record: LandmarkDataset, config: PHDNetConfig, cache_dir: str | Path | RunStore,
                       train_split: str, eval_split: str) -> PHDNetResult | None:
    """The cached result of a PHD-Net run, or None (never trains). Results cached before ``work_size``
    was stored get it from the config and the record."""
    folder = RunStore.of(cache_dir).result_folder(phdnet_key(config, record, train_split, eval_split), "phdnet")
    if not has_result(folder):
        return None
    res = PHDNetResult.load(folder)
    if not res.work_size:
        size = working_size(record, config.input_width)
        sizes = record.subset(list(res.ids)).image_size
        res = replace(res, work_size=size, work_spacing=working_spacing(res.spacing, sizes, size))
    return res


def run_phdnet(record: LandmarkDataset, config: PHDNetConfig, cache_dir: str | Path, device: str = "cpu",
               train_split: str | None = None, eval_split: str | None = None, progress: bool = True,
               label: str = "PHD-Net") -> PHDNetResult:
    """Train (or load from the cache) PHD-Net on ``train_split`` and predict ``eval_split``.

    Splits default to :func:`lmkcore.training.methods.default_splits`. Returns a cached result when the
    same config, splits and data were run before.
    """
    from lmkcore.training.methods import default_splits

    tr_default, ev_default = default_splits(record)
    train_split, eval_split = train_split or tr_default, eval_split or ev_default
    for s in (train_split, eval_split):
        if s not in record.splits:
            raise ConfigError(f"{record.name}: no split {s!r}; available: {', '.join(sorted(record.splits))}")
    store = RunStore.of(cache_dir)
    key = phdnet_key(config, record, train_split, eval_split)
    folder = store.result_folder(key, "phdnet")
    cached = load_cached_phdnet(record, config, store, train_split, eval_split)
    if cached is not None:
        if progress:
            print(f"{label}: cached result {folder}")
        return cached
    size = working_size(record, config.input_width)
    fit_ids, val_ids = split_validation(list(record.splits[train_split]), config.val_fraction, config.seed)
    img_cache = store.images_dir
    train_ds = LandmarkImageDataset(record, fit_ids, size=size, cache_dir=img_cache)
    val_ds = LandmarkImageDataset(record, val_ids, size=size, cache_dir=img_cache)
    eval_ds = LandmarkImageDataset(record, list(record.splits[eval_split]), size=size, cache_dir=img_cache)
    if progress:
        sched = f"{config.max_epochs} epochs (patience {config.patience})" if config.max_epochs else f"{config.iterations} iterations"
        print(f"{label}: training on {len(fit_ids)} images ({len(val_ids)} validation), {sched}, "
              f"batch {config.batch_size}, {size[0]}x{size[1]} on {device}")
    start = time.perf_counter()
    model, history = train_phdnet(config, train_ds, val_ds, device, store.phdnet_model(key), progress)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    pred, peak = predict_phdnet(model, eval_ds, config, device)
    predict_seconds = time.perf_counter() - start
    val_pred, val_peak = predict_phdnet(model, val_ds, config, device)
    val_rec = val_ds.record
    val_reference = val_rec.landmarks.astype(np.float64)
    threshold = {}
    for s in STRATEGIES:
        err = point_errors(val_pred[s], val_reference, val_rec.spacing, missing_prediction="ignore")
        threshold[s] = landmark_thresholds(err, val_peak[s], THRESHOLD_FRACTION)
    rec = eval_ds.record
    result = PHDNetResult(
        key=key, config=config.to_dict(), ids=list(rec.ids), val_ids=list(val_ids),
        landmark_names=list(rec.landmark_names), spacing=rec.spacing.astype(np.float64),
        reference_px=rec.landmarks.astype(np.float64),
        truth_px=rec.truth["landmarks"].astype(np.float64) if "landmarks" in rec.truth else None,
        pred_px=pred, peak=peak, val_spacing=val_rec.spacing.astype(np.float64), val_reference_px=val_reference,
        val_pred_px=val_pred, val_peak=val_peak, threshold=threshold, history=history,
        train_seconds=train_seconds, predict_seconds=predict_seconds, n_parameters=count_parameters(model),
        work_size=tuple(eval_ds.size), work_spacing=working_spacing(rec.spacing, rec.image_size, eval_ds.size))
    result.save(folder)
    return result
