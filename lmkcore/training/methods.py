"""The named methods every notebook compares, and how a profile turns them into experiments.

A method is a short key (``"scn_aniso"``) with a label and the
:class:`~lmkcore.training.trainer.TrainConfig` fields that define it; the profile
supplies sizes and schedules. Notebooks ask for methods by key so that the
same trained model (same cache key) serves every notebook.
"""
from __future__ import annotations

from typing import Any

from lmkcore.errors import ConfigError
from lmkcore.runs.experiment import ExperimentConfig
from lmkcore.training.profiles import Profile
from lmkcore.data.records import LandmarkDataset

#: key -> (label, TrainConfig fields)
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "scn_aniso": ("SCN, Σ-target (Thaler et al. 2021)", {"model": "scn", "target": "learned_aniso"}),
    "scn_iso": ("SCN, σ-target (Thaler et al. 2021)", {"model": "scn", "target": "learned_iso"}),
    "scn_fixed": ("SCN, σ = 3 fixed", {"model": "scn", "target": "fixed"}),
    # Payer et al. (2019): learned standard deviation, alpha ||sigma||^2 (convention "payer"; own paper-profile schedule)
    "scn_payer": ("SCN, learned σ (Payer et al. 2019)", {"model": "scn", "target": "learned_iso", "convention": "payer"}),
    "unet_iso": ("Localization U-Net, learned σ (Payer et al. 2019)",
                 {"model": "unet", "target": "learned_iso", "convention": "payer"}),
    "la_only_iso": ("LA only, learned σ (Payer et al. 2019)",
                    {"model": "la_only", "target": "learned_iso", "convention": "payer"}),
    # McCouat & Voiculescu (2022): ResNet-34 U-Net, 2D softmax, Adam lr 1e-3, batch 4 (Sec. 4.2).
    "chh_onehot": ("ResNet-34 U-Net, one-hot NLL (McCouat 2022)",
                   {"model": "resnet34_unet", "loss": "onehot_nll", "target": "fixed", "optimizer": "adam",
                    "lr": 1e-3, "batch_size": 4, "lr_schedule": "cosine"}),
    "chh_gaussian": ("ResNet-34 U-Net, Gaussian-target CE (σ = 1)",
                     {"model": "resnet34_unet", "loss": "gaussian_nll", "target": "fixed", "init_sigma": 1.0,
                      "optimizer": "adam", "lr": 1e-3, "batch_size": 4, "lr_schedule": "cosine"}),
}


def method_label(key: str) -> str:
    """Human-readable label of method ``key``."""
    return _method(key)[0]


def _method(key: str) -> tuple[str, dict[str, Any]]:
    try:
        return METHODS[key]
    except KeyError:
        raise ConfigError(f"unknown method {key!r}; known: {', '.join(METHODS)}") from None


def default_splits(record: LandmarkDataset) -> tuple[str, str]:
    """``(train split, eval split)``: the challenge split where there is one, else CV fold 1."""
    if "train" in record.splits and "test_all" in record.splits:
        return "train", "test_all"
    for evaluation in ("cv1/val", "cv1/test"):
        if "cv1/train" in record.splits and evaluation in record.splits:
            return "cv1/train", evaluation
    raise ConfigError(f"{record.name}: no train/test_all or cv1 splits; available: {', '.join(sorted(record.splits))}")


def experiment_config(profile: Profile, record: LandmarkDataset, method: str, *, reference: str | None = None,
                      train_split: str | None = None, eval_split: str | None = None, mc_samples: int = 0,
                      input_width: int | None = None, **train_overrides: Any) -> ExperimentConfig:
    """The :class:`ExperimentConfig` of ``method`` under ``profile`` on ``record``.

    ``reference`` is the annotation set used as ground truth (default the record's); every other
    keyword not named here is a :class:`~lmkcore.training.trainer.TrainConfig` field, e.g.
    ``target="fixed"`` (the heatmap target mode) or ``init_sigma=3.0``.

    Precedence of the training settings: the profile < the method's fields < the profile's settings for
    this method (:meth:`~lmkcore.training.profiles.Profile.method_settings`, e.g. McCouat & Voiculescu's
    640 x 800 input and epoch schedule in the ``paper`` profile) < ``train_overrides`` / ``input_width``.
    """
    _, fields = _method(method)
    if train_split is None or eval_split is None:  # explicit splits (e.g. CV folds) need no default pair
        tr, ev = default_splits(record)
        train_split, eval_split = train_split or tr, eval_split or ev
    method_train, method_exp = profile.method_settings(method)
    train_cfg = profile.train_config(**{**fields, **method_train, **train_overrides})
    width = input_width or method_exp.get("input_width") or profile.input_width
    height = method_exp.get("input_height") if input_width is None else None
    return ExperimentConfig(train=train_cfg, input_width=width, input_height=height,
                            train_split=train_split, eval_split=eval_split,
                            reference=reference or record.reference, mc_samples=mc_samples)
