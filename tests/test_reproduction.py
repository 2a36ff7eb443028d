"""The reproduction report on constructed figure folders: flat and per-run layouts, row/column matching,
"mean ± SD" cells, separate SD columns, the ERE threshold read from a table header, missing numbers, and the
ledger's deviations placed under their table."""
from __future__ import annotations

import json
import sys
import types

import pytest

from lmkcore.reporting import references as ref
from lmkcore.reporting import reproduction as rep


def _table(folder, stem, text, profile=None, dataset=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.csv").write_text(text, encoding="utf-8")
    if profile:
        (folder / ".meta").mkdir(exist_ok=True)
        (folder / ".meta" / f"{stem}.json").write_text(json.dumps({"profile": profile, "dataset": dataset}))


@pytest.fixture
def figures(tmp_path):
    root = tmp_path / "figures"
    # flat layout, provenance from .meta: the quick/synthetic run
    _table(root, "01_thaler_table2_accuracy_test1",
           "test1 (senior),PE mean,PE SD,SDR 2mm,SDR 2.5mm,SDR 3mm,SDR 4mm\n"
           '"SCN Σ-target, Σ̂-fit",1.5,0.75,80.0,85.0,90.0,95.5\n"SCN Σ-target, argmax",9,9,9,9,9,9\n',
           "quick", "synthetic")
    _table(root, "06_mccouat_table2_good_erroneous",
           '"test2, ERE threshold 1.623 mm",# landmarks,PE mean,SDR 2mm,SDR 2.5mm,SDR 3mm,SDR 4mm\n'
           "Overall,1900,1.9,60,70,80,90\nGood,1500,1.5,70,80,90,95\n", "quick", "synthetic")
    # per-run folder without provenance: profile/dataset from the folder name
    run = root / "paper-dry-isbi2015"
    _table(run, "04_thaler_table4_target_strategies_mcd",
           "method,metric,L7 pogonion,L10 gonion\n"
           '"Σ-target, Σ̂-fit",σmaj:σmin,9.99 ± 9.99,1.75 ± 0.40\n"Σ-target, Σ̂-fit",PE (mm),8.8 ± 1.0,1.20 ± 0.50\n')
    _table(run, "06_mccouat_calibration_definitions",
           "definition,ECE,ECE scale,accuracy,erroneous if error > (mm),ROC AUC,ERE threshold (mm)\n"
           "paper_text,0.035,fraction (text),0.2,2.0,0.8,1.9\nauthors_code,0.85,x100 (code),0.3,4.0,0.9,2.6\n")
    return root


def test_runs_are_found_in_both_layouts(figures):
    runs = rep.find_runs(figures)
    assert [(r.profile, r.dataset) for r in runs] == [("paper-dry", "isbi2015"), ("quick", "synthetic")]
    assert set(runs[1].tables) == {"01_thaler_table2_accuracy_test1", "06_mccouat_table2_good_erroneous"}
    assert rep._split_folder_name("quick-synthetic") == ("quick", "synthetic")


def _target(paper, table, row, column):
    hits = [t for t in rep.targets() if (t.paper, t.table, t.row, t.column) == (paper, table, row, column)]
    assert len(hits) == 1, (paper, table, row, column)
    return hits[0]


def test_values_are_read_from_the_right_cells(figures):
    dry, quick = rep.find_runs(figures)
    pe = _target(rep.THALER, "Table 2", "Test1, Σ-target Σ̂-fit", "PE (mm)")
    assert rep.lookup(quick, pe) == (1.5, 0.75)  # mean + separate SD column, not the argmax row
    assert rep.lookup(dry, pe) is None
    sdr4 = _target(rep.THALER, "Table 2", "Test1, Σ-target Σ̂-fit", "SDR 4 mm (%)")
    assert rep.lookup(quick, sdr4)[0] == 95.5
    # landmark columns match whole words: gonion is L10, not L7 pogonion; "a ± b" cells parse
    ratio = _target(rep.THALER, "Table 4", "σ-target, Σ̂-fit", "σmaj:σmin L2 (gonion)")
    assert rep.lookup(dry, ratio) is None  # that row is not in the table
    t4 = [t for t in rep.targets() if t.row == "Σ-target, Σ̂-fit" and t.column == "PE (mm) L2 (gonion)"][0]
    assert rep.lookup(dry, t4) == (1.2, 0.5)
    t3 = [t for t in rep.targets() if t.row == "Σ-target, Σ̂-fit" and t.column == "σmaj:σmin L2 (gonion)"][0]
    assert rep.lookup(dry, t3) == (1.75, 0.4)
    ere = _target(rep.MCCOUAT, "ERE (Sec. 5.3.1)", "ERE threshold at TPR 0.5", "mm")
    assert rep.lookup(quick, ere) == (1.623, pytest.approx(float("nan"), nan_ok=True))
    ece = _target(rep.MCCOUAT, "ECE (Fig. 4c)", "one-hot, after temperature scaling", "ECE (authors' code, x100)")
    assert rep.lookup(dry, ece)[0] == 0.85  # the authors' code definition is preferred
    assert rep.lookup(quick, ece) is None
    good = _target(rep.MCCOUAT, "Table 2", "Good", "# landmarks")
    assert rep.lookup(quick, good)[0] == 1500 and good.value == ref.MCCOUAT_TABLE2["Good"][0]


def test_report_lists_every_required_table_with_paper_values(figures):
    text = rep.build_report(figures)
    for heading in ("Thaler et al. 2021, Table 2", "Thaler et al. 2021, Tables 3-4", "Thaler et al. 2021, Table 4",
                    "Payer et al. 2019, Table 4", "McCouat & Voiculescu 2022, Table 1",
                    "McCouat & Voiculescu 2022, Table 2", "McCouat & Voiculescu 2022, ECE (Fig. 4c)",
                    "Schobs et al. 2021, Table 2"):
        assert f"## {heading}" in text
    assert "| paper-dry / isbi2015 | quick / synthetic |" in text
    assert "| Test1, Σ-target Σ̂-fit | PE (mm) | 1.07 ± 1.02 | – | 1.50 ± 0.75 |" in text
    assert "| one-hot, after temperature scaling | ECE (authors' code, x100) | 0.70 | 0.85 | – |" in text
    assert "| ERE threshold at TPR 0.5 | mm | 1.414 | 1.90 | 1.623 | erroneous" in text  # 06's table, else Table 2's
    # one row per paper number: Thaler Table 4 has 30 (row, metric) entries x 5 landmarks
    assert sum(1 for t in rep.targets() if t.paper == rep.THALER and "4" in t.table) == 5 * len(ref.THALER_TABLE4)


def test_ledger_deviations_go_under_their_table(figures, monkeypatch):
    rows = [
        types.SimpleNamespace(paper="mccouat2022", method="*", setting="input size", paper_text="640 x 800",
                              authors_code="", lmkcore="416 x 516", deviation="smaller input"),
        types.SimpleNamespace(paper="thaler2021", method="*", setting="iterations", paper_text="40,000",
                              authors_code="", lmkcore="40,000", deviation=""),
        types.SimpleNamespace(paper="thaler2021", method="scn_aniso", setting="init", paper_text="N(0, 1e-3)",
                              authors_code="1e-4", lmkcore="1e-3", deviation="text value"),
        types.SimpleNamespace(paper="thaler2021", method="scn_fixed", setting="MCD model", paper_text="sigma = 3",
                              authors_code="", lmkcore="Sigma-target", deviation="not moved"),
    ]
    fake = types.ModuleType("lmkcore.training.ledger")
    fake.ledger_rows = lambda paper, method=None: [r for r in rows if r.paper == paper and
                                                   (method is None or r.method in ("*", method))]
    monkeypatch.setitem(sys.modules, "lmkcore.training.ledger", fake)
    import lmkcore.training as training
    monkeypatch.setattr(training, "ledger", fake, raising=False)
    assert rep.ledger_deviations(rep.MCCOUAT, "Table 2") == [
        "input size: paper 640 x 800; package 416 x 516 -- smaller input"]
    # Table 2 is the Sigma-target model: its own rows and the paper-wide ones, not scn_fixed's
    assert rep.ledger_deviations(rep.THALER, "Table 2") == [
        "init [scn_aniso]: paper N(0, 1e-3); authors' code 1e-4; package 1e-3 -- text value"]
    assert len(rep.ledger_deviations(rep.THALER, "Table 4")) == 2
    assert rep.ledger_deviations(rep.PAYER, "Table 4") == []
    text = rep.build_report(figures)
    mc1 = text.split("## McCouat & Voiculescu 2022, Table 1")[1].split("## ")[0]
    assert "- input size: paper 640 x 800; package 416 x 516 -- smaller input" in mc1
    payer = text.split("## Payer et al. 2019, Table 4")[1].split("## ")[0]
    assert "deviations for this table: none" in payer


def test_write_reproduction_writes_the_file(figures):
    path = rep.write_reproduction(figures)
    assert path == figures / "REPRODUCTION.md" and path.read_text(encoding="utf-8").startswith("# Reproduction report")


def test_cv_junior_rows_are_read_from_notebook_01s_table(tmp_path):
    """Thaler Table 2 "CV jun.": the table notebook 01 writes with reference=junior (its own rows, then the
    paper's [paper] rows), saved as the notebook saves it, gives the package's values, not the paper's."""
    import numpy as np
    import pandas as pd

    from lmkcore.analysis import metrics
    from lmkcore.reporting.style import save_table

    rng = np.random.default_rng(0)
    errors = {"SCN Σ-target, Σ̂-fit": rng.gamma(2.0, 0.6, (40, 19)), "SCN Σ-target, argmax": rng.gamma(2.0, 2.0, (40, 19))}
    cols = ["PE mean", "PE SD", "PE median", "SDR 2mm", "SDR 2.5mm", "SDR 3mm", "SDR 4mm"]
    table = pd.concat([metrics.summary_table(errors)[cols], ref.thaler_table2("cv_junior")])
    table.index.name = "CV jun. (4-fold, 40 images, junior)"
    folder = tmp_path / "figures" / "smoke-synthetic-junior"
    folder.mkdir(parents=True)
    save_table(table, folder, "01_thaler_table2_accuracy_cv_junior", "Thaler et al. 2021, Table 2 (CV jun.)",
               "{:.2f}", notebook="01_accuracy", profile="smoke", dataset="synthetic", reference="junior")
    (run,) = rep.find_runs(tmp_path / "figures")
    ours = metrics.summary(errors["SCN Σ-target, Σ̂-fit"])
    pe = _target(rep.THALER, "Table 2", "CV jun., Σ-target Σ̂-fit", "PE (mm)")
    assert pe.value == 0.99 and pe.sd == 1.07  # the paper's CV jun. row
    mean, sd = rep.lookup(run, pe)
    assert mean == pytest.approx(ours["PE mean"]) and sd == pytest.approx(ours["PE SD"])
    for col, label, paper in zip(rep.SDR, rep.SDR_LABELS, (89.76, 93.74, 95.83, 97.82)):
        t = _target(rep.THALER, "Table 2", "CV jun., Σ-target Σ̂-fit", label)
        assert t.value == paper and rep.lookup(run, t)[0] == pytest.approx(ours[col])
    report = rep.build_report(tmp_path / "figures")
    line = next(l for l in report.splitlines() if "CV jun., Σ-target Σ̂-fit" in l and "PE (mm)" in l)
    assert "0.99" in line and f"{ours['PE mean']:.2f}" in line


def test_payer_table4_reads_notebook_01s_current_row_labels(tmp_path):
    """Payer Table 4 (#O_r): the rows notebook 01 writes are labelled by method_label (scn_payer, unet_iso);
    the report must find them under those labels, not show '–'."""
    from lmkcore.training.methods import method_label

    folder = tmp_path / "figures" / "quick-isbi2015"
    rows = {method_label("scn_payer"): (54.0, 41.2, 31.7, 20.0), method_label("unet_iso"): (69.7, 61.4, 54.2, 43.4)}
    text = "test_all,#O 2mm %,#O 2.5mm %,#O 3mm %,#O 4mm %\n" + "".join(
        f'"{k}",' + ",".join(map(str, v)) + "\n" for k, v in rows.items())
    _table(folder, "01_payer_table4_outliers", text, "quick", "isbi2015")
    (run,) = rep.find_runs(tmp_path / "figures")
    for row, label in (("SCN", method_label("scn_payer")), ("Localization U-Net", method_label("unet_iso"))):
        for i, r in enumerate(("2", "2.5", "3", "4")):
            assert rep.lookup(run, _target(rep.PAYER, "Table 4", row, f"#O {r} mm (%)"))[0] == rows[label][i]


def test_ere_error_correlation_is_read_from_notebook_06s_table(tmp_path):
    """McCouat Sec. 3.4 (r = 0.96): notebook 06 saves the Pearson r of the 36-landmark bin means as a table."""
    _table(tmp_path / "figures" / "quick-isbi2015", "06_mccouat_fig5_ere_vs_error_correlation",
           "correlation,r,n\nPearson r (bins of 36),0.913,52\nSpearman ρ (all landmarks),0.55,1900\n", "quick", "isbi2015")
    (run,) = rep.find_runs(tmp_path / "figures")
    t = _target(rep.MCCOUAT, "ERE (Sec. 3.4)", "ERE vs error correlation", "r")
    assert t.value == 0.96 and rep.lookup(run, t)[0] == 0.913
