"""lmkcore: uncertainty-aware anatomical landmark localisation (SCN, Gaussian heatmap uncertainty,
contour-hugging heatmaps, PHD-Net) on shared data and metrics.

``import lmkcore`` is light (no torch, no pandas); the entry points below are imported on first use:

* data: :func:`load_dataset` (``"synthetic"``, ``"isbi2015"``, ``"hand"``, ``"folder"``)
* experiments: :func:`get_profile`, :func:`experiment_config`, :func:`run_experiment`,
  :func:`load_model`, :class:`ExperimentConfig`, :class:`TrainConfig`, :class:`RunStore`
* analysis: :func:`fit_gaussians` (the Sigma-hat fit), :func:`gaussian_size` (sigma_maj * sigma_min),
  :mod:`metrics` (point errors, MRE, SDR...)

See README.md, "Use lmkcore from Python".
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> (module, attribute; None for the module itself)
_ENTRY_POINTS: dict[str, tuple[str, str | None]] = {
    "load_dataset": ("lmkcore.data.datasets", "load_dataset"),
    "get_profile": ("lmkcore.training.profiles", "get_profile"),
    "experiment_config": ("lmkcore.training.methods", "experiment_config"),
    "METHODS": ("lmkcore.training.methods", "METHODS"),
    "TrainConfig": ("lmkcore.training.trainer", "TrainConfig"),
    "ExperimentConfig": ("lmkcore.runs.experiment", "ExperimentConfig"),
    "run_experiment": ("lmkcore.runs.experiment", "run_experiment"),
    "load_model": ("lmkcore.runs.experiment", "load_model"),
    "RunStore": ("lmkcore.runs.store", "RunStore"),
    "fit_gaussians": ("lmkcore.analysis.fitting", "fit_gaussians"),
    "gaussian_size": ("lmkcore.analysis.uncertainty", "gaussian_size"),
    "metrics": ("lmkcore.analysis.metrics", None),
}

__all__ = ["__version__", *_ENTRY_POINTS]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _ENTRY_POINTS[name]
    except KeyError:
        raise AttributeError(f"module 'lmkcore' has no attribute {name!r}") from None
    mod = importlib.import_module(module)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_ENTRY_POINTS))
