"""Start-up and latency of `radfusion serve`: time to a healthy server and to loaded
models, one prediction at a time, then N at once.

Starts `radfusion serve BUNDLE` on 127.0.0.1 (a free port; nothing else is contacted),
scores synthetic cases through ``POST /api/predict`` and reports the median and 95th
percentile latency. Every request must succeed; the loop is bounded (a fixed number of
requests, each with a timeout). Targets (issue 23) on the demo bundle, idle 2-core
machine: healthy within 5 s of the start, one full prediction p50 <= 1 s and p95 <= 2 s.
The 1-minute load average is printed with the figures: on a shared machine they are
slower.

    python benchmarks/serve_latency.py [--bundle demo_output/run/bundle]
        [--sequential 20] [--concurrent 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, result_line, served, upload_requests
from radfusion.layout import BundleLayout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=REPO / "demo_output" / "run" / "bundle")
    ap.add_argument("--concurrent", type=int, default=20, help="0: skip the burst")
    ap.add_argument("--sequential", type=int, default=20)
    args = ap.parse_args()
    if not BundleLayout(args.bundle).meta.is_file():
        sys.exit(f"no bundle at {args.bundle}: run `make demo` first or pass --bundle")
    requests = upload_requests(args.bundle, n=8)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with served(args.bundle) as (url, _):
        startup = time.perf_counter() - started  # /api/health answers: the page is up
        while not httpx.get(url + "/api/health", timeout=30).json().get("ready", True):
            time.sleep(0.1)  # the models load in the background
        ready = time.perf_counter() - started

        def one(i: int) -> float:
            req = requests[i % len(requests)]
            t = time.perf_counter()
            res = httpx.post(url + "/api/predict", timeout=300, **req)
            if res.status_code != 200:
                raise RuntimeError(f"request {i}: HTTP {res.status_code}: {res.text[:200]}")
            return time.perf_counter() - t

        first = one(0)  # the first request pays the radiomics / first-call imports
        single = np.array([one(i) for i in range(args.sequential)])
        burst, wall = np.array([np.nan]), float("nan")
        if args.concurrent:
            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.concurrent) as pool:
                burst = np.array(list(pool.map(one, range(args.concurrent))))
            wall = time.perf_counter() - t0
    load_after = os.getloadavg()[0]
    print(f"server start: healthy after {startup:.1f} s, models loaded after {ready:.1f} s")
    print(f"first prediction {first:.2f} s; then one at a time:")
    print("  " + ", ".join(f"{x:.2f}" for x in single) + " s")
    if args.concurrent:
        print(f"{args.concurrent} at once: all succeeded in {wall:.1f} s")
    print(f"1-min load average: {load_before:.1f} before, {load_after:.1f} after")
    print(
        result_line(
            cpus=os.cpu_count(),
            load_1min=max(load_before, load_after),
            startup_s=startup,
            ready_s=ready,
            first_s=first,
            single_p50_s=float(np.median(single)),
            single_p95_s=float(np.percentile(single, 95)),
            concurrent=args.concurrent,
            concurrent_p50_s=float(np.percentile(burst, 50)),
            concurrent_p95_s=float(np.percentile(burst, 95)),
            throughput_per_s=args.concurrent / wall if args.concurrent else float("nan"),
        )
    )


if __name__ == "__main__":
    main()
