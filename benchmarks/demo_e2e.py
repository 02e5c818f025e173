"""Wall time and peak memory of the README's main job, `radfusion demo`, end to end.

Runs the demo in a fresh output folder as a child process (synthetic cohort of 300
images, the full study with the `demo` preset) and reports its wall time, peak
resident memory (largest child process) and per-stage seconds. Target (issue 6):
under 10 minutes on 2 CPU cores.

    python benchmarks/demo_e2e.py [--out /tmp/radfusion-demo-bench]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mb, result_line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/radfusion-demo-bench"))
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    exe = Path(sys.executable).with_name("radfusion")
    start = time.perf_counter()
    proc = subprocess.run([str(exe), "demo", "--out", str(args.out)], check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"radfusion demo failed with exit status {proc.returncode}")
    stages = {}
    for marker in sorted((args.out / "run" / "stages").glob("*.json")):
        info = json.loads(marker.read_text())
        if "seconds" in info:
            stages[info["stage"]] = info["seconds"]
    print("\nstage seconds:", json.dumps(stages))
    peak = peak_rss_mb(children=True)
    print(f"radfusion demo: wall {wall / 60:.1f} min, peak memory {peak:.0f} MiB")
    print("target < 10 min:", "met" if wall < 600 else "NOT met")
    print(result_line(wall_s=wall, peak_mb=peak, **{f"{k}_s": v for k, v in stages.items()}))


if __name__ == "__main__":
    main()
