"""Run profiles: how big and how long every experiment is.

``smoke``
    Tests: every notebook runs in seconds on a CPU (tiny data, a few steps).
``quick``
    The default of ``./run_all.sh``: all notebooks in under 30 minutes on a
    2-core CPU, on small images.
``paper``
    The papers' settings (full resolution, full training schedules): GPU and
    real data.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from lmkcore.errors import ConfigError


@dataclass(frozen=True)
class Profile:
    """Sizes shared by all notebooks of one profile.

    Attributes
    ----------
    name : str
        ``"smoke"``, ``"quick"`` or ``"paper"``.
    synthetic_images : int
        Number of images of the built-in synthetic dataset.
    synthetic_width : int
        Width in pixels of the synthetic images (height = 1.25 x width).
    input_width : int
        Working width in pixels images are resampled to for the networks
        (height follows the dataset's aspect ratio).
    iterations : int
        Training iterations of one heatmap network.
    num_filters : int
        Filters per conv layer (papers: 128).
    batch_size : int
    optimizer, lr : str, float
        ``"nesterov"`` with lr 1e-6 (the papers) or ``"adam"`` (fast runs).
    lr_schedule : str
        ``"constant"`` (the papers) or ``"cosine"``.
    l2_lambda : float
        L2 weight term (Thaler et al. 2021: 0.001).
    augment : dict
        :class:`~lmkcore.training.augment.AugmentConfig` fields.
    mc_samples : int
        MC-dropout passes (Thaler et al.: K = 20).
    target_lr_scale : float
        Learning-rate multiplier of the learned heatmap sigmas (papers: 1; short
        runs use 10 so that Sigma converges within the run).
    """

    name: str
    synthetic_images: int
    synthetic_width: int
    input_width: int
    iterations: int
    num_filters: int
    batch_size: int
    optimizer: str
    lr: float
    lr_schedule: str
    l2_lambda: float
    augment: tuple = ()
    mc_samples: int = 20
    target_lr_scale: float = 1.0

    def train_config(self, **overrides: Any):
        """A :class:`~lmkcore.training.trainer.TrainConfig` with this profile's settings."""
        from lmkcore.training.augment import AugmentConfig
        from lmkcore.training.trainer import TrainConfig

        kw = dict(iterations=self.iterations, num_filters=self.num_filters, batch_size=self.batch_size,
                  optimizer=self.optimizer, lr=self.lr, lr_schedule=self.lr_schedule, l2_lambda=self.l2_lambda,
                  target_lr_scale=self.target_lr_scale,
                  augment=AugmentConfig(**dict(self.augment)),
                  checkpoint_every=max(self.iterations // 4, 1), log_every=max(self.iterations // 40, 1))
        kw.update(overrides)
        return TrainConfig(**kw)

    def with_(self, **changes: Any) -> "Profile":
        """A copy with some fields changed (e.g. a shorter run for a sweep)."""
        return replace(self, **changes)


#: Payer et al. (2019), Sec. 3: intensity x[0.75, 1.25] + [-0.25, 0.25], translation +-20 px (of 512),
#: rotation +-15 deg, scale [0.6, 1.4], elastic: control points moved by up to 5 px.
PAPER_AUGMENT = (("intensity_scale", 0.25), ("intensity_shift", 0.25), ("translate", 20 / 512), ("rotate_deg", 15.0),
                 ("scale", 0.4), ("aniso_scale", 0.0), ("elastic_grid", 12), ("elastic_magnitude", 5.0))
#: Milder augmentation for short runs (the synthetic data has little pose variation to cover).
FAST_AUGMENT = (("intensity_scale", 0.2), ("intensity_shift", 0.2), ("translate", 0.03), ("rotate_deg", 8.0),
                ("scale", 0.08), ("aniso_scale", 0.03), ("elastic_grid", 6), ("elastic_magnitude", 1.0))


PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", synthetic_images=40, synthetic_width=64, input_width=64, iterations=12,
                     num_filters=8, batch_size=2, optimizer="adam", lr=1e-3, lr_schedule="cosine",
                     l2_lambda=1e-3, augment=FAST_AUGMENT, mc_samples=3, target_lr_scale=10.0),
    "quick": Profile("quick", synthetic_images=400, synthetic_width=192, input_width=128, iterations=800,
                     num_filters=16, batch_size=4, optimizer="adam", lr=1e-3, lr_schedule="cosine",
                     l2_lambda=1e-3, augment=FAST_AUGMENT, mc_samples=10, target_lr_scale=10.0),
    # Thaler et al. (2021), Sec. 4.1: SCN defaults, 40,000 iterations, Nesterov lr 1e-6, momentum 0.99,
    # batch 1, lambda 0.001; Payer et al. (2019): 512 px input (ISBI 1935 x 2400 -> 416 x 516 keeps the aspect).
    "paper": Profile("paper", synthetic_images=400, synthetic_width=768, input_width=416, iterations=40000,
                     num_filters=128, batch_size=1, optimizer="nesterov", lr=1e-6, lr_schedule="constant",
                     l2_lambda=1e-3, augment=PAPER_AUGMENT, mc_samples=20),
}


def get_profile(name: str) -> Profile:
    """Return the profile called ``name`` or raise a :class:`ConfigError` listing the choices."""
    try:
        return PROFILES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}") from None
