"""Interactive explorer of cached predictions: heatmaps, uncertainty ellipses, observers.

Two layers, so the logic is testable without a browser:

* :class:`ExplorerSource` finds the *cached* results (never trains) and the
  working-size images of each (dataset, method) choice;
  :func:`view_content` and :func:`overview_content` turn a choice
  (:class:`ExplorerState`) into plain data: what to draw (image crop, heatmap
  crop, points, ellipse parameters) and the numbers to show. :func:`draw_view`,
  :func:`draw_overview` and :func:`explorer_figure` draw that content with
  matplotlib.
* :class:`LandmarkExplorer` wires ipywidgets controls (dataset, method, image,
  landmark) to those functions for JupyterLab; the rendered figure is an
  ``ipywidgets.Image`` (PNG), so it also builds headless (tests, papermill).

Every result is a :class:`lmkcore.runs.result.LandmarkResult` read through the run store
(heatmap experiments with their cached calibration, PHD-Net runs): no adapters.

Coordinates: the single-image view is drawn in **working pixels** (the
resolution the network saw; ``(x, y)``, y down); the landmark overview in
**mm** offsets from the reference annotation (y down as in the image).
Covariances are converted from mm^2 to working px^2 with the image's working
spacing.
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from lmkcore.analysis.covariance import cov_to_params, empirical_cov
from lmkcore.errors import ConfigError
from lmkcore.data.records import row_indices
from lmkcore.reporting.style import CMAPS, COLORS

#: The sigma levels of the Sigma-hat ellipse (Thaler et al. 2021 draw 3 sigma in Fig. 7).
N_STD = (1.0, 2.0, 3.0)

#: Method name of PHD-Net in the explorer (it is not a :data:`lmkcore.training.methods.METHODS` entry: its
#: results come from :func:`lmkcore.runs.phdnet.run_phdnet`, notebook 07).
PHDNET = "phdnet"

#: Notebook that trains each built-in method (for the "how to create the cache" message).
TRAINED_BY = {"scn_aniso": "01", "scn_iso": "01", "unet_iso": "01", "la_only_iso": "01", "chh_onehot": "06",
              "chh_gaussian": "06", PHDNET: "07"}

#: Size (inches) of the two-panel explorer figure.
FIGSIZE = (11.0, 4.4)



@dataclass(frozen=True)
class ExplorerState:
    """One choice of the explorer's controls.

    Attributes
    ----------
    dataset : str
        Key of :attr:`ExplorerSource.datasets`.
    method : str
        Key of :attr:`ExplorerSource.methods`.
    image : str or None
        Image id (None: the first image of the result).
    landmark : int
        Landmark index (0-based; the papers' L1 is 0).
    """

    dataset: str
    method: str
    image: str | None = None
    landmark: int = 0


class ExplorerSource:
    """Where the explorer's data comes from: records, cached results, working-size images.

    Parameters
    ----------
    datasets : mapping
        Dataset name to a :class:`~lmkcore.data.records.LandmarkDataset` or a
        zero-argument callable returning one (loaded when first chosen).
    profile : Profile or str
        Run profile the results were computed with (part of the cache key).
    cache_dir : path
        The cache folder the notebooks used (``ctx.cache_dir``).
    seed : int
        Experiment seed (part of the cache key).
    methods : sequence or mapping, optional
        Method keys of :data:`lmkcore.training.methods.METHODS` (default all), or a
        mapping ``display name -> (method key, experiment_config overrides)``
        for variants such as ``{"scn_aniso + MCD": ("scn_aniso", {"mc_samples": 10})}``.
    data_roots : mapping, optional
        Dataset name to its data root, only used in the "how to create the
        cache" message.
    """

    def __init__(self, datasets: Mapping[str, Any], profile, cache_dir: str | Path, seed: int = 0,
                 methods=None, data_roots: Mapping[str, str] | None = None):
        from lmkcore.training.methods import METHODS
        from lmkcore.training.profiles import get_profile

        if not datasets:
            raise ConfigError("ExplorerSource needs at least one dataset")
        self.datasets = dict(datasets)
        self.profile = get_profile(profile) if isinstance(profile, str) else profile
        self.cache_dir = Path(cache_dir).expanduser()
        self.seed = int(seed)
        if methods is None:
            methods = list(METHODS) + [PHDNET]
        if isinstance(methods, Mapping):
            self.methods = {str(k): (v[0], dict(v[1])) for k, v in methods.items()}
        else:
            self.methods = {m: (m, {}) for m in methods}
        for name, (key, _) in self.methods.items():
            if key not in METHODS and key != PHDNET:
                raise ConfigError(f"explorer method {name!r}: unknown method {key!r}; known: {', '.join(METHODS)}")
        self.data_roots = dict(data_roots or {})
        self._records: dict[str, Any] = {}
        self._results: dict[tuple[str, str], Any] = {}
        self._images: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

    def record(self, dataset: str):
        """The :class:`~lmkcore.data.records.LandmarkDataset` of ``dataset`` (loaded once)."""
        if dataset not in self.datasets:
            raise ConfigError(f"explorer: unknown dataset {dataset!r}; choose one of: {', '.join(self.datasets)}")
        if dataset not in self._records:
            rec = self.datasets[dataset]
            self._records[dataset] = rec() if callable(rec) else rec
        return self._records[dataset]

    def config(self, dataset: str, method: str):
        """The :class:`~lmkcore.runs.experiment.ExperimentConfig` of a choice (as ``ctx.experiment`` builds it)."""
        from lmkcore.training.methods import experiment_config

        if method not in self.methods:
            raise ConfigError(f"explorer: unknown method {method!r}; choose one of: {', '.join(self.methods)}")
        key, overrides = self.methods[method]
        overrides = dict(overrides)
        overrides.setdefault("seed", self.seed)
        return experiment_config(self.profile, self.record(dataset), key, **overrides)

    def result(self, dataset: str, method: str):
        """The cached :class:`~lmkcore.runs.result.LandmarkResult` of a choice, or None when not computed yet.

        Heatmap experiments come with their newest cached temperature-scaling evaluation (ERE,
        softmax confidence; :func:`lmkcore.runs.calibration.with_calibration`); PHD-Net runs as
        :class:`~lmkcore.runs.phdnet.PHDNetResult`. Never trains. A missing result is looked up
        again on the next call (it may have been created meanwhile); a found one is kept.
        """
        from lmkcore.runs.calibration import cached_calibration, with_calibration
        from lmkcore.runs.experiment import load_cached
        from lmkcore.runs.phdnet import load_cached_phdnet

        k = (dataset, method)
        if k not in self._results:
            if self.methods[method][0] == PHDNET:
                config, tr, ev, _ = _phdnet_config(self, dataset, method)
                res = load_cached_phdnet(self.record(dataset), config, self.cache_dir, tr, ev)
            else:
                res = load_cached(self.record(dataset), self.config(dataset, method), self.cache_dir)
                if res is not None:
                    res = with_calibration(res, cached_calibration(res, self.cache_dir))
            if res is None:
                return None
            self._results[k] = res
        return self._results[k]

    def prediction_name(self, method: str) -> str | None:
        """The decoding strategy the explorer shows for ``method`` (None: the result's default; PHD-Net
        methods may choose ``{"strategy": "simple"}``)."""
        key, overrides = self.methods[method]
        return overrides.get("strategy") if key == PHDNET else None

    def result_folder(self, dataset: str, method: str) -> Path:
        """Where the cached result of a choice is (or would be)."""
        from lmkcore.runs.experiment import experiment_key, result_folder

        if method in self.methods and self.methods[method][0] == PHDNET:
            return _phdnet_folder(self, dataset, method)
        return result_folder(self.cache_dir, experiment_key(self.config(dataset, method), self.record(dataset)))

    def is_cached(self, dataset: str, method: str) -> bool:
        from lmkcore.runs.store import has_result

        if (dataset, method) in self._results:
            return True
        return has_result(self.result_folder(dataset, method))

    def images(self, dataset: str, method: str) -> np.ndarray:
        """``(M, H, W)`` eval images of the cached result at its working size (memory-mapped).

        The same image cache the training used (``cache_dir/images``): no decode
        when the experiment ran with this cache folder. Results trained in a padded frame
        (``ExperimentConfig.input_height``) show the padded images, as the network saw them.
        """
        return self._working(dataset, method)[0]

    def frame_size(self, dataset: str, method: str) -> np.ndarray:
        """``(M, 2)`` ``(W, H)`` original px that the working grid of each eval image covers: the image
        size, or the zero-padded frame of a result with ``input_height``
        (:attr:`lmkcore.data.loader.LandmarkImageDataset.frame_size`, as the experiment mapped its
        predictions). Map original px to working px with ``resize_landmarks(p, frame, work_size)``."""
        return self._working(dataset, method)[1]

    def _working(self, dataset: str, method: str) -> tuple[np.ndarray, np.ndarray]:
        """(images, frame sizes) of a choice, from the dataset the experiment itself built."""
        from lmkcore.data.image_cache import cached_images
        from lmkcore.runs.experiment import experiment_dataset
        from lmkcore.runs.store import RunStore

        k = (dataset, method)
        if k not in self._images:
            res = self.result(dataset, method)
            if res is None:
                raise ConfigError(missing_message(self, dataset, method))
            if self.methods[method][0] == PHDNET:  # PHD-Net: the aspect-keeping working images
                rec = self.record(dataset).subset(list(res.ids))
                images = cached_images(rec, tuple(res.work_size), RunStore(self.cache_dir).images_dir, progress=False)
                frame = np.asarray(rec.image_size, dtype=np.int64)
            else:  # the experiment's own dataset: same frame (padded or not), same image cache
                ds = experiment_dataset(self.record(dataset), self.config(dataset, method), list(res.ids),
                                        RunStore(self.cache_dir))
                if tuple(ds.size) != tuple(int(v) for v in res.work_size):
                    raise ConfigError(f"explorer: {method!r} on {dataset!r}: the cached result's working size "
                                      f"{tuple(res.work_size)} is not its configuration's {tuple(ds.size)}")
                images, frame = ds.images, np.asarray(ds.frame_size, dtype=np.int64)
            self._images[k] = (images, frame)
        return self._images[k]


def _phdnet_config(source: ExplorerSource, dataset: str, method: str):
    from lmkcore.training.methods import default_splits
    from lmkcore.runs.phdnet import phdnet_config

    overrides = dict(source.methods[method][1])
    record = source.record(dataset)
    tr, ev = default_splits(record)
    train_split, eval_split = overrides.pop("train_split", tr), overrides.pop("eval_split", ev)
    strategy = overrides.pop("strategy", "smoothing")
    overrides.setdefault("seed", source.seed)
    return phdnet_config(source.profile, **overrides), train_split, eval_split, strategy


def _phdnet_folder(source: ExplorerSource, dataset: str, method: str) -> Path:
    from lmkcore.runs.phdnet import phdnet_key
    from lmkcore.runs.store import RunStore

    config, tr, ev, _ = _phdnet_config(source, dataset, method)
    return RunStore(source.cache_dir).result_folder(phdnet_key(config, source.record(dataset), tr, ev), "phdnet")


def default_methods(record) -> dict[str, tuple[str, dict]]:
    """Explorer methods as the notebooks train them: every :data:`~lmkcore.training.methods.METHODS` entry with
    its defaults, the softmax U-Nets of notebook 06 on the ``<train split>/fit`` part of the training split
    (see :func:`lmkcore.runs.calibration.with_calibration_split`), and PHD-Net (notebook 07)."""
    from lmkcore.training.methods import METHODS, default_splits

    try:
        train_split = default_splits(record)[0]
    except ConfigError:
        train_split = "train"
    out = {m: (m, {}) for m in METHODS}
    for m in ("chh_onehot", "chh_gaussian"):
        if m in out:
            out[m] = (m, {"train_split": f"{train_split}/fit"})
    out[PHDNET] = (PHDNET, {})
    return out


def _method_label(key: str) -> str:
    from lmkcore.training.methods import method_label

    return "PHD-Net, candidate smoothing (Schobs et al. 2021)" if key == PHDNET else method_label(key)


def missing_message(source: ExplorerSource, dataset: str, method: str) -> str:
    """The explanation shown when a (dataset, method) choice has no cached result, with how to create it."""
    key, overrides = source.methods[method]
    nb = TRAINED_BY.get(key)
    cmd = f"./run_all.sh --only {nb or 'NN'} --profile {source.profile.name} --dataset {dataset}"
    if dataset != "synthetic":
        cmd += f" --data-root {source.data_roots.get(dataset, '<your copy of the data>')}"
    if source.seed:
        cmd += f" --seed {source.seed}"
    cmd += f" --cache-dir {source.cache_dir}"
    extra = "".join(f", {k}={v!r}" for k, v in overrides.items())
    which = f"notebook {nb} trains it" if nb else "run the notebook that trains it"
    call = (f"run_phdnet(record, phdnet_config(ctx.profile, seed=ctx.seed), ctx.cache_dir)" if key == PHDNET
            else f"ctx.experiment(record, {key!r}{extra})")
    return (f"No cached result for method {method!r} on dataset {dataset!r} (profile {source.profile.name}, "
            f"seed {source.seed}) in {source.cache_dir}. The explorer only shows cached predictions and never "
            f"trains. Create it with: {cmd}  ({which}), or in a notebook with the same profile, seed and cache "
            f"folder: {call}.")


# ----------------------------------------------------------------------------------------------------------
# Pure content: choice -> what to draw
# ----------------------------------------------------------------------------------------------------------

def ellipse_params(cov, center, n_std: float, name: str, color: str) -> dict | None:
    """Matplotlib ellipse parameters of the ``n_std``-sigma contour of ``cov``.

    ``width``/``height`` are the full major/minor axes (``2 n_std sigma``, units
    of ``cov``'s square root), ``angle_deg`` the major-axis angle (image frame,
    from +x towards +y). None when ``cov`` is not finite.
    """
    cov = np.asarray(cov, dtype=np.float64)
    if not np.all(np.isfinite(cov)) or not np.all(np.isfinite(center)):
        return None
    theta, s1, s2 = cov_to_params(cov)
    return {"name": name, "center": (float(center[0]), float(center[1])), "n_std": float(n_std),
            "width": float(2 * n_std * s1), "height": float(2 * n_std * s2),
            "angle_deg": float(np.degrees(theta)), "color": color}


def _mm2_to_px2(cov_mm, spacing) -> np.ndarray:
    s = np.asarray(spacing, dtype=np.float64)
    return np.asarray(cov_mm, dtype=np.float64) / (s[:, None] * s[None, :])


def _shape_numbers(cov_mm) -> dict[str, float]:
    theta, s1, s2 = cov_to_params(cov_mm)
    return {"sigma_major_mm": float(s1), "sigma_minor_mm": float(s2), "size_mm2": float(s1 * s2),
            "ratio": float(s1 / s2) if s2 > 0 else float("nan"), "theta_deg": float(np.degrees(theta))}


def _optional_numbers(result, prediction: str | None, row: int, landmark: int) -> dict[str, float]:
    """The result's extra ``(M, N)`` numbers (ERE, PHD-Net confidence...) at one prediction."""
    out: dict[str, float] = {}
    m, n = len(result.ids), len(result.landmark_names)
    for label, value in result.optional_numbers(prediction).items():
        arr = np.asarray(value)
        if arr.ndim == 2 and arr.shape == (m, n):
            out[label] = float(arr[row, landmark])
    return out


def _gaussians(result):
    """``(fit_cov_mm (M, N, 2, 2), fit_ok (M, N), learned_cov_mm (N, 2, 2))`` of a result; NaN / False for
    methods without Gaussian heatmaps (PHD-Net)."""
    m, n = len(result.ids), len(result.landmark_names)
    fit = result.fit_cov_mm if result.fit_cov_mm is not None else np.full((m, n, 2, 2), np.nan)
    ok = result.fit_ok if result.fit_ok is not None else np.zeros((m, n), dtype=bool)
    learned = result.learned_cov_mm if result.learned_cov_mm is not None else np.full((n, 2, 2), np.nan)
    return fit, ok, learned


def _resolve(source: ExplorerSource, state: ExplorerState):
    """(record, result, row in result, row in record, landmark) of a choice, or a 'missing' dict."""
    record = source.record(state.dataset)
    base = {"dataset": state.dataset, "method": state.method, "landmark": int(state.landmark),
            "landmark_name": (record.landmark_names[state.landmark]
                              if 0 <= state.landmark < len(record.landmark_names) else "?")}
    try:
        result = source.result(state.dataset, state.method)
    except ConfigError as err:  # e.g. a record without the splits the method's config needs
        return None, {**base, "status": "error", "message": f"Cannot look up {state.method!r} on {state.dataset!r}: {err}",
                      "image": state.image}
    if result is None:
        return None, {**base, "status": "missing", "message": missing_message(source, state.dataset, state.method),
                      "image": state.image}
    if not 0 <= state.landmark < len(result.landmark_names):
        raise ConfigError(f"explorer: landmark index {state.landmark} out of range 0..{len(result.landmark_names) - 1}")
    image = state.image if state.image is not None else result.ids[0]
    rows = result.rows([image])
    if len(rows) == 0:
        raise ConfigError(f"explorer: image {image!r} is not in the evaluated split of {state.method!r} "
                          f"({len(result.ids)} images, e.g. {result.ids[0]!r})")
    row = int(rows[0])
    rec_row = int(record.index_of([image])[0])
    return (record, result, row, rec_row, image), base


def view_content(source: ExplorerSource, state: ExplorerState, margin_px: float = 3.0) -> dict:
    """What the single-image view shows for ``state`` (plain data, no drawing).

    Returns
    -------
    dict
        ``status`` ``"ok"``, ``"missing"`` (then ``message`` explains how to
        create the cache, and nothing else is drawn) or ``"error"`` (the
        choice's config cannot be built, e.g. a record without splits;
        ``message`` says why). When ok: ``image`` (id),
        ``image_index`` (row in the result), ``landmark`` and ``landmark_name``,
        ``window`` ``(x0, x1, y0, y1)`` working px shown, ``image_crop``
        (the working-size image inside the window, ``(H', W')``),
        ``heatmap`` ``(C, C)`` and ``heatmap_origin`` (working-px ``(x, y)`` of
        its top-left pixel), ``points`` (name -> ``(K, 2)`` working px: prediction,
        argmax, reference, truth, observers), ``observer_names``, ``ellipses``
        (list of :func:`ellipse_params` dicts in working px: Sigma-hat at 1/2/3
        sigma, learned Sigma, observers' fitted covariance, declared covariance
        for synthetic data) and ``numbers`` (name -> float: errors in mm,
        Sigma-hat/Sigma size sigma_maj*sigma_min in mm^2 and ratio, ERE or
        PHD-Net confidence when the result has them).
    """
    from lmkcore.data.image_cache import resize_landmarks

    resolved, content = _resolve(source, state)
    if resolved is None:
        return content
    record, result, row, rec_row, image = resolved
    lm = int(state.landmark)
    pname = source.prediction_name(state.method)
    pred_px = result.prediction(pname)
    fit_cov_mm, fit_ok, learned_cov_mm = _gaussians(result)
    work_size = np.asarray(result.work_size, dtype=np.float64)
    orig_size = source.frame_size(state.dataset, state.method)[row].astype(np.float64)  # image or padded frame
    ws = np.asarray(result.work_spacing[row], dtype=np.float64)

    def to_work(p):
        return resize_landmarks(np.atleast_2d(np.asarray(p, dtype=np.float64)), orig_size, work_size)

    points = {"prediction": to_work(pred_px[row, lm]),
              "argmax": to_work(result.prediction(result.alternative_prediction)[row, lm]),
              "reference": to_work(result.reference_px[row, lm])}
    if result.truth_px is not None:
        points["truth"] = to_work(result.truth_px[row, lm])
    annotators = [a for a in record.annotators if a in record.annotations]
    obs_orig = np.stack([record.annotations[a][rec_row, lm] for a in annotators]) if annotators else np.zeros((0, 2))
    valid = ~np.isnan(obs_orig).any(-1)
    points["observers"] = to_work(obs_orig[valid]) if valid.any() else np.zeros((0, 2))
    observer_names = [a for a, v in zip(annotators, valid) if v]

    pred = points["prediction"][0]
    ellipses = []
    fit_cov_px = _mm2_to_px2(fit_cov_mm[row, lm], ws)
    for k in N_STD:
        e = ellipse_params(fit_cov_px, pred, k, f"Σ̂ fit {k:g}σ", COLORS["fitted"])
        if e is not None:
            ellipses.append(e)
    learned_px = _mm2_to_px2(learned_cov_mm[lm], ws)
    e = ellipse_params(learned_px, pred, 2.0, "Σ learned 2σ", COLORS["learned"])
    if e is not None:
        ellipses.append(e)
    if valid.sum() >= 3:
        f = work_size / orig_size  # working px per original px
        obs_cov_px = empirical_cov(obs_orig[valid]) * (f[:, None] * f[None, :])
        e = ellipse_params(obs_cov_px, points["observers"].mean(0), 2.0, "observers 2σ", COLORS["observer"])
        if e is not None:
            ellipses.append(e)
    else:
        obs_cov_px = None
    declared = record.truth.get("annotation_cov")
    if declared is not None and "truth" in points:
        f = work_size / orig_size
        e = ellipse_params(declared[rec_row, lm] * (f[:, None] * f[None, :]), points["truth"][0], 2.0,
                           "declared 2σ", COLORS["declared"])
        if e is not None:
            ellipses.append(e)

    numbers: dict[str, float] = {}
    numbers["error vs reference (mm)"] = float(result.errors_mm(pname, "reference", [image])[0, lm])
    if result.truth_px is not None:
        numbers["error vs truth (mm)"] = float(result.errors_mm(pname, "truth", [image])[0, lm])
    numbers["heatmap peak"] = float(result.confidence(pname)[row, lm])
    if result.heatmap_crops is not None:
        numbers["Σ̂ fit usable"] = float(bool(fit_ok[row, lm]))
    fit = _shape_numbers(fit_cov_mm[row, lm]) if fit_ok[row, lm] else None
    lrn = _shape_numbers(learned_cov_mm[lm])
    lrn = lrn if np.isfinite(lrn["size_mm2"]) else None
    shown = (("Σ̂", fit), ("Σ", lrn)) if result.heatmap_crops is not None else ()  # PHD-Net: no Gaussians
    for label, nums in shown:
        for key, name in (("size_mm2", "size σmaj·σmin (mm²)"), ("ratio", "ratio σmaj:σmin"),
                          ("sigma_major_mm", "σmaj (mm)"), ("theta_deg", "θ (deg)")):
            numbers[f"{label} {name}"] = nums[key] if nums else float("nan")
    if obs_cov_px is not None:
        s = result.spacing[row]  # observers' covariance in mm^2 from original px
        obs_nums = _shape_numbers(empirical_cov(obs_orig[valid]) * (s[:, None] * s[None, :]))
        numbers["observers size σmaj·σmin (mm²)"] = obs_nums["size_mm2"]
        numbers["observers ratio σmaj:σmin"] = obs_nums["ratio"]
    if result.mc_fit_cov_mm is not None and np.all(np.isfinite(result.mc_fit_cov_mm[row, lm])):
        numbers["MCD-h Σ̂ size σmaj·σmin (mm²)"] = _shape_numbers(result.mc_fit_cov_mm[row, lm])["size_mm2"]
    numbers.update(_optional_numbers(result, pname, row, lm))

    if result.heatmap_crops is not None:
        heat = np.asarray(result.heatmap_crops[row, lm], dtype=np.float32)
        h_origin = np.asarray(result.crop_origin[row, lm], dtype=np.float64)
        c = heat.shape[-1]
        centre = h_origin + (c - 1) / 2.0
    else:  # a method without heatmap crops (PHD-Net): centre on the prediction
        c = 15
        heat = np.zeros((0, 0), dtype=np.float32)
        centre = np.round(pred)
        h_origin = centre - (c - 1) / 2.0
    reach = [c / 2.0]
    for pts in points.values():
        if len(pts):
            reach.append(float(np.nanmax(np.abs(pts - centre))))
    for e in ellipses:
        if e["name"].startswith("Σ̂") and e["n_std"] < 3:
            continue
        reach.append(np.hypot(e["center"][0] - centre[0], e["center"][1] - centre[1]) + e["width"] / 2)
    half = float(np.clip(max(reach) + margin_px, c / 2.0, max(work_size) / 2.0))
    x0, x1 = int(np.floor(centre[0] - half)), int(np.ceil(centre[0] + half)) + 1
    y0, y1 = int(np.floor(centre[1] - half)), int(np.ceil(centre[1] + half)) + 1
    img = source.images(state.dataset, state.method)[row]
    crop = np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
    ya, yb, xa, xb = max(y0, 0), min(y1, img.shape[0]), max(x0, 0), min(x1, img.shape[1])
    if ya < yb and xa < xb:
        crop[ya - y0:yb - y0, xa - x0:xb - x0] = img[ya:yb, xa:xb]
    content.update(status="ok", message="", image=image, image_index=row, window=(x0, x1, y0, y1),
                   image_crop=crop, heatmap=heat, heatmap_origin=(float(h_origin[0]), float(h_origin[1])),
                   points=points, observer_names=observer_names, ellipses=ellipses, numbers=numbers,
                   units="working px", work_size=tuple(int(v) for v in result.work_size),
                   labels={"prediction": "prediction" if result.heatmap_crops is None else "prediction (Σ̂-fit centre)",
                           "argmax": "PHD-Net simple" if result.heatmap_crops is None else "heatmap maximum"})
    return content


def overview_content(source: ExplorerSource, state: ExplorerState, fit_centers: str = "origin") -> dict:
    """What the landmark overview shows: every evaluated image's offset and Sigma-hat for ``state.landmark``.

    Returns
    -------
    dict
        ``status``/``message`` as :func:`view_content`; when ok: ``offsets_mm``
        ``(M, 2)`` prediction minus reference (mm, y down), ``ids``, ``selected``
        (row of ``state.image``), ``fit_ellipses`` (1-sigma Sigma-hat of each
        usable fit: arrays ``centers`` ``(K, 2)``, ``widths``, ``heights``,
        ``angles_deg`` in mm, ``rows``), ``learned_ellipses`` (Sigma at 1/2/3
        sigma around 0), ``offset_ellipse`` (2-sigma Gaussian fitted to the
        offsets, or None), ``observer_offsets_mm`` (every annotator minus the
        reference, pooled) and ``numbers`` (mean error, mean Sigma-hat size,
        Spearman correlation of size and error).

    Parameters
    ----------
    fit_centers : {"origin", "offset"}
        Centre each image's Sigma-hat ellipse at 0 (Thaler et al. 2021, Figs.
        4-5: compare their orientation and size with the offset cloud) or at the
        image's own offset.
    """
    if fit_centers not in ("origin", "offset"):
        raise ConfigError(f"overview_content: fit_centers must be 'origin' or 'offset', got {fit_centers!r}")
    from lmkcore.analysis.uncertainty import correlation

    resolved, content = _resolve(source, state)
    if resolved is None:
        return content
    record, result, row, _, image = resolved
    lm = int(state.landmark)
    pname = source.prediction_name(state.method)
    fit_cov_mm, fit_ok, learned_cov_mm = _gaussians(result)
    offsets = result.offsets_mm(pname)[:, lm]
    errors = result.errors_mm(pname)[:, lm]
    ok = np.asarray(fit_ok[:, lm], dtype=bool) & np.isfinite(fit_cov_mm[:, lm]).all(axis=(-2, -1))
    theta, s1, s2 = cov_to_params(np.where(ok[:, None, None], fit_cov_mm[:, lm], np.eye(2)))
    fits = {"centers": offsets[ok] if fit_centers == "offset" else np.zeros((int(ok.sum()), 2)), "widths": 2 * s1[ok], "heights": 2 * s2[ok],
            "angles_deg": np.degrees(theta[ok]), "rows": np.flatnonzero(ok)}
    learned = [e for k in N_STD if (e := ellipse_params(learned_cov_mm[lm], (0.0, 0.0), k,
                                                          f"Σ learned {k:g}σ", COLORS["learned"])) is not None]
    rec_rows = record.index_of(list(result.ids))
    obs = [record.annotations[a][rec_rows, lm] - result.reference_px[:, lm]
           for a in record.annotators if a in record.annotations and a != record.reference]
    obs_off = (np.concatenate([o * result.spacing for o in obs]) if obs else np.zeros((0, 2)))
    obs_off = obs_off[~np.isnan(obs_off).any(-1)]
    finite = np.isfinite(offsets).all(-1)
    offset_ellipse = (ellipse_params(empirical_cov(offsets[finite]), (0.0, 0.0), 2.0, "offsets fit 2σ", COLORS["offsets_fit"])
                      if finite.sum() >= 3 else None)
    size = s1 * s2
    numbers = {"images": float(len(result.ids)), "mean error vs reference (mm)": float(np.nanmean(errors)),
               "usable Σ̂ fits": float(ok.sum()),
               "mean Σ̂ size σmaj·σmin (mm²)": float(np.mean(size[ok])) if ok.any() else float("nan")}
    if ok.sum() >= 3 and np.ptp(size[ok]) > 0:
        numbers["Spearman(Σ̂ size, error)"] = correlation(size[ok], errors[ok]).spearman_rho
    content.update(status="ok", message="", image=image, ids=list(result.ids), selected=row, offsets_mm=offsets,
                   fit_ellipses=fits, learned_ellipses=learned, offset_ellipse=offset_ellipse, observer_offsets_mm=obs_off, numbers=numbers,
                   units="mm")
    return content


# ----------------------------------------------------------------------------------------------------------
# Drawing (matplotlib): content -> axes
# ----------------------------------------------------------------------------------------------------------

def _mathtext(label: str) -> str:
    """Σ̂ (Σ + combining circumflex) drawn as mathtext: matplotlib's fonts drop the combining hat."""
    return label.replace("Σ̂", r"$\hat{\Sigma}$")


def _draw_ellipses(ax, ellipses, lw: float = 1.0) -> None:
    """Add :func:`ellipse_params` dicts to ``ax``; one legend entry per kind ("Σ̂ fit (1/2/3σ)")."""
    from matplotlib.patches import Ellipse

    levels: dict[str, list[str]] = {}
    for e in ellipses:
        head = e["name"].rpartition(" ")[0] or e["name"]
        levels.setdefault(head, []).append(f"{e['n_std']:g}")
    seen = set()
    for e in ellipses:
        head = e["name"].rpartition(" ")[0] or e["name"]
        label = None if head in seen else _mathtext(f"{head} {'/'.join(levels[head])}σ")
        seen.add(head)
        ax.add_patch(Ellipse(e["center"], e["width"], e["height"], angle=e["angle_deg"], fill=False,
                             edgecolor=e["color"], lw=lw, ls="--" if e["n_std"] > 2 else "-", label=label))


def _message(ax, text: str) -> None:
    import textwrap

    ax.set_axis_off()
    ax.text(0.5, 0.5, textwrap.fill(text, 60), ha="center", va="center", fontsize=7, transform=ax.transAxes,
            wrap=True)


def draw_view(ax, content: dict, legend: bool = True):
    """Draw :func:`view_content` on ``ax`` (working px, image orientation)."""
    ax.clear()
    if content["status"] != "ok":
        _message(ax, content["message"])
        return ax
    x0, x1, y0, y1 = content["window"]
    ax.imshow(content["image_crop"], cmap=CMAPS["image"], origin="upper", interpolation="nearest",
              extent=(x0 - 0.5, x1 - 0.5, y1 - 0.5, y0 - 0.5))
    heat = content["heatmap"]
    hx, hy = content["heatmap_origin"]
    c = heat.shape[-1]
    peak = float(np.nanmax(heat)) if heat.size else 0.0
    if peak > 0:
        masked = np.ma.masked_less(heat, 0.05 * peak)
        ax.imshow(masked, cmap=CMAPS["heatmap"], alpha=0.5, origin="upper", interpolation="nearest",
                  extent=(hx - 0.5, hx + c - 0.5, hy + c - 0.5, hy - 0.5), vmin=0, vmax=peak)
    _draw_ellipses(ax, content["ellipses"])
    pts = content["points"]
    style = {"observers": dict(marker="o", s=12, c=COLORS["observer"], edgecolors="white", linewidths=0.3),
             "reference": dict(marker="s", s=22, facecolors="none", edgecolors=COLORS["senior"], linewidths=1.2),
             "truth": dict(marker="x", s=30, c=COLORS["truth"]),
             "argmax": dict(marker="+", s=30, c=COLORS["argmax"]),
             "prediction": dict(marker="o", s=18, c=COLORS["prediction"], edgecolors="white", linewidths=0.5)}
    for name in ("observers", "reference", "truth", "argmax", "prediction"):
        p = pts.get(name)
        if p is not None and len(p):
            ax.scatter(p[:, 0], p[:, 1], zorder=4, label=_mathtext(content.get("labels", {}).get(name, name)),
                       **style[name])
    ax.set_xlim(x0 - 0.5, x1 - 0.5)
    ax.set_ylim(y1 - 0.5, y0 - 0.5)
    ax.set_aspect("equal")
    ax.set_title(f"{content['dataset']} · {content['method']} · image {content['image']} · "
                 f"L{content['landmark'] + 1} {content['landmark_name']}", fontsize=8)
    ax.set_xlabel("x (working px)")
    ax.set_ylabel("y (working px)")
    if legend:
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return ax


def draw_overview(ax, content: dict, legend: bool = True):
    """Draw :func:`overview_content` on ``ax`` (mm offsets from the reference, y down)."""
    from matplotlib.collections import EllipseCollection

    ax.clear()
    if content["status"] != "ok":
        _message(ax, content["message"])
        return ax
    off = content["offsets_mm"]
    obs = content["observer_offsets_mm"]
    if len(obs):
        ax.scatter(obs[:, 0], obs[:, 1], s=3, c=COLORS["observer"], alpha=0.3, lw=0, label="annotators − reference")
    f = content["fit_ellipses"]
    if len(f["centers"]):
        ax.add_collection(EllipseCollection(f["widths"], f["heights"], f["angles_deg"], units="xy",
                                            offsets=f["centers"], offset_transform=ax.transData,
                                            facecolors="none", edgecolors=COLORS["fitted"], linewidths=0.4,
                                            alpha=float(np.clip(15.0 / len(f["centers"]), 0.08, 0.5))))
        ax.plot([], [], color=COLORS["fitted"], lw=0.6, alpha=0.6, label=_mathtext("Σ̂ fit 1σ (each image)"))
    ax.scatter(off[:, 0], off[:, 1], s=6, c=COLORS["prediction"], lw=0, label="prediction − reference")
    _draw_ellipses(ax, content["learned_ellipses"], lw=1.2)
    if content.get("offset_ellipse") is not None:
        _draw_ellipses(ax, [content["offset_ellipse"]], lw=1.2)
    sel = content["selected"]
    ax.scatter([off[sel, 0]], [off[sel, 1]], s=60, facecolors="none", edgecolors="black", lw=1.2,
               label=f"image {content['image']}", zorder=5)
    ax.axhline(0, color="0.7", lw=0.5)
    ax.axvline(0, color="0.7", lw=0.5)
    finite = off[np.isfinite(off).all(-1)]
    lim = max(3 * max((e["width"] / 6 for e in content["learned_ellipses"]), default=0.0),
              float(np.percentile(np.abs(finite), 98)) if len(finite) else 1.0, 0.5) * 1.15
    ax.set_xlim(-lim, lim)
    ax.set_ylim(lim, -lim)
    ax.set_aspect("equal")
    ax.set_xlabel("Δx (mm)")
    ax.set_ylabel("Δy (mm, down)")
    ax.set_title(f"L{content['landmark'] + 1} {content['landmark_name']}: all {len(off)} images", fontsize=8)
    if legend:
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return ax


def explorer_figure(view: dict, overview: dict, fig=None):
    """A two-panel figure (single-image view, landmark overview); reuses ``fig`` when given."""
    import matplotlib.pyplot as plt

    if fig is None:
        fig = plt.figure(figsize=FIGSIZE)
    if len(fig.axes) == 2 and getattr(fig, "_lmk_explorer", False):
        ax1, ax2 = fig.axes  # reused: draw_view / draw_overview clear them
    else:
        fig.clear()
        # fixed axes positions (room for the legends at the right of each panel): rendering needs
        # no tight-bbox pass, which saves a third of the widget's update time
        ax1 = fig.add_axes((0.06, 0.11, 0.30, 0.80))
        ax2 = fig.add_axes((0.56, 0.11, 0.30, 0.80))
        fig._lmk_explorer = True
    draw_view(ax1, view)
    draw_overview(ax2, overview)
    return fig


def format_numbers(numbers: Mapping[str, float]) -> str:
    """HTML table of the uncertainty numbers (NaN shown as '–')."""
    rows = []
    for k, v in numbers.items():
        text = "–" if not np.isfinite(v) else (f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}")
        if k == "Σ̂ fit usable":
            text = "yes" if v else "no (flat or lost heatmap)"
        elif k == "PHD-Net high confidence":
            text = "yes" if v else "no"
        rows.append(f"<tr><td>{k}</td><td style='text-align:right'>{text}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


# ----------------------------------------------------------------------------------------------------------
# Widgets
# ----------------------------------------------------------------------------------------------------------

class LandmarkExplorer:
    """ipywidgets explorer: dataset, method, image and landmark dropdowns, a two-panel figure and the numbers.

    Parameters
    ----------
    source : ExplorerSource
    dataset, method : str, optional
        Initial choice (default: the first dataset; the first method with a
        cached result, else the first method).
    dpi : int
        Resolution of the rendered PNG (lower renders faster).

    Attributes
    ----------
    controls : dict
        ``"dataset"``, ``"method"``, ``"image"``, ``"landmark"`` Dropdowns.
    view, overview : dict
        The current :func:`view_content` / :func:`overview_content`.
    widget : ipywidgets.VBox
        Display this in JupyterLab (the explorer's ``_ipython_display_`` does).
    last_update_s : float
        Seconds of the last update (content + PNG render).
    """

    def __init__(self, source: ExplorerSource, dataset: str | None = None, method: str | None = None,
                 dpi: int = 80):
        import ipywidgets as w

        self.source = source
        self._busy = False
        ds = dataset or next(iter(source.datasets))
        self.controls = {
            "dataset": w.Dropdown(options=list(source.datasets), value=ds, description="dataset"),
            "method": w.Dropdown(options=[], description="method", layout=w.Layout(width="420px")),
            "image": w.Dropdown(options=[], description="image"),
            "landmark": w.Dropdown(options=[], description="landmark"),
        }
        self.message = w.HTML()
        self.numbers = w.HTML(layout=w.Layout(min_width="320px", flex="0 0 auto"))
        # the PNG's own size (FIGSIZE x dpi), so that JupyterLab's flex box neither stretches nor squeezes it
        self.image = w.Image(format="png", layout=w.Layout(width=f"{round(FIGSIZE[0] * dpi)}px",
                                                           height=f"{round(FIGSIZE[1] * dpi)}px", flex="0 0 auto"))
        from matplotlib.figure import Figure

        self._fig = Figure(figsize=FIGSIZE, dpi=dpi)
        self.widget = w.VBox([w.HBox([self.controls["dataset"], self.controls["method"]]),
                              w.HBox([self.controls["image"], self.controls["landmark"]]),
                              self.message, w.HBox([self.image, self.numbers])])
        self.view: dict = {}
        self.overview: dict = {}
        self.last_update_s = float("nan")
        self._refresh_dataset(method)
        self.controls["dataset"].observe(self._on_dataset, names="value")
        self.controls["method"].observe(self._on_method, names="value")
        self.controls["image"].observe(self._on_change, names="value")
        self.controls["landmark"].observe(self._on_change, names="value")
        self.update()

    # -- state ------------------------------------------------------------------------------------------
    @property
    def state(self) -> ExplorerState:
        c = self.controls
        return ExplorerState(c["dataset"].value, c["method"].value, c["image"].value, int(c["landmark"].value or 0))

    def _refresh_dataset(self, method: str | None = None) -> None:
        ds = self.controls["dataset"].value
        record = self.source.record(ds)
        cached = {m: self._is_cached(ds, m) for m in self.source.methods}
        opts = [(f"{m} · {_method_label(self.source.methods[m][0])}{'' if cached[m] else '  (not cached)'}", m)
                for m in self.source.methods]
        current = method or self.controls["method"].value
        if current not in self.source.methods:
            current = next((m for m in self.source.methods if cached[m]), next(iter(self.source.methods)))
        self._busy = True
        try:
            self.controls["method"].options = opts
            self.controls["method"].value = current
            lm_opts = [(f"L{k + 1} {n}", k) for k, n in enumerate(record.landmark_names)]
            old = self.controls["landmark"].value
            self.controls["landmark"].options = lm_opts
            self.controls["landmark"].value = old if old is not None and old < len(lm_opts) else 0
            self._refresh_images()
        finally:
            self._busy = False

    def _is_cached(self, ds: str, m: str) -> bool:
        try:
            return self.source.is_cached(ds, m)
        except ConfigError:
            return False

    def _refresh_images(self) -> None:
        from lmkcore.training.methods import default_splits

        ds, m = self.controls["dataset"].value, self.controls["method"].value
        res = self.source.result(ds, m) if self._is_cached(ds, m) else None
        rec = self.source.record(ds)
        if res is not None:
            ids = list(res.ids)
        else:
            try:
                ids = list(rec.splits[default_splits(rec)[1]])
            except ConfigError:
                ids = list(rec.ids)
        old = self.controls["image"].value
        self.controls["image"].options = ids
        self.controls["image"].value = old if old in ids else (ids[0] if ids else None)

    # -- events -----------------------------------------------------------------------------------------
    def _on_dataset(self, change) -> None:
        if self._busy:
            return
        self._refresh_dataset()
        self.update()

    def _on_method(self, change) -> None:
        if self._busy:
            return
        self._busy = True
        try:
            self._refresh_images()
        finally:
            self._busy = False
        self.update()

    def _on_change(self, change) -> None:
        if not self._busy:
            self.update()

    def update(self) -> None:
        """Recompute the content of the current choice and re-render (called on every control change)."""
        start = time.perf_counter()
        state = self.state
        self.view = view_content(self.source, state)
        self.overview = overview_content(self.source, state)
        if self.view["status"] != "ok":
            self.message.value = f"<div style='color:#b00;max-width:900px'><b>{self.view['message']}</b></div>"
            self.numbers.value = ""
        else:
            self.message.value = ""
            self.numbers.value = format_numbers(self.view["numbers"]) + "<hr>" + format_numbers(self.overview["numbers"])
        explorer_figure(self.view, self.overview, self._fig)
        buf = io.BytesIO()
        self._fig.savefig(buf, format="png", dpi=self._fig.dpi, bbox_inches=None)
        self.image.value = buf.getvalue()
        self.last_update_s = time.perf_counter() - start

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def explore(datasets: Mapping[str, Any], profile, cache_dir, seed: int = 0, methods=None,
            data_roots: Mapping[str, str] | None = None, **kw) -> LandmarkExplorer:
    """Build a :class:`LandmarkExplorer` (shortcut for ``LandmarkExplorer(ExplorerSource(...))``)."""
    return LandmarkExplorer(ExplorerSource(datasets, profile, cache_dir, seed, methods, data_roots), **kw)


def explorer_for(ctx, record, methods=None, extra_datasets: Mapping[str, Callable] | None = None, **kw) -> LandmarkExplorer:
    """The explorer of a notebook context: its dataset (and ``extra_datasets``), profile, seed and cache."""
    datasets = {ctx.dataset: record, **dict(extra_datasets or {})}
    methods = default_methods(record) if methods is None else methods
    roots = {ctx.dataset: str(ctx.data_root)} if ctx.data_root else {}
    return explore(datasets, ctx.profile, ctx.cache_dir, ctx.seed, methods, roots, **kw)
