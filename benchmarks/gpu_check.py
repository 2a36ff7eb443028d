"""GPU check of the ``paper`` profile: step times at the papers' sizes, 500 real SCN iterations, and the
projected hours of the whole ``paper`` run, printed as one table.

Run through ``benchmarks/gpu_check.sh`` (sized to finish in < 8 minutes on one GPU)::

    benchmarks/gpu_check.sh --data-root /data/ISBI2015-cepha400-jpg            # on a GPU
    benchmarks/gpu_check.sh --device cpu --tiny --data-root ...                # end-to-end check on a CPU

What is measured (``--tiny`` shrinks every size so the same code path runs on a CPU in about a minute):

1. Sigma-hat fit: :func:`lmkcore.analysis.fitting.fit_gaussians` (batched, on the device) vs the SciPy
   ``least_squares`` loop (CPU) on synthetic anisotropic Gaussians; time per heatmap, largest centre
   difference.
2. SCN training step at 416 x 516, 128 filters, batch 1 (Nesterov, learned anisotropic target).
3. ResNet-34 U-Net step at 640 x 800, batch 4 (McCouat: Adam, one-hot NLL).
4. PHD-Net step: one network per landmark, batch 32 of 128 x 128 sub-images (Schobs et al.).
   Steps 2-4 are timed in float32 and in bf16 autocast + channels-last; the faster mode is used only
   if one forward pass stays within :data:`lmkcore.training.precision.BF16_TOLERANCE` of float32.
   The timed step has no host synchronisation (loss kept on the device, checked once after timing).
5. 500 ``paper`` SCN iterations on real images (``--data-root``; ISBI 2015) with the package's own
   trainer (:func:`lmkcore.training.trainer.train`), data loading and augmentation included.
6. Projection: the measured times x the number of training iterations of the whole ``paper`` run
   (:data:`PAPER_RUN`, an inventory of the notebooks' trainings; an estimate, stated per row).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lmkcore.training.precision import BF16_TOLERANCE, autocast, channels_last, forward_precision_error  # noqa: E402


@dataclass
class Row:
    """One line of the printed table."""

    item: str
    setting: str
    value: str
    note: str = ""


# ----------------------------------------------------------------------------- sizes
@dataclass(frozen=True)
class Sizes:
    scn_hw: tuple = (516, 416)
    scn_filters: int = 128
    scn_batch: int = 1
    chh_hw: tuple = (800, 640)
    chh_base: int = 64
    chh_batch: int = 4
    phd_size: int = 128
    phd_batch: int = 32
    fit_n: int = 2000
    fit_size: int = 31
    scipy_n: int = 200
    steps: int = 20
    real_width: int = 416
    real_iterations: int = 500


TINY = Sizes(scn_hw=(80, 64), scn_filters=8, scn_batch=1, chh_hw=(80, 64), chh_base=8, chh_batch=2, phd_size=32,
             phd_batch=4, fit_n=40, fit_size=31, scipy_n=10, steps=3, real_width=64, real_iterations=3)

#: Trainings of the whole ``paper`` run (notebooks 01-07), in units of the benchmarked steps.
#: (label, benchmark key, runs, iterations per run, size factor = pixels relative to the benchmark, note)
PAPER_RUN = [
    ("SCN-family 40k runs (01, 02, 04, 06)", "scn", 10, 40000, 1.0,
     "01: SCN Sigma-target, Payer SCN, U-Net, LA-only; 02: sigma-target; 04: 4 alphas; 06: SCN against the mean"),
    ("Thaler 11-observer 4-fold CV (03, 04)", "scn", 12, 40000, 1.0,
     "Sigma-, sigma-target, sigma = 3 x 4 folds (5 landmarks; 03 reuses 04's Sigma-target folds)"),
    ("SCN fixed sigma / reduced sets (04)", "scn", 7, 40000, 1.0, "04: 4 fixed sigmas, 3 reduced training sets"),
    ("SCN input-size sweep (04)", "scn", 1, 40000, (128 / 416) ** 2 + (256 / 416) ** 2 + (512 / 416) ** 2,
     "widths 128, 256, 512 (cost ~ pixels)"),
    ("CV jun. (--param reference=junior: 01, 02, 05)", "scn", 9, 40000, 1.0,
     "4 folds on the junior annotations + 01/02's 5 models trained on junior"),
    ("ResNet-34 U-Net (06)", "chh", 2, 15 * math.ceil(150 / 4), 1.0, "one-hot + Gaussian; 15 epochs x 38 batches"),
    ("PHD-Net (07)", "phd", 2 * 19, 500 * math.ceil(120 / 32), 1.0,
     "2 variants x 19 landmarks x <= 500 epochs (upper bound: early stopping)"),
]
#: Sigma-hat fits of the paper run (images x landmarks per SCN-family run): 21 runs on the 250 test images
#: (10 + 7 + 3 sweep widths + 1), the 11-observer CV (12 runs x 25 val images x 5 landmarks) and CV jun.
#: (4 folds x 100 val images + 5 runs x 250 test images, 19 landmarks).
PAPER_FITS = 21 * 250 * 19 + 12 * 25 * 5 + (4 * 100 + 5 * 250) * 19


# ----------------------------------------------------------------------------- helpers
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(step, n: int, device: str, warmup: int = 2) -> float:
    """Seconds per call of ``step`` (returns a device tensor; no host sync inside); losses checked finite once."""
    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    losses = [step() for _ in range(n)]
    sync(device)
    dt = (time.perf_counter() - t0) / n
    if not bool(torch.isfinite(torch.stack(losses)).all()):
        raise FloatingPointError("non-finite loss during the timed steps")
    return dt


def _fmt_ms(s: float) -> str:
    return f"{1e3 * s:.1f} ms"


def check_precision(model, x) -> tuple[bool, str]:
    err = forward_precision_error(model, x)
    return err.within_tolerance, f"bf16 rel. L2 {err.rel_l2:.2e} (tol {BF16_TOLERANCE:g})"


def bench_network(name: str, build, make_batch, loss_fn, opt_fn, steps: int, device: str, rows: list) -> float:
    """Time a training step in fp32 and bf16 + channels-last; return the time of the mode used."""
    times = {}
    model = build().to(device)
    x_check = make_batch()[0][:1]
    ok, note = check_precision(model, x_check)
    for mode in ("fp32", "bf16+cl"):
        torch.manual_seed(0)
        model = build().to(device)
        low = mode != "fp32"
        model = channels_last(model, low)
        opt = opt_fn(model)
        x, extra = make_batch()
        x = channels_last(x, low)

        def step():
            with autocast(device, low):
                out = model(x)
            loss = loss_fn(out, extra)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.detach()

        times[mode] = time_steps(step, steps, device)
        del model, opt
    used = "bf16+cl" if ok and times["bf16+cl"] < times["fp32"] else "fp32"
    rows.append(Row(f"{name} step", f"fp32 / bf16+channels-last", f"{_fmt_ms(times['fp32'])} / {_fmt_ms(times['bf16+cl'])}",
                    f"{note}; using {used}"))
    return times[used]


# ----------------------------------------------------------------------------- the benchmarks
def bench_fit(sz: Sizes, device: str, rows: list) -> float:
    from lmkcore.analysis.covariance import params_to_cov
    from lmkcore.analysis.fitting import fit_gaussians, fit_gaussians_scipy

    rng = np.random.default_rng(0)
    n, s = sz.fit_n, sz.fit_size
    ratio = rng.uniform(1.5, 3.0, n)
    s_min = rng.uniform(1.2, 4.0 / ratio)
    prec = np.linalg.inv(params_to_cov(rng.uniform(-np.pi / 2, np.pi / 2, n), s_min * ratio, s_min))
    c = rng.uniform(0.4 * s, 0.6 * s, (n, 2))
    yy, xx = np.mgrid[0:s, 0:s]
    dx, dy = xx - c[:, 0, None, None], yy - c[:, 1, None, None]
    q = prec[:, 0, 0, None, None] * dx * dx + 2 * prec[:, 0, 1, None, None] * dx * dy + prec[:, 1, 1, None, None] * dy * dy
    h = (np.exp(-0.5 * q) + 0.02 * rng.normal(size=q.shape))[None]
    t = torch.tensor(h, device=device)
    fit_gaussians(t[:, :8])
    sync(device)
    t0 = time.perf_counter()
    ours = fit_gaussians(t)
    sync(device)
    per_torch = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    ref = fit_gaussians_scipy(h[:, : sz.scipy_n])
    per_scipy = (time.perf_counter() - t0) / sz.scipy_n
    d = float((ours.center[:, : sz.scipy_n].cpu().double() - ref.center).abs().max())
    rows.append(Row("Sigma-hat fit", f"{n} maps {s}x{s} on {device} vs SciPy ({sz.scipy_n}, CPU)",
                    f"{per_torch * 1e6:.0f} us vs {per_scipy * 1e6:.0f} us per map",
                    f"x{per_scipy / per_torch:.0f}; max centre diff {d:.1e} px"))
    return per_torch


def bench_scn(sz: Sizes, device: str, rows: list) -> float:
    from lmkcore.training.trainer import TrainConfig, build_network, build_optimizer, build_target, normalise_images

    h, w = sz.scn_hw
    cfg = TrainConfig(model="scn", target="learned_aniso", num_filters=sz.scn_filters, batch_size=sz.scn_batch,
                      optimizer="nesterov", lr=1e-6, lr_schedule="constant")
    target = build_target(cfg, 19).to(device)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(sz.scn_batch, 1, h, w, generator=g).to(device)
    landmarks = (torch.rand(sz.scn_batch, 19, 2, generator=g) * torch.tensor([w, h])).to(device)

    def loss_fn(pred, _):
        tgt, mask = target(landmarks, (w, h), return_mask=True)
        return target.loss(pred.float(), tgt, mask) if hasattr(target, "loss") else ((pred.float() - tgt) ** 2).sum()

    return bench_network(f"SCN {w}x{h}, {sz.scn_filters} filters, batch {sz.scn_batch}", lambda: build_network(cfg, 19),
                         lambda: (normalise_images(images), None), loss_fn,
                         lambda m: build_optimizer(cfg, m, target), sz.steps, device, rows)


def bench_chh(sz: Sizes, device: str, rows: list) -> float:
    from lmkcore.models import build_model
    from lmkcore.training.losses import onehot_nll

    h, w = sz.chh_hw
    g = torch.Generator().manual_seed(1)
    images = torch.rand(sz.chh_batch, 1, h, w, generator=g).to(device)
    landmarks = (torch.rand(sz.chh_batch, 19, 2, generator=g) * torch.tensor([w - 1, h - 1])).to(device)
    return bench_network(f"ResNet-34 U-Net {w}x{h}, batch {sz.chh_batch}",
                         lambda: build_model("resnet34_unet", 1, 19, base_channels=sz.chh_base),
                         lambda: (images, None), lambda out, _: onehot_nll(out.float(), landmarks, rounding="floor"),
                         lambda m: torch.optim.Adam(m.parameters(), lr=1e-3), sz.steps, device, rows)


def bench_phd(sz: Sizes, device: str, rows: list) -> float:
    from lmkcore.models.phdnet import PHDNet
    from lmkcore.training.phdnet_targets import phdnet_loss

    s = sz.phd_size
    g = torch.Generator().manual_seed(2)
    images = torch.rand(sz.phd_batch, 1, s, s, generator=g).to(device)
    landmarks = (torch.rand(sz.phd_batch, 1, 2, generator=g) * s).to(device)

    def loss_fn(out, _):
        disp, heat = out
        l_d, l_h = phdnet_loss(disp.float(), heat.float(), landmarks)
        return l_d + l_h

    return bench_network(f"PHD-Net 1 landmark, batch {sz.phd_batch} of {s}x{s}", lambda: PHDNet(1),
                         lambda: (images, None), loss_fn, lambda m: torch.optim.Adam(m.parameters(), lr=1e-3),
                         sz.steps, device, rows)


def bench_real(sz: Sizes, device: str, data_root: str | None, dataset: str, cache_dir: str, tiny: bool,
               rows: list) -> float | None:
    if not data_root:
        rows.append(Row("paper SCN on real images", "-", "skipped", "no --data-root"))
        return None
    from lmkcore.data.datasets import load_dataset
    from lmkcore.data.loader import LandmarkImageDataset
    from lmkcore.training.profiles import get_profile
    from lmkcore.training.trainer import train

    try:
        from lmkcore.data.geometry import working_size
    except ImportError:  # older layout
        from lmkcore.data.loader import working_size

    t0 = time.perf_counter()
    record = load_dataset(dataset, data_root)
    train_ids = list(record.splits.get("train", record.ids))
    if tiny:
        train_ids = train_ids[:4]
    size = working_size(record, sz.real_width)
    ds = LandmarkImageDataset(record, train_ids, size=size, cache_dir=Path(cache_dir) / "images")
    prep = time.perf_counter() - t0
    profile = get_profile("paper")
    over = dict(model="scn", target="learned_aniso", iterations=sz.real_iterations, checkpoint_every=0,
                log_every=max(sz.real_iterations // 5, 1))
    if tiny:
        over["num_filters"] = sz.scn_filters
    cfg = profile.train_config(**over)
    trained = train(cfg, ds, device=device, progress=False)
    per_it = trained.seconds / sz.real_iterations
    losses = [h["loss"] for h in trained.history]
    rows.append(Row("paper SCN on real images",
                    f"{sz.real_iterations} it, {size[0]}x{size[1]}, {cfg.num_filters} filters, {len(train_ids)} images",
                    f"{_fmt_ms(per_it)} per iteration",
                    f"data prep {prep:.0f} s; loss {losses[0]:.3g} -> {losses[-1]:.3g}"))
    return per_it


def projection(times: dict, fit_time: float, rows: list) -> float:
    total = 0.0
    for label, key, runs, its, factor, note in PAPER_RUN:
        t = times.get(key)
        if t is None:
            continue
        hours = runs * its * factor * t / 3600
        total += hours
        rows.append(Row(f"projected: {label}", f"{runs} x {its:,} it" + (f" x {factor:.2f}" if factor != 1 else ""),
                        f"{hours:.1f} h", note))
    fits = PAPER_FITS * fit_time / 3600
    total += fits
    rows.append(Row("projected: Sigma-hat fits", f"{PAPER_FITS:,} maps", f"{fits:.2f} h", ""))
    rows.append(Row("projected: whole paper run", "sum of the rows above", f"{total:.1f} h",
                    "SCN rows use the real-image time per iteration when measured"))
    return total


def print_table(rows: list[Row], header: str) -> None:
    print(header)
    print("| item | setting | value | note |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r.item} | {r.setting} | {r.value} | {r.note} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes: checks the whole path on a CPU")
    ap.add_argument("--data-root", default=None, help="real ISBI 2015 data for the 500-iteration run")
    ap.add_argument("--dataset", default="isbi2015")
    ap.add_argument("--cache-dir", default=os.environ.get("LMKCORE_CACHE") or str(Path(tempfile.gettempdir()) / "lmkcore-gpu-check"))
    ap.add_argument("--iterations", type=int, default=None, help="real-image iterations (default 500; tiny 3)")
    ap.add_argument("--json", default=None, help="also write the table as JSON here")
    a = ap.parse_args(argv)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible; use --device cpu --tiny to check the script on a CPU", file=sys.stderr)
        return 2
    sz = TINY if a.tiny else Sizes()
    if a.iterations:
        sz = Sizes(**{**asdict(sz), "real_iterations": a.iterations})
    if a.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name()
    else:
        name = platform.processor() or "cpu"
    header = (f"gpu_check: torch {torch.__version__}, device {a.device} ({name}), "
              f"{'tiny sizes' if a.tiny else 'paper sizes'}, threads {torch.get_num_threads()}")
    print(header, flush=True)
    rows: list[Row] = []
    start = time.perf_counter()
    fit = bench_fit(sz, a.device, rows)
    times = {"scn": bench_scn(sz, a.device, rows), "chh": bench_chh(sz, a.device, rows),
             "phd": bench_phd(sz, a.device, rows)}
    print(f"  step benchmarks done in {time.perf_counter() - start:.0f} s", flush=True)
    real = bench_real(sz, a.device, a.data_root, a.dataset, a.cache_dir, a.tiny, rows)
    if real is not None:
        times["scn"] = real
    total = projection(times, fit, rows)
    rows.append(Row("gpu_check wall time", "", f"{time.perf_counter() - start:.0f} s", ""))
    print_table(rows, "")
    if a.json:
        Path(a.json).write_text(json.dumps({"header": header, "rows": [asdict(r) for r in rows],
                                            "projected_hours": total}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
