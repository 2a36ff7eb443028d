"""Experiment cache: one config -> train (or load) -> predict -> a cached result.

A result holds everything the notebooks need and nothing large: predictions
(argmax and fitted Gaussian centre), the fitted covariances Sigma-hat, the
learned target covariances Sigma, small heatmap crops around each prediction,
optional MC-dropout samples and the training history. It is keyed by a content
hash of the experiment config and the data (ids, annotations, image files),
written atomically, and reused by every notebook that asks for the same thing.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lmkcore.progress import progress as tqdm  # plain-text bars (final state kept in executed notebooks)

from lmkcore.training.losses import softmax_2d
from lmkcore.data.loader import LandmarkImageDataset, working_size
from lmkcore.analysis.decoding import argmax_subpixel
from lmkcore.errors import ConfigError
from lmkcore.analysis.fitting import FIT_PRESETS, fit_gaussians
from lmkcore.data.records import LandmarkDataset, row_indices
from lmkcore.runs.result import PointResult
from lmkcore.data.integrity import file_lock
from lmkcore.runs.store import RunStore, forward_batches, has_result, load_trained, read_result, write_result
from lmkcore.training.trainer import TrainConfig, train

#: Bump when prediction/fitting code changes what a result holds: results are recomputed,
#: trained models (keyed by :func:`model_key`) are reused.
RESULT_VERSION = 2


@dataclass
class ExperimentConfig:
    """A training + evaluation run on one dataset.

    Attributes
    ----------
    train : TrainConfig
    input_width : int
        Working width in pixels (height follows the images' aspect ratio).
    input_height : int or None
        A fixed working height: every image is zero-padded on the right / at the bottom to the aspect
        ``input_width / input_height`` and resized to exactly that size (McCouat & Voiculescu: 640 x 800;
        :class:`lmkcore.data.loader.LandmarkImageDataset` ``pad=True``). None (default): the aspect is kept.
        Written to the cache keys only when set.
    train_split, eval_split : str
        Record splits to train on and to predict (e.g. ``"train"``, ``"test_all"``,
        ``"cv1/train"``, ``"cv1/val"``).
    reference : str
        Annotation set used as ground truth for training and evaluation (``"senior"``, ``"junior"``,
        ``"mean"``...). Not the heatmap target mode (``train.target``).
    fit_window : int
        Window (working px, odd) of the robust Gaussian fit (Sigma-hat).
    crop_size : int
        Side (working px, odd) of the stored heatmap crop around each prediction.
    mc_samples : int
        Monte-Carlo dropout passes at test time (0: none). Stores the argmax of
        every pass (MCD-x-max) and the fit to the mean heatmap (MCD-h).
    """

    train: TrainConfig
    input_width: int = 128
    input_height: int | None = None
    train_split: str = "train"
    eval_split: str = "test_all"
    reference: str = "senior"
    fit_window: int = 15
    crop_size: int = 31
    mc_samples: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):
            self.train = TrainConfig.from_dict(self.train)
        for name in ("fit_window", "crop_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 3 or v % 2 == 0:
                raise ConfigError(f"ExperimentConfig.{name} must be an odd integer >= 3, got {v!r}")
        if self.input_height is not None and (isinstance(self.input_height, bool) or
                                              not isinstance(self.input_height, int) or self.input_height <= 0):
            raise ConfigError(f"ExperimentConfig.input_height must be a positive integer or None, got {self.input_height!r}")
        if not isinstance(self.mc_samples, int) or self.mc_samples < 0:
            raise ConfigError(f"ExperimentConfig.mc_samples must be an integer >= 0, got {self.mc_samples!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["train"] = self.train.to_dict()
        if d["input_height"] is None:  # keys of aspect-keeping runs are unchanged
            del d["input_height"]
        return d

    def key_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` as the cache keys see it: ``reference`` under its former name ``target``,
        so keys (and cached results) are the same as before the rename."""
        d = self.to_dict()
        return {("target" if k == "reference" else k): v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExperimentConfig":
        """Inverse of :meth:`to_dict`; also reads configs stored with ``target`` (the former name of
        ``reference``)."""
        d = dict(d)
        if "target" in d:
            d.setdefault("reference", d.pop("target"))
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown ExperimentConfig fields: {sorted(unknown)}")
        return cls(**d)


def experiment_key(config: ExperimentConfig, record: LandmarkDataset) -> str:
    """Key of a result: the whole config, the data and :data:`RESULT_VERSION`."""
    blob = json.dumps({"config": config.key_dict(), "data": RunStore.fingerprint(record), "v": RESULT_VERSION},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def model_key(config: ExperimentConfig, record: LandmarkDataset) -> str:
    """Key of a trained model: only what training sees (train config, split, reference, input
    size, data), so experiments that differ in prediction settings share one model."""
    blob = json.dumps({"train": config.train.to_dict(), "split": config.train_split, "target": config.reference,
                       "input_width": config.input_width, "data": RunStore.fingerprint(record),
                       **({"input_height": config.input_height} if config.input_height is not None else {})},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class ExperimentResult(PointResult):
    """Cached predictions and uncertainties of one experiment (arrays over the eval split).

    Implements :class:`lmkcore.runs.result.LandmarkResult`. Coordinates are in pixels of the
    *original* images, ``(x, y)``; covariances in mm^2. ``M`` eval images, ``N`` landmarks,
    ``K`` MC-dropout passes.

    Attributes
    ----------
    ids : list of str
        ``M`` image ids of the eval split.
    landmark_names : list of str
    spacing : ndarray
        ``(M, 2)`` mm per original pixel.
    reference_px : ndarray
        ``(M, N, 2)`` ground-truth annotation (the config's ``reference`` annotation set).
    truth_px : ndarray or None
        ``(M, N, 2)`` true positions (synthetic data only).
    pred_argmax_px, pred_fit_px : ndarray
        ``(M, N, 2)`` predictions: heatmap maximum (sub-pixel refined) and
        fitted Gaussian centre (``predictions["argmax"]``, ``predictions["fit"]``).
    peak : ndarray
        ``(M, N)`` heatmap maximum value.
    fit_cov_mm : ndarray
        ``(M, N, 2, 2)`` Sigma-hat, the fitted Gaussian covariance (mm^2).
    fit_amplitude : ndarray
        ``(M, N)`` fitted amplitude.
    fit_ok : ndarray
        ``(M, N)`` bool: the fit converged to a Gaussian inside its window.
        Where not, ``pred_fit_px`` falls back to the argmax and ``fit_cov_mm``
        is NaN (e.g. the flat heatmaps of an untrained or lost landmark).
    learned_cov_mm : ndarray
        ``(N, 2, 2)`` Sigma, the learned target covariance (mm^2, at the median
        working spacing).
    heatmap_crops : ndarray
        ``(M, N, C, C)`` float16 heatmap crops (working px) centred on the
        argmax pixel; ``crop_origin`` ``(M, N, 2)`` is the working-px ``(x, y)``
        of their top-left pixel and ``work_spacing`` ``(M, 2)`` mm per working px.
    mc_points_px : ndarray or None
        ``(M, K, N, 2)`` argmax of each MC-dropout pass.
    mc_fit_px, mc_fit_cov_mm : ndarray or None
        ``(M, N, 2)`` and ``(M, N, 2, 2)``: fit to the mean MC heatmap (``predictions["mcd"]``).
    history : list of dict
        Training log (loss and learned target parameters over iterations).
    ere_mm, ere_ts_mm, softmax_confidence : ndarray or None
        ``(M, N)`` Expected Radial Error before / after temperature scaling (mm) and the maximum
        softmax probability, of softmax models whose calibration was evaluated
        (:func:`lmkcore.runs.calibration.with_calibration`); None otherwise.
    hottest_px : ndarray or None
        ``(M, N, 2)`` hottest pixel of the full softmax map (no sub-pixel refinement; McCouat &
        Voiculescu's prediction), from the same evaluation (``predictions["hottest"]``).
    """

    key: str
    config: dict
    ids: list
    landmark_names: list
    spacing: np.ndarray
    reference_px: np.ndarray
    truth_px: np.ndarray | None
    pred_argmax_px: np.ndarray
    pred_fit_px: np.ndarray
    peak: np.ndarray
    fit_cov_mm: np.ndarray
    fit_amplitude: np.ndarray
    fit_ok: np.ndarray
    learned_cov_mm: np.ndarray
    heatmap_crops: np.ndarray
    crop_origin: np.ndarray
    work_size: tuple
    work_spacing: np.ndarray
    history: list = field(default_factory=list)
    train_seconds: float = 0.0
    mc_points_px: np.ndarray | None = None
    mc_fit_px: np.ndarray | None = None
    mc_fit_cov_mm: np.ndarray | None = None
    ere_mm: np.ndarray | None = None
    ere_ts_mm: np.ndarray | None = None
    softmax_confidence: np.ndarray | None = None
    hottest_px: np.ndarray | None = None

    DEFAULT_PREDICTION = "fit"
    ALTERNATIVE_PREDICTION = "argmax"
    _ARRAYS = ("spacing", "reference_px", "truth_px", "pred_argmax_px", "pred_fit_px", "peak", "fit_cov_mm",
               "fit_amplitude", "fit_ok", "learned_cov_mm", "heatmap_crops", "crop_origin", "work_spacing",
               "mc_points_px", "mc_fit_px", "mc_fit_cov_mm")

    @property
    def predictions(self) -> dict[str, np.ndarray]:
        """``"fit"`` (Sigma-hat fit centre), ``"argmax"``, with MC dropout ``"mcd"`` (fit to the
        mean MC-dropout heatmap) and, with a calibration evaluation attached, ``"hottest"``."""
        out = {"fit": self.pred_fit_px, "argmax": self.pred_argmax_px}
        if self.mc_fit_px is not None:
            out["mcd"] = self.mc_fit_px
        if self.hottest_px is not None:
            out["hottest"] = self.hottest_px
        return out

    def confidence(self, prediction: str | None = None) -> np.ndarray:
        """``(M, N)`` heatmap maximum (the confidence of every prediction of this result)."""
        return self.peak

    def optional_numbers(self, prediction: str | None = None) -> dict[str, np.ndarray]:
        """ERE and softmax confidence, when a calibration evaluation is attached."""
        out = {}
        for name, label in (("ere_mm", "ERE (mm)"), ("ere_ts_mm", "ERE, temperature-scaled (mm)"),
                            ("softmax_confidence", "max softmax probability")):
            if getattr(self, name) is not None:
                out[label] = getattr(self, name)
        return out

    def save(self, folder: str | Path) -> None:
        """Write to a result folder (:func:`lmkcore.runs.store.write_result`)."""
        meta = {k: getattr(self, k) for k in ("key", "config", "ids", "landmark_names", "history", "train_seconds")}
        meta["work_size"] = list(self.work_size)
        write_result(folder, {k: getattr(self, k) for k in self._ARRAYS}, meta)

    @classmethod
    def load(cls, folder: str | Path) -> "ExperimentResult":
        """Read a result folder (also those written before ``target_px`` became ``reference_px``)."""
        meta, z = read_result(folder)
        if "target_px" in z:
            z["reference_px"] = z.pop("target_px")
        arrays = {k: z.get(k) for k in cls._ARRAYS}
        meta["work_size"] = tuple(meta["work_size"])
        if arrays["fit_ok"] is None:  # results written before fit_ok existed
            arrays["fit_ok"] = np.isfinite(arrays["fit_cov_mm"]).all(axis=(-2, -1))
        return cls(**meta, **arrays)


def result_folder(cache_dir: str | Path | RunStore, key: str) -> Path:
    """Folder of the cached experiment ``key`` (:meth:`lmkcore.runs.store.RunStore.result_folder`)."""
    return RunStore.of(cache_dir).result_folder(key)


def load_cached(record: LandmarkDataset, config: ExperimentConfig, cache_dir: str | Path | RunStore
                ) -> ExperimentResult | None:
    """The cached result of ``config`` on ``record``, or None if not computed yet (never trains)."""
    folder = result_folder(cache_dir, experiment_key(config, record))
    return ExperimentResult.load(folder) if has_result(folder) else None


def reference_record(record: LandmarkDataset, config: ExperimentConfig) -> LandmarkDataset:
    """``record`` with the config's reference annotation set as ground truth."""
    return record.with_reference(config.reference)


def split_ids(record: LandmarkDataset, name: str) -> list[str]:
    """Ids of split ``name``, or a ConfigError listing the available splits."""
    if name not in record.splits:
        _missing_split(record, name)
    return list(record.splits[name])


def experiment_dataset(record: LandmarkDataset, config: ExperimentConfig, ids: list[str],
                       cache_dir: str | Path | RunStore) -> LandmarkImageDataset:
    """The working-size torch dataset of ``ids`` as ``config`` sees them (reference annotation set, input
    width; with ``input_height`` a fixed padded frame)."""
    rec = reference_record(record, config)
    smooth = config.train.input_smoothing_mm  # Gaussian pre-smoothing at the original resolution (0: none)
    if config.input_height is not None:
        return LandmarkImageDataset(rec, list(ids), size=(config.input_width, config.input_height),
                                    cache_dir=RunStore.of(cache_dir).images_dir, pad=True, smoothing_mm=smooth)
    return LandmarkImageDataset(rec, list(ids), size=working_size(rec, config.input_width),
                                cache_dir=RunStore.of(cache_dir).images_dir, smoothing_mm=smooth)


def model_checkpoint(record: LandmarkDataset, config: ExperimentConfig, cache_dir: str | Path | RunStore) -> Path:
    """Where the trained network of ``config`` on ``record`` is (or will be) stored."""
    return RunStore.of(cache_dir).model_checkpoint(model_key(config, record))


def load_model(record: LandmarkDataset, config: ExperimentConfig, cache_dir: str | Path | RunStore,
               device: str = "cpu"):
    """``(network, heatmap target module)`` of the trained model of ``config`` (eval mode; never trains).

    Raises ConfigError naming the checkpoint when it is not trained yet.
    """
    return load_trained(config.train, len(record.landmark_names), model_checkpoint(record, config, cache_dir), device)


def run_experiment(record: LandmarkDataset, config: ExperimentConfig, cache_dir: str | Path | RunStore,
                   device: str = "cpu", progress: bool = True, label: str = "") -> ExperimentResult:
    """Train (resuming any checkpoint), predict and cache; return the cached result if present."""
    store = RunStore.of(cache_dir)
    key = experiment_key(config, record)
    folder = store.result_folder(key)
    cached = load_cached(record, config, store)
    if cached is None:
        with file_lock(folder):  # one writer per key: a concurrent run waits here, then finds the result
            cached = load_cached(record, config, store)
            if cached is None:
                return _train_predict_save(record, config, store, key, folder, device, progress, label)
    if progress:
        print(f"{label or key}: cached result {folder}")
    return cached


def _train_predict_save(record, config, store, key, folder, device, progress, label) -> ExperimentResult:
    train_ds = experiment_dataset(record, config, split_ids(record, config.train_split), store)
    eval_ds = experiment_dataset(record, config, split_ids(record, config.eval_split), store)
    size = train_ds.size
    if progress:
        length = (f"{config.train.epochs} epochs" if config.train.epochs is not None
                  else f"{config.train.iterations} iterations")
        print(f"{label or key}: training {config.train.model}/{config.train.target} for "
              f"{length} at {size[0]}x{size[1]} on {device}")
    trained = train(config.train, train_ds, device=device, checkpoint_path=model_checkpoint(record, config, store),
                    progress=progress)
    seconds = trained.seconds
    result = predict(trained.model, trained.target, eval_ds, config, device, progress=progress)
    result.key, result.config, result.history, result.train_seconds = key, config.to_dict(), trained.history, seconds
    result.save(folder)
    return result


def _missing_split(rec: LandmarkDataset, name: str):
    raise ConfigError(f"{rec.name}: no split {name!r}; available: {', '.join(sorted(rec.splits))}")


def _crop(heatmaps: torch.Tensor, centre_ix: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, N, C, C)`` crops centred at integer pixel ``centre_ix`` ``(B, N, 2)`` ``(x, y)``, zero padded.

    Returns the crops and the ``(x, y)`` pixel of their top-left element.
    """
    b, n, h, w = heatmaps.shape
    r = size // 2
    cx = centre_ix[..., 0].clamp(0, w - 1)
    cy = centre_ix[..., 1].clamp(0, h - 1)
    padded = torch.nn.functional.pad(heatmaps, (r, r, r, r)).reshape(b * n, h + 2 * r, w + 2 * r)
    off = torch.arange(size, device=heatmaps.device)
    ys = (cy[..., None] + off).reshape(b * n, size, 1)  # padded row of original row cy - r + off
    xs = (cx[..., None] + off).reshape(b * n, 1, size)
    idx = torch.arange(b * n, device=heatmaps.device)[:, None, None]
    crops = padded[idx, ys, xs].reshape(b, n, size, size)
    return crops, torch.stack([cx, cy], -1) - r


def usable_fit(fit, argmax_xy: torch.Tensor, window: int):
    """Centre and covariance of a :class:`~lmkcore.analysis.fitting.GaussianFit`, where it is usable.

    A fit is usable when it converged, is finite, its centre stays within half a
    window of the heatmap maximum and its major sigma is below the window size.
    Elsewhere the centre falls back to ``argmax_xy`` and the covariance is NaN.

    Returns
    -------
    center : Tensor ``(B, N, 2)``; cov : Tensor ``(B, N, 2, 2)``; ok : Tensor ``(B, N)`` bool
    """
    finite = torch.isfinite(fit.center).all(-1) & torch.isfinite(fit.cov).flatten(-2).all(-1)
    ok = fit.converged & finite & (fit.sigma_major < window) & (fit.sigma_minor > 1e-3)
    ok &= torch.linalg.norm(torch.nan_to_num(fit.center) - argmax_xy, dim=-1) < window / 2
    center = torch.where(ok[..., None], fit.center, argmax_xy.to(fit.center.dtype))
    cov = torch.where(ok[..., None, None], fit.cov, torch.full_like(fit.cov, float("nan")))
    return center, cov, ok


def _cov_work_to_mm(cov_work: np.ndarray, work_spacing: np.ndarray) -> np.ndarray:
    s = work_spacing[:, None, :]  # (M, 1, 2)
    return cov_work * s[..., :, None] * s[..., None, :]


@torch.no_grad()
def predict(model: torch.nn.Module, target, ds: LandmarkImageDataset, config: ExperimentConfig, device: str,
            batch_size: int = 8, progress: bool = True) -> ExperimentResult:
    """Predict ``ds`` with ``model``: argmax, Sigma-hat fit, crops, optional MC dropout."""
    out: dict[str, list] = {k: [] for k in ("argmax", "peak", "center", "cov", "ok", "amp", "crops", "origin", "mc", "mc_c", "mc_cov")}
    batches = forward_batches(model, ds, device, batch_size, mc_samples=config.mc_samples)
    # Thaler Eq. 4 (amplitude tied to Sigma, the training targets' gamma); softmax outputs: the free-amplitude fit
    fit_kw = {"gamma": config.train.gamma} if config.train.loss == "heatmap" else FIT_PRESETS["free_soft_l1"]
    for batch in tqdm(batches, total=-(-len(ds) // batch_size), disable=not progress, desc="predict", leave=False):
        heat = batch.output.float()
        if config.train.loss != "heatmap":  # classification models: heatmaps are 2D-softmax probabilities
            heat = softmax_2d(heat)
        xy, peak = argmax_subpixel(heat)
        fit = fit_gaussians(heat, window=config.fit_window, **fit_kw)
        center, cov, ok = usable_fit(fit, xy, config.fit_window)
        crops, origin = _crop(heat, torch.round(xy).long(), config.crop_size)
        for k, v in (("argmax", xy), ("peak", peak), ("center", center), ("cov", cov), ("ok", ok),
                     ("amp", fit.amplitude), ("crops", crops.half()), ("origin", origin)):
            out[k].append(v.cpu().numpy())
        if batch.mc_outputs:
            passes = [h.float() for h in batch.mc_outputs]
            out["mc"].append(torch.stack([argmax_subpixel(h)[0] for h in passes], 1).cpu().numpy())
            mean_heat = torch.stack(passes).mean(0)
            mc_center, mc_cov, _ = usable_fit(fit_gaussians(mean_heat, window=config.fit_window, **fit_kw),
                                              argmax_subpixel(mean_heat)[0], config.fit_window)
            out["mc_c"].append(mc_center.cpu().numpy())
            out["mc_cov"].append(mc_cov.cpu().numpy())
    cat = {k: (np.concatenate(v) if v else None) for k, v in out.items()}
    rec = ds.record
    work_spacing = ds.spacing.astype(np.float64)
    learned = target.covariances().detach().double().cpu().numpy()
    med = np.median(work_spacing, axis=0)
    mc_points = None
    if cat["mc"] is not None:
        m, k, n, _ = cat["mc"].shape
        mc_points = ds.to_original(cat["mc"].transpose(0, 2, 1, 3).reshape(m, n * k, 2)).reshape(m, n, k, 2).transpose(0, 2, 1, 3)
    return ExperimentResult(
        key="", config={}, ids=list(rec.ids), landmark_names=list(rec.landmark_names), spacing=rec.spacing.astype(np.float64),
        reference_px=rec.landmarks.astype(np.float64),
        truth_px=rec.truth["landmarks"].astype(np.float64) if "landmarks" in rec.truth else None,
        pred_argmax_px=ds.to_original(cat["argmax"]), pred_fit_px=ds.to_original(cat["center"]),
        peak=cat["peak"], fit_cov_mm=_cov_work_to_mm(cat["cov"], work_spacing), fit_amplitude=cat["amp"], fit_ok=cat["ok"],
        learned_cov_mm=learned * med[:, None] * med[None, :], heatmap_crops=cat["crops"], crop_origin=cat["origin"],
        work_size=tuple(ds.size), work_spacing=work_spacing, mc_points_px=mc_points,
        mc_fit_px=ds.to_original(cat["mc_c"]) if cat["mc_c"] is not None else None,
        mc_fit_cov_mm=_cov_work_to_mm(cat["mc_cov"], work_spacing) if cat["mc_cov"] is not None else None,
    )
