"""3D vertebra localisation runs (Payer et al. 2019, Sec. 4.2, Table 5): profiles, cached runs, tables.

:func:`run_spine` trains the 3D SCN or U-Net of a profile on the training split of a 3D dataset
(the synthetic spine of :mod:`lmkcore.synthetic.spine` or a user's ``folder`` dataset), predicts the
test split by sliding windows along z, and caches model and predictions under
``<cache>/spine/<key>/`` (``model.pt``, and ``result.npz`` + ``result.json`` through the run store's
:func:`~lmkcore.runs.store.write_result`; the folder is built atomically; the key hashes the run config and
the data). :func:`table5` gives Payer's Table 5 columns:
PE_all mean and SD (mm) and the identification rate of Glocker et al. (2013) (20 mm rule,
:func:`lmkcore.analysis.metrics.identification_rate`) with ``#ID / n``.

Profiles (:data:`SPINE_PROFILES`):

``smoke``  a few scans at 12 mm, a tiny network, a few iterations (seconds; for the tests).
``quick``  120 scans of the synthetic spine (96 train / 24 test, from the paper's lists) at 8 mm; window
           16 x 16 x 32 voxels = 128 x 128 x 256 mm (the paper's: 192 x 192 x 384 mm), 8 filters, Adam, batch 1,
           500 iterations; both networks in a few minutes on 2 CPU cores.
``paper``  96 x 96 x 192 voxels at 2 mm, 64 filters, Nesterov (momentum 0.99, lr 1e-6 as the text;
           the authors' code uses 5e-8), batch 1, 40,000 iterations, gamma = alpha = 1000, lambda 5e-4,
           SC at 1/4 with 7 x 7 x 7 kernels, z windows overlapping by 96 voxels (text; code: 128).
"""
from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lmkcore.analysis import metrics
from lmkcore.analysis.decoding3d import argmax_subpixel_3d
from lmkcore.data.formats import atomic_directory, atomic_write_bytes
from lmkcore.data.records import LandmarkDataset
from lmkcore.data.volumes import VolumeSet
from lmkcore.errors import ConfigError
from lmkcore.runs.store import RunStore, has_result, read_result, write_result
from lmkcore.training.volume3d import Train3DConfig, build_network_3d, predict_sliding_z, train_3d

__all__ = ["SpineProfile", "SPINE_PROFILES", "get_spine_profile", "SpineResult", "run_spine", "spine_splits",
           "spine_record", "mip_figure", "PAYER_TABLE5", "load_spine_model", "run_key",
           "table5", "per_vertebra_table", "RESULT_VERSION"]

#: Bump when the stored results change for the same key.
RESULT_VERSION = 2  # 2: data term of the "payer" target convention (half the summed squares)

#: Payer et al. (2019), spine code: translation +-20 mm, rotation +-0.2 rad per axis, per-axis scale 1 +- 0.1,
#: B-spline 5 x 5 x 5 grid with 15 mm displacements, intensity shift/scale +-0.15 (the text names no ranges).
#: ``translate`` is a fraction of the window (20 mm / 384 mm along z ~ 0.05); elastic std in voxels of 2 mm.
PAPER_AUGMENT_3D = (("intensity_shift", 0.15), ("intensity_scale", 0.15), ("translate", 0.05),
                    ("rotate_deg", 11.5), ("scale", 0.0), ("aniso_scale", 0.1), ("elastic_grid", 5),
                    ("elastic_magnitude", 3.0), ("elastic_max_lipschitz", 0.5))
FAST_AUGMENT_3D = (("intensity_shift", 0.1), ("intensity_scale", 0.1), ("translate", 0.04), ("rotate_deg", 6.0),
                   ("scale", 0.05), ("aniso_scale", 0.05), ("elastic_grid", 5), ("elastic_magnitude", 0.4),
                   ("elastic_max_lipschitz", 0.5))


@dataclass(frozen=True)
class SpineProfile:
    """Sizes of the 3D spine experiment for one run profile.

    Attributes
    ----------
    name : str
    spacing_mm : float
        Working (and synthetic rendering) voxel size.
    max_scans : int or None
        Scans of the synthetic spine rendered (None: all 302 / the whole table).
    max_train : int or None
        Training scans used (first ones of the training split; None: all).
    max_test : int or None
        Test scans evaluated.
    train : Train3DConfig
        Network and optimisation (``model`` is set per method).
    cpu_threads : int or None
        torch threads while training/predicting on a CPU (None: leave as is). The small 3D convolutions of
        the smoke/quick networks run faster on one thread than on two (measured on a 2-core CPU: 0.12 vs
        0.6-1.4 CPU s per SCN step; OpenMP overhead dominates such small tensors).
    """

    name: str
    spacing_mm: float
    max_scans: int | None
    max_train: int | None
    max_test: int | None
    train: Train3DConfig
    cpu_threads: int | None = None

    def train_config(self, model: str, seed: int = 0, **overrides: Any) -> Train3DConfig:
        return replace(self.train, model=model, seed=seed, **overrides)


SPINE_PROFILES: dict[str, SpineProfile] = {
    "smoke": SpineProfile("smoke", spacing_mm=12.0, max_scans=10, max_train=6, max_test=3, train=Train3DConfig(
        input_size=(16, 16, 32), iterations=4, batch_size=2, num_filters=4, optimizer="adam", lr=1e-3,
        lr_schedule="cosine", init_sigma=1.0, target_lr_scale=1.0, augment=FAST_AUGMENT_3D, overlap=16), cpu_threads=1),
    "quick": SpineProfile("quick", spacing_mm=8.0, max_scans=120, max_train=None, max_test=None, train=Train3DConfig(
        input_size=(16, 16, 32), iterations=500, batch_size=1, num_filters=8, optimizer="adam", lr=2e-3,
        lr_schedule="cosine", init_sigma=1.0, target_lr_scale=1.0, augment=FAST_AUGMENT_3D, overlap=16,
        clip_grad_norm=1e4), cpu_threads=1),
    "paper": SpineProfile("paper", spacing_mm=2.0, max_scans=None, max_train=None, max_test=None, train=Train3DConfig(
        input_size=(96, 96, 192), iterations=40000, batch_size=1, num_filters=64, optimizer="nesterov", lr=1e-6,
        lr_schedule="constant", l2_lambda=5e-4, gamma=1000.0, alpha=1000.0, init_sigma=4.0,
        augment=PAPER_AUGMENT_3D, overlap=96)),
}


#: ``paper-dry`` (lmkcore.training.profiles): the paper sizes, 2 iterations, a handful of scans.
SPINE_PROFILES["paper-dry"] = replace(SPINE_PROFILES["paper"], name="paper-dry", max_scans=6, max_train=4, max_test=2,
                                      train=replace(SPINE_PROFILES["paper"].train, iterations=2))


def get_spine_profile(name: str) -> SpineProfile:
    """The spine profile ``name`` or a :class:`ConfigError` listing the choices."""
    try:
        return SPINE_PROFILES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown profile {name!r}; choose one of: {', '.join(SPINE_PROFILES)}") from None


def spine_splits(record: LandmarkDataset, profile: SpineProfile | None = None) -> tuple[list[str], list[str]]:
    """(train ids, test ids): the ``train``/``test`` splits (Payer's Set 2 layout) when present, else the
    ``cv1`` fold, else the first 75 % / the rest; cut to the profile's ``max_train`` / ``max_test``."""
    s = record.splits
    if "train" in s and "test" in s:
        train, test = list(s["train"]), list(s["test"])
    elif "cv1/train" in s and "cv1/val" in s:
        train, test = list(s["cv1/train"]), list(s["cv1/val"])
    else:
        k = max(1, int(round(0.75 * len(record.ids))))
        train, test = list(record.ids[:k]), list(record.ids[k:]) or list(record.ids[-1:])
    if profile is not None:
        train = train[:profile.max_train] if profile.max_train else train
        test = test[:profile.max_test] if profile.max_test else test
    return train, test


@dataclass
class SpineResult:
    """Predictions of one trained 3D network on the test scans.

    Attributes
    ----------
    key : str
    config : dict
        The :class:`Train3DConfig` and the working spacing.
    ids : list of str
        Test scans (``M``).
    landmark_names : list of str
    pred_px, true_px : ndarray
        ``(M, N, 3)`` ``(x, y, z)`` original voxels; NaN truth = vertebra not in the scan.
    spacing : ndarray
        ``(M, 3)`` mm per original voxel.
    peak : ndarray
        ``(M, N)`` maximum of the merged heatmap.
    learned_sigma : ndarray
        ``(N,)`` learned isotropic sigma, working voxels.
    history : list of dict
    train_seconds : float
    """

    key: str
    config: dict
    ids: list[str]
    landmark_names: list[str]
    pred_px: np.ndarray
    true_px: np.ndarray
    spacing: np.ndarray
    peak: np.ndarray
    learned_sigma: np.ndarray
    history: list
    train_seconds: float

    _ARRAYS = ("pred_px", "true_px", "spacing", "peak", "learned_sigma")

    def errors_mm(self) -> np.ndarray:
        """``(M, N)`` point errors in mm (NaN where the vertebra is not in the scan; inf for a NaN prediction)."""
        return metrics.point_errors(self.pred_px, self.true_px, self.spacing, missing_prediction="inf")

    def save(self, folder: Path) -> None:
        """``result.npz`` + ``result.json`` through the run store's :func:`~lmkcore.runs.store.write_result`."""
        meta = {k: getattr(self, k) for k in ("key", "config", "ids", "landmark_names", "history", "train_seconds")}
        write_result(folder, {k: getattr(self, k) for k in self._ARRAYS}, meta)

    @classmethod
    def load(cls, folder: Path) -> "SpineResult":
        meta, arrays = read_result(folder)
        return cls(**meta, **{k: arrays[k] for k in cls._ARRAYS})


def result_folder(cache_dir, key: str) -> Path:
    """``<cache>/spine/<key>``: model (``model.pt``) and result of one run (the run store's cache root)."""
    return RunStore.of(cache_dir).root / "spine" / key


def _data_fingerprint(record: LandmarkDataset, ids: list[str]) -> str:
    h = hashlib.sha256(record.name.encode())
    rows = record.index_of(ids)
    h.update("\n".join(ids).encode())
    h.update(np.ascontiguousarray(record.landmarks[rows], dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(record.spacing[rows], dtype=np.float64).tobytes())
    for r in rows:
        p = Path(record.image_paths[r])
        h.update(f"{p.name}:{p.stat().st_size if p.exists() else -1}".encode())
    return h.hexdigest()


def run_key(record: LandmarkDataset, config: Train3DConfig, spacing_mm: float, train_ids: list[str],
            test_ids: list[str]) -> str:
    """Cache key of a run: config, working spacing, training and test data, :data:`RESULT_VERSION`."""
    blob = json.dumps({"config": config.to_dict(), "spacing": spacing_mm, "v": RESULT_VERSION,
                       "train": _data_fingerprint(record, train_ids), "test": _data_fingerprint(record, test_ids)},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _progress_printer(label: str, total: int):
    start = time.time()

    def show(it: int, entry: dict) -> None:
        print(f"  {label}: it {it}/{total} loss {entry['loss']:.4g} reg {entry['reg']:.3g} "
              f"sigma {entry['sigma_mean']:.2f} vox ({time.time() - start:.0f} s)", flush=True)

    return show


def run_spine(record: LandmarkDataset, profile: SpineProfile | str, model: str, cache_dir: str | Path,
              device: str = "cpu", seed: int = 0, progress: bool = True, **overrides: Any) -> SpineResult:
    """Train (or load from the cache) ``model`` (``"scn"`` / ``"unet"``) with ``profile`` on ``record``
    and predict its test scans; see the module docstring.

    ``overrides`` change :class:`Train3DConfig` fields (e.g. ``iterations=...``).
    """
    prof = get_spine_profile(profile) if isinstance(profile, str) else profile
    config = prof.train_config(model, seed=seed, **overrides)
    train_ids, test_ids = spine_splits(record, prof)
    key = run_key(record, config, prof.spacing_mm, train_ids, test_ids)
    folder = result_folder(cache_dir, key)
    if has_result(folder):
        return SpineResult.load(folder)
    threads = torch.get_num_threads()
    if prof.cpu_threads and str(device) == "cpu":
        torch.set_num_threads(prof.cpu_threads)
    try:
        return _train_and_predict(record, prof, config, model, key, folder, train_ids, test_ids, device, progress)
    finally:
        torch.set_num_threads(threads)


def _train_and_predict(record, prof, config, model, key, folder, train_ids, test_ids, device, progress) -> SpineResult:
    label = {"scn": "SCN", "unet": "U-Net"}[model]
    t0 = time.time()
    train_set = VolumeSet.from_record(record, prof.spacing_mm, train_ids)
    printer = _progress_printer(label, config.iterations) if progress else None
    net, target, history = train_3d(train_set, config, device=device, progress=printer,
                                    log_every=max(config.iterations // 5, 1))
    train_seconds = time.time() - t0
    del train_set
    test_set = VolumeSet.from_record(record, prof.spacing_mm, test_ids)
    preds, peaks = [], []
    for vol in test_set.volumes:
        hm, (y0, x0) = predict_sliding_z(net, vol, config.input_size, config.overlap, device)
        xyz, val = argmax_subpixel_3d(hm[None])
        preds.append(xyz[0].double().numpy() + np.array([x0, y0, 0.0]))
        peaks.append(val[0].numpy())
    rows = record.index_of(test_ids)
    result = SpineResult(
        key=key, config={"train": config.to_dict(), "spacing_mm": prof.spacing_mm, "profile": prof.name},
        ids=test_ids, landmark_names=list(record.landmark_names),
        pred_px=test_set.to_original(np.stack(preds)), true_px=np.asarray(record.landmarks[rows], dtype=np.float64),
        spacing=np.asarray(record.spacing[rows], dtype=np.float64), peak=np.stack(peaks).astype(np.float64),
        learned_sigma=target.sigmas().detach().double().cpu().numpy(), history=history, train_seconds=train_seconds)
    with atomic_directory(folder) as tmp:
        buf = io.BytesIO()
        torch.save(net.state_dict(), buf)
        atomic_write_bytes(tmp / "model.pt", buf.getvalue())
        result.save(tmp)
    if progress:
        print(f"  {label}: trained in {train_seconds:.0f} s, {len(test_ids)} test scans predicted "
              f"({time.time() - t0 - train_seconds:.0f} s)")
    return result


def load_spine_model(result: SpineResult, cache_dir: str | Path, num_landmarks: int) -> torch.nn.Module:
    """The trained network of a cached :class:`SpineResult` (eval mode, CPU)."""
    config = Train3DConfig(**{**result.config["train"], "input_size": tuple(result.config["train"]["input_size"]),
                              "augment": tuple(tuple(p) for p in result.config["train"]["augment"])})
    net = build_network_3d(config, num_landmarks)
    state = torch.load(result_folder(cache_dir, result.key) / "model.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net.eval()


def table5(results: dict[str, SpineResult], radius_mm: float = 20.0) -> pd.DataFrame:
    """Payer et al. Table 5 columns per method: PE mean, SD, median (mm), ID rate (%), #ID, n.

    Vertebrae without ground truth (NaN) are left out of every column (``n`` counts the others).
    """
    rows = {}
    for label, r in results.items():
        err = r.errors_mm()
        e = err[~np.isnan(err)]
        ident = metrics.identification_rate(r.pred_px, r.true_px, r.spacing, radius=radius_mm)
        rows[label] = {"PE mean": e.mean() if e.size else np.nan, "PE SD": e.std() if e.size else np.nan,
                       "PE median": np.median(e) if e.size else np.nan, "ID rate (%)": ident["ID rate"],
                       "#ID": ident["#ID"], "n": ident["n"]}
    return pd.DataFrame.from_dict(rows, orient="index")


def per_vertebra_table(result: SpineResult, radius_mm: float = 20.0) -> pd.DataFrame:
    """Per vertebra: ``n`` (scans showing it), PE mean / SD / median (mm), ID rate (%)."""
    err = result.errors_mm()
    ok = metrics.identified(result.pred_px, result.true_px, result.spacing, radius_mm)
    have = ~np.isnan(result.true_px).any(-1)
    rows = []
    for i, name in enumerate(result.landmark_names):
        e = err[have[:, i], i]
        n = int(have[:, i].sum())
        rows.append({"vertebra": name, "n": n, "PE mean": e.mean() if n else np.nan,
                     "PE SD": e.std() if n else np.nan, "PE median": np.median(e) if n else np.nan,
                     "ID rate (%)": 100.0 * ok[:, i].sum() / n if n else np.nan})
    return pd.DataFrame(rows).set_index("vertebra")


#: Payer et al. (2019), Table 5 (real CSI 2014 CTs): PE_all mean, SD (mm) and ID rate (%), Set 1 (2-fold CV)
#: and Set 2 with the corrected annotations; for the rows marked [paper] beside the synthetic analogue.
PAYER_TABLE5 = {
    "[paper] SCN, Set 1": {"PE mean": 6.2, "PE SD": 9.9, "ID rate (%)": 86.1},
    "[paper] U-Net, Set 1": {"PE mean": 7.3, "PE SD": 12.9, "ID rate (%)": 82.7},
    "[paper] SCN, Set 2 corrected": {"PE mean": 2.9, "PE SD": 4.4, "ID rate (%)": 96.0},
    "[paper] U-Net, Set 2 corrected": {"PE mean": 4.9, "PE SD": 7.7, "ID rate (%)": 87.5},
}


def spine_source(dataset: str, data_root: str | Path | None) -> tuple[str, str | Path | None, str | None]:
    """Which data notebook 09 runs on when the run's dataset is ``dataset``.

    ``./run_all.sh --dataset isbi2015`` (or ``hand``) runs every notebook on a 2D dataset; notebook 09 then
    falls back to the synthetic spine phantom instead of failing, and says why.

    Returns
    -------
    dataset, data_root : the arguments for :func:`spine_record`
    fallback_reason : str or None
        Why the run's own dataset is not used (None when it is).
    """
    if dataset in ("synthetic", "folder"):
        return dataset, data_root, None
    return "synthetic", None, f"dataset {dataset!r} is 2D; the synthetic spine phantom is used instead"


def spine_record(dataset: str, data_root: str | Path | None, profile: SpineProfile | str,
                 cache_dir: str | Path, seed: int = 0, centroids: str | Path | None = None,
                 verbose: bool = True) -> LandmarkDataset:
    """The 3D dataset of notebook 09.

    ``dataset="synthetic"``: the synthetic spine (:mod:`lmkcore.synthetic.spine`) at the profile's spacing,
    rendered around the CSI 2014 centroids (``centroids``: the file or a folder holding it; default
    ``$LMKCORE_SHARED_DATA``, else the constructed stand-in), cached in ``cache_dir``.
    ``dataset="folder"``: the user's 3D volumes at ``data_root`` (:mod:`lmkcore.data.datasets.folder`).

    Raises
    ------
    ConfigError
        For any other dataset, or 2D folder data (one line naming the problem).
    """
    from lmkcore.data.datasets import load_dataset
    from lmkcore.synthetic.spine import SpineConfig, load_spine, spine_dataset

    prof = get_spine_profile(profile) if isinstance(profile, str) else profile
    if dataset == "synthetic" and data_root in (None, ""):
        cfg = SpineConfig(spacing_mm=prof.spacing_mm, max_scans=prof.max_scans, seed=int(seed))
        return load_spine(spine_dataset(cfg, centroids, cache_dir, verbose=verbose))
    if dataset != "folder":
        raise ConfigError(f"notebook 09 needs 3D data: dataset 'synthetic' (the spine phantom) or 'folder' with "
                          f"3D volumes, got {dataset!r}")
    record = load_dataset("folder", data_root, verbose=verbose)
    if record.ndim != 3:
        raise ConfigError(f"{data_root}: the folder dataset is {record.ndim}D; notebook 09 needs 3D volumes")
    return record


def mip_figure(volume: np.ndarray, spacing: np.ndarray, truth_px: np.ndarray, predictions: dict[str, np.ndarray],
               names: list[str] | tuple[str, ...], title: str = ""):
    """Sagittal and coronal maximum-intensity projections with the true and predicted vertebrae.

    Parameters
    ----------
    volume : ndarray
        ``(D, H, W)`` CT numbers.
    spacing : ndarray
        ``(3,)`` ``(x, y, z)`` mm per voxel.
    truth_px : ndarray
        ``(N, 3)`` ``(x, y, z)`` voxels (NaN: not in the scan).
    predictions : dict
        Label -> ``(N, 3)`` predicted voxels; only vertebrae with ground truth are drawn.
    names : sequence of str
        Vertebra names (truth labels).

    Returns
    -------
    matplotlib Figure
        Axes in mm; z (cranial) upwards.
    """
    import matplotlib.pyplot as plt

    sx, sy, sz = (float(v) for v in spacing)
    d, h, w = volume.shape
    have = ~np.isnan(truth_px).any(-1)
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 6.5), sharey=True)
    views = [("sagittal (max over x)", volume.max(axis=2), 1, sy, h),
             ("coronal (max over y)", volume.max(axis=1), 0, sx, w)]
    markers = ["o", "s", "^", "D"]
    for ax, (label, img, k, s_h, n_h) in zip(axes, views):
        ax.imshow(img, cmap="gray", vmin=-200, vmax=1200, origin="lower", aspect="equal",
                  extent=(-0.5 * s_h, (n_h - 0.5) * s_h, -0.5 * sz, (d - 0.5) * sz), interpolation="nearest")
        ax.scatter(truth_px[have, k] * s_h, truth_px[have, 2] * sz, s=36, facecolors="none", edgecolors="lime",
                   linewidths=1.2, label="truth")
        for j, (lab, p) in enumerate(predictions.items()):
            ax.scatter(p[have, k] * s_h, p[have, 2] * sz, s=14, marker=markers[j % len(markers)], label=lab,
                       color=f"C{j + 1}")
        for i in np.flatnonzero(have):
            ax.annotate(names[i], (truth_px[i, k] * s_h, truth_px[i, 2] * sz), xytext=(4, 0),
                        textcoords="offset points", color="lime", fontsize=6, va="center")
        ax.set(title=label, xlabel=("y" if k == 1 else "x") + " (mm)")
    axes[0].set_ylabel("z (mm)")
    axes[1].legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
