"""Benchmark the decoded-image cache on the 400 real ISBI 2015 JPEG cephalograms.

Usage::

    .venv/bin/python benchmarks/image_cache_isbi.py [DATA_ROOT] [--size 240x300] [--workers 2]

``DATA_ROOT`` defaults to ``$LMKCORE_SHARED_DATA/ISBI2015-cepha400-jpg`` (or
``../shared/data/...`` beside the repo). Prints images/s for building the
cache (decode + resize + write, fresh temporary cache folder) with the scaled
JPEG decode and, for comparison, with a full decode of a subset, and for
reading random batches of 8 back from the memory map.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    repo = Path(__file__).resolve().parents[1]
    shared = Path(os.environ.get("LMKCORE_SHARED_DATA", repo.parent / "shared" / "data"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_root", nargs="?", default=str(shared / "ISBI2015-cepha400-jpg"))
    ap.add_argument("--size", default="240x300", help="working W x H")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--full-subset", type=int, default=40, help="images decoded in full for comparison")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))

    from lmkcore.data.datasets import isbi
    from lmkcore.data.image_cache import cached_images, read_grey, resize_image

    t0 = time.perf_counter()
    rec = isbi.load(args.data_root, verbose=False)
    print(f"load record: {len(rec.ids)} images, {time.perf_counter() - t0:.2f} s (headers only)")

    with tempfile.TemporaryDirectory() as tmp:
        for workers in sorted({1, args.workers}):
            t0 = time.perf_counter()
            stack = cached_images(rec, (w, h), Path(tmp) / f"w{workers}", workers=workers, progress=False)
            dt = time.perf_counter() - t0
            print(f"build cache {w}x{h}, {workers} thread(s): {len(rec.ids) / dt:.0f} images/s ({dt:.2f} s, {stack.dtype})")
        t0 = time.perf_counter()
        stack = cached_images(rec, (w, h), Path(tmp) / f"w{args.workers}", progress=False)
        print(f"reopen cache: {time.perf_counter() - t0:.3f} s")

        n = min(args.full_subset, len(rec.ids))
        t0 = time.perf_counter()
        for p in rec.image_paths[:n]:
            resize_image(read_grey(p), (w, h))
        dt = time.perf_counter() - t0
        print(f"full-resolution decode + resize, the path of BMP/PNG/MHA files (1 thread, {n} images): "
              f"{n / dt:.1f} images/s")

        rng = np.random.default_rng(0)
        reps = 500
        t0 = time.perf_counter()
        for _ in range(reps):
            idx = np.sort(rng.choice(len(rec.ids), 8, replace=False))
            batch = np.asarray(stack[idx], dtype=np.float32) / 255.0
        dt = time.perf_counter() - t0
        print(f"batch of 8 from the cache: {dt / reps * 1e3:.3f} ms/batch = {8 * reps / dt:.0f} images/s "
              f"(shape {batch.shape})")


if __name__ == "__main__":
    main()
