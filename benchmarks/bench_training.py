"""Time one SCN training step (augmentation + forward + target heatmaps + backward + update).

Prints, from one run, the step time at the quick and paper settings on the chosen device.

    python benchmarks/bench_training.py [--device cpu|cuda] [--steps 10] [--threads N]
"""
from __future__ import annotations

import argparse
import time

import torch

from lmkcore.training.augment import apply_params, sample_params
from lmkcore.training.targets import heatmap_loss
from lmkcore.training.profiles import PROFILES
from lmkcore.training.trainer import build_network, build_optimizer, build_target, normalise_images


def step_time(profile_name: str, device: str, steps: int, height: int, model: str = "scn") -> float:
    profile = PROFILES[profile_name]
    cfg = profile.train_config(model=model, target="learned_aniso")
    width = profile.input_width
    net = build_network(cfg, 19).to(device)
    target = build_target(cfg, 19).to(device)
    opt = build_optimizer(cfg, net, target)
    images = torch.rand(cfg.batch_size, 1, height, width, device=device)
    landmarks = torch.rand(cfg.batch_size, 19, 2, device=device) * torch.tensor([width, height], device=device)
    amp = device.startswith("cuda")
    times = []
    for i in range(steps + 2):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        params = sample_params(cfg.batch_size, (height, width), cfg.augment, generator=torch.Generator().manual_seed(i)).to(device)
        x, lm = apply_params(params, images, landmarks)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
            pred = net(normalise_images(x))
        tgt, mask = target(lm, (width, height), return_mask=True)
        loss = heatmap_loss(pred.float(), tgt, mask) + target.regularization()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return sum(times) / len(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-paper", action="store_true", help="skip the (slow on CPU) paper-size step")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}")
    settings = [("quick", 160), ("paper", 516)]
    for name, height in settings:
        if name == "paper" and args.skip_paper:
            continue
        p = PROFILES[name]
        t = step_time(name, args.device, args.steps if name == "quick" else max(2, args.steps // 5), height)
        print(f"{name:6s} SCN {p.num_filters:3d} filters, batch {p.batch_size}, {p.input_width}x{height}: "
              f"{1000 * t:8.1f} ms/step -> {p.iterations} iterations in {t * p.iterations / 60:7.1f} min")


if __name__ == "__main__":
    main()
