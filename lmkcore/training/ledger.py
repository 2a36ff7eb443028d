"""The fidelity ledger: every setting of each reproduced paper beside lmkcore's ``paper``-profile value.

One :class:`LedgerRow` per (paper, method, setting) with the value in the paper's text, the value in the
authors' public code where it differs (or where the text gives none), lmkcore's value in the ``paper``
profile and the source (section, equation or code setting; see ``docs/research/fidelity_facts.md``). A row
whose lmkcore value is not what produced the published numbers carries the reason in ``deviation``; a
deviation exists nowhere else.

Rows with a ``field`` are checked against the configuration lmkcore actually builds
(:func:`check_paper_configs`, run by the tests): ``train.<name>`` is a
:class:`~lmkcore.training.trainer.TrainConfig` field, ``augment.<name>`` a field of its
:class:`~lmkcore.training.augment.AugmentConfig`, ``experiment.<name>`` an
:class:`~lmkcore.runs.experiment.ExperimentConfig` field, ``target.<name>`` an attribute of the
:class:`~lmkcore.training.targets.HeatmapTarget` the trainer builds (so resolved defaults such as alpha
are checked), ``profile.<name>`` a :class:`~lmkcore.training.profiles.Profile` field and ``fit.<name>`` a
default of :func:`lmkcore.analysis.fitting.fit_gaussians`. PHD-Net (``schobs2021``, "method" ``phdnet``):
``phdnet.<name>`` a :class:`~lmkcore.runs.phdnet.PHDNetConfig` field of
:func:`~lmkcore.runs.phdnet.phdnet_config`, ``phdnet_model.<name>`` an attribute of the network
:func:`~lmkcore.runs.phdnet.build_model` builds for one landmark (``parameters_m``: its parameters in
millions, 2 decimals), ``phdnet_train.optimizer`` the class name of the optimiser training uses,
``phdnet_run.<NAME>`` a constant of :mod:`lmkcore.runs.phdnet` (``augmentation``: ``"none"`` or ``"on"``),
``phdnet_label.<...>`` a value computed with the label and loss functions (module
:mod:`lmkcore.training.phdnet_targets`).

Each notebook prints the rows of its paper(s) at the top with :func:`show_ledger`.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, fields
from types import SimpleNamespace
from typing import Any, Iterable

from lmkcore.errors import ConfigError

__all__ = ["LedgerRow", "LEDGER", "PAPERS", "PAPER_METHODS", "ledger_rows", "ledger_table", "show_ledger",
           "check_paper_configs"]

#: Paper keys and their citation.
PAPERS: dict[str, str] = {
    "thaler2021": "Thaler, Payer, Urschler, Stern 2021 (MELBA): Gaussian heatmap uncertainty",
    "payer2019": "Payer, Stern, Bischof, Urschler 2019 (MedIA): SpatialConfiguration-Net",
    "mccouat2022": "McCouat & Voiculescu 2022 (CVPR): contour-hugging heatmaps",
    "schobs2021": "Schobs et al. 2021 (ISBI): PHD-Net",
}

#: lmkcore method keys (:data:`lmkcore.training.methods.METHODS`) reproducing each paper's rows; the
#: ``paper``-profile configuration of each is checked against the ledger. ``"phdnet"`` is not a METHODS key:
#: it stands for :func:`lmkcore.runs.phdnet.phdnet_config` (checked by :func:`check_paper_configs` too).
PAPER_METHODS: dict[str, tuple[str, ...]] = {
    "thaler2021": ("scn_aniso", "scn_iso", "scn_fixed"),
    "payer2019": ("scn_payer", "unet_iso", "la_only_iso"),
    "mccouat2022": ("chh_onehot", "chh_gaussian"),
    "schobs2021": ("phdnet",),
}


@dataclass(frozen=True)
class LedgerRow:
    """One setting of one paper (and method).

    Attributes
    ----------
    paper : str
        Key of :data:`PAPERS`.
    method : str
        lmkcore method key the row applies to, or ``"*"`` for every method of the paper.
    setting : str
        What is set (e.g. ``"iterations"``).
    paper_text : str
        The value in the paper's text ("not stated" where it gives none).
    authors_code : str
        The value in the authors' public code where it differs from the text or the text gives none; ``""``
        where they agree or there is no code.
    lmkcore : str
        lmkcore's ``paper``-profile value, as shown to readers.
    source : str
        Where the paper/code values come from.
    field : str or None
        Configuration path checked by :func:`check_paper_configs` (module doc), None for settings that are
        not a configuration value.
    value : Any
        The value ``field`` must have.
    deviation : str
        Why lmkcore's value is not the one that produced the published numbers; ``""`` if it is.
    """

    paper: str
    method: str
    setting: str
    paper_text: str
    authors_code: str
    lmkcore: str
    source: str
    field: str | None = None
    value: Any = None
    deviation: str = ""


def _r(paper, method, setting, text, code, ours, source, field=None, value=None, deviation=""):
    return LedgerRow(paper, method, setting, text, code, ours, source, field, value, deviation)


_T, _P, _M, _S = "thaler2021", "payer2019", "mccouat2022", "schobs2021"
_INPUT_DEV = ("images are resampled to 416 px wide keeping the aspect (416 x 516 for ISBI, 0.4651 mm/px) instead of "
              "being centred in a 512 x 512 frame at 0.46875 mm/px: heatmap pixels 0.8 % smaller")
_INT_DEV = "the ranges act on [0, 1] images before the map to [-1, 1]: twice the code's shift in network units"
_TAUG = "dataset.py (data_generator); profiles.THALER_AUGMENT"

#: Every row. Sources: the papers in /work/shared/papers and docs/research/fidelity_facts.md (authors' code).
LEDGER: tuple[LedgerRow, ...] = (
    # ---------------------------------------------------------------- Thaler et al. 2021, all methods
    _r(_T, "*", "network", "SCN with its default parameters (Sec. 4.1)", "network_scn_mia: 128 filters, 4 levels",
       "SCN, 128 filters", "Sec. 4.1; melba_cep/network.py", "train.model", "scn"),
    _r(_T, "*", "filters", "128 (SCN default)", "", "128", "Sec. 4.1; network.py", "train.num_filters", 128),
    _r(_T, "*", "input size and spacing", "not stated", "512 x 512, 0.46875 mm/px, image centred",
       "416 px wide, aspect kept", "melba_cep/main.py image_size, image_spacing", "experiment.input_width", 416,
       _INPUT_DEV),
    _r(_T, "*", "input pre-smoothing", "not stated", "Gaussian sigma 0.15 mm before resampling",
       "Gaussian std 0.15 mm at the original resolution (1.5 px at 0.1 mm/px; scipy gaussian_filter, edges "
       "'nearest'), before padding/resizing (data.loader.GaussianPresmooth via the image cache's preprocess hook)",
       "dataset.py image_gaussian_sigma", "train.input_smoothing_mm", 0.15),
    _r(_T, "*", "iterations", "40,000 (Sec. 4.1)", "", "40,000", "Sec. 4.1; main.py max_iter",
       "train.iterations", 40000),
    _r(_T, "*", "batch size", "not stated", "1", "1", "main.py", "train.batch_size", 1),
    _r(_T, "*", "optimiser", "not stated (SCN: Nesterov, momentum 0.99)", "MomentumOptimizer(0.99, nesterov)",
       "Nesterov SGD", "main.py", "train.optimizer", "nesterov"),
    _r(_T, "*", "momentum", "not stated (SCN: 0.99)", "0.99", "0.99", "main.py", "train.momentum", 0.99),
    _r(_T, "*", "learning rate", "not stated (SCN: 1e-6)", "1e-6", "1e-6", "main.py", "train.lr", 1e-6),
    _r(_T, "*", "lr schedule", "not stated", "x0.5 at 20,000, x0.1 (of the base) at 30,000 it",
       "step: x0.5 at 50 %, x0.1 at 75 %", "main.py learning_rates, boundaries", "train.lr_schedule", "step"),
    _r(_T, "*", "gradient clipping", "not stated", "global norm 10,000", "10,000", "main.py clip_by_global_norm",
       "train.clip_grad_norm", 1e4),
    _r(_T, "*", "weight decay", "lambda ||w||^2, lambda = 0.001 (Sec. 4.1)", "0.001 * l2_loss(w) = 0.0005 ||w||^2",
       "0.0005 ||w||^2 (conv weights)", "Sec. 4.1; main.py reg_constant", "train.l2_lambda", 5e-4),
    _r(_T, "*", "data term", "sum (h_hat - h)^2 (Eq. 7)", "l2_loss / batch = 0.5 sum (h_hat - h)^2 / B",
       "0.5 sum / B (convention authors_code)", "Eq. 7; main.py", "target.convention", "authors_code"),
    _r(_T, "*", "target convention", "sigma = standard deviation (Eq. 5-6)",
       "sigmas are variances (px^2): Sigma = R diag(v_maj, v_min) R^T", "variances (authors_code)",
       "Eq. 5-6; heatmap_image_generator.generate_heatmap_target_sigmas_rotation; Table 4 sigma=3 -> 0.66 mm^2",
       "train.convention", "authors_code"),
    _r(_T, "*", "target init", "sigma_maj = sigma_min = 3, theta = 0 (Sec. 4.1)", "variances 3 px^2, rotation 0",
       "3 px^2, theta 0", "Sec. 4.1; main.py", "train.init_sigma", 3.0),
    _r(_T, "*", "gamma", "100 (Sec. 4.1, Eq. 4)", "", "100", "Sec. 4.1; sigma_scale", "target.gamma", 100.0),
    _r(_T, "*", "dropout", "not stated (SCN: 0.5)", "0.5 after the first conv of each LA level", "0.5",
       "network.py dropout_rate", "train.dropout", 0.5),
    _r(_T, "*", "heatmap-layer init", "SCN: N(0, 0.001)", "truncated normal std 1e-4 (LA and SC heatmap layers)",
       "N(0, 1e-4) for both heatmap layers", "network.py", "train.heatmap_init_std", 1e-4,
       "a plain normal, not the code's normal truncated at 2 std (whose SD is 0.88e-4)"),
    _r(_T, "*", "intensity augmentation: shift", "random shift (no range)",
       "shift U(-0.25, 0.25) on network values in [-1, 1]", "U(-0.125, 0.125) on [0, 1] grey values (= +-0.25 in "
       "network units)", _TAUG, "augment.intensity_shift", 0.125),
    _r(_T, "*", "intensity augmentation: scale", "random scale (no range)",
       "x (1 + U(-0.25, 0.25)) about 0 of [-1, 1]", "x U[0.75, 1.25]", _TAUG, "augment.intensity_scale", 0.25),
    _r(_T, "*", "intensity augmentation: scale centre", "not stated", "0 in network units (ShiftScaleClamp)",
       "0.5 of [0, 1] (= 0 in network units)", _TAUG, "augment.intensity_pivot", 0.5),
    _r(_T, "*", "intensity augmentation: order", "not stated", "shift, then scale", "shift, then scale", _TAUG,
       "augment.intensity_shift_first", True),
    _r(_T, "*", "intensity augmentation: clamp", "not stated", "clamp to [-1, 1]", "clamp to [0, 1] (= [-1, 1])",
       _TAUG, "augment.intensity_clamp", True,
       "lmkcore changes intensities before the spatial resampling, so regions from outside the image stay at the "
       "background (-1); the code resamples first (its outside value is shifted and scaled too)"),
    _r(_T, "*", "translation", "translation (no range)", "U(-10, 10) mm per axis",
       "U(-10, 10) mm per axis, in px with each image's working spacing (21.5 px at 0.465 mm/px)", _TAUG,
       "augment.translate_mm", 10.0),
    _r(_T, "*", "rotation", "rotation (no range)", "U(-0.25, 0.25) rad", "U(-14.32, 14.32) deg (0.25 rad)", _TAUG,
       "augment.rotate_deg", 14.32394487827058),
    _r(_T, "*", "scale", "scaling (no range)", "1 + U(-0.2, 0.2), composed with per-axis 1 + U(-0.2, 0.2)",
       "isotropic 1 + U(-0.2, 0.2)", _TAUG, "augment.scale", 0.2),
    _r(_T, "*", "per-axis scale", "not stated", "1 + U(-0.2, 0.2) per axis", "1 + U(-0.2, 0.2) per axis", _TAUG,
       "augment.aniso_scale", 0.2),
    _r(_T, "*", "elastic deformation: grid", "elastic deformation (no parameters)",
       "cubic B-spline, 5 x 5 control points over the output image", "cubic B-spline, 5 x 5 control points over "
       "the working image", _TAUG, "augment.elastic_grid", 5,
       "the grid spans lmkcore's 416 x 516 working image (control spacing 96.5 x 119.8 mm) instead of the code's "
       "512 x 512 frame of 240 mm (120 mm)"),
    _r(_T, "*", "elastic deformation: magnitude", "not stated", "each coefficient U(-10, 10) mm per axis",
       "each coefficient U(-10, 10) mm per axis (elastic_distribution 'uniform', elastic_unit 'mm'; Lipschitz cap "
       "0.9, never reached at this size)", _TAUG, "augment.elastic_magnitude", 10.0),
    _r(_T, "*", "elastic deformation: distribution", "not stated", "uniform (SimpleITK B-spline parameters)",
       "uniform", _TAUG, "augment.elastic_distribution", "uniform"),
    _r(_T, "*", "elastic deformation: unit", "not stated", "mm", "mm (per-axis working spacing)", _TAUG,
       "augment.elastic_unit", "mm"),
    _r(_T, "*", "Sigma-hat fit model", "Eq. 4 with amplitude gamma / (2 pi sqrt|Sigma|), robust least squares "
       "(Branch et al. 1999 = trust-region reflective) from the maximum (Sec. 3.2)", "not released",
       "Eq. 4 tied amplitude, plain least squares", "Sec. 3.2", "fit.model", "tied"),
    _r(_T, "*", "Sigma-hat fit loss", "no robust loss named (Sec. 3.2)", "not released", "linear",
       "Sec. 3.2", "fit.loss", "linear"),
    _r(_T, "*", "Sigma-hat fit gamma", "100 (Eq. 4)", "not released", "100", "Eq. 4", "fit.gamma", 100.0),
    _r(_T, "*", "Sigma-hat fit window", "not stated", "not released", "15 x 15 px around the maximum",
       "Sec. 3.2", "experiment.fit_window", 15,
       "unknown in the paper: an implementation choice of lmkcore"),
    _r(_T, "*", "MC dropout samples K", "20 (Sec. 4.1)", "no MC path in the code", "20", "Sec. 4.1",
       "profile.mc_samples", 20),
    _r(_T, "scn_fixed", "MCD baselines' model", "fixed targets (Sec. 5.4): the sigma = 3 model", "not in the code",
       "notebook 04: MC dropout (MCD-x-max, MCD-h Sigma-hat-fit) on the fixed sigma = 3 model, in the 5-landmark "
       "11-observer-mean 4-fold CV of Table 4", "Sec. 5.4"),
    _r(_T, "*", "ground truth, Table 2 Test1/Test2", "not stated", "junior, senior or challenge (landmark_sources)",
       "the record's reference (senior)", "Sec. 5.1; dataset.py"),
    _r(_T, "*", "ground truth, CV jun. / Fig. 3 / Fig. 9", "junior annotations (Sec. 5.1, Table 2)", "junior",
       "junior with --param reference=junior: notebook 01 trains the Sigma-target SCN in 4-fold CV (cv1-cv4) and "
       "pools the val predictions (Table 2 CV jun. rows), notebook 02 draws its Fig. 3 panel, notebook 05 its Fig. 9; "
       "other references: not run (section skipped)", "Sec. 5.1; lmkcore.runs.crossval"),
    _r(_T, "*", "splits", "ISBI: 150 train, Test1 150, Test2 100; CV jun.: 4-fold over 400",
       "setup_ann train/test1/test2, all_landmarks/cv/set1-4 (300/100)",
       "train / test_all (test1, test2); CV jun.: cv1-cv4 (all_landmarks/cv/set1-4, 300/100) with reference=junior",
       "Sec. 5.1; setup_ann"),
    _r(_T, "*", "inter-observer model (Tables 3-4)", "mean of the 11 observers, 5 landmarks, 4-fold CV over 100",
       "5_landmarks/cv/set1-4 (75/25), target = mean of 11",
       "notebooks 03/04: the 5 landmarks L1..L5, reference all_mean (mean of the 11 observers), 4-fold CV obs_cv1-4 "
       "(75/25) pooled over the 100 val images; learned Sigma per fold and mean over folds (synthetic data: the same "
       "5 landmarks, cv1-4 over all images)", "Sec. 5.3; lmkcore.analysis.interobserver.observer_mean_cv_record"),
    # ---------------------------------------------------------------- Thaler et al. 2021, per method
    _r(_T, "scn_aniso", "target", "Sigma-target: learned theta, sigma_maj, sigma_min (Eq. 5-7)",
       "sigmas [N, 2] (variances) + rotation [N]", "learned_aniso", "Eq. 5-7; main.py", "train.target",
       "learned_aniso"),
    _r(_T, "scn_aniso", "alpha", "5, on sigma_maj sigma_min (Eq. 7)", "5, on v_maj v_min (power 1) / batch",
       "5 * sum v_maj v_min", "Sec. 4.1; main.py sigma_regularization, sigma_loss_power", "target.alpha", 5.0),
    _r(_T, "scn_iso", "target", "sigma-target (Table 4)", "same_sigma=True: one variance per landmark",
       "learned_iso (one variance)", "Table 4; README", "train.target", "learned_iso"),
    _r(_T, "scn_iso", "alpha", "not stated", "5 (README: same_sigma, sigma_regularization 5) on v^2",
       "5 * sum v^2", "README", "target.alpha", 5.0),
    _r(_T, "scn_fixed", "target", "fixed isotropic variance 3.0 (Sec. 5.4)", "same_sigma, alpha 0, stop_gradient",
       "fixed, 3 px^2", "Sec. 5.4; README", "train.target", "fixed"),
    _r(_T, "scn_fixed", "alpha", "0", "0", "0", "README", "target.alpha", 0.0),
    # ---------------------------------------------------------------- Payer et al. 2019, 2D cephalograms
    _r(_P, "*", "input size and spacing", "512 x 512 (Sec. 4.3)", "512 x 512 at 0.46875 mm/px, centred",
       "416 px wide, aspect kept", "Sec. 4.3; cep/main.py", "experiment.input_width", 416, _INPUT_DEV),
    _r(_P, "*", "filters", "128 (Sec. 3)", "", "128", "Sec. 3", "train.num_filters", 128),
    _r(_P, "*", "iterations", "30,000 for 2DSkull (Sec. 4.3)", "", "30,000", "Sec. 4.3; cep/main.py max_iter",
       "train.iterations", 30000),
    _r(_P, "*", "optimiser", "Nesterov, momentum 0.99 (Sec. 3)", "", "Nesterov SGD", "Sec. 3",
       "train.optimizer", "nesterov"),
    _r(_P, "*", "momentum", "0.99 (Sec. 3)", "", "0.99", "Sec. 3", "train.momentum", 0.99),
    _r(_P, "*", "learning rate", "1e-6 (Sec. 3)", "", "1e-6", "Sec. 3", "train.lr", 1e-6),
    _r(_P, "*", "lr schedule", "constant", "constant", "constant", "Sec. 3; cep/main.py",
       "train.lr_schedule", "constant"),
    _r(_P, "*", "batch size", "1 (Sec. 3)", "", "1", "Sec. 3", "train.batch_size", 1),
    _r(_P, "*", "gradient clipping", "not stated", "global norm 10,000", "10,000", "cep/main.py",
       "train.clip_grad_norm", 1e4),
    _r(_P, "*", "weight decay", "lambda = 0.0005 on ||w||^2 beside the full squared error (Eq. 2)",
       "0.001 * l2_loss(w) = 0.0005 ||w||^2 beside the half squared error", "0.0005 ||w||^2, half squared error",
       "Eq. 2; cep/main.py reg_constant", "train.l2_lambda", 5e-4),
    _r(_P, "*", "target convention", "sigma = standard deviation, alpha ||sigma||^2 (Eq. 1-2)",
       "std; 20 * l2_loss(sigma) = 10 sum sigma^2 beside the half squared error", "payer",
       "Eq. 1-2; generate_heatmap_target", "target.convention", "payer"),
    _r(_P, "*", "target", "learned isotropic sigma per landmark (Eq. 1)", "", "learned_iso", "Eq. 1",
       "train.target", "learned_iso"),
    _r(_P, "*", "sigma init", "not stated (Fig. 2: a learned sigma of 2.16)", "2.5 px", "2.5 px",
       "cep/main.py sigmas", "train.init_sigma", 2.5),
    _r(_P, "*", "alpha", "20 (2D, Sec. 3)", "20 * l2_loss = 10 sum sigma^2 (relative to the halved data term: 20)",
       "20", "Sec. 3; cep/main.py", "target.alpha", 20.0),
    _r(_P, "*", "gamma", "100 (2D)", "", "100", "Sec. 3", "target.gamma", 100.0),
    _r(_P, "*", "dropout", "0.5 (Sec. 3)", "", "0.5", "Sec. 3", "train.dropout", 0.5),
    _r(_P, "*", "heatmap-layer init", "N(0, 0.001)", "truncated normal std 1e-4", "N(0, 0.001)", "Sec. 3",
       deviation="the code's 1e-4 not adopted"),
    _r(_P, "*", "intensity augmentation", "x U[0.75, 1.25], + U[-0.25, 0.25]", "shift +-0.25 then x(1 +- 0.25)",
       "shift +-0.25, scale +-0.25", "Sec. 3", "augment.intensity_scale", 0.25, _INT_DEV),
    _r(_P, "*", "translation", "U[-20, 20] px (of 512)", "+-10 mm", "20/512 of the size", "Sec. 3",
       "augment.translate", 20 / 512),
    _r(_P, "*", "rotation", "U[-15, 15] deg", "+-0.25 rad", "15 deg", "Sec. 3", "augment.rotate_deg", 15.0),
    _r(_P, "*", "scale", "U[0.6, 1.4]", "1+-0.2 x per-axis 1+-0.2", "1 +- 0.4", "Sec. 3", "augment.scale", 0.4),
    _r(_P, "*", "elastic deformation", "12 x 12 px grid moved by 5 px", "5 x 5 grid, max 10 mm", "12 grid, SD 5 px",
       "Sec. 3", "augment.elastic_grid", 12, "lmkcore's magnitude is a displacement SD (the text's 5 px), "
       "capped by a Lipschitz bound; the code's 5 x 5 / 10 mm not adopted"),
    _r(_P, "*", "landmark extraction", "bicubic upsampling to the original + argmax (Eq. 3)",
       "argmax + quadratic sub-pixel on the network grid", "argmax + sub-pixel refinement on the network grid",
       "Sec. 3; HeatmapTest"),
    _r(_P, "*", "ground truth", "Wang et al. protocol", "challenge (= senior except L16 in Test2)",
       "the record's reference (senior)", "cep/README", deviation="challenge GT selectable once the reference "
       "parameter lands (issue 13, item 4); senior differs only in L16 of Test2"),
    _r(_P, "*", "splits", "150 train / 250 test (Test1 150 + Test2 100)", "", "train / test_all", "Sec. 4.3"),
    _r(_P, "scn_payer", "network", "SCN (LA x SC)", "", "scn", "Sec. 3", "train.model", "scn"),
    _r(_P, "unet_iso", "network", "Localization U-Net, same loss (learned sigma)", "", "unet", "Sec. 4",
       "train.model", "unet"),
    _r(_P, "la_only_iso", "network", "LA component alone", "", "la_only", "Fig. 9", "train.model", "la_only"),
    # ---------------------------------------------------------------- McCouat & Voiculescu 2022 (issue 14)
    # lmkcore values: notebook 06's chh_onehot / chh_gaussian under the paper profile (lmkcore.training.methods with
    # Profile.method_overrides = profiles.MCCOUAT_2022_SETTINGS); checked by check_paper_configs.
    _r(_M, "*", "input width", "640 x 800 (Sec. 4.1)", "CACHED_IMAGE_SIZE [640, 800]", "640 px",
       "Sec. 4.1; cephalometric.yaml", "experiment.input_width", 640),
    _r(_M, "*", "input height and padding", "640 x 800 (Sec. 4.1)",
       "PadToAspectRatio(0.8, right-bottom), then resize; 0.30234 mm/px",
       "800 px: zero-padded right/bottom to 0.8 (ISBI 1935 x 2419), resized; 0.30234 (x) / 0.30237 (y) mm/px",
       "Sec. 4.1; landmark_dataset.py", "experiment.input_height", 800,
       "the padded frame is whole pixels (2419 rows for 2418.75): y spacing 0.01 % larger than x"),
    _r(_M, "*", "input intensity", "not stated", "8-bit grey values 0-255, no normalisation",
       "grey values in [0, 1] mapped to [-1, 1]", "landmark_dataset.py",
       deviation="an affine rescaling of the input (the network's first convolution and BN absorb it up to the "
                 "zero padding)"),
    _r(_M, "*", "network", "U-Net, ResNet-34 encoder, ImageNet-pretrained; decoder 256,128,64,32,32", "smp.Unet",
       "resnet34_unet (encoder 64, decoder 256/128/64/32/32)", "Sec. 3.1; model.py", "train.model", "resnet34_unet"),
    _r(_M, "*", "encoder initialisation", "ImageNet-pretrained ResNet-34 (Sec. 3.1)", "encoder_weights='imagenet'",
       "random; --param encoder_weights=PATH loads a local ResNet-34 state dict", "Sec. 3.1; model.py",
       "train.encoder_weights_sha256", None,
       "no ImageNet weights offline (never downloaded): the encoder starts from scratch unless notebook 06 gets "
       "--param encoder_weights=PATH (the file's SHA-256 is part of the model's cache key)"),
    _r(_M, "*", "optimiser", "Adam (Sec. 4.2)", "", "Adam", "Sec. 4.2; train.py", "train.optimizer", "adam"),
    _r(_M, "*", "learning rate", "0.001 (Sec. 4.2)", "", "1e-3", "Sec. 4.2; config.py", "train.lr", 1e-3),
    _r(_M, "*", "batch size", "4 (Sec. 4.2)", "", "4", "Sec. 4.2; cephalometric.yaml", "train.batch_size", 4),
    _r(_M, "*", "epochs", "15 over the 150 training images (Sec. 4.2)", "EPOCHS 15", "15 (38 batches per epoch)",
       "Sec. 4.2; cephalometric.yaml", "train.epochs", 15),
    _r(_M, "*", "lr schedule", "x0.1 at epochs 4, 6, 8 (Sec. 4.2)", "MultiStepLR([4, 6, 8], 0.1), stepped per epoch",
       "multistep (MultiStepLR semantics)", "Sec. 4.2; train.py", "train.lr_schedule", "multistep"),
    _r(_M, "*", "lr milestones", "epochs 4, 6, 8", "[4, 6, 8]", "(4, 6, 8)", "Sec. 4.2; train.py",
       "train.lr_milestones", (4, 6, 8)),
    _r(_M, "*", "lr factor", "x0.1", "gamma 0.1", "0.1", "Sec. 4.2; train.py", "train.lr_gamma", 0.1),
    _r(_M, "*", "weight decay", "not stated", "none (Adam without weight_decay)", "0", "train.py",
       "train.l2_lambda", 0.0),
    _r(_M, "*", "gradient clipping", "not stated", "none", "none", "train.py", "train.clip_grad_norm", None),
    _r(_M, "chh_onehot", "target and loss", "one-hot at the GT pixel, 2D softmax + NLL (Eq. 1-2)",
       "GT position truncated (astype(int))", "onehot_nll, nearest pixel (round)", "Sec. 3.1; landmark_dataset.py",
       "train.loss", "onehot_nll",
       "text silent on rounding; the code's floor (a 0.5 px shift of the target) is available "
       "(training.losses rounding='floor') but not used for training"),
    _r(_M, "chh_gaussian", "target and loss", "Fig. 4a: a model trained on Gaussian heatmaps, sigma = 1",
       "not released", "gaussian_nll: 2D softmax, cross-entropy with a normalised Gaussian of std 1 px",
       "Fig. 4a", "train.loss", "gaussian_nll", "how the Fig. 4a model was trained is not stated: lmkcore trains it "
       "like the one-hot model with a Gaussian target"),
    _r(_M, "chh_gaussian", "Gaussian sigma", "1 (Fig. 4a)", "not released", "1 px", "Fig. 4a", "train.init_sigma", 1.0),
    _r(_M, "*", "training images", "all 150 training images (Sec. 4.2)", "TrainingData (150)",
       "train (all 150); Test1 halves calibrate", "Sec. 4.2", "experiment.train_split", "train"),
    _r(_M, "*", "ground truth", "mean of senior and junior", "mean of the annotator folders",
       "mean of senior and junior (notebook 06: reference 'mean' unless --param reference names another set)",
       "Sec. 4.1; landmark_dataset.py"),
    _r(_M, "*", "augmentation: translation", "+-10 px in x and y", "translate_px U[-10, 10]", "U[-10, 10] px per axis",
       "Sec. 4.2; cephalometric.yaml", "augment.translate_px", 10.0),
    _r(_M, "*", "augmentation: intensity", "random factor in [0.5, 1]", "Multiply(0.5, 1.5) + GammaContrast",
       "x U[0.5, 1] (centre 0.75, half-width 0.25)", "Sec. 4.2; landmark_dataset.py",
       "augment.intensity_scale_center", 0.75, "the text's [0.5, 1] is followed; the code's [0.5, 1.5] and its "
       "gamma contrast are not"),
    _r(_M, "*", "augmentation: scale", "between 0.95 and 1.05", "list [0.95, 1.0] = a choice of 0.95 or 1",
       "U[0.95, 1.05]", "Sec. 4.2; landmark_dataset.py", "augment.scale", 0.05,
       "the text's range is followed, not the code's discrete choice"),
    _r(_M, "*", "augmentation: rotation", "at most 3 degrees either way", "list [-3, 3] = a choice of -3 or +3 deg",
       "U[-3, 3] deg", "Sec. 4.2; landmark_dataset.py", "augment.rotate_deg", 3.0,
       "the text's range is followed, not the code's discrete choice"),
    _r(_M, "*", "augmentation: elastic", "elastic transform (no parameters)",
       "imgaug ElasticTransformation(alpha U(0, 500), sigma 30)",
       "cubic B-spline field, 16 control points per axis, coefficient SD U(0, 1) x 5.85 px (displacement SD 0-2.8 px)",
       "Sec. 4.2; landmark_dataset.py", "augment.elastic_magnitude", 5.85,
       "a B-spline field matched to the code's Gaussian-smoothed field in displacement SD (alpha x 0.0054 px) and "
       "correlation length (~42 px), not the same random field"),
    _r(_M, "*", "temperature scaling", "one T per landmark, NLL (Sec. 3.3); data not stated",
       "Test1 halves (fit 151-225 with augmentation, select 226-300), Adam 0.01 on T, batch 4, 15 epochs, "
       "lowest-ECE epoch", "Test1 halves, Adam 0.01, batch 4, 15 epochs, lowest ECE (authors' code definition) "
       "(runs.calibration.temperature_plan, analysis.calibration.fit_temperature_best_ece)",
       "Sec. 3.3; temperature_scaling.py",
       deviation="the fitting half is not augmented (logits are computed once from the frozen network)"),
    _r(_M, "*", "prediction", "hottest pixel (mode)", "np.argmax, integer pixel", "hottest pixel (predictions['hottest'])",
       "Sec. 3.2; evaluate.py"),
    _r(_M, "*", "ECE", "10 bins on [0, max conf]; correct = same pixel", "bins to 0.15 + catch-all; error < ps/sqrt(pi); "
       "x100", "both (analysis.calibration definition='paper_text' | 'authors_code'), side by side in notebook 06",
       "Sec. 5.2.1; plots.py"),
    _r(_M, "*", "ROC erroneous label", "error > 2 mm", "error > 4 mm", "> 2 mm (text); 4 mm selectable",
       "Sec. 5.3.1; plots.py"),
    _r(_M, "*", "Table 2 split", "ERE > 1.414 mm on Test2", "test.py splits by radial error (bug)",
       "ERE > threshold at TPR 0.5 on Test1, applied to Test2", "Sec. 5.3.1; test.py"),
    # ---------------------------------------------------------------- Schobs et al. 2021 (issue 14)
    # lmkcore values: lmkcore.runs.phdnet.phdnet_config(paper profile) (PHDNetConfig, prefix phdnet.), the model
    # and optimiser train_phdnet builds from it (phdnet_model., phdnet_train.), the run's constants (phdnet_run.)
    # and the label/loss functions (phdnet_label.); checked by check_paper_configs.
    _r(_S, "*", "data", "ASPIRE CMR, 512 x 512 at 0.9375 mm/px, 303 SA / 422 4ch images, 3 landmarks (Sec. 3.1)",
       "", "the run's dataset (cephalograms)", "Sec. 3.1", deviation="the ASPIRE data are private"),
    _r(_S, "*", "input size and spacing", "512 x 512 at 0.9375 mm/px (Sec. 3.1)", "SAMPLER.INPUT_SIZE 512 x 512",
       "the profile's 416 px wide, aspect kept (ISBI: 416 x 516, 0.4651 mm/px)", "Sec. 3.1", "phdnet.input_width",
       416, "other images: PHD-Net sees the SCN's working resolution (the Table 2 baselines' images); the patch, "
       "sub-image and region sizes stay in px as in the paper"),
    _r(_S, "*", "splits", "fixed 8-fold cross-validation (Sec. 3)", "per-fold JSON",
       "the record's train split (15 % held out for validation) / test_all", "Sec. 3",
       deviation="one train/test split of the ISBI data instead of 8-fold CV of the private data"),
    _r(_S, "*", "network", "3 x (conv 3x3 + 2x2 max-pool), 3 x conv 3x3, 1x1 heads (Sec. 2)",
       "BatchNorm + ReLU after every conv", "lmkcore.models.phdnet (ReLU, no BatchNorm, as the text)",
       "Sec. 2; MediMarker PHD_Net.py"),
    _r(_S, "*", "conv filters", "32 (Sec. 2)", "", "32", "Sec. 2", "phdnet.filters", 32),
    _r(_S, "*", "head filters", "1x1 convs with 64 and 96 filters (Sec. 2)", "", "64, 96", "Sec. 2",
       "phdnet_model.head_filters", (64, 96)),
    _r(_S, "*", "patch size", "8 x 8 px patches, one output per patch (Sec. 2)", "MAXPOOL_FACTOR 3", "8 px",
       "Sec. 2", "phdnet_model.patch", 8),
    _r(_S, "*", "parameters per landmark", "0.06 M (Sec. 2)", "", "0.06 M (63,555)", "Sec. 2",
       "phdnet_model.parameters_m", 0.06),
    _r(_S, "*", "one network per landmark", "yes (Sec. 3.3)", "one landmark per run (DATASET.LANDMARKS [0])",
       "independent=True (N separate networks as grouped convs)", "Sec. 3.3", "phdnet.independent", True),
    _r(_S, "*", "optimiser", "Adam (Sec. 3)", "SGD Nesterov 0.99, weight decay 3e-5, poly decay", "Adam",
       "Sec. 3; MediMarker trainer", "phdnet_train.optimizer", "Adam"),
    _r(_S, "*", "learning rate", "0.001 (Sec. 3)", "BASE_LR 0.001 (example)", "0.001", "Sec. 3", "phdnet.lr", 1e-3),
    _r(_S, "*", "batch size", "32 (Sec. 3)", "12 (example config)", "32", "Sec. 3", "phdnet.batch_size", 32),
    _r(_S, "*", "epochs", "500 (Sec. 3)", "MAX_EPOCHS 500 (example)", "500", "Sec. 3", "phdnet.max_epochs", 500),
    _r(_S, "*", "early stopping", "validation loss not improved for 75 epochs (Sec. 3)",
       "patience 1000 (PHD-Net trainer) on the coordinate error", "75 epochs on the validation loss, best weights kept",
       "Sec. 3", "phdnet.patience", 75),
    _r(_S, "*", "epoch", "not stated", "", "one sub-image from every training image", "Sec. 3",
       deviation="unknown in the paper: an lmkcore choice"),
    _r(_S, "*", "training samples", "128 x 128 sub-images, randomly sampled (Sec. 3)", "patch_bias sampling, bias 0.66",
       "uniform random 128 px sub-images", "Sec. 3", "phdnet.subimage", 128),
    _r(_S, "*", "displacement target", "log of the displacement from the patch centre (Sec. 2, Noothout et al.)",
       "sign(d) log2|d| per axis", "sign(d) ln(1 + |d|) per axis (7 px -> ln 8)", "Sec. 2; generate_labels.py",
       "phdnet_label.encode_displacement(7)", 2.0794415416798357,
       "the log's base and offset are not stated; ln(1 + |d|) keeps small displacements monotone"),
    _r(_S, "*", "patch map", "Gaussian heatmap on the patch grid (Sec. 2.1; Table 1)", "", "gaussian", "Sec. 2.1",
       "phdnet.heatmap", "gaussian"),
    _r(_S, "*", "heatmap std", "2 patches (Sec. 3.2)", "GAUSS_SIGMA 2 (example)", "2 patches", "Table 1; Sec. 3.2",
       "phdnet.sigma_patches", 2.0),
    _r(_S, "*", "displacement loss", "MSE weighted by a Gaussian around the landmark (Sec. 2.1)",
       "weighted unsquared L2 norm", "Gaussian-weighted squared error (power 2)", "Sec. 2.1; losses.py",
       "phdnet_label.displacement_loss_power", 2.0),
    _r(_S, "*", "heatmap loss", "MSE (Sec. 2.1)", "", "MSE (power 2)", "Sec. 2.1", "phdnet_label.heatmap_loss_power",
       2.0),
    _r(_S, "*", "candidate smoothing region", "the 128 x 128 heatmap area with the highest sum votes (Sec. 2.2)",
       "whole image votes", "best 128 px window (stride 1 patch)", "Sec. 2.2; heatmap_manipulation.py",
       "phdnet.region_px", 128),
    _r(_S, "*", "vote blob std", "1 (Eq. 2)", "10 x 10 px blob, std 1", "1 px", "Eq. 2", "phdnet.blob_sigma_px", 1.0),
    _r(_S, "*", "heatmap smoothing", "up-sampled and smoothed heatmap (Eq. 3), std not stated",
       "nearest 8x repeat, no smoothing", "bilinear up-sampling, Gaussian std 4 px", "Eq. 3",
       "phdnet.smooth_px", 4.0, "the smoothing std is not stated in the paper (4 px: an lmkcore choice)"),
    _r(_S, "*", "confidence threshold", "error-weighted mean peak of the 10 % least accurate validation predictions "
       "(Sec. 2.2)", "not in the code", "fraction 0.1, weights = errors, per landmark", "Sec. 2.2",
       "phdnet_run.THRESHOLD_FRACTION", 0.1),
    _r(_S, "*", "validation set", "a validation set (size not stated)", "per-fold JSON",
       "15 % of the training split", "Sec. 2.2; Sec. 3", "phdnet.val_fraction", 0.15,
       "the validation share is not stated (15 %: an lmkcore choice)"),
    _r(_S, "*", "augmentation", "none stated (only the random sub-images)", "", "none", "Sec. 3",
       "phdnet_run.augmentation", "none"),
)


def ledger_rows(paper: str, method: str | None = None) -> list[LedgerRow]:
    """Rows of ``paper`` (a key of :data:`PAPERS`), for one ``method`` (its own rows and the ``"*"`` rows) or all.

    Raises
    ------
    ConfigError
        For an unknown paper.
    """
    if paper not in PAPERS:
        raise ConfigError(f"unknown paper {paper!r}; known: {', '.join(PAPERS)}")
    return [r for r in LEDGER if r.paper == paper and (method is None or r.method in ("*", method))]


def ledger_table(paper: str, method: str | None = None):
    """The rows of :func:`ledger_rows` as a ``pandas.DataFrame`` (one row per setting, display columns only)."""
    import pandas as pd

    rows = ledger_rows(paper, method)
    return pd.DataFrame({
        "method": [r.method for r in rows],
        "setting": [r.setting for r in rows],
        "paper text": [r.paper_text for r in rows],
        "authors' code": [r.authors_code for r in rows],
        "lmkcore paper profile": [r.lmkcore for r in rows],
        "source": [r.source for r in rows],
        "deviation": [r.deviation for r in rows],
    })


def show_ledger(*papers: str, method: str | None = None, file=None) -> None:
    """Print the ledger rows of ``papers`` as plain-text tables (what each notebook shows at its top)."""
    import sys

    out = file or sys.stdout
    for paper in papers:
        rows = ledger_rows(paper, method)
        print(f"Fidelity ledger: {PAPERS[paper]} ({len(rows)} settings; 'paper' profile)", file=out)
        for r in rows:
            code = f" | code: {r.authors_code}" if r.authors_code else ""
            scope = "" if r.method == "*" else f"[{r.method}] "
            dev = f"  <- DEVIATION: {r.deviation}" if r.deviation else ""
            print(f"  {scope}{r.setting}: text: {r.paper_text}{code} | lmkcore: {r.lmkcore}{dev}", file=out)
        print(file=out)


def _actual(path: str, exp, profile, num_landmarks: int) -> Any:
    from lmkcore.analysis.fitting import fit_gaussians
    from lmkcore.training.trainer import build_target

    kind, _, name = path.partition(".")
    if kind == "train":
        return getattr(exp.train, name)
    if kind == "augment":
        return getattr(exp.train.augment, name)
    if kind == "experiment":
        return getattr(exp, name)
    if kind == "profile":
        return getattr(profile, name)
    if kind == "target":
        return getattr(build_target(exp.train, num_landmarks), name)
    if kind == "fit":
        return inspect.signature(fit_gaussians).parameters[name].default
    raise ConfigError(f"ledger field {path!r}: unknown prefix {kind!r}")


def _loss_power(which: int) -> float:
    """``log2(L(2) / L(1))`` of one term of :func:`~lmkcore.training.phdnet_targets.phdnet_loss` (0: displacement,
    1: heatmap) with every output off its label by 1 and by 2: 2 for a squared error, 1 for an unsquared one."""
    import math

    import torch

    from lmkcore.training.phdnet_targets import displacement_targets, patch_heatmaps, phdnet_loss

    lm = torch.tensor([[[21.0, 30.0]]], dtype=torch.float64)
    disp, heat = displacement_targets(lm, (8, 8)), patch_heatmaps(lm, (8, 8))
    loss = [float(phdnet_loss(disp + e, heat + e, lm)[which]) for e in (1.0, 2.0)]
    return math.log2(loss[1] / loss[0])


def _phdnet_actual(path: str, config) -> Any:
    import re

    import torch

    from lmkcore.runs import phdnet as run
    from lmkcore.training.augment import AugmentConfig
    from lmkcore.training.phdnet_targets import encode_displacement

    kind, _, name = path.partition(".")
    if kind == "phdnet":
        return getattr(config, name)
    if kind in ("phdnet_model", "phdnet_train"):
        model = run.build_model(config, 1)
        if kind == "phdnet_train" and name == "optimizer":
            return type(run.make_optimizer(model, config)).__name__
        if name == "parameters_m":
            return round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 2)
        if kind == "phdnet_model":
            return getattr(model, name)
    if kind == "phdnet_run":
        if name == "augmentation":
            return "none" if config.augment == AugmentConfig.identity() else "on"
        return getattr(run, name)
    if kind == "phdnet_label":
        m = re.fullmatch(r"encode_displacement\(([-+0-9.]+)\)", name)
        if m:
            return float(encode_displacement(torch.tensor(float(m.group(1)), dtype=torch.float64)))
        if name in ("displacement_loss_power", "heatmap_loss_power"):
            return _loss_power(0 if name.startswith("displacement") else 1)
    raise ConfigError(f"ledger field {path!r}: unknown PHD-Net field")


def _same(got, want) -> bool:
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        return abs(got - want) <= 1e-12 * abs(want)
    return type(got) is type(want) and got == want if isinstance(want, bool) else got == want


def check_paper_configs(papers: Iterable[str] = ("thaler2021", "payer2019", "mccouat2022", "schobs2021"), profile=None) -> list[str]:
    """Build every ``paper``-profile configuration of the papers' methods and compare it with the ledger.

    Uses :func:`lmkcore.training.methods.experiment_config` on a stand-in ISBI-like record (splits
    ``train`` / ``test_all``, 19 landmarks; nothing is loaded); PHD-Net (method ``"phdnet"``) uses
    :func:`lmkcore.runs.phdnet.phdnet_config` of the profile.

    Returns
    -------
    list of str
        One line per mismatch (empty when lmkcore builds exactly what the ledger states).
    """
    from lmkcore.training.methods import experiment_config
    from lmkcore.training.profiles import get_profile

    profile = profile or get_profile("paper")
    record = SimpleNamespace(name="isbi2015", splits={"train": [], "test_all": []},
                             reference="senior", num_landmarks=19)
    problems = []
    for paper in papers:
        for method in PAPER_METHODS[paper]:
            try:
                if method == "phdnet":
                    from lmkcore.runs.phdnet import phdnet_config

                    exp = phdnet_config(profile)
                else:
                    exp = experiment_config(profile, record, method)
            except ConfigError as err:
                problems.append(f"{paper}/{method}: no configuration ({err})")
                continue
            for row in ledger_rows(paper, method):
                if row.field is None:
                    continue
                got = _phdnet_actual(row.field, exp) if method == "phdnet" else _actual(row.field, exp, profile, 19)
                if not _same(got, row.value):
                    problems.append(f"{paper}/{method}: {row.setting} ({row.field}) is {got!r}, ledger says {row.value!r}")
    return problems


# every field name a row may check exists (typos fail at import, not silently)
def _check_field_names() -> None:
    from lmkcore.training.augment import AugmentConfig
    from lmkcore.training.trainer import TrainConfig

    from lmkcore.runs.phdnet import PHDNetConfig

    names = {"train": {f.name for f in fields(TrainConfig)}, "augment": {f.name for f in fields(AugmentConfig)},
             "phdnet": {f.name for f in fields(PHDNetConfig)}}
    for row in LEDGER:
        if row.field is None:
            continue
        kind, _, name = row.field.partition(".")
        if kind in names and name not in names[kind]:
            raise ConfigError(f"ledger row {row.paper}/{row.setting}: {row.field!r} is not a field")
