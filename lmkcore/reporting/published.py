"""The published PHD-Net / U-Net error and confidence tables on cardiac MRI (pykale data).

``Uncertainty_tuples/{PHD-NET,U-NET}/{4CH,SA}/uncertainty_pairs_{valid,test}_t{0,1,2}.csv``
(Schobs et al., TMI 2023; see ``SOURCE.md`` of the shared copy) hold, per subject and
landmark, the localisation error and three uncertainty scores with the 8-fold CV ids.
The ``S-MHA Uncertainty`` column is the single model's maximum heatmap activation itself:
it is a *confidence* (it falls as the error grows), so it plays the role of the peak value.
Errors are in pixels (the files give no unit).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from lmkcore.reporting import references
from lmkcore.errors import DataError
from lmkcore.analysis.phdnet_coordinates import confidence_threshold

MODELS = ("PHD-NET", "U-NET")
VIEWS = ("SA", "4CH")


def find_pykale_tables(published_dir: str | Path | None = None, repo_root: str | Path | None = None) -> Path | None:
    """The ``Uncertainty_tuples`` folder of the published PHD-Net/U-Net outputs, or None when absent.

    ``published_dir``: that folder itself or one holding it (e.g. the
    ``pykale-landmark-uncertainty`` folder); a folder without the tables is a
    :class:`~lmkcore.errors.DataError`. Otherwise looked for under
    ``$LMKCORE_SHARED_DATA/pykale-landmark-uncertainty`` and
    ``<repo_root>/../shared/data/pykale-landmark-uncertainty`` (only when ``repo_root`` is given).
    """
    if published_dir is not None:
        given = Path(published_dir).expanduser()
        for p in (given, given / "Uncertainty_tuples"):
            if p.is_dir() and all((p / m).is_dir() for m in MODELS):
                return p
        raise DataError(f"{given}: no published PHD-Net tables here (expected an 'Uncertainty_tuples' folder "
                        f"with {' and '.join(MODELS)} subfolders)")
    bases = []
    if os.environ.get("LMKCORE_SHARED_DATA"):
        bases.append(Path(os.environ["LMKCORE_SHARED_DATA"]).expanduser())
    if repo_root is not None:  # never the installed package's own location
        bases.append(Path(repo_root).parent / "shared" / "data")
    for b in bases:
        p = b / "pykale-landmark-uncertainty" / "Uncertainty_tuples"
        if p.is_dir():
            return p
    return None


def load_tuples(folder: str | Path, model: str, view: str, measure: str = "S-MHA") -> pd.DataFrame:
    """All landmarks' valid and test rows of one model/view: columns ``uid, landmark, part
    ("valid"|"test"), fold, error, confidence``. ``fold`` is the model (CV fold) that made the
    prediction: ``Validation Fold`` in valid rows, ``Testing Fold`` in test rows."""
    base = Path(folder) / model / view
    frames = []
    for part, fold_col in (("valid", "Validation Fold"), ("test", "Testing Fold")):
        files = sorted(base.glob(f"uncertainty_pairs_{part}_t*.csv"))
        if not files:
            raise DataError(f"no uncertainty_pairs_{part}_t*.csv in {base}")
        for f in files:
            df = pd.read_csv(f)
            need = [f"{measure} Error", f"{measure} Uncertainty", fold_col]
            if any(c not in df.columns for c in need):
                raise DataError(f"{f}: expected columns {need}")
            frames.append(pd.DataFrame({"uid": df["uid"], "landmark": int(f.stem.rsplit("_t", 1)[1]), "part": part,
                                        "fold": df[fold_col].astype(int), "error": df[f"{measure} Error"].astype(float),
                                        "confidence": df[f"{measure} Uncertainty"].astype(float)}))
    return pd.concat(frames, ignore_index=True)


def high_confidence_rows(tuples: pd.DataFrame, fraction: float = 0.1) -> pd.DataFrame:
    """Test rows with ``threshold`` and ``high`` columns: per landmark and fold, the threshold
    of :func:`confidence_threshold` on that fold's validation rows, applied to its test rows."""
    out = []
    for (lm, fold), test in tuples[tuples.part == "test"].groupby(["landmark", "fold"]):
        val = tuples[(tuples.part == "valid") & (tuples.landmark == lm) & (tuples.fold == fold)]
        if val.empty:
            raise DataError(f"no validation rows for landmark {lm}, fold {fold}")
        t = confidence_threshold(val.error, val.confidence, fraction)
        out.append(test.assign(threshold=t, high=test.confidence >= t))
    return pd.concat(out, ignore_index=True)


def confidence_table(folder: str | Path, measure: str = "S-MHA", fraction: float = 0.1) -> pd.DataFrame:
    """Table 2 analogue on the published tables: error (px) of all test predictions, of the
    high- and low-confidence ones, and the share of high confidence, per model and view."""
    rows = []
    for view in VIEWS:
        for model in MODELS:
            try:
                t = high_confidence_rows(load_tuples(folder, model, view, measure), fraction)
            except DataError:
                continue
            e, hi = t.error.to_numpy(), t.high.to_numpy()
            rows.append({"view": view, "model": model, "n": len(t),
                         "All mean": e.mean(), "All SD": e.std(), "HiC mean": e[hi].mean(), "HiC SD": e[hi].std(),
                         "LoC mean": e[~hi].mean() if (~hi).any() else np.nan, "HiC %": 100 * hi.mean()})
    return pd.DataFrame(rows).set_index(["view", "model"])


#: Schobs et al. (2021), Table 1 (SA images, mm, mean +- std over 8-fold CV); the numbers live in
#: :mod:`lmkcore.reporting.references`.
PAPER_TABLE1 = references.schobs_table1()

#: Schobs et al. (2021), Table 2 (mm; HiC = PHD-Net's high-confidence subset: SA 56 %, 4CH 42 %).
PAPER_TABLE2 = references.schobs_table2()
