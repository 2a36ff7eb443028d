"""What every notebook does first: validate its parameters, seed, pick a device.

Notebooks stay thin: their ``parameters`` cell is passed to
:func:`setup_notebook`, which returns a :class:`NotebookContext` holding the
profile, device, paths and helpers to load the dataset and save figures.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmkcore.cachedir import default_cache_dir
from lmkcore.errors import ConfigError
from lmkcore.training.profiles import Profile, get_profile
from lmkcore.reporting import style


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; validates explicit choices."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if isinstance(device, str) and (device == "cuda" or device.startswith("cuda:")):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but no CUDA GPU is available; use 'auto' or 'cpu'")
        try:
            torch.device(device)
        except RuntimeError:
            raise ConfigError(f"invalid device {device!r}; use auto, cpu, cuda or cuda:N") from None
        return device
    raise ConfigError(f"invalid device {device!r}; use auto, cpu, cuda or cuda:N")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; make CPU torch deterministic."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


@dataclass
class NotebookContext:
    """Validated notebook parameters plus helpers; see :func:`setup_notebook`."""

    notebook: str
    profile: Profile
    dataset: str
    data_root: Path | None
    device: str
    seed: int
    figures_dir: Path
    cache_dir: Path
    options: dict[str, Any] = field(default_factory=dict)
    reference: str | None = None

    @property
    def provenance(self) -> dict[str, Any]:
        prov = {"notebook": self.notebook, "profile": self.profile.name, "dataset": self.dataset}
        if self.reference:
            prov["reference"] = self.reference
        return prov

    def load_dataset(self, **options: Any):
        """Load the notebook's dataset (synthetic: generated at the profile's size, cached), with the
        notebook's ``reference`` annotation set as ground truth when one was given.

        Raises
        ------
        DataError
            When the dataset has no annotation set named ``reference`` (the message lists those it has).
        """
        from lmkcore.data.datasets import load_dataset

        opts = dict(self.options, **options)
        if self.dataset == "synthetic" and self.data_root is None:
            opts.setdefault("n_images", self.profile.synthetic_images)
            opts.setdefault("width", self.profile.synthetic_width)
            opts.setdefault("cache_dir", self.cache_dir)
        record = load_dataset(self.dataset, self.data_root, **opts)
        if self.reference:
            record = record.with_reference(self.reference)
        return self.profile.restrict(record)  # paper-dry: a few images per split

    def experiment(self, record, method: str, progress: bool = True, **overrides: Any):
        """Train (or load from the cache) ``method`` on ``record`` with this profile; see
        :func:`lmkcore.training.methods.experiment_config` for ``overrides`` (``reference=`` the annotation
        set used as ground truth, ``target=`` the heatmap target mode)."""
        from lmkcore.runs.experiment import run_experiment
        from lmkcore.training.methods import experiment_config, method_label

        config = experiment_config(self.profile, record, method, seed=self.seed, **overrides)
        return run_experiment(record, config, self.cache_dir, device=self.device, progress=progress,
                              label=method_label(method))

    def cross_validation(self, record, method: str, prefix: str = "cv", progress: bool = True, **overrides: Any):
        """Train (or load from the cache) ``method`` in K-fold cross-validation on ``record``'s folds
        ``{prefix}1/train``, ``{prefix}1/val``... with this profile (one cached model per fold); ``overrides``
        as for :meth:`experiment`. Returns a :class:`lmkcore.runs.crossval.CrossValidation`; its ``pooled``
        result covers every val image once.

        Raises
        ------
        ConfigError
            When ``record`` has no such folds (the message lists its splits), or they overlap.
        """
        from lmkcore.runs.crossval import cv_folds, run_cross_validation
        from lmkcore.training.methods import experiment_config, method_label

        folds = cv_folds(record, prefix)
        config = experiment_config(self.profile, record, method, seed=self.seed, train_split=folds[0][0],
                                   eval_split=folds[0][1], **overrides)  # each fold replaces the splits
        return run_cross_validation(record, config, self.cache_dir, folds, device=self.device, progress=progress,
                                    label=method_label(method))

    def save_figure(self, fig, name: str, paper_ref: str = "-", close: bool = False):
        """Save ``fig`` as PNG + PDF in the figures folder, with provenance."""
        paths = style.save_figure(fig, self.figures_dir, name, paper_ref, **self.provenance)
        if close:
            style.close(fig)
        return paths

    def save_table(self, df, name: str, paper_ref: str = "-", float_format: str = "{:.3g}"):
        """Save a DataFrame as CSV + Markdown in the figures folder, with provenance."""
        return style.save_table(df, self.figures_dir, name, paper_ref, float_format, **self.provenance)


def setup_notebook(
    notebook: str,
    profile: str = "quick",
    dataset: str = "synthetic",
    data_root: str | None = None,
    device: str = "auto",
    seed: int = 0,
    figures_dir: str = "../figures",
    cache_dir: str | None = None,
    reference: str | None = None,
    **options: Any,
) -> NotebookContext:
    """Validate a notebook's parameters and prepare the run.

    ``figures_dir`` is the figures root: this run's figures and tables go to
    ``<figures_dir>/<profile>-<dataset>/`` (``<profile>-<dataset>-<reference>/`` when a ``reference``
    annotation set is given), so runs never overwrite each other. ``reference`` names the annotation set
    used as ground truth (``"senior"``, ``"junior"``, ``"mean"``, ``"challenge"``, ``"all_mean"``; None:
    the dataset's default), see :meth:`lmkcore.data.records.LandmarkDataset.with_reference`.

    Raises
    ------
    ConfigError
        One clear message per bad parameter (unknown profile/dataset/device,
        missing data root, non-integer seed).
    """
    from lmkcore.data.datasets import dataset_names

    prof = get_profile(profile)
    if dataset not in dataset_names():
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of: {', '.join(dataset_names())}")
    root = None
    if data_root not in (None, ""):
        root = Path(data_root).expanduser()
        if not root.exists():
            raise ConfigError(f"data_root {str(root)!r} does not exist")
    elif dataset != "synthetic":
        raise ConfigError(f"dataset {dataset!r} needs data_root (the folder holding your copy of it)")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    if reference in ("", "None"):
        reference = None
    if reference is not None and (not isinstance(reference, str) or not reference.isidentifier()):
        raise ConfigError(f"reference must be the name of an annotation set (e.g. 'junior'), got {reference!r}")
    dev = resolve_device(device)
    seed_everything(int(seed))
    style.apply_style()
    from lmkcore.reporting.figure_index import run_folder_name

    figs = Path(figures_dir).expanduser() / run_folder_name(prof.name, dataset, reference)  # root -> this run
    figs.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    ctx = NotebookContext(notebook, prof, dataset, root, dev, int(seed), figs, cache, dict(options), reference)
    ref = f" reference={reference}" if reference else ""
    print(f"{notebook}: profile={prof.name} dataset={dataset}{ref} device={dev} seed={seed} figures -> {figs}")
    return ctx


#: MIME type of the output :func:`report_skip` displays; ``run_all.sh`` reads it back from the executed notebook.
SKIP_MIMETYPE = "application/vnd.lmkcore.skip+json"


def report_skip(section: str, reason: str, hint: str = "") -> None:
    """Say that a notebook section was skipped and why; ``run_all.sh`` repeats it on the notebook's line.

    Parameters
    ----------
    section : str
        The section, e.g. ``"real senior/junior agreement"``.
    reason : str
        Why, e.g. ``"real annotations not found"``.
    hint : str, optional
        What makes it run, e.g. ``"pass --param annotations_dir=..."``.
    """
    text = f"section skipped: {section}: {reason}" + (f"; {hint}" if hint else "")
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        get_ipython = None
    if get_ipython is None or get_ipython() is None:
        print(text)
        return
    display({SKIP_MIMETYPE: {"section": section, "reason": reason, "hint": hint}, "text/plain": text}, raw=True)
