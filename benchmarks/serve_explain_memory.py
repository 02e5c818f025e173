"""Memory of `radfusion serve` under repeated ``POST /api/explain`` (Grad-CAM + radiomics
contributions): the server's resident memory must stay flat.

Starts `radfusion serve BUNDLE` on 127.0.0.1 (a free port; nothing else is contacted),
sends a few warm-up requests, reads the server's RSS, then sends a fixed number of explain
requests one after another (each with a timeout) and reads the RSS again. Issue 26 measured
~175 MB retained per request before the fix; the target is growth per request well under
5 MB (allocator noise), with every request answered 200.

    python benchmarks/serve_explain_memory.py [--bundle demo_output/run/bundle] [--requests 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, result_line, served, upload_requests
from radfusion.layout import BundleLayout


def rss_mb(pid: int) -> float:
    """Resident memory of a running process (MiB), from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for process {pid}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=REPO / "demo_output" / "run" / "bundle")
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    if not BundleLayout(args.bundle).meta.is_file():
        sys.exit(f"no bundle at {args.bundle}: run `make demo` first or pass --bundle")
    requests = upload_requests(args.bundle, n=4)
    with served(args.bundle) as (url, server):

        def explain(i: int) -> None:
            res = httpx.post(url + "/api/explain", timeout=300, **requests[i % len(requests)])
            if res.status_code != 200 or not res.json().get("gradcam"):
                raise RuntimeError(f"request {i}: HTTP {res.status_code}: {res.text[:200]}")

        for i in range(args.warmup):  # first-call imports, caches, allocator pools
            explain(i)
        before = rss_mb(server.pid)
        t0 = time.perf_counter()
        for i in range(args.requests):
            explain(i)
        seconds = time.perf_counter() - t0
        after = rss_mb(server.pid)
    per_request = (after - before) / args.requests
    print(f"server RSS after {args.warmup} warm-up requests: {before:.0f} MiB")
    print(f"after {args.requests} more explain requests: {after:.0f} MiB")
    print(f"growth: {per_request:.2f} MiB per request, {seconds / args.requests:.2f} s each")
    print(
        result_line(
            requests=args.requests,
            rss_before_mb=before,
            rss_after_mb=after,
            growth_per_request_mb=per_request,
            seconds_per_request=seconds / args.requests,
        )
    )


if __name__ == "__main__":
    main()
