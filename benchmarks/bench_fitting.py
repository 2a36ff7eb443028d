"""Benchmark the batched torch Gaussian heatmap fit against the scipy reference loop.

Usage::

    .venv/bin/python benchmarks/bench_fitting.py [--n 1000] [--size 64] [--window 15]
                                                 [--device auto|cpu|cuda] [--threads T]

Generates ``n`` synthetic ``size x size`` heatmaps (anisotropic Gaussians,
sub-pixel centres, sigmas 1.5-6 px, axis ratio 1.5-4, noise SD 2 % of the
amplitude), then, in one run, times

* :func:`lmkcore.analysis.fitting.fit_gaussians` on the whole batch ``(1, n, size, size)``
  on the CPU (float64 and float32 computation; best of ``--repeats`` after one
  warm-up call),
* the same on CUDA (with ``torch.cuda.synchronize``) if available and not
  ``--device cpu``,
* :func:`lmkcore.analysis.fitting.fit_gaussians_scipy` (one ``least_squares(method="trf")``
  call per heatmap, single run),

and prints the times, the speed-up and the largest centre/sigma difference
between the torch and scipy results.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch


def make_heatmaps(n: int, size: int, noise: float = 0.02, seed: int = 0) -> np.ndarray:
    """``(1, n, size, size)`` float64 noisy anisotropic Gaussians (amplitude 1)."""
    from lmkcore.analysis.covariance import params_to_cov

    rng = np.random.default_rng(seed)
    ratio = rng.uniform(1.5, 4.0, n)
    s_min = rng.uniform(1.5, 6.0 / ratio)
    prec = np.linalg.inv(params_to_cov(rng.uniform(-np.pi / 2, np.pi / 2, n), s_min * ratio, s_min))
    c = rng.uniform(0.3 * size, 0.7 * size, (n, 2))
    yy, xx = np.mgrid[0:size, 0:size]
    dx, dy = xx - c[:, 0, None, None], yy - c[:, 1, None, None]
    q = prec[:, 0, 0, None, None] * dx * dx + 2 * prec[:, 0, 1, None, None] * dx * dy + prec[:, 1, 1, None, None] * dy * dy
    return (np.exp(-0.5 * q) + noise * rng.normal(size=q.shape))[None]


def best_time(fn, repeats: int, sync=lambda: None) -> float:
    """Best wall time (s) of ``repeats`` calls after one warm-up call."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="number of heatmaps")
    ap.add_argument("--size", type=int, default=64, help="heatmap side (px)")
    ap.add_argument("--window", type=int, default=15, help="fit window (px, odd)")
    ap.add_argument("--loss", default="soft_l1")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import scipy

    from lmkcore.analysis.fitting import fit_gaussians, fit_gaussians_scipy

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"python {platform.python_version()}  torch {torch.__version__}  numpy {np.__version__}  scipy {scipy.__version__}")
    print(f"cpu: {cpu_name()}  ({os.cpu_count()} logical CPUs), torch threads: {torch.get_num_threads()}")
    h = make_heatmaps(args.n, args.size)
    print(f"{args.n} heatmaps {args.size}x{args.size}, window {args.window}, loss {args.loss}, noise SD 2 % of amplitude")
    kw = {"window": args.window, "loss": args.loss}

    cpu = torch.tensor(h)
    results = {}
    for name, dtype in (("float64", torch.float64), ("float32", torch.float32)):
        t = best_time(lambda: fit_gaussians(cpu, dtype=dtype, **kw), args.repeats)
        results[name] = t
        print(f"torch CPU   {name}: {t * 1e3:9.1f} ms  ({t / args.n * 1e6:7.1f} us/heatmap)")

    if args.device in ("auto", "cuda") and torch.cuda.is_available():
        gpu = cpu.cuda()
        print(f"cuda: {torch.cuda.get_device_name()}")
        for name, dtype in (("float64", torch.float64), ("float32", torch.float32)):
            t = best_time(lambda: fit_gaussians(gpu, dtype=dtype, **kw), args.repeats, torch.cuda.synchronize)
            print(f"torch CUDA  {name}: {t * 1e3:9.1f} ms  ({t / args.n * 1e6:7.1f} us/heatmap)")
    elif args.device == "cuda":
        print("cuda: not available")

    t0 = time.perf_counter()
    ref = fit_gaussians_scipy(h, **kw)
    t_scipy = time.perf_counter() - t0
    print(f"scipy loop  float64: {t_scipy * 1e3:9.1f} ms  ({t_scipy / args.n * 1e6:7.1f} us/heatmap, least_squares trf)")
    for name, t in results.items():
        print(f"speed-up torch CPU {name} vs scipy: {t_scipy / t:6.1f}x")

    ours = fit_gaussians(cpu, **kw)
    d_centre = (ours.center - ref.center).abs().max().item()
    d_sigma = max((ours.sigma_major / ref.sigma_major - 1).abs().max().item(), (ours.sigma_minor / ref.sigma_minor - 1).abs().max().item())
    print(f"torch float64 vs scipy: max |centre diff| {d_centre:.2e} px, max relative sigma diff {d_sigma:.2e}, "
          f"converged torch {ours.converged.float().mean().item():.1%} scipy {ref.converged.float().mean().item():.1%}")


if __name__ == "__main__":
    main()
