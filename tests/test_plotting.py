"""Figure helpers: every axis labelled with its unit, every panel's data inside its limits (closed-form extents)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from lmkcore.reporting import plotting, style  # noqa: E402


def _ellipse_points_data(ax) -> np.ndarray:
    """Vertices (data coordinates) of every ellipse patch on ``ax``."""
    pts = [p.get_patch_transform().transform(p.get_path().vertices) for p in ax.patches]
    return np.concatenate(pts) if pts else np.zeros((0, 2))


def _inside(ax, pts: np.ndarray) -> np.ndarray:
    (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
    return (pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)


def test_ellipse_extent_and_panel_limit_match_closed_form():
    cov = np.array([[4.0, 0.0], [0.0, 1.0]])  # sigma_major = 2 mm
    assert plotting.ellipse_extent(cov) == pytest.approx(2.0)
    rot = np.array([[np.cos(0.7), -np.sin(0.7)], [np.sin(0.7), np.cos(0.7)]])
    assert plotting.ellipse_extent(rot @ cov @ rot.T, 2.0) == pytest.approx(4.0)
    assert np.isnan(plotting.ellipse_extent(np.full((2, 2), np.nan)))
    # mean ellipse at 2 sigma around (1, 0): 4 + 1, times the 1.15 margin
    assert plotting.panel_limit(mean_cov=cov, center=(1.0, 0.0)) == pytest.approx(1.15 * 5.0)
    # per-image ellipses: the 90th percentile of their 1-sigma extents (1..10 mm -> 9.1 mm)
    covs = np.stack([np.diag([s * s, 0.25]) for s in np.arange(1.0, 11.0)])
    assert plotting.panel_limit(covs=covs) == pytest.approx(1.15 * np.percentile(np.arange(1.0, 11.0), 90))
    assert plotting.panel_limit() == 1.0


def test_offsets_panel_labels_units_and_keeps_its_content_inside():
    rng = np.random.default_rng(0)
    cov = np.array([[9.0, 2.0], [2.0, 1.0]])
    offsets = rng.multivariate_normal([0.5, -0.2], cov, size=300)
    covs = np.stack([cov * s for s in rng.uniform(0.5, 1.5, 30)])
    fig, ax = plt.subplots()
    lim = plotting.offsets_panel(ax, offsets, covs=covs, mean_cov=cov, center=(0.5, -0.2))
    assert "(mm" in ax.get_xlabel() and "(mm" in ax.get_ylabel()
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # y down, as in the image
    assert ax.get_xlim() == pytest.approx((-lim, lim))
    assert all(t.get_size() >= plotting.TICK_SIZE for t in ax.get_xticklabels() + ax.get_yticklabels())
    assert _inside(ax, offsets).mean() >= 0.9
    mean_patch = ax.patches[-1]  # the mean ellipse is drawn last: all of it inside
    mean_pts = mean_patch.get_patch_transform().transform(mean_patch.get_path().vertices)
    assert _inside(ax, mean_pts).all()
    assert _inside(ax, _ellipse_points_data(ax)).mean() >= 0.85  # >= 90 % of the per-image ellipses whole
    plt.close(fig)


def test_a_shared_row_limit_keeps_every_panel_non_empty():
    """Fig. 8 defect: limits taken from the small annotation column left the large-ellipse columns empty.
    With the row limit = max of the panels' own limits, every panel has its whole mean ellipse inside."""
    small, large = np.diag([0.04, 0.01]), np.diag([25.0, 4.0])
    panels = [np.stack([small] * 5), np.stack([large] * 5)]
    lim = max(plotting.panel_limit(covs=c, mean_cov=c[0]) for c in panels)
    fig, axes = plt.subplots(1, 2)
    for ax, c in zip(axes, panels):
        plotting.offsets_panel(ax, None, covs=c, mean_cov=c[0], limit=lim)
        pts = _ellipse_points_data(ax)
        assert len(pts) and _inside(ax, pts).all()
    plt.close(fig)


def test_an_offset_panel_without_finite_values_says_so():
    fig, (a, b) = plt.subplots(1, 2)
    plotting.offsets_panel(a, None, covs=np.full((4, 2, 2), np.nan), mean_cov=np.full((2, 2), np.nan))
    plotting.offsets_panel(b, None, covs=np.stack([np.eye(2)] * 3), mean_cov=np.eye(2))
    assert [t.get_text() for t in a.texts] == ["no finite values\n(e.g. no usable Σ̂ fit)"] and not a.patches
    assert len(b.texts) == 0 and len(b.patches) == 4
    plt.close(fig)


def test_unwrap_orientation_removes_the_plus_minus_90_degree_jump():
    deg = np.array([80.0, 86.0, 89.0, -89.0, -86.0, -80.0])  # 91, 94, 100 degrees written modulo 180
    out = np.degrees(plotting.unwrap_orientation(np.radians(deg)))
    assert out == pytest.approx([80.0, 86.0, 89.0, 91.0, 94.0, 100.0])
    two = np.radians(np.stack([deg, -deg], axis=1))  # (T, N): unwrapped along time for each landmark
    assert np.degrees(plotting.unwrap_orientation(two))[:, 1] == pytest.approx([-80, -86, -89, -91, -94, -100])


def test_sigma_history_in_mm_with_labels_legend_and_data_inside():
    its = np.arange(0, 100, 10)
    t = len(its)
    history = {"theta": np.radians(np.stack([np.linspace(80, 100, t), np.full(t, 10.0)], 1)),
               "sigma_major": np.stack([np.linspace(4, 2, t), np.full(t, 3.0)], 1),
               "sigma_minor": np.stack([np.linspace(2, 1, t), np.full(t, 1.5)], 1)}
    history["theta"] = np.arctan2(np.sin(history["theta"]), np.cos(history["theta"]))  # wrapped into (-180, 180]
    history["theta"] = np.where(history["theta"] > np.pi / 2, history["theta"] - np.pi, history["theta"])
    fig, axes = plt.subplots(1, 3)
    lines = plotting.plot_sigma_history(axes, its, history, spacing_mm=0.5, names=["Sella", "Nasion"])
    assert [ln.get_label() for ln in lines] == ["L1 Sella", "L2 Nasion"]
    assert [a.get_ylabel() for a in axes] == ["θ (deg, unwrapped)", "σ major (mm)", "σ minor (mm)"]
    assert all(a.get_xlabel() == "iteration" for a in axes)
    assert axes[1].lines[0].get_ydata() == pytest.approx(np.linspace(4, 2, t) * 0.5)  # px -> mm
    assert np.all(np.abs(np.diff(axes[0].lines[0].get_ydata())) < 5)  # no wrap jump
    for ax in axes:
        for ln in ax.lines:
            y = ln.get_ydata()
            lo, hi = ax.get_ylim()
            assert np.all((y >= lo) & (y <= hi))
    plt.close(fig)


def test_sweep_joins_points_within_a_group_only():
    fig, ax = plt.subplots()
    plotting.plot_sweep(ax, ["α=20", "α=5", "σ=2", "σ=3"], [2.4, 2.5, 2.2, 2.6],
                        ["learned σ", "learned σ", "fixed σ", "fixed σ"], "mean PE (mm)", "setting")
    assert len(ax.lines) == 2
    assert [list(ln.get_xdata()) for ln in ax.lines] == [[0, 1], [2, 3]]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["learned σ", "fixed σ"]
    assert ax.get_ylabel() == "mean PE (mm)" and [t.get_text() for t in ax.get_xticklabels()] == ["α=20", "α=5", "σ=2", "σ=3"]
    lo, hi = ax.get_ylim()
    x0, x1 = ax.get_xlim()
    for ln in ax.lines:
        assert np.all((ln.get_ydata() > lo) & (ln.get_ydata() < hi)) and np.all((ln.get_xdata() > x0) & (ln.get_xdata() < x1))
    plt.close(fig)


def test_figure_legend_has_one_entry_per_item_with_its_marker():
    fig, ax = plt.subplots()
    leg = plotting.figure_legend(fig, [("ground truth", "x", "g"), ("offsets", "dots", "r"), ("mean", "mean", "k"),
                                       ("axis", "axis", "0.5")])
    assert [t.get_text() for t in leg.get_texts()] == ["ground truth", "offsets", "mean", "axis"]
    handles = leg.legend_handles
    assert handles[0].get_marker() == "x" and handles[1].get_marker() == "o" and handles[3].get_linestyle() == "--"
    plt.close(fig)


def test_tables_keep_counts_as_integers_and_name_units_in_markdown(tmp_path):
    df = pd.DataFrame({"PE mean": [2.0, 1.65], "SDR 2mm": [61.84, 71.34], "#O 4mm %": [1.0, 2.0]},
                      index=pd.Index(["Overall", "Good"], name="subset"))
    df.insert(0, "# landmarks", [1900, 1263])
    csv, md = style.save_table(df, tmp_path, "t", "-", "{:.2f}", notebook="99", profile="smoke", dataset="synthetic")
    text = md.read_text().splitlines()
    assert text[0] == "| subset | # landmarks | PE mean (mm) | SDR 2mm (%) | #O 4mm % |"
    assert text[2] == "| Overall | 1900 | 2.00 | 61.84 | 1.00 |"
    assert pd.read_csv(csv).columns.tolist() == ["subset", "# landmarks", "PE mean", "SDR 2mm", "#O 4mm %"]
