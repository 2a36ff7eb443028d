"""Ablations of the SCN papers: component maxima (LA vs SC vs SCN) and reduced training sets.

Payer et al. (2019), Fig. 9: the maxima of the local-appearance heatmaps ``H^LA``, of the
spatial-configuration heatmaps ``H^SC`` and of their product ``H = H^LA * H^SC`` of one trained
SCN; Table 2: training on reduced sets. Coordinates ``(x, y)`` in pixels, errors in mm.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lmkcore.analysis.decoding import argmax_subpixel
from lmkcore.analysis.metrics import point_errors
from lmkcore.data.records import LandmarkDataset
from lmkcore.errors import ConfigError
from lmkcore.runs.experiment import ExperimentConfig, experiment_dataset, load_model, split_ids
from lmkcore.runs.store import forward_batches


def reduced_training_splits(record: LandmarkDataset, base_split: str, sizes, seed: int = 0
                            ) -> tuple[LandmarkDataset, dict[int, str]]:
    """A new record with nested random subsets of ``base_split`` as more splits (``record`` is not changed).

    The subset of ``n`` images is named ``"<base_split>/n<n>"``; smaller subsets are
    contained in larger ones (one permutation, fixed by ``seed``). Sizes not smaller
    than the split are skipped.

    Returns
    -------
    record : LandmarkDataset
        ``record`` with the added splits.
    names : dict
        ``n -> split name`` for the sizes added.
    """
    if base_split not in record.splits:
        raise ConfigError(f"{record.name}: unknown split {base_split!r}")
    ids = list(record.splits[base_split])
    order = np.random.default_rng(seed).permutation(len(ids))
    out, splits = {}, {}
    for n in sorted(int(s) for s in sizes):
        if 0 < n < len(ids):
            name = f"{base_split}/n{n}"
            splits[name] = [ids[k] for k in sorted(order[:n])]
            out[n] = name
    return record.with_splits(splits), out


def component_predictions(record: LandmarkDataset, config: ExperimentConfig, cache_dir: str | Path,
                          device: str = "cpu", batch_size: int = 8) -> dict[str, np.ndarray]:
    """Argmax predictions of ``H^LA``, ``H^SC`` and ``H`` of a trained SCN, in original pixels.

    The model must already be trained and cached (run the experiment first, e.g. with
    ``ctx.experiment``); it is loaded from the run store without training code.

    Returns
    -------
    dict
        ``"LA"``, ``"SC"``, ``"SCN"``: ``(M, N, 2)`` predictions (px) over ``config.eval_split``,
        plus ``"ids"`` (list), ``"reference"`` ``(M, N, 2)`` px and ``"spacing"`` ``(M, 2)`` mm/px.
    """
    if config.train.model != "scn":
        raise ConfigError(f"component maxima need an SCN model, got {config.train.model!r}")
    model, _ = load_model(record, config, cache_dir, device)
    ds = experiment_dataset(record, config, split_ids(record, config.eval_split), cache_dir)
    parts: dict[str, list] = {"SCN": [], "LA": [], "SC": []}
    for batch in forward_batches(model, ds, device, batch_size, return_components=True):
        out, la, sc = batch.output
        for key, h in (("SCN", out), ("LA", la), ("SC", sc)):
            parts[key].append(argmax_subpixel(h.float())[0].cpu().numpy())
    result: dict = {}
    for key, v in parts.items():
        work = np.concatenate(v)
        result[key] = ds.to_original(work)
    result["ids"] = list(ds.record.ids)
    result["reference"] = ds.record.landmarks
    result["spacing"] = ds.record.spacing
    return result


def point_errors_mm(pred_px, reference_px, spacing) -> np.ndarray:
    """``(M, N)`` errors in mm of ``(M, N, 2)`` px predictions (``spacing`` ``(M, 2)`` mm/px); NaN where
    either point is missing (:func:`lmkcore.analysis.metrics.point_errors`)."""
    return point_errors(pred_px, reference_px, spacing, missing_prediction="ignore")
