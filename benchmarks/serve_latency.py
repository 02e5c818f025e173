"""Latency of `radfusion serve`: one prediction at a time, then 20 at once.

Starts `radfusion serve BUNDLE` on 127.0.0.1 (a free port; nothing else is contacted),
scores synthetic cases through ``POST /api/predict`` and reports the median and 95th
percentile latency. Every request must succeed; the loop is bounded (a fixed number of
requests, each with a timeout). Target (issue 13): p50 <= 2 s for one full prediction
on 2 CPU cores with the demo bundle.

    python benchmarks/serve_latency.py [--bundle demo_output/run/bundle] [--concurrent 20]
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
    ap.add_argument("--concurrent", type=int, default=20)
    ap.add_argument("--sequential", type=int, default=5)
    args = ap.parse_args()
    if not BundleLayout(args.bundle).meta.is_file():
        sys.exit(f"no bundle at {args.bundle}: run `make demo` first or pass --bundle")
    requests = upload_requests(args.bundle, n=8)
    started = time.perf_counter()
    with served(args.bundle) as (url, _):
        startup = time.perf_counter() - started  # the page answers
        while not httpx.get(url + "/api/health", timeout=30).json().get("ready", True):
            time.sleep(0.2)  # the models load in the background
        ready = time.perf_counter() - started

        def one(i: int) -> float:
            req = requests[i % len(requests)]
            t = time.perf_counter()
            res = httpx.post(url + "/api/predict", timeout=300, **req)
            if res.status_code != 200:
                raise RuntimeError(f"request {i}: HTTP {res.status_code}: {res.text[:200]}")
            return time.perf_counter() - t

        one(0)  # warm-up: first-call imports
        single = np.array([one(i) for i in range(args.sequential)])
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.concurrent) as pool:
            burst = np.array(list(pool.map(one, range(args.concurrent))))
        wall = time.perf_counter() - t0
    print(f"server start: answers after {startup:.1f} s, models loaded after {ready:.1f} s")
    print(f"one at a time: {', '.join(f'{x:.2f}' for x in single)} s")
    print(f"{args.concurrent} at once: all succeeded in {wall:.1f} s")
    print(
        result_line(
            cpus=os.cpu_count(),
            startup_s=startup,
            ready_s=ready,
            single_p50_s=float(np.median(single)),
            concurrent=args.concurrent,
            ok=len(burst),
            concurrent_p50_s=float(np.percentile(burst, 50)),
            concurrent_p95_s=float(np.percentile(burst, 95)),
            throughput_per_s=args.concurrent / wall,
        )
    )


if __name__ == "__main__":
    main()
