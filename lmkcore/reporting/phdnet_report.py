"""Small helpers for the PHD-Net notebook: folds for cross-fitted thresholds and error summaries."""
from __future__ import annotations

import numpy as np
import pandas as pd

from lmkcore.data.records import LandmarkDataset


def eval_folds(record: LandmarkDataset, ids: list[str]) -> np.ndarray:
    """``(M,)`` fold label per id for cross-fitted confidence thresholds: membership of
    ``test1``/``test2`` where the record has them, else alternating halves (0, 1, 0, ...)."""
    if "test1" in record.splits and "test2" in record.splits:
        t1 = set(record.splits["test1"])
        labels = np.array([0 if i in t1 else 1 for i in ids])
        if len(np.unique(labels)) == 2:
            return labels
    return np.arange(len(ids)) % 2


def confidence_rows(errors: dict[str, np.ndarray], high: dict[str, np.ndarray], reference_high: np.ndarray,
                    reference_name: str = "PHD-Net") -> pd.DataFrame:
    """Per model: mean/SD (mm) over all predictions, over ``reference_high`` (the reference
    model's high-confidence subset, as in Schobs et al. Table 2), and over the model's own
    high-confidence subset ``high[model]`` with its share; errors and masks are ``(M, N)``."""
    rows = {}
    for name, e in errors.items():
        ok = np.isfinite(e)
        own = high.get(name)
        row = {"All mean": e[ok].mean(), "All SD": e[ok].std(),
               f"HiC({reference_name}) mean": e[ok & reference_high].mean(),
               f"HiC({reference_name}) SD": e[ok & reference_high].std()}
        if own is not None:
            row.update({"own HiC mean": e[ok & own].mean(), "own HiC SD": e[ok & own].std(),
                        "own LoC mean": e[ok & ~own].mean() if (ok & ~own).any() else np.nan,
                        "own HiC %": 100 * own[ok].mean()})
        rows[name] = row
    return pd.DataFrame(rows).T
