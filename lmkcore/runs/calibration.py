"""Temperature scaling and ERE of a trained classification-heatmap experiment (McCouat & Voiculescu 2022).

The experiment cache (:mod:`lmkcore.runs.experiment`) keeps only 31x31 crops of every heatmap; temperature
scaling and the Expected Radial Error need the full 2D-softmax maps. :func:`evaluate_calibration`
reloads the cached checkpoint of an experiment, computes the logits of a held-out **calibration
split** the model was not trained on and fits one temperature per landmark there, then evaluates the
eval split before and after scaling. Two procedures (:func:`temperature_plan` picks one):

* McCouat & Voiculescu's code (``temperature_scaling.py``): the first half of Test1 (ISBI ids 151-225)
  fits the temperatures by Adam, the second half (226-300) selects the epoch with the lowest ECE
  (:func:`lmkcore.analysis.calibration.fit_temperature_best_ece`); the model trains on all training images.
* without a Test1 split: the last ``fraction`` of the training ids (:func:`with_calibration_split`;
  train the model on ``"<split>/fit"``), NLL fit by L-BFGS (:func:`lmkcore.analysis.calibration.fit_temperature`).

The small per-landmark result is cached next to the experiment (atomic ``.npz``).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmkcore.analysis.calibration import expected_radial_error, fit_temperature, fit_temperature_best_ece
from lmkcore.training.losses import nll_per_landmark, pixel_index, softmax_2d
from lmkcore.data.loader import LandmarkImageDataset
from lmkcore.data.records import LandmarkDataset
from lmkcore.errors import ConfigError, DataError
from lmkcore.runs.experiment import ExperimentConfig, ExperimentResult, experiment_dataset, load_model, result_folder
from lmkcore.runs.store import forward_batches, read_arrays, write_arrays

__all__ = ["with_calibration_split", "TemperaturePlan", "temperature_plan", "CalibrationEvaluation", "evaluate_calibration", "load_network",
           "probability_maps", "cached_calibration", "with_calibration"]

CALIB_VERSION = 1


@dataclass(frozen=True)
class TemperaturePlan:
    """Where a softmax model trains and where its temperatures are fitted (:func:`temperature_plan`).

    Attributes
    ----------
    record : LandmarkDataset
        The record with the splits named below added.
    train_split : str
        What the model trains on.
    fit_split : str
        Where the temperatures are fitted.
    select_split : str or None
        Where the lowest-ECE epoch is selected (authors' procedure), None for the NLL fit.
    description : str
        One sentence for the notebook.
    """

    record: LandmarkDataset
    train_split: str
    fit_split: str
    select_split: str | None
    description: str


def temperature_plan(record: LandmarkDataset, train_split: str = "train", source: str = "test1",
                     fraction: float = 0.2) -> TemperaturePlan:
    """The paper's temperature data where the record allows it, else held-out training images.

    With a split ``source`` (Test1) of at least 2 ids: its first half (``"<source>/fit"``; ISBI ids
    151-225) fits and its second half (``"<source>/select"``; 226-300) selects, as McCouat & Voiculescu's
    ``temperature_scaling.py``; the model trains on all of ``train_split``. Otherwise the last ``fraction``
    of ``train_split`` is held out (:func:`with_calibration_split`) and the model trains on the rest.
    """
    ids = list(record.splits.get(source, []))
    if len(ids) >= 2:
        k = len(ids) // 2
        rec = record.with_splits({f"{source}/fit": ids[:k], f"{source}/select": ids[k:]})
        return TemperaturePlan(rec, train_split, f"{source}/fit", f"{source}/select",
                               f"McCouat & Voiculescu's procedure: the U-Nets train on all of {train_split!r} "
                               f"({len(record.splits[train_split])} images); temperatures are fitted by Adam on the "
                               f"first half of {source!r} ({k} images: {ids[0]}..{ids[k - 1]}) and the epoch with "
                               f"the lowest ECE (authors' code definition) on the second half ({len(ids) - k}: "
                               f"{ids[k]}..{ids[-1]}) is kept")
    rec = with_calibration_split(record, source=train_split, fraction=fraction)
    fit, calib = f"{train_split}/fit", f"{train_split}/calib"
    return TemperaturePlan(rec, fit, calib, None,
                           f"no {source!r} split: the U-Nets train on {fit!r} ({len(rec.splits[fit])} images, the "
                           f"first {100 * (1 - fraction):.0f} % of {train_split!r}); temperatures minimise the NLL "
                           f"(L-BFGS) on the held-out {calib!r} ({len(rec.splits[calib])} images)")


def with_calibration_split(record: LandmarkDataset, source: str = "train", fraction: float = 0.2) -> LandmarkDataset:
    """``record`` with two more splits: ``"<source>/fit"`` (the first ``1 - fraction`` of ``source``'s
    ids, to train on) and ``"<source>/calib"`` (the last ``fraction``, held out for temperature
    scaling). Ids keep the record's order, so the split is deterministic."""
    if source not in record.splits:
        raise ConfigError(f"{record.name}: no split {source!r} to take a calibration split from")
    if not 0 < fraction < 1:
        raise ConfigError(f"calibration fraction must be in (0, 1), got {fraction!r}")
    ids = list(record.splits[source])
    k = max(1, int(round(fraction * len(ids))))
    if k >= len(ids):
        raise ConfigError(f"{record.name}: split {source!r} has {len(ids)} ids, too few for a calibration split")
    return record.with_splits({f"{source}/fit": ids[:-k], f"{source}/calib": ids[-k:]})


@dataclass
class CalibrationEvaluation:
    """Uncalibrated (T = 1) and temperature-scaled evaluation of a softmax-heatmap model.

    ``M`` eval images, ``N`` landmarks. Distances in mm, confidences are probabilities.

    Attributes
    ----------
    ids : list of str
        Eval ids (the result's order).
    temperature : ndarray ``(N,)``
        Fitted per-landmark temperatures.
    calib_nll, calib_nll_ts : ndarray ``(N,)``
        Mean NLL per landmark on the calibration split before / after scaling.
    eval_nll, eval_nll_ts : ndarray ``(N,)``
        The same on the eval split.
    ere_mm, ere_ts_mm : ndarray ``(M, N)``
        Expected Radial Error before / after scaling.
    confidence, confidence_ts : ndarray ``(M, N)``
        Probability at the hottest pixel.
    correct : ndarray ``(M, N)`` bool
        Hottest pixel == nearest pixel of the target annotation (working grid).
    argmax_px : ndarray ``(M, N, 2)``
        Hottest pixel in original-image px (identical before and after scaling).
    argmax_unchanged : bool
        Checked: every hottest pixel is the same before and after scaling.
    """

    ids: list
    temperature: np.ndarray
    calib_nll: np.ndarray
    calib_nll_ts: np.ndarray
    eval_nll: np.ndarray
    eval_nll_ts: np.ndarray
    ere_mm: np.ndarray
    ere_ts_mm: np.ndarray
    confidence: np.ndarray
    confidence_ts: np.ndarray
    correct: np.ndarray
    argmax_px: np.ndarray
    argmax_unchanged: bool

    def save(self, path: Path) -> None:
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in fields(self) if f.name != "ids"}
        write_arrays(path, {"ids": np.asarray(self.ids, dtype=str), **arrays})

    @classmethod
    def load(cls, path: Path) -> "CalibrationEvaluation":
        d = read_arrays(path)
        d["ids"] = [str(i) for i in d["ids"]]
        d["argmax_unchanged"] = bool(d["argmax_unchanged"])
        return cls(**d)


def load_network(record: LandmarkDataset, result: ExperimentResult, cache_dir: str | Path, device: str = "cpu"
                 ) -> torch.nn.Module:
    """The trained network of a cached experiment on ``record`` (eval mode, on ``device``; never trains)."""
    return load_model(record, ExperimentConfig.from_dict(result.config), cache_dir, device)[0]


def _dataset(record: LandmarkDataset, result: ExperimentResult, split_ids: list, cache_dir) -> LandmarkImageDataset:
    return experiment_dataset(record, ExperimentConfig.from_dict(result.config), list(split_ids), cache_dir)


def _logits(model, ds: LandmarkImageDataset, device: str, batch_size: int = 8):
    for batch in forward_batches(model, ds, device, batch_size):
        yield batch.output.float().cpu(), batch.items["landmarks"]


def _calibration_path(result: ExperimentResult, calib_ids: list, threshold: float, cache_dir,
                      select_ids: list | None = None) -> Path:
    key = {"calib": list(calib_ids), "thr": threshold, "v": CALIB_VERSION}
    if select_ids is not None:
        key["select"] = list(select_ids)
    tag = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:10]
    return result_folder(cache_dir, result.key) / f"calibration_{tag}.npz"


def cached_calibration(result: ExperimentResult, cache_dir: str | Path) -> dict[str, Any] | None:
    """The arrays of the newest cached temperature-scaling evaluation of ``result`` (any calibration split):
    ``ids`` (list) and the :class:`CalibrationEvaluation` fields it holds (``ere_mm``, ``ere_ts_mm``,
    ``confidence``...); None when there is none or it is unreadable (e.g. being rewritten)."""
    files = sorted(result_folder(cache_dir, result.key).glob("calibration_*.npz"), key=lambda p: p.stat().st_mtime)
    if not files:
        return None
    try:
        arrays = read_arrays(files[-1])
    except (OSError, ValueError, KeyError, DataError):  # DataError: fails its checksum (lmkcore.data.integrity)
        return None
    if "ids" not in arrays:
        return None
    arrays["ids"] = [str(i) for i in arrays["ids"]]
    return arrays


def with_calibration(result: ExperimentResult, evaluation: "CalibrationEvaluation | dict | None") -> ExperimentResult:
    """A copy of ``result`` with the evaluation's ERE (before / after scaling), softmax confidence and hottest
    pixel in its typed fields ``ere_mm``, ``ere_ts_mm``, ``softmax_confidence``, ``hottest_px``, aligned to
    the result's ids.

    ``evaluation``: a :class:`CalibrationEvaluation` or the dict of :func:`cached_calibration` (fields it
    lacks stay None). ``result`` itself is returned when it is None or does not cover every id.
    """
    if evaluation is None:
        return result
    ev = evaluation if isinstance(evaluation, dict) else {f.name: getattr(evaluation, f.name) for f in fields(evaluation)}
    pos = {i: k for k, i in enumerate(ev["ids"])}
    if not all(i in pos for i in result.ids):
        return result
    rows = np.array([pos[i] for i in result.ids])
    take = {name: (np.asarray(ev[key], dtype=np.float64)[rows] if key in ev else None)
            for name, key in (("ere_mm", "ere_mm"), ("ere_ts_mm", "ere_ts_mm"), ("softmax_confidence", "confidence"),
                              ("hottest_px", "argmax_px"))}
    return replace(result, **take)


def evaluate_calibration(record: LandmarkDataset, result: ExperimentResult, cache_dir: str | Path,
                         calib_split: str = "train/calib", device: str = "cpu", batch_size: int = 8,
                         threshold: float = 0.05, select_split: str | None = None) -> CalibrationEvaluation:
    """Fit per-landmark temperatures on ``calib_split`` and evaluate ``result``'s eval ids (cached).

    Without ``select_split``: the NLL on ``calib_split`` is minimised (:func:`fit_temperature`). With it:
    McCouat & Voiculescu's code, Adam on ``calib_split`` keeping the epoch with the lowest ECE on
    ``select_split`` (:func:`fit_temperature_best_ece`, authors' code definition); see :func:`temperature_plan`.

    Parameters
    ----------
    record : LandmarkDataset
        Must hold ``calib_split`` (see :func:`with_calibration_split`) and the eval ids.
    result : ExperimentResult
        A cached experiment of a softmax model (``loss`` ``"onehot_nll"`` or ``"gaussian_nll"``).
    threshold : float
        ERE pre-processing threshold (paper: 5 % of the maximum).
    """
    if result.config["train"].get("loss", "heatmap") == "heatmap":
        raise ConfigError(f"experiment {result.key} regresses heatmaps; temperature scaling needs a softmax model "
                          "(TrainConfig.loss 'onehot_nll' or 'gaussian_nll')")
    if calib_split not in record.splits:
        raise ConfigError(f"{record.name}: no calibration split {calib_split!r}; use with_calibration_split()")
    calib_ids = list(record.splits[calib_split])
    trained_on = set(record.splits.get(result.config["train_split"], []))
    if set(calib_ids) & trained_on:
        raise ConfigError(f"calibration split {calib_split!r} overlaps the training split {result.config['train_split']!r}")
    select_ids = None
    if select_split is not None:
        if select_split not in record.splits:
            raise ConfigError(f"{record.name}: no selection split {select_split!r}; use temperature_plan()")
        select_ids = list(record.splits[select_split])
        if set(select_ids) & trained_on:
            raise ConfigError(f"selection split {select_split!r} overlaps the training split {result.config['train_split']!r}")
    path = _calibration_path(result, calib_ids, threshold, cache_dir, select_ids)
    if path.is_file():
        return CalibrationEvaluation.load(path)
    model = load_network(record, result, cache_dir, device)

    calib_ds = _dataset(record, result, calib_ids, cache_dir)
    logits, lms = zip(*_logits(model, calib_ds, device, batch_size))
    logits, lms = torch.cat(logits), torch.cat(lms)
    if select_ids is None:
        temperature = fit_temperature(logits, lms)
    else:
        sel_ds = _dataset(record, result, select_ids, cache_dir)
        sel_logits, sel_lms = zip(*_logits(model, sel_ds, device, batch_size))
        temperature, _ = fit_temperature_best_ece(logits, lms, torch.cat(sel_logits), torch.cat(sel_lms),
                                                  sel_ds.spacing.astype(np.float64))
        del sel_logits
    _, valid = pixel_index(lms, calib_ds.size)
    count = valid.sum(0).clamp_min(1).double()
    calib_nll = (nll_per_landmark(logits.double(), lms)[0].sum(0) / count).numpy()
    calib_nll_ts = (nll_per_landmark(logits.double(), lms, temperature)[0].sum(0) / count).numpy()
    del logits

    eval_ds = _dataset(record, result, result.ids, cache_dir)
    out: dict[str, list] = {k: [] for k in ("ere", "ere_ts", "conf", "conf_ts", "correct", "argmax", "nll", "nll_ts", "valid")}
    unchanged = True
    start = 0
    for logit, lm in _logits(model, eval_ds, device, batch_size):
        sp = eval_ds.spacing[start: start + len(logit)]
        start += len(logit)
        p, p_ts = softmax_2d(logit.double()), softmax_2d(logit.double(), temperature)
        ere, am = expected_radial_error(p, sp, threshold)
        ere_ts, am_ts = expected_radial_error(p_ts, sp, threshold)
        unchanged &= bool(torch.equal(am, am_ts))
        idx, val = pixel_index(lm, eval_ds.size)
        w = eval_ds.size[0]
        flat_am = am[..., 1] * w + am[..., 0]
        nll, _ = nll_per_landmark(logit.double(), lm)
        nll_ts, _ = nll_per_landmark(logit.double(), lm, temperature)
        for k, v in (("ere", ere), ("ere_ts", ere_ts), ("conf", p.flatten(2).amax(-1)), ("conf_ts", p_ts.flatten(2).amax(-1)),
                     ("correct", (flat_am == idx) & val), ("argmax", am), ("nll", nll), ("nll_ts", nll_ts), ("valid", val)):
            out[k].append(v.numpy())
    cat = {k: np.concatenate(v) for k, v in out.items()}
    vcount = np.maximum(cat["valid"].sum(0), 1)
    am_orig = eval_ds.to_original(cat["argmax"].astype(np.float64))  # through the (padded) frame
    ev = CalibrationEvaluation(
        ids=list(result.ids), temperature=temperature.numpy(), calib_nll=calib_nll, calib_nll_ts=calib_nll_ts,
        eval_nll=cat["nll"].sum(0) / vcount, eval_nll_ts=cat["nll_ts"].sum(0) / vcount,
        ere_mm=cat["ere"], ere_ts_mm=cat["ere_ts"], confidence=cat["conf"], confidence_ts=cat["conf_ts"],
        correct=cat["correct"], argmax_px=am_orig, argmax_unchanged=unchanged)
    ev.save(path)
    return ev


@torch.no_grad()
def probability_maps(record: LandmarkDataset, result: ExperimentResult, cache_dir: str | Path, ids: list,
                     temperature: np.ndarray | None = None, device: str = "cpu") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full 2D-softmax maps of some eval images, for figures.

    Returns
    -------
    probs : ndarray ``(K, N, H, W)`` float32 (working grid, temperature-scaled if given)
    images : ndarray ``(K, H, W)`` grey values in [0, 1]
    spacing : ndarray ``(K, 2)`` mm per working px
    """
    model = load_network(record, result, cache_dir, device)
    ds = _dataset(record, result, ids, cache_dir)
    maps = []
    for logit, _ in _logits(model, ds, device):
        t = None if temperature is None else torch.as_tensor(temperature, dtype=torch.float64)
        maps.append(softmax_2d(logit.double(), t).float().numpy())
    images = np.stack([ds[i]["image"][0].numpy() for i in range(len(ds))])
    return np.concatenate(maps), images, ds.spacing.astype(np.float64)
