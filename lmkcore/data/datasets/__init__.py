"""Dataset registry: ``load_dataset(name, data_root)`` returns a :class:`LandmarkDataset`.

Every loader returns the same in-memory record, so every notebook runs with
``dataset=<name>`` and ``data_root=<path>``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from lmkcore.errors import ConfigError
from lmkcore.data.records import LandmarkDataset

#: name -> loader(data_root, **options) -> LandmarkDataset
_LOADERS: dict[str, Callable[..., LandmarkDataset]] = {}


def register(name: str):
    """Decorator registering a loader under ``name``."""

    def deco(fn):
        _LOADERS[name] = fn
        return fn

    return deco


def dataset_names() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    _import_loaders()
    return sorted(_LOADERS)


def load_dataset(name: str, data_root: str | Path | None = None, **options) -> LandmarkDataset:
    """Load dataset ``name`` from ``data_root``.

    ``data_root`` may be None only for the built-in ``synthetic`` dataset,
    which is generated on demand and cached.
    """
    _import_loaders()
    if name not in _LOADERS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(_LOADERS))}")
    return _LOADERS[name](data_root, **options)


def _import_loaders() -> None:
    # Importing the modules registers their loaders.
    from lmkcore.data.datasets import synthetic  # noqa: F401
    from lmkcore.data.datasets import folder, hand, isbi  # noqa: F401
