"""The cache folder lmkcore uses when none is given (the one definition; no dependencies).

Its layout is owned by :mod:`lmkcore.runs.store`.
"""
from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """The cache folder: ``$LMKCORE_CACHE`` or ``~/.cache/lmkcore``."""
    env = os.environ.get("LMKCORE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lmkcore"
