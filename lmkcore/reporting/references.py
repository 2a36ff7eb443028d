"""Every number reported in the four papers, in one place, and the reference rows shown next to ours.

Values are copied from the tables of the papers in ``../shared/papers/``; PE in
mm (mean, SD), SDR in % at 2 / 2.5 / 3 / 4 mm. NaN = not reported. Notebooks and
:mod:`lmkcore.reporting.published` take paper numbers only from here.
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

#: Thaler et al. (2021), Table 3, row "Ann." (L1..L5 = gnathion, gonion, orbitale, upper incisal incision,
#: subnasale): ratio sigma_maj:sigma_min, product sigma_maj*sigma_min (mm^2), theta (deg, y up).
#: How it is computed: docs/research/interobserver_ann_row.md.
THALER_TABLE3_ANN = {
    "ratio": (2.57, 2.12, 1.52, 1.11, 1.46),
    "product": (0.37, 2.73, 2.34, 0.26, 1.13),
    "theta": (39.33, -44.30, 20.97, -60.34, -13.98),
}


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

# ----------------------------------------------------------------------------- added for the reproduction report
#: Thaler et al. (2021), Tables 3-4: the paper's L1..L5 are these ISBI landmarks (matched by coordinates).
THALER_TABLE4_LANDMARKS = ("gnathion", "gonion", "orbitale", "upper_incisal_incision", "subnasale")

#: Thaler et al. (2021), Table 4 (Table 3 = its first three blocks): 5 landmarks, 11-annotator mean, 4-fold CV
#: over 100 images. (row, metric) -> five (mean, SD) pairs for L1..L5 (SD NaN where one value is printed).
#: metric: "ratio" (sigma_maj : sigma_min), "product" (sigma_maj * sigma_min, mm^2, standard deviations),
#: "theta" (deg), "PE" (mm).
THALER_TABLE4 = {
    ("Ann.", "ratio"): ((2.57, NA), (2.12, NA), (1.52, NA), (1.11, NA), (1.46, NA)),
    ("Ann.", "product"): ((0.37, NA), (2.73, NA), (2.34, NA), (0.26, NA), (1.13, NA)),
    ("Ann.", "theta"): ((39.33, NA), (-44.30, NA), (20.97, NA), (-60.34, NA), (-13.98, NA)),
    ("Σ-target, Σ̂-fit", "ratio"): ((2.80, 0.25), (1.98, 0.47), (1.34, 0.30), (1.12, 0.12), (1.20, 0.17)),
    ("Σ-target, Σ̂-fit", "product"): ((0.63, 0.07), (1.40, 0.35), (0.86, 0.18), (0.44, 0.08), (0.98, 0.24)),
    ("Σ-target, Σ̂-fit", "theta"): ((37.48, 2.72), (-56.62, 14.82), (-0.88, 35.90), (1.25, 57.68), (-30.52, 36.00)),
    ("Σ-target, target", "ratio"): ((2.63, NA), (1.51, NA), (1.17, NA), (1.03, NA), (1.05, NA)),
    ("Σ-target, target", "product"): ((0.48, NA), (0.62, NA), (0.52, NA), (0.40, NA), (0.62, NA)),
    ("Σ-target, target", "theta"): ((36.79, NA), (-54.39, NA), (-7.10, NA), (-89.47, NA), (-14.04, NA)),
    ("Σ-target, Σ̂-fit", "PE"): ((0.34, 0.25), (1.31, 0.94), (0.94, 0.67), (0.41, 0.76), (0.65, 0.47)),
    ("σ-target, Σ̂-fit", "ratio"): ((1.35, 0.14), (1.70, 0.44), (1.28, 0.22), (1.13, 0.16), (1.21, 0.19)),
    ("σ-target, Σ̂-fit", "product"): ((0.76, 0.07), (1.51, 0.38), (0.88, 0.19), (0.45, 0.11), (1.02, 0.28)),
    ("σ-target, Σ̂-fit", "theta"): ((37.16, 9.07), (-56.89, 25.12), (2.71, 55.33), (31.51, 54.57), (-40.34, 44.71)),
    ("σ-target, target", "ratio"): ((1.00, NA),) * 5,
    ("σ-target, target", "product"): ((0.52, NA), (0.63, NA), (0.52, NA), (0.39, NA), (0.62, NA)),
    ("σ-target, Σ̂-fit", "PE"): ((0.35, 0.28), (1.38, 0.99), (1.00, 0.72), (0.40, 0.75), (0.65, 0.45)),
    ("σ = 3, Σ̂-fit", "ratio"): ((1.29, 0.13), (1.68, 0.39), (1.27, 0.24), (1.10, 0.09), (1.17, 0.14)),
    ("σ = 3, Σ̂-fit", "product"): ((0.90, 0.09), (1.46, 0.46), (0.96, 0.20), (0.70, 0.10), (0.98, 0.22)),
    ("σ = 3, Σ̂-fit", "theta"): ((36.73, 11.78), (-56.92, 22.70), (-2.04, 55.45), (25.23, 49.33), (-34.09, 53.11)),
    ("σ = 3, target", "ratio"): ((1.00, NA),) * 5,
    ("σ = 3, target", "product"): ((0.66, NA),) * 5,
    ("σ = 3, Σ̂-fit", "PE"): ((0.35, 0.24), (1.29, 0.92), (0.97, 0.69), (0.42, 0.77), (0.64, 0.51)),
    ("MCD-x̂-max", "ratio"): ((2.61, 0.86), (4.84, 3.36), (2.31, 1.55), (1.73, 0.97), (1.96, 1.11)),
    ("MCD-x̂-max", "product"): ((0.01, 0.00), (0.27, 0.55), (0.06, 0.09), (0.02, 0.11), (0.02, 0.04)),
    ("MCD-x̂-max", "theta"): ((33.89, 14.57), (-58.03, 28.26), (19.70, 50.21), (51.33, 32.61), (32.36, 44.69)),
    ("MCD-x̂-max", "PE"): ((0.35, 0.25), (1.31, 0.87), (0.99, 0.69), (0.39, 0.66), (0.65, 0.46)),
    ("MCD-ĥ, Σ̂-fit", "ratio"): ((1.31, 0.13), (1.78, 0.47), (1.27, 0.23), (1.10, 0.10), (1.17, 0.13)),
    ("MCD-ĥ, Σ̂-fit", "product"): ((0.89, 0.08), (1.48, 0.40), (1.01, 0.22), (0.72, 0.13), (1.01, 0.22)),
    ("MCD-ĥ, Σ̂-fit", "theta"): ((36.96, 9.61), (-56.74, 19.44), (4.26, 59.02), (25.17, 49.42), (-29.44, 48.50)),
    ("MCD-ĥ, Σ̂-fit", "PE"): ((0.34, 0.24), (1.34, 1.04), (0.97, 0.68), (0.42, 0.77), (0.65, 0.50)),
}

#: McCouat & Voiculescu (2022), Table 1 ("Ours"): (set) -> MRE (mm), SDR 2 / 2.5 / 3 / 4 mm (%).
MCCOUAT_TABLE1 = {"test1": (1.20, 83.47, 89.16, 92.60, 96.49), "test2": (1.46, 74.63, 83.58, 87.21, 93.79)}

#: McCouat & Voiculescu (2022), Table 2: Test2 split by ERE > 1.414: row -> #landmarks, MRE, SDR 2 / 2.5 / 3 / 4 mm.
MCCOUAT_TABLE2 = {
    "Overall": (1900, 1.46, 74.63, 83.58, 87.21, 93.79),
    "Good": (1610, 1.30, 78.26, 85.59, 89.50, 95.90),
    "Erroneous": (290, 2.43, 57.24, 66.55, 72.76, 84.48),
}

#: McCouat & Voiculescu (2022), other reported numbers.
MCCOUAT_OTHER = {
    "ECE after temperature scaling (Fig. 4c; x100 scale of the authors' code)": 0.7,
    "ERE threshold at TPR 0.5 (mm, Sec. 5.3.1)": 1.414,
    "ERE vs error correlation, bins of 36 (Sec. 3.4)": 0.96,
}

#: Schobs et al. (2021), Table 1 (SA, 8-fold CV): method -> error mean, SD (mm).
SCHOBS_TABLE1 = {
    "Binary map + Simple": (22.76, 29.18),
    "Gaussian + Simple": (6.08, 23.64),
    "Gaussian + Candidate Smoothing": (4.73, 15.39),
}

#: Schobs et al. (2021), Table 2: model -> (SA All, SA HiC, 4ch All, 4ch HiC), each (mean, SD) in mm.
SCHOBS_TABLE2 = {
    "Baseline [9]": ((24.79, 31.82), (24.98, 33.98), (52.90, 35.58), (24.98, 33.98)),
    "Hourglass": ((5.76, 8.48), (4.54, 4.61), (13.33, 21.63), (8.40, 12.71)),
    "U-Net": ((5.93, 12.75), (4.22, 6.52), (7.78, 9.82), (5.72, 4.50)),
    "PHD-Net": ((4.73, 15.39), (2.97, 2.20), (9.51, 25.89), (4.40, 4.58)),
}
#: Schobs et al. (2021), Table 2: share of images PHD-Net labels high-confidence (%), SA and 4ch.
SCHOBS_TABLE2_HIC_PERCENT = {"SA": 56.0, "4ch": 42.0}


def mccouat_table1(test_set: str) -> pd.DataFrame:
    """Reference row of McCouat & Voiculescu (2022), Table 1 ("Ours") for ``"test1"`` or ``"test2"``:
    ``PE mean`` (mm) and ``SDR 2 / 2.5 / 3 / 4 mm`` (%)."""
    if test_set not in MCCOUAT_TABLE1:
        raise KeyError(f"unknown test set {test_set!r}; use {', '.join(MCCOUAT_TABLE1)}")
    return pd.DataFrame([MCCOUAT_TABLE1[test_set]], columns=("PE mean",) + SDR_COLUMNS,
                        index=["[paper] McCouat & Voiculescu 2022 (ours, with uncertainty)"])


def mccouat_table2() -> pd.DataFrame:
    """Reference rows of McCouat & Voiculescu (2022), Table 2 (Test2 split by the ERE threshold):
    ``# landmarks``, ``PE mean`` (mm), ``SDR 2 / 2.5 / 3 / 4 mm`` (%)."""
    return pd.DataFrame.from_dict({f"[paper] {k}": v for k, v in MCCOUAT_TABLE2.items()}, orient="index",
                                  columns=("# landmarks", "PE mean") + SDR_COLUMNS)


def schobs_table1() -> pd.DataFrame:
    """Schobs et al. (2021), Table 1 (SA images, mm, mean and SD over 8-fold CV) as reference rows."""
    names = {"Binary map + Simple": "Binary + simple [paper]", "Gaussian + Simple": "Gaussian + simple [paper]",
             "Gaussian + Candidate Smoothing": "Gaussian + candidate smoothing [paper]"}
    return pd.DataFrame({"PE mean": [SCHOBS_TABLE1[k][0] for k in names], "PE SD": [SCHOBS_TABLE1[k][1] for k in names]},
                        index=pd.Index(list(names.values()), name="mapping + coordinates"))


def schobs_table2() -> pd.DataFrame:
    """Schobs et al. (2021), Table 2 (mm, "mean ± SD"; HiC = PHD-Net's high-confidence subset) as reference rows."""
    names = {"Baseline [9]": "Baseline (Noothout) [paper]", "Hourglass": "Hourglass [paper]", "U-Net": "U-Net [paper]",
             "PHD-Net": "PHD-Net [paper]"}
    sa, ch = SCHOBS_TABLE2_HIC_PERCENT["SA"], SCHOBS_TABLE2_HIC_PERCENT["4ch"]
    cols = ("SA All", f"SA HiC ({sa:g} %)", "4CH All", f"4CH HiC ({ch:g} %)")
    return pd.DataFrame({c: [f"{SCHOBS_TABLE2[k][j][0]:.2f} ± {SCHOBS_TABLE2[k][j][1]:.2f}" for k in names]
                         for j, c in enumerate(cols)}, index=pd.Index(list(names.values()), name="model"))
