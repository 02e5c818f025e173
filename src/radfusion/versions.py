"""Versions of Python, radfusion and the libraries whose numbers matter for results.

Recorded in every run folder (``versions.json``) and bundle (``bundle.json``), and compared
when a bundle is loaded.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata

from radfusion import __version__

VERSIONED_PACKAGES = (
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "xgboost",
    "lightgbm",
    "pyradiomics-bhklab",
    "SimpleITK",
    "torch",
    "monai",
    "pydicom",
    "roifile",
    "skops",
    "safetensors",
)


def library_versions() -> dict[str, str]:
    """Versions of Python, radfusion and the libraries whose numbers matter for results."""
    out = {"python": sys.version.split()[0], "radfusion": __version__}
    for pkg in VERSIONED_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    out["platform"] = platform.platform()
    return out
