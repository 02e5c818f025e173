"""The PyRadiomics parameter file of a study, read and checked, and the versions of the
libraries its feature values depend on."""

from __future__ import annotations

import hashlib
import logging
import platform
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from radfusion.config import radiomics_params_path
from radfusion.errors import ConfigError
from radfusion.radiomics._worker import configure_radiomics_logging

log = logging.getLogger(__name__)


def radiomics_versions() -> dict[str, str]:
    """Versions of the libraries a radiomics feature value depends on (PyRadiomics,
    SimpleITK, numpy; the first three are part of every cache key), Python and radfusion."""
    import radiomics
    import SimpleITK

    import radfusion

    return {
        "pyradiomics": str(radiomics.__version__),
        "SimpleITK": str(SimpleITK.__version__),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "radfusion": radfusion.__version__,
    }


def load_params(params: str, *, allow_force2d: bool = False) -> tuple[Path, str, dict[str, Any]]:
    """Read and validate a PyRadiomics parameter file.

    Parameters
    ----------
    params : str
        ``"paper"`` (the shipped file) or a path to a YAML/JSON PyRadiomics parameter file.
    allow_force2d : bool
        Accept ``force2D`` (with a warning) instead of refusing it: only to score with a
        bundle whose models were trained on features extracted that way.

    Returns
    -------
    (Path, str, dict)
        The file's path, the SHA-256 of its bytes and its parsed content.

    Raises
    ------
    ConfigError
        The file is missing, not YAML, or rejected by PyRadiomics' schema.
    """
    try:
        path = radiomics_params_path(params)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    raw = path.read_bytes()
    try:
        content = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"PyRadiomics parameter file {path} is not valid YAML: {exc}") from None
    if not isinstance(content, dict):
        raise ConfigError(f"PyRadiomics parameter file {path} must hold a mapping of settings")
    setting = content.get("setting")
    if isinstance(setting, dict) and setting.get("force2D") and allow_force2d:
        log.warning(
            "PyRadiomics parameter file %s sets force2D: texture features are computed "
            "along one image axis, as when this bundle's models were trained",
            path,
        )
    elif isinstance(setting, dict) and setting.get("force2D"):
        # PyRadiomics 3.1 applies force2D to a 2D image too: it drops the axis
        # force2Ddimension names, i.e. one of the crop's two in-plane axes, so every texture
        # feature would see one direction only (`radfusion ibsi` shows the 2D references).
        raise ConfigError(
            f"PyRadiomics parameter file {path} sets force2D: radfusion hands PyRadiomics "
            "2D crops, where force2D makes it compute texture along one image axis only; "
            "remove force2D and force2Ddimension (2D extraction is what you get without them)"
        )
    configure_radiomics_logging()
    from radiomics import featureextractor

    from radfusion.radiomics._worker import EXTRACTOR_LOCK

    try:
        with EXTRACTOR_LOCK:
            featureextractor.RadiomicsFeatureExtractor(dict(content))
    except Exception as exc:  # pykwalify raises its own SchemaError types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"PyRadiomics rejected the parameter file {path}: {first}") from None
    return path, hashlib.sha256(raw).hexdigest(), content
