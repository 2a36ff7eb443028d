"""Shared test fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The team's read-only real data: ``$LMKCORE_SHARED_DATA`` or ``../shared/data`` beside the repo."""
    return Path(os.environ.get("LMKCORE_SHARED_DATA", REPO.parent / "shared" / "data"))


# Real-data code finds the shared data only through $LMKCORE_SHARED_DATA (never beside the installed package);
# run_all.sh sets it, and so does this for a bare pytest run.
if "LMKCORE_SHARED_DATA" not in os.environ and (REPO.parent / "shared" / "data").is_dir():
    os.environ["LMKCORE_SHARED_DATA"] = str(REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """One cache folder for the whole test session (synthetic data is generated once)."""
    return tmp_path_factory.mktemp("lmkcore-cache")
