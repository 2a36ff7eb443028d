"""Learned Sigma and Sigma-hat of the new defaults vs the old ones, against the declared synthetic truth.

Trains the SCN Sigma-target twice at the quick profile's settings on the synthetic dataset (whose annotation
covariances are declared): once with the authors'-code convention (variances, alpha v_maj v_min, half squared
error; the default) and once with the paper-text reading (standard deviations, alpha s_maj s_min, full squared
error; lmkcore before issue 13). Each model's predicted heatmaps are fitted with the Eq. 4 tied-amplitude fit
(new default) and with the free-amplitude soft-L1 fit (old). Prints, per landmark, sigma_maj*sigma_min (mm^2),
axis ratio and angle of the declared annotation covariance, the learned Sigma and the mean Sigma-hat, and a
summary over landmarks.

Usage::

    LMKCORE_CACHE=/tmp/x-cache .venv/bin/python docs/research/sigma_conventions_synthetic.py \
        [--iterations 800] [--images 400] [--input-width 128] [--filters 16] [--conventions authors_code,paper_text]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from lmkcore.analysis.covariance import axis_angle_difference, cov_to_params
from lmkcore.analysis.fitting import FIT_PRESETS, fit_gaussians
from lmkcore.data.datasets import load_dataset
from lmkcore.data.loader import LandmarkImageDataset
from lmkcore.training.profiles import get_profile
from lmkcore.training.trainer import normalise_images, train


def params(cov_mm):
    th, s1, s2 = cov_to_params(cov_mm)
    return np.degrees(th), s1 * s2, s1 / s2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--input-width", type=int, default=None, help="working width (default: the quick profile's 128)")
    ap.add_argument("--filters", type=int, default=None, help="filters per layer (default: the quick profile's 16)")
    ap.add_argument("--conventions", default="authors_code,paper_text", help="comma-separated target conventions")
    args = ap.parse_args()
    torch.set_num_threads(2)
    cache = Path(os.environ.get("LMKCORE_CACHE", "/tmp/lmkcore-sigma-conventions"))
    prof = get_profile("quick")
    record = load_dataset("synthetic", None, n_images=args.images, width=prof.synthetic_width, cache_dir=cache)
    train_ids = record.splits["train"]
    eval_ids = record.splits["test_all"] if "test_all" in record.splits else record.splits["test1"]
    width = args.input_width or prof.input_width
    height = int(round(width * record.image_size[0][1] / record.image_size[0][0]))
    ds_train = LandmarkImageDataset(record, train_ids, size=(width, height), cache_dir=cache / "images")
    ds_eval = LandmarkImageDataset(record, eval_ids, size=(width, height), cache_dir=cache / "images")
    sp_orig = record.spacing[record.index_of(eval_ids)]
    declared = (record.truth["annotation_cov"][record.index_of(eval_ids)] * sp_orig[:, None, :, None]
                * sp_orig[:, None, None, :]).mean(0)  # (N, 2, 2) mm^2
    d_th, d_size, d_ratio = params(declared)
    aniso = d_ratio >= 2
    wsp = ds_eval.spacing.astype(np.float64)  # (M, 2) mm per working px
    images = torch.stack([ds_eval[i]["image"] for i in range(len(ds_eval))])
    print(f"synthetic: {len(train_ids)} train / {len(eval_ids)} eval images, working size {width} x {height}, "
          f"{wsp.mean(0)} mm/px; {int(aniso.sum())} anisotropic landmarks (declared ratio >= 2)")
    rows = {}
    for convention in args.conventions.split(","):
        kw = {"convention": convention}
        if args.filters:
            kw["num_filters"] = args.filters
        if args.iterations:
            kw["iterations"] = args.iterations
        cfg = prof.train_config(**kw)
        t0 = time.perf_counter()
        model = train(cfg, ds_train, progress=False)
        print(f"{convention}: trained {cfg.iterations} iterations in {time.perf_counter() - t0:.0f} s")
        with torch.no_grad():
            heat = torch.cat([model.model(normalise_images(images[i:i + 16])) for i in range(0, len(images), 16)])
        learned = model.target.covariances().detach().double().numpy() * np.outer(*[wsp.mean(0)] * 2)
        rows[f"{convention}: learned Sigma"] = learned
        for fit_name, fit_kw in (("eq4 tied fit", {}), ("free soft-L1 fit", FIT_PRESETS["free_soft_l1"])):
            fit = fit_gaussians(heat.double(), **fit_kw)
            cov = fit.cov.numpy() * wsp[:, None, :, None] * wsp[:, None, None, :]
            ok = fit.converged.numpy() & np.isfinite(cov).all((-1, -2))
            mean = np.stack([cov[ok[:, n], n].mean(0) for n in range(cov.shape[1])])
            rows[f"{convention}: Sigma-hat, {fit_name}"] = mean
    names = record.landmark_names
    print("\nper landmark: size = sigma_maj*sigma_min (mm^2) / ratio / theta (deg)")
    print(f"{'landmark':28s} {'declared':>18s} " + " ".join(f"{k[:26]:>27s}" for k in rows))
    for n, name in enumerate(names):
        cells = [f"{d_size[n]:5.2f}/{d_ratio[n]:4.1f}/{d_th[n]:5.0f}"]
        for cov in rows.values():
            th, size, ratio = params(cov[n])
            cells.append(f"{size:5.2f}/{ratio:4.1f}/{th:5.0f}")
        print(f"{name[:28]:28s} {cells[0]:>18s} " + " ".join(f"{c:>27s}" for c in cells[1:]))
    print("\nsummary over landmarks (declared truth: median size "
          f"{np.median(d_size):.2f} mm^2, median ratio {np.median(d_ratio):.2f})")
    for key, cov in rows.items():
        th, size, ratio = params(cov)
        ang = np.degrees(axis_angle_difference(np.radians(th[aniso]), np.radians(d_th[aniso])))
        print(f"  {key:44s} size/declared median {np.median(size / d_size):5.2f} "
              f"(range {np.min(size / d_size):.2f}-{np.max(size / d_size):.2f}), ratio median {np.median(ratio):4.2f}, "
              f"angle error on anisotropic landmarks median {np.median(ang):4.1f} deg, max {np.max(ang):4.1f} deg")


if __name__ == "__main__":
    main()
