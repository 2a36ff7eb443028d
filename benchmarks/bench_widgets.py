"""Speed of the widget explorer (lmkcore.reporting.widgets): one control change must update well under a second on a CPU.

Usage::

    python benchmarks/bench_widgets.py --profile quick --cache-dir /tmp/quickcache [--dataset synthetic]
    python benchmarks/bench_widgets.py --result-dir CACHE/experiments/KEY   # time one result folder directly

Needs cached results (run ``./run_all.sh --only 01`` with the same profile and cache folder first);
``--result-dir`` times a result folder regardless of its cache key. Prints, per control, the time of the
content computation alone and of a full update (content + PNG render of both panels).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

from lmkcore.data.datasets import load_dataset
from lmkcore.runs.experiment import ExperimentResult
from lmkcore.training.profiles import get_profile
from lmkcore.reporting.widgets import ExplorerSource, LandmarkExplorer, overview_content, view_content


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="quick")
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--data-root", default=None)
    p.add_argument("--method", default="scn_aniso")
    p.add_argument("--result-dir", default=None, help="use this cached result folder for --method")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    prof = get_profile(args.profile)
    opts = {}
    if args.dataset == "synthetic":
        opts = dict(n_images=prof.synthetic_images, width=prof.synthetic_width, cache_dir=args.cache_dir)
    record = load_dataset(args.dataset, args.data_root, **opts)
    source = ExplorerSource({args.dataset: record}, prof, args.cache_dir)
    if args.result_dir:
        source._results[(args.dataset, args.method)] = ExperimentResult.load(args.result_dir)
    if source.result(args.dataset, args.method) is None:
        print(view_content(source, source_state(source, args)).get("message"))
        return 1
    t0 = time.perf_counter()
    ex = LandmarkExplorer(source, method=args.method)
    print(f"build (incl. first render): {time.perf_counter() - t0:.3f} s; "
          f"{len(ex.controls['image'].options)} images, {len(ex.controls['landmark'].options)} landmarks")
    res = source.result(args.dataset, args.method)
    # wall time, and CPU time of this process (what an unshared core would take)
    timings = {"image": [], "landmark": [], "content only": []}
    cpu = {k: [] for k in timings}
    for k in range(args.repeats):
        c = time.process_time()
        ex.controls["image"].value = res.ids[(k + 1) % len(res.ids)]
        timings["image"].append(ex.last_update_s)
        cpu["image"].append(time.process_time() - c)
        c = time.process_time()
        ex.controls["landmark"].value = (k + 1) % len(res.landmark_names)
        timings["landmark"].append(ex.last_update_s)
        cpu["landmark"].append(time.process_time() - c)
        t, c = time.perf_counter(), time.process_time()
        view_content(source, ex.state)
        overview_content(source, ex.state)
        timings["content only"].append(time.perf_counter() - t)
        cpu["content only"].append(time.process_time() - c)
    for name, ts in timings.items():
        print(f"{name:14s} wall median {1000 * statistics.median(ts):7.1f} ms  max {1000 * max(ts):7.1f} ms   "
              f"CPU median {1000 * statistics.median(cpu[name]):7.1f} ms")
    return 0


def source_state(source, args):
    from lmkcore.reporting.widgets import ExplorerState

    return ExplorerState(args.dataset, args.method, None, 0)


if __name__ == "__main__":
    sys.exit(main())
