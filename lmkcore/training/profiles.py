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
        ``"step"`` (Thaler et al.'s code: x0.5 at 50 %, x0.1 of the base at 75 %),
        ``"constant"`` (Payer et al. 2019) or ``"cosine"`` (fast runs).
    l2_lambda : float
        Weight term ``l2_lambda ||w||^2`` added to the loss as computed (the
        authors' ``0.001 * l2_loss(w)`` beside their half squared error = 0.0005).
    augment : dict
        :class:`~lmkcore.training.augment.AugmentConfig` fields.
    mc_samples : int
        MC-dropout passes (Thaler et al.: K = 20).
    target_lr_scale : float
        Learning-rate multiplier of the learned heatmap sigmas (papers: 1; short
        runs use 10 so that Sigma converges within the run).
    clip_grad_norm : float or None
        Global gradient-norm clip (the authors' code: 10,000).
    convention_overrides : tuple
        ``((convention, ((field, value), ...)), ...)``: TrainConfig fields that
        this profile sets for methods of one target convention, e.g. Payer et
        al. 2019's own schedule for the ``"payer"`` rows of the ``paper`` profile.
        Applied over the profile's fields, under the method's and the caller's.
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
    clip_grad_norm: float | None = 1000.0
    convention_overrides: tuple = ()

    def train_config(self, **overrides: Any):
        """A :class:`~lmkcore.training.trainer.TrainConfig` with this profile's settings.

        Precedence: profile fields < :attr:`convention_overrides` of the run's convention
        (``overrides["convention"]`` or the TrainConfig default) < ``overrides``.
        """
        from lmkcore.training.augment import AugmentConfig
        from lmkcore.training.trainer import TrainConfig

        kw = dict(iterations=self.iterations, num_filters=self.num_filters, batch_size=self.batch_size,
                  optimizer=self.optimizer, lr=self.lr, lr_schedule=self.lr_schedule, l2_lambda=self.l2_lambda,
                  target_lr_scale=self.target_lr_scale, clip_grad_norm=self.clip_grad_norm,
                  augment=AugmentConfig(**dict(self.augment)))
        convention = overrides.get("convention", TrainConfig.convention)
        kw.update(dict(dict(self.convention_overrides).get(convention, ())))
        kw.update(checkpoint_every=max(int(kw["iterations"]) // 4, 1), log_every=max(int(kw["iterations"]) // 40, 1))
        kw.update(overrides)
        return TrainConfig(**kw)

    def with_(self, **changes: Any) -> "Profile":
        """A copy with some fields changed (e.g. a shorter run for a sweep)."""
        return replace(self, **changes)


#: Payer et al. 2019's own cephalogram settings (Sec. 3, 4.3; code ``cep/main.py``) for the ``"payer"``-convention
#: rows of the paper profile: 30,000 iterations, constant lr 1e-6, sigma init 2.5 px (code; the text gives none),
#: alpha = 20 (the convention's default), 0.001 * l2_loss(w) = 0.0005 ||w||^2, clip 10,000 (code).
PAYER_2019_OVERRIDES = (("iterations", 30000), ("lr_schedule", "constant"), ("init_sigma", 2.5), ("l2_lambda", 5e-4),
                        ("clip_grad_norm", 1e4))

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
    # Thaler et al. (2021), Sec. 4.1 and their code (melba_cep/main.py): SCN defaults, 40,000 iterations, batch 1,
    # Nesterov lr 1e-6 momentum 0.99, x0.5 at 20,000 and x0.1 at 30,000, global-norm clip 10,000,
    # 0.001 * l2_loss(w) = 0.0005 ||w||^2; Payer et al. (2019): 512 px input (1935 x 2400 -> 416 x 516 keeps the
    # aspect). The "payer" rows use Payer et al. 2019's own schedule. Every row: lmkcore.training.ledger.
    "paper": Profile("paper", synthetic_images=400, synthetic_width=768, input_width=416, iterations=40000,
                     num_filters=128, batch_size=1, optimizer="nesterov", lr=1e-6, lr_schedule="step",
                     l2_lambda=5e-4, augment=PAPER_AUGMENT, mc_samples=20, clip_grad_norm=1e4,
                     convention_overrides=(("payer", PAYER_2019_OVERRIDES),)),
}


def get_profile(name: str) -> Profile:
    """Return the profile called ``name`` or raise a :class:`ConfigError` listing the choices."""
    try:
        return PROFILES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}") from None
