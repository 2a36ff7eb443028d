"""PHD-Net: patch-based heatmap + displacement regression with candidate smoothing and
confidence (Schobs et al., ISBI 2021).

Modules: :mod:`.model` (the network), :mod:`.labels` (labels and loss),
:mod:`.coordinates` (simple strategy, candidate smoothing, confidence thresholds),
:mod:`.experiment` (config, training, cached runs), :mod:`.published` (the published
cardiac error/confidence tables).
"""
from .coordinates import (candidate_smoothing, candidates, confidence_threshold, cross_fitted_high_confidence,
                          landmark_thresholds, simple_coordinates, upsampled_heatmap)
from .experiment import (PHDNetConfig, PHDNetResult, phdnet_config, predict_phdnet, run_phdnet, split_validation,
                         train_phdnet)
from .labels import (decode_displacement, displacement_targets, encode_displacement, patch_centres, patch_heatmaps,
                     phdnet_loss)
from .model import PATCH, PHDNet, count_parameters

__all__ = [
    "PATCH", "PHDNet", "PHDNetConfig", "PHDNetResult", "candidate_smoothing", "candidates", "confidence_threshold",
    "count_parameters", "cross_fitted_high_confidence", "decode_displacement", "displacement_targets",
    "encode_displacement", "landmark_thresholds", "patch_centres", "patch_heatmaps", "phdnet_config", "phdnet_loss",
    "predict_phdnet", "run_phdnet", "simple_coordinates", "split_validation", "train_phdnet", "upsampled_heatmap",
]
