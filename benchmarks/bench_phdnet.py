"""Benchmark PHD-Net: a training step of each multi-landmark variant and candidate smoothing.

Usage::

    .venv/bin/python benchmarks/bench_phdnet.py [--landmarks 19] [--batch 8] [--subimage 96]
                                               [--width 128] [--height 160] [--device auto|cpu|cuda]

Times (best of ``--repeats`` after one warm-up) one Adam step on ``batch`` random
``subimage``-px sub-images for the three variants of :class:`lmkcore.models.phdnet.PHDNet`
(independent per-landmark models as in the paper, shared trunk, shared trunk + hidden head
layers), and :func:`lmkcore.analysis.phdnet_coordinates.candidate_smoothing` / the simple strategy on the outputs of
``batch`` whole ``width x height`` images.
"""
from __future__ import annotations

import argparse
import time

import torch

from lmkcore.models.phdnet import PHDNet, count_parameters
from lmkcore.analysis.phdnet_coordinates import candidate_smoothing, simple_coordinates
from lmkcore.training.phdnet_targets import phdnet_loss


def _best(fn, repeats: int, device: str) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--landmarks", type=int, default=19)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--subimage", type=int, default=96)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--height", type=int, default=160)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    print(f"device={device} threads={torch.get_num_threads()} landmarks={a.landmarks} batch={a.batch}")
    x = torch.randn(a.batch, 1, a.subimage, a.subimage, device=device)
    lm = torch.rand(a.batch, a.landmarks, 2, device=device) * a.subimage
    for name, kw in (("independent (paper)", dict(independent=True)), ("shared trunk", {}),
                     ("shared trunk + heads", dict(shared_heads=True))):
        model = PHDNet(a.landmarks, **kw).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step():
            d, h = model(x)
            l_d, l_h = phdnet_loss(d, h, lm)
            opt.zero_grad()
            (l_d + l_h).backward()
            opt.step()

        print(f"train step  {name:22s} {count_parameters(model) / 1e6:6.3f}M params  {_best(step, a.repeats, device) * 1e3:8.1f} ms")
    model = PHDNet(a.landmarks, shared_heads=True).to(device).eval()
    with torch.no_grad():
        disp, heat = model(torch.randn(a.batch, 1, a.height, a.width, device=device))
        t_s = _best(lambda: candidate_smoothing(heat, disp), a.repeats, device)
        t_1 = _best(lambda: simple_coordinates(heat, disp), a.repeats, device)
    maps = a.batch * a.landmarks
    print(f"candidate smoothing: {t_s * 1e3:8.1f} ms for {maps} maps ({t_s / maps * 1e6:.0f} us/map); "
          f"simple strategy: {t_1 * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
