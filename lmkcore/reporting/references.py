"""Numbers reported in the papers, shown as clearly labelled reference rows next to ours.

Values are copied from the tables of the papers in ``../shared/papers/``; PE in
mm (mean, SD), SDR in % at 2 / 2.5 / 3 / 4 mm. NaN = not reported.
"""
from __future__ import annotations

import math

import pandas as pd

NA = math.nan

#: Thaler et al. (2021), Table 2: ISBI 2015 cephalograms. (set, method) -> PE mean, PE SD, SDR 2, 2.5, 3, 4 mm.
THALER_TABLE2 = {
    ("test1", "Ibragimov et al. (2014)"): (1.84, NA, 71.72, 77.40, 81.93, 88.04),
    ("test1", "Lindner et al. (2015)"): (1.67, NA, 73.68, 80.21, 85.19, 91.47),
    ("test1", "Zhong et al. (2019)"): (1.12, 0.88, 86.91, 91.82, 94.88, 97.90),
    ("test1", "Chen et al. (2019)"): (1.17, NA, 86.67, 92.67, 95.54, 98.53),
    ("test1", "Thaler et al. (2021) Σ-target, Σ̂-fit"): (1.07, 1.02, 87.37, 91.86, 94.81, 97.79),
    ("test2", "Ibragimov et al. (2014)"): (2.14, NA, 62.74, 70.47, 76.53, 85.11),
    ("test2", "Lindner et al. (2015)"): (1.92, NA, 66.11, 72.00, 77.63, 87.42),
    ("test2", "Zhong et al. (2019)"): (1.42, 0.84, 76.00, 82.90, 88.74, 94.32),
    ("test2", "Chen et al. (2019)"): (1.48, NA, 75.05, 82.84, 88.53, 95.05),
    ("test2", "Thaler et al. (2021) Σ-target, Σ̂-fit"): (1.38, 1.33, 75.11, 82.53, 88.26, 94.58),
    ("cv_junior", "Lindner et al. (2016)"): (1.20, NA, 84.70, 89.38, 92.62, 96.30),
    ("cv_junior", "Zhong et al. (2019)"): (1.22, 2.45, 86.06, 90.84, 94.04, 97.28),
    ("cv_junior", "Thaler et al. (2021) Σ-target, Σ̂-fit"): (0.99, 1.07, 89.76, 93.74, 95.83, 97.82),
}

#: Payer et al. (2019), Table 4: ISBI 2015, both test sets (250 images): outliers #O_r in % at 2 / 2.5 / 3 / 4 mm.
PAYER_TABLE4_OUTLIERS = {
    "SCN (Payer et al. 2019)": (26.67, 21.24, 16.76, 10.25),
    "Localization U-Net (Payer et al. 2019)": (27.85, 22.17, 17.96, 11.20),
    "Urschler et al. (2018)": (29.79, 23.05, 17.92, 10.99),
    "Lindner et al. (2015)": (29.35, 23.07, 17.83, 10.15),
    "Ibragimov et al. (2014)": (31.87, 25.37, 20.23, 13.13),
}

SDR_COLUMNS = ("SDR 2mm", "SDR 2.5mm", "SDR 3mm", "SDR 4mm")


def thaler_table2(test_set: str) -> pd.DataFrame:
    """Reference rows of Thaler et al. Table 2 for ``"test1"``, ``"test2"`` or ``"cv_junior"``."""
    rows = {f"[paper] {m}": v for (s, m), v in THALER_TABLE2.items() if s == test_set}
    if not rows:
        raise KeyError(f"unknown test set {test_set!r}; use test1, test2 or cv_junior")
    return pd.DataFrame.from_dict(rows, orient="index", columns=("PE mean", "PE SD") + SDR_COLUMNS)


def payer_table4() -> pd.DataFrame:
    """Reference rows of Payer et al. Table 4 (Test1 + Test2) as SDR = 100 - #O_r, in %."""
    rows = {f"[paper] {m}": tuple(100.0 - o for o in v) for m, v in PAYER_TABLE4_OUTLIERS.items()}
    return pd.DataFrame.from_dict(rows, orient="index", columns=SDR_COLUMNS)
