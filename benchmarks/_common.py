"""Helpers shared by the benchmark scripts: data location, memory and the RESULT line."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUSI = REPO.parent / "shared" / "data" / "busi"


def busi_manifest() -> Path:
    """The BUSI manifest, or exit with a clear message when the data is absent."""
    path = BUSI / "manifest.csv"
    if not path.is_file():
        sys.exit(f"BUSI data not found at {BUSI}; see README (benchmarks need it)")
    return path


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident memory (MiB) of this process, or of its finished children."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024.0


def result_line(**figures: object) -> str:
    """The benchmark's last line: ``RESULT key=value ...`` (floats with 4 significant digits)."""
    parts = []
    for key, value in figures.items():
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={text}")
    return "RESULT " + " ".join(parts)
