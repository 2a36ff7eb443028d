"""Analysis: decoding heatmaps, Gaussian fitting, metrics, calibration, uncertainty, inter-observer
variability, clinical measures and their sampled propagation, PHD-Net coordinate strategies.

Nothing here imports :mod:`lmkcore.reporting`."""
