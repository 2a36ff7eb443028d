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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lmkcore.training.losses import softmax_2d
from lmkcore.data.loader import LandmarkImageDataset, working_size
from lmkcore.analysis.decoding import argmax_subpixel
from lmkcore.errors import ConfigError
from lmkcore.analysis.fitting import fit_gaussians
from lmkcore.data.formats import atomic_write_bytes, atomic_write_text
from lmkcore.data.image_cache import resize_landmarks
from lmkcore.models.common import enable_mc_dropout
from lmkcore.data.records import LandmarkDataset, row_indices
from lmkcore.training.trainer import TrainConfig, normalise_images, train

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
    train_split, eval_split : str
        Record splits to train on and to predict (e.g. ``"train"``, ``"test_all"``,
        ``"cv1/train"``, ``"cv1/val"``).
    target : str
        Annotation set used as training target (``"senior"``, ``"junior"``, ``"mean"``...).
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
    train_split: str = "train"
    eval_split: str = "test_all"
    target: str = "senior"
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
        if not isinstance(self.mc_samples, int) or self.mc_samples < 0:
            raise ConfigError(f"ExperimentConfig.mc_samples must be an integer >= 0, got {self.mc_samples!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["train"] = self.train.to_dict()
        return d


def data_fingerprint(record: LandmarkDataset) -> str:
    """Hash of what a model sees: ids, all annotations, image file names and sizes."""
    h = hashlib.sha256()
    h.update(record.name.encode())
    h.update("\n".join(record.ids).encode())
    for key in sorted(record.annotations):
        h.update(key.encode())
        h.update(np.ascontiguousarray(record.annotations[key], dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(record.spacing, dtype=np.float64).tobytes())
    for p in record.image_paths:
        p = Path(p)
        h.update(f"{p.name}:{p.stat().st_size if p.exists() else -1}".encode())
    return h.hexdigest()


def experiment_key(config: ExperimentConfig, record: LandmarkDataset) -> str:
    """Key of a result: the whole config, the data and :data:`RESULT_VERSION`."""
    blob = json.dumps({"config": config.to_dict(), "data": data_fingerprint(record), "v": RESULT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def model_key(config: ExperimentConfig, record: LandmarkDataset) -> str:
    """Key of a trained model: only what training sees (train config, split, target, input
    size, data), so experiments that differ in prediction settings share one model."""
    blob = json.dumps({"train": config.train.to_dict(), "split": config.train_split, "target": config.target,
                       "input_width": config.input_width, "data": data_fingerprint(record)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class ExperimentResult:
    """Cached predictions and uncertainties of one experiment (arrays over the eval split).

    Coordinates are in pixels of the *original* images, ``(x, y)``; covariances
    in mm^2. ``M`` eval images, ``N`` landmarks, ``K`` MC-dropout passes.

    Attributes
    ----------
    ids : list of str
        ``M`` image ids of the eval split.
    landmark_names : list of str
    spacing : ndarray
        ``(M, 2)`` mm per original pixel.
    target_px : ndarray
        ``(M, N, 2)`` ground-truth annotation (the record's target).
    truth_px : ndarray or None
        ``(M, N, 2)`` true positions (synthetic data only).
    pred_argmax_px, pred_fit_px : ndarray
        ``(M, N, 2)`` predictions: heatmap maximum (sub-pixel refined) and
        fitted Gaussian centre.
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
        ``(M, N, 2)`` and ``(M, N, 2, 2)``: fit to the mean MC heatmap.
    history : list of dict
        Training log (loss and learned target parameters over iterations).
    """

    key: str
    config: dict
    ids: list
    landmark_names: list
    spacing: np.ndarray
    target_px: np.ndarray
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

    _ARRAYS = ("spacing", "target_px", "truth_px", "pred_argmax_px", "pred_fit_px", "peak", "fit_cov_mm",
               "fit_amplitude", "fit_ok", "learned_cov_mm", "heatmap_crops", "crop_origin", "work_spacing",
               "mc_points_px", "mc_fit_px", "mc_fit_cov_mm")

    def rows(self, ids: list[str] | None) -> np.ndarray:
        """Row indices of ``ids`` (all rows if None); ids not in this result are ignored."""
        return row_indices(self.ids, ids)

    def errors_mm(self, prediction: str = "fit", against: str = "target", ids: list[str] | None = None) -> np.ndarray:
        """``(M, N)`` point errors in mm of ``prediction`` (``"fit"``, ``"argmax"`` or
        ``"mcd"``: the fit to the mean MC-dropout heatmap) against ``"target"``
        (the annotation) or ``"truth"`` (synthetic), for ``ids`` (default all)."""
        preds = {"fit": self.pred_fit_px, "argmax": self.pred_argmax_px, "mcd": self.mc_fit_px}
        if prediction not in preds or preds[prediction] is None:
            raise ConfigError(f"no prediction {prediction!r} in this result")
        ref = {"target": self.target_px, "truth": self.truth_px}[against]
        if ref is None:
            raise ConfigError("no known truth in this result (only synthetic data has one)")
        r = self.rows(ids)
        return np.linalg.norm((preds[prediction][r] - ref[r]) * self.spacing[r, None, :], axis=-1)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        arrays = {k: getattr(self, k) for k in self._ARRAYS if getattr(self, k) is not None}
        import io

        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(folder / "result.npz", buf.getvalue())
        meta = {k: getattr(self, k) for k in ("key", "config", "ids", "landmark_names", "history", "train_seconds")}
        meta["work_size"] = list(self.work_size)
        atomic_write_text(folder / "result.json", json.dumps(meta))

    @classmethod
    def load(cls, folder: str | Path) -> "ExperimentResult":
        folder = Path(folder)
        meta = json.loads((folder / "result.json").read_text())
        with np.load(folder / "result.npz") as z:
            arrays = {k: (z[k] if k in z.files else None) for k in cls._ARRAYS}
        meta["work_size"] = tuple(meta["work_size"])
        if arrays["fit_ok"] is None:  # results written before fit_ok existed
            arrays["fit_ok"] = np.isfinite(arrays["fit_cov_mm"]).all(axis=(-2, -1))
        return cls(**meta, **arrays)


def result_folder(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / "experiments" / key


def load_cached(record: LandmarkDataset, config: ExperimentConfig, cache_dir: str | Path) -> ExperimentResult | None:
    """The cached result of ``config`` on ``record``, or None if not computed yet."""
    folder = result_folder(cache_dir, experiment_key(config, record))
    if (folder / "result.json").is_file() and (folder / "result.npz").is_file():
        return ExperimentResult.load(folder)
    return None


def run_experiment(record: LandmarkDataset, config: ExperimentConfig, cache_dir: str | Path,
                   device: str = "cpu", progress: bool = True, label: str = "") -> ExperimentResult:
    """Train (resuming any checkpoint), predict and cache; return the cached result if present."""
    key = experiment_key(config, record)
    folder = result_folder(cache_dir, key)
    cached = load_cached(record, config, cache_dir)
    if cached is not None:
        if progress:
            print(f"{label or key}: cached result {folder}")
        return cached
    rec = record.with_target(config.target)
    size = working_size(rec, config.input_width)
    train_ds = LandmarkImageDataset(rec, rec.splits[config.train_split] if config.train_split in rec.splits
                                    else _missing_split(rec, config.train_split), size=size,
                                    cache_dir=Path(cache_dir) / "images")
    eval_ids = rec.splits[config.eval_split] if config.eval_split in rec.splits else _missing_split(rec, config.eval_split)
    eval_ds = LandmarkImageDataset(rec, eval_ids, size=size, cache_dir=Path(cache_dir) / "images")
    if progress:
        print(f"{label or key}: training {config.train.model}/{config.train.target} for "
              f"{config.train.iterations} iterations at {size[0]}x{size[1]} on {device}")
    checkpoint = Path(cache_dir) / "models" / model_key(config, record) / "checkpoint.pt"
    trained = train(config.train, train_ds, device=device, checkpoint_path=checkpoint, progress=progress)
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


def _to_original(points_work: np.ndarray, ds: LandmarkImageDataset) -> np.ndarray:
    return np.stack([resize_landmarks(p, ds.size, s) for p, s in zip(points_work, ds.record.image_size)])


def _cov_work_to_mm(cov_work: np.ndarray, work_spacing: np.ndarray) -> np.ndarray:
    s = work_spacing[:, None, :]  # (M, 1, 2)
    return cov_work * s[..., :, None] * s[..., None, :]


@torch.no_grad()
def predict(model: torch.nn.Module, target, ds: LandmarkImageDataset, config: ExperimentConfig, device: str,
            batch_size: int = 8, progress: bool = True) -> ExperimentResult:
    """Predict ``ds`` with ``model``: argmax, Sigma-hat fit, crops, optional MC dropout."""
    model.eval()
    out: dict[str, list] = {k: [] for k in ("argmax", "peak", "center", "cov", "ok", "amp", "crops", "origin", "mc", "mc_c", "mc_cov")}
    batches = range(0, len(ds), batch_size)
    for start in tqdm(batches, disable=not progress, desc="predict", leave=False):
        items = [ds[i] for i in range(start, min(start + batch_size, len(ds)))]
        images = normalise_images(torch.stack([b["image"] for b in items]).to(device))
        heat = model(images).float()
        if config.train.loss != "heatmap":  # classification models: heatmaps are 2D-softmax probabilities
            heat = softmax_2d(heat)
        xy, peak = argmax_subpixel(heat)
        fit = fit_gaussians(heat, window=config.fit_window)
        center, cov, ok = usable_fit(fit, xy, config.fit_window)
        crops, origin = _crop(heat, torch.round(xy).long(), config.crop_size)
        for k, v in (("argmax", xy), ("peak", peak), ("center", center), ("cov", cov), ("ok", ok),
                     ("amp", fit.amplitude), ("crops", crops.half()), ("origin", origin)):
            out[k].append(v.cpu().numpy())
        if config.mc_samples:
            enable_mc_dropout(model)
            passes = [model(images).float() for _ in range(config.mc_samples)]
            model.eval()
            out["mc"].append(torch.stack([argmax_subpixel(h)[0] for h in passes], 1).cpu().numpy())
            mean_heat = torch.stack(passes).mean(0)
            mc_center, mc_cov, _ = usable_fit(fit_gaussians(mean_heat, window=config.fit_window),
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
        mc_points = _to_original(cat["mc"].transpose(0, 2, 1, 3).reshape(m, n * k, 2), ds).reshape(m, n, k, 2).transpose(0, 2, 1, 3)
    return ExperimentResult(
        key="", config={}, ids=list(rec.ids), landmark_names=list(rec.landmark_names), spacing=rec.spacing.astype(np.float64),
        target_px=rec.landmarks.astype(np.float64),
        truth_px=rec.truth["landmarks"].astype(np.float64) if "landmarks" in rec.truth else None,
        pred_argmax_px=_to_original(cat["argmax"], ds), pred_fit_px=_to_original(cat["center"], ds),
        peak=cat["peak"], fit_cov_mm=_cov_work_to_mm(cat["cov"], work_spacing), fit_amplitude=cat["amp"], fit_ok=cat["ok"],
        learned_cov_mm=learned * med[:, None] * med[None, :], heatmap_crops=cat["crops"], crop_origin=cat["origin"],
        work_size=tuple(ds.size), work_spacing=work_spacing, mc_points_px=mc_points,
        mc_fit_px=_to_original(cat["mc_c"], ds) if cat["mc_c"] is not None else None,
        mc_fit_cov_mm=_cov_work_to_mm(cat["mc_cov"], work_spacing) if cat["mc_cov"] is not None else None,
    )
