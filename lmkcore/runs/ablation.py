"""Ablations of the SCN papers: component maxima (LA vs SC vs SCN) and reduced training sets.

Payer et al. (2019), Fig. 9: the maxima of the local-appearance heatmaps ``H^LA``, of the
spatial-configuration heatmaps ``H^SC`` and of their product ``H = H^LA * H^SC`` of one trained
SCN; Table 2: training on reduced sets. Coordinates ``(x, y)`` in pixels, errors in mm.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lmkcore.data.loader import LandmarkImageDataset, working_size
from lmkcore.analysis.decoding import argmax_subpixel
from lmkcore.errors import ConfigError
from lmkcore.runs.experiment import ExperimentConfig, model_key
from lmkcore.data.image_cache import resize_landmarks
from lmkcore.data.records import LandmarkDataset
from lmkcore.training.trainer import normalise_images, train


def reduced_training_splits(record: LandmarkDataset, base_split: str, sizes, seed: int = 0) -> dict[int, str]:
    """Add nested random subsets of ``base_split`` to ``record.splits`` (in place).

    The subset of ``n`` images is named ``"<base_split>/n<n>"``; smaller subsets are
    contained in larger ones (one permutation, fixed by ``seed``). Sizes not smaller
    than the split are skipped.

    Returns
    -------
    dict
        ``n -> split name`` for the sizes added.
    """
    if base_split not in record.splits:
        raise ConfigError(f"{record.name}: unknown split {base_split!r}")
    ids = list(record.splits[base_split])
    order = np.random.default_rng(seed).permutation(len(ids))
    out = {}
    for n in sorted(int(s) for s in sizes):
        if 0 < n < len(ids):
            name = f"{base_split}/n{n}"
            record.splits[name] = [ids[k] for k in sorted(order[:n])]
            out[n] = name
    return out


@torch.no_grad()
def component_predictions(record: LandmarkDataset, config: ExperimentConfig, cache_dir: str | Path,
                          device: str = "cpu", batch_size: int = 8) -> dict[str, np.ndarray]:
    """Argmax predictions of ``H^LA``, ``H^SC`` and ``H`` of a trained SCN, in original pixels.

    The model must already be trained and cached (run the experiment first, e.g. with
    ``ctx.experiment``); its checkpoint is loaded from ``<cache_dir>/models/<model key>``.

    Returns
    -------
    dict
        ``"LA"``, ``"SC"``, ``"SCN"``: ``(M, N, 2)`` predictions (px) over ``config.eval_split``,
        plus ``"ids"`` (list) and ``"target"`` ``(M, N, 2)`` px and ``"spacing"`` ``(M, 2)`` mm/px.
    """
    if config.train.model != "scn":
        raise ConfigError(f"component maxima need an SCN model, got {config.train.model!r}")
    checkpoint = Path(cache_dir) / "models" / model_key(config, record) / "checkpoint.pt"
    if not checkpoint.is_file():
        raise ConfigError(f"{checkpoint}: no trained model; run the experiment first")
    rec = record.with_target(config.target)
    size = working_size(rec, config.input_width)
    images_dir = Path(cache_dir) / "images"
    train_ds = LandmarkImageDataset(rec, rec.splits[config.train_split], size=size, cache_dir=images_dir)
    trained = train(config.train, train_ds, device=device, checkpoint_path=checkpoint, progress=False)
    model = trained.model.to(device).eval()
    ds = LandmarkImageDataset(rec, rec.splits[config.eval_split], size=size, cache_dir=images_dir)
    parts: dict[str, list] = {"SCN": [], "LA": [], "SC": []}
    for start in range(0, len(ds), batch_size):
        items = [ds[i] for i in range(start, min(start + batch_size, len(ds)))]
        images = normalise_images(torch.stack([b["image"] for b in items]).to(device))
        out, la, sc = model(images, return_components=True)
        for key, h in (("SCN", out), ("LA", la), ("SC", sc)):
            parts[key].append(argmax_subpixel(h.float())[0].cpu().numpy())
    result: dict = {}
    for key, v in parts.items():
        work = np.concatenate(v)
        result[key] = np.stack([resize_landmarks(p, ds.size, s) for p, s in zip(work, ds.record.image_size)])
    result["ids"] = list(ds.record.ids)
    result["target"] = ds.record.landmarks
    result["spacing"] = ds.record.spacing
    return result


def point_errors_mm(pred_px, target_px, spacing) -> np.ndarray:
    """``(M, N)`` Euclidean errors in mm of ``(M, N, 2)`` px predictions (``spacing`` ``(M, 2)`` mm/px)."""
    return np.linalg.norm((np.asarray(pred_px) - np.asarray(target_px)) * np.asarray(spacing)[:, None, :], axis=-1)
