"""Run profiles: how big and how long every experiment is.

``smoke``
    Tests: every notebook runs in seconds on a CPU (tiny data, a few steps).
``quick``
    The default of ``./run_all.sh``: all notebooks in under 30 minutes on a
    2-core CPU, on small images.
``paper``
    The papers' settings (full resolution, full training schedules): GPU and
    real data.
``paper-dry``
    ``paper`` in every size (input size and spacing, filters, widths, batch, MC
    samples, windows) but 2 training iterations (1 epoch for epoch schedules, e.g.
    McCouat & Voiculescu's 15 epochs) and the first 3 images of every split: runs
    every ``paper`` code path on a CPU.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import math

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
    base : str
        The profile whose sizes and notebook branches this one follows (``""``:
        itself); ``paper-dry`` follows ``paper``. See :attr:`sizes`.
    split_images : int or None
        Keep only the first this many images of every split (None: all).
    max_epochs : int or None
        Cap of epoch-based schedules (None: the schedule's own).
    method_overrides : tuple
        ``((method key, ((field, value), ...)), ...)``: settings this profile gives one method
        (:data:`lmkcore.training.methods.METHODS`), over the method's own fields and under the caller's:
        TrainConfig fields, ``augment`` as ``((AugmentConfig field, value), ...)``, and the
        ExperimentConfig fields ``input_width`` / ``input_height``. See :meth:`method_settings`; e.g.
        McCouat & Voiculescu's own settings for ``chh_onehot`` in the ``paper`` profile.
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
    base: str = ""
    split_images: int | None = None
    max_epochs: int | None = None
    method_overrides: tuple = ()

    @property
    def sizes(self) -> str:
        """Name of the profile whose sizes and notebook branches apply (``paper`` for ``paper-dry``)."""
        return self.base or self.name

    def restrict(self, record):
        """``record`` cut to :attr:`split_images` images per split (unchanged when None).

        Every split keeps its first ``split_images`` ids; a split that is the union of other splits (e.g.
        ``test_all`` = ``test1`` + ``test2``) also keeps their kept ids, so the parts stay inside the whole.
        The record then holds only the kept images (in its own order).
        """
        n = self.split_images
        if n is None:
            return record
        if not record.splits:
            return record.subset(list(record.ids)[:n])
        sets = {k: set(v) for k, v in record.splits.items()}
        first = {k: set(list(v)[:n]) for k, v in record.splits.items()}
        kept_per_split = {}
        for k, ids in record.splits.items():
            keep = set(first[k])
            parts = [o for o, members in sets.items() if o != k and members < sets[k]]
            if parts and set().union(*(sets[o] for o in parts)) == sets[k]:
                keep = keep.union(*(first[o] for o in parts))
            kept_per_split[k] = [i for i in ids if i in keep]
        kept = set().union(*kept_per_split.values())
        return record.subset([i for i in record.ids if i in kept]).with_splits(kept_per_split)

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

    def method_settings(self, method: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(TrainConfig fields, ExperimentConfig fields)`` this profile sets for ``method``
        (:attr:`method_overrides`; empty dicts when none). ``augment`` becomes an
        :class:`~lmkcore.training.augment.AugmentConfig`; ``epochs`` is capped by :attr:`max_epochs`."""
        from lmkcore.training.augment import AugmentConfig

        train = dict(dict(self.method_overrides).get(method, ()))
        experiment = {k: train.pop(k) for k in ("input_width", "input_height") if k in train}
        if "augment" in train:
            train["augment"] = AugmentConfig(**dict(train["augment"]))
        if self.max_epochs is not None and train.get("epochs") is not None:
            train["epochs"] = min(int(train["epochs"]), int(self.max_epochs))
        return train, experiment

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
#: McCouat & Voiculescu (2022), Sec. 4.2 (the text's ranges): translation +-10 px, intensity x U[0.5, 1], scale
#: U[0.95, 1.05], rotation U[-3, 3] deg; elastic as their code's imgaug ElasticTransformation(alpha U(0, 500),
#: sigma 30) at 640 x 800: that field (Gaussian-smoothed U(-1, 1) noise x alpha) has a displacement SD of
#: alpha x 0.0054 px (2.7 px at alpha 500) and a correlation length of about sigma sqrt(2) = 42 px; the B-spline
#: field here matches both: 16 control points per axis (spacing 49 x 62 px; its correlation SD ~0.82 spacing) and
#: coefficient SD U(0, 1) x 5.85 px (field SD 0.477 x coefficient SD: 0 to 2.8 px), Lipschitz cap 0.9.
MCCOUAT_AUGMENT = (("intensity_scale", 0.25), ("intensity_scale_center", 0.75), ("intensity_shift", 0.0),
                   ("translate", 0.0), ("translate_px", 10.0), ("rotate_deg", 3.0), ("scale", 0.05),
                   ("aniso_scale", 0.0), ("elastic_grid", 16), ("elastic_magnitude", 5.85),
                   ("elastic_magnitude_uniform", True), ("elastic_max_lipschitz", 0.9))
#: Thaler et al. (2021)'s code (melba_cep/dataset.py; Payer et al.'s framework) as
#: :class:`~lmkcore.training.augment.AugmentConfig` fields for the ``[0, 1]`` images augmented there (network input
#: ``2 x - 1``): intensity ``ShiftScaleClamp(random_shift=0.25, random_scale=0.25, clamp [-1, 1])`` on network
#: values (shift U(-0.25, 0.25), then x (1 + U(-0.25, 0.25)) about 0, clamp) = shift U(-0.125, 0.125) in [0, 1]
#: units, scale about 0.5, shift first, clamp [0, 1]; translation U(-10, 10) mm per axis; rotation U(-0.25, 0.25)
#: rad; isotropic scale 1 + U(-0.2, 0.2) times per-axis 1 + U(-0.2, 0.2); cubic B-spline deformation on 5 x 5
#: control points over the output image (SimpleITK mesh 2 + order 3), each coefficient U(-10, 10) mm per axis. The
#: mm ranges are converted with each image's working spacing (``sample_params(spacing=...)``). The Lipschitz cap
#: 0.9 never binds at the paper size (416 x 516 px at 0.465 mm/px: bound <= 0.38).
THALER_AUGMENT = (("intensity_shift", 0.125), ("intensity_scale", 0.25), ("intensity_pivot", 0.5),
                  ("intensity_shift_first", True), ("intensity_clamp", True), ("translate", 0.0),
                  ("translate_mm", 10.0), ("rotate_deg", math.degrees(0.25)), ("scale", 0.2), ("aniso_scale", 0.2),
                  ("elastic_grid", 5), ("elastic_magnitude", 10.0), ("elastic_distribution", "uniform"),
                  ("elastic_unit", "mm"), ("elastic_max_lipschitz", 0.9))
#: McCouat & Voiculescu (2022) Secs. 4.1-4.2 and their code (cephalometric.yaml, train.py): 640 x 800 input
#: (padded right/bottom to aspect 0.8, resized), Adam lr 1e-3 without weight decay or clipping, batch 4, 15 epochs,
#: MultiStepLR([4, 6, 8], 0.1) stepped per epoch, their augmentation. Every row: lmkcore.training.ledger.
MCCOUAT_2022_SETTINGS = (("input_width", 640), ("input_height", 800), ("optimizer", "adam"), ("lr", 1e-3),
                         ("batch_size", 4), ("epochs", 15), ("lr_schedule", "multistep"), ("lr_milestones", (4, 6, 8)),
                         ("lr_gamma", 0.1), ("l2_lambda", 0.0), ("clip_grad_norm", None), ("augment", MCCOUAT_AUGMENT),
                         ("log_every", 10), ("checkpoint_every", 100))

#: Thaler et al. (2021)'s code (melba_cep/main.py, dataset.py, network.py; docs/research/fidelity_facts.md 1.1) where
#: it produced the published numbers and the text is silent or differs: their augmentation (THALER_AUGMENT), the
#: heatmap layers initialised with std 1e-4 (the SCN text: 1e-3) and a Gaussian smoothing of std 0.15 mm of every
#: image before resampling. For the paper profile's Thaler methods only (scn_aniso, scn_iso, scn_fixed); Payer et al.
#: 2019's rows keep Payer's text settings. Every row: lmkcore.training.ledger.
THALER_2021_SETTINGS = (("augment", THALER_AUGMENT), ("heatmap_init_std", 1e-4), ("input_smoothing_mm", 0.15))


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
                     convention_overrides=(("payer", PAYER_2019_OVERRIDES),),
                     method_overrides=(("chh_onehot", MCCOUAT_2022_SETTINGS), ("chh_gaussian", MCCOUAT_2022_SETTINGS),
                                       ("scn_aniso", THALER_2021_SETTINGS), ("scn_iso", THALER_2021_SETTINGS),
                                       ("scn_fixed", THALER_2021_SETTINGS))),
}


def _dry_run(paper: Profile) -> Profile:
    """``paper`` with 2 training iterations (also in its convention overrides), 1 epoch and 3 images per split."""
    overrides = tuple((conv, tuple((k, 2 if k == "iterations" else v) for k, v in fields))
                      for conv, fields in paper.convention_overrides)
    return replace(paper, name="paper-dry", base="paper", iterations=2, convention_overrides=overrides,
                   split_images=3, max_epochs=1)


PROFILES["paper-dry"] = _dry_run(PROFILES["paper"])


def get_profile(name: str) -> Profile:
    """Return the profile called ``name`` or raise a :class:`ConfigError` listing the choices."""
    try:
        return PROFILES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}") from None


# --------------------------------------------------------------------------------------------------------------
# Sweep grids of notebook 04 (Payer et al. 2019, Figs. 6-7, Table 2), per profile
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SweepGrid:
    """The values notebook 04 sweeps under one profile.

    Attributes
    ----------
    iterations : int or None
        Training iterations of every sweep run (None: the profile's own schedule).
    alphas : list
        ``alpha`` of the learned-sigma regulariser (None: the method's default, 20).
    sigmas : list of float
        Fixed target sigmas (px).
    widths : list of int
        Network input widths (px).
    sizes : list of int
        Reduced training-set sizes (images; the full split is added by the notebook).
    """

    iterations: int | None
    alphas: list
    sigmas: list
    widths: list
    sizes: list


def sweep_grid(profile: Profile) -> SweepGrid:
    """:class:`SweepGrid` of ``profile``: the papers' values for ``paper`` (``paper-dry``: one value per sweep,
    the largest input), a shortened grid trained for half the iterations for ``quick``, and one value each
    (the code path only) otherwise."""
    if profile.sizes == "paper":
        grid = SweepGrid(None, [None, 1.0, 5.0, 50.0, 100.0], [2.0, 3.0, 4.0, 6.0], [128, 256, 416, 512], [10, 50, 100])
        if profile.name == "paper-dry":
            grid = replace(grid, alphas=grid.alphas[:2], sigmas=grid.sigmas[:1], widths=grid.widths[-1:], sizes=[2])
        return grid
    if profile.name == "quick":
        return SweepGrid(profile.iterations // 2, [None, 5.0, 100.0], [2.0, 3.0, 5.0], [64, 96, 128], [10, 50, 100])
    return SweepGrid(None, [None], [3.0], [profile.input_width], [10])
