"""The result of a radiomics extraction as tables: features, diagnostics and provenance,
assembled in input order, and written to / read from Parquet with JSON provenance."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radfusion.config import StudyConfig
from radfusion.radiomics.cache import CACHE_FORMAT, TaskPlan, Unit
from radfusion.utils import atomic_path, atomic_write_json

log = logging.getLogger(__name__)


@dataclass
class RadiomicsResult:
    """Radiomics features of a set of cases.

    Attributes
    ----------
    features : DataFrame
        Index ``case_id`` (augmented copies ``<source>#aug<k>``), one float64 column per
        PyRadiomics feature in PyRadiomics' order (image type, then class, then feature).
    diagnostics : DataFrame
        Same index: source case, augmentation, file and settings hashes, cache key, ROI
        bounding box and pixel counts, seconds, versions and PyRadiomics'
        ``diagnostics_*`` entries, any PyRadiomics warnings, whether it came from cache.
    failures : list of (case_id, message)
        Cases that could not be extracted, with the reason.
    provenance : dict
        Run-level settings: parameter file (path, SHA-256, parsed content), preprocessing,
        reader, versions.
    n_computed, n_cached : int
        How many distinct crops were computed now / taken from the cache.
    """

    features: pd.DataFrame
    diagnostics: pd.DataFrame
    failures: list[tuple[str, str]] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    n_computed: int = 0
    n_cached: int = 0


def _feature_order(entries: Iterable[dict[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    first: list[str] | None = None
    for entry in entries:
        keys = list(entry["feature_names"])
        if first is None:
            first = keys
        elif keys != first:
            log.warning("cases yielded different PyRadiomics feature sets; missing values are NaN")
        names.update(dict.fromkeys(keys))
    return list(names)


def feature_table(ok_units: Sequence[Unit], ordered: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """float64 features, one row per unit (index ``case_id``), PyRadiomics' column order."""
    columns = _feature_order(ordered)
    values = np.full((len(ok_units), len(columns)), np.nan, dtype=np.float64)
    col_index = {c: j for j, c in enumerate(columns)}
    for i, entry in enumerate(ordered):
        cols = [col_index[name] for name in entry["feature_names"]]
        values[i, cols] = np.asarray(entry["feature_values"], dtype=np.float64)
    index = pd.Index([u.case_id for u in ok_units], name="case_id")
    return pd.DataFrame(values, index=index, columns=columns)


def diagnostics_table(
    ok_units: Sequence[Unit],
    ordered: Sequence[dict[str, Any]],
    plan: TaskPlan,
    from_cache: set[str],
    reader: str,
    params_sha: str,
    index: pd.Index,
) -> pd.DataFrame:
    """Diagnostics, one row per unit (same index as the features).

    Source case, augmentation, reader, input paths and hashes, cache key, whether it came
    from the cache, then PyRadiomics' own ``diagnostics_*`` (lists and dicts as JSON).
    """
    diag_rows = []
    for unit, entry in zip(ok_units, ordered, strict=True):
        key = plan.unit_key[unit.case_id]
        assert unit.mask is not None
        diag = {
            "source_case_id": unit.source_case_id,
            "augmentation": unit.ops,
            "noise_seed": unit.noise_seed,
            "reader": reader,
            "image_path": str(unit.image),
            "mask_path": str(unit.mask),
            "image_sha256": plan.file_hash[unit.image],
            "mask_sha256": plan.file_hash[unit.mask],
            "params_sha256": params_sha,
            "cache_key": key,
            "from_cache": key in from_cache,
        }
        for name, value in entry["diagnostics"].items():
            diag[name] = json.dumps(value) if isinstance(value, (list, dict)) else value
        diag_rows.append(diag)
    return pd.DataFrame(diag_rows, index=index)


def run_provenance(
    cfg: StudyConfig,
    reader: str,
    params_path: Path,
    params_sha: str,
    params: dict[str, Any],
    preprocess: dict[str, Any],
    versions: dict[str, str],
    n_cases: int,
    features: pd.DataFrame,
) -> dict[str, Any]:
    """Run-level settings of an extraction: parameter file, preprocessing, reader, versions."""
    return {
        "params_file": str(params_path),
        "params_sha256": params_sha,
        "params": params,
        "preprocess": preprocess,
        "mask_label": cfg.data.mask_label,
        "dicom_frame": cfg.data.dicom_frame,
        "noise_std": cfg.augment.noise_std,
        "reader": reader,
        "versions": versions,
        "cache_format": CACHE_FORMAT,
        "n_cases": n_cases,
        "n_features": features.shape[1],
    }


def _sidecars(path: Path) -> tuple[Path, Path]:
    stem = path.name[: -len(".parquet")] if path.name.endswith(".parquet") else path.stem
    return path.with_name(f"{stem}.diagnostics.parquet"), path.with_name(f"{stem}.provenance.json")


def write_feature_table(result: RadiomicsResult, path: str | Path) -> dict[str, Path]:
    """Write the feature table as Parquet, with its diagnostics and provenance alongside.

    Parameters
    ----------
    result : RadiomicsResult
        What :func:`extract_radiomics` returned.
    path : Path
        The feature table, e.g. ``radiomics.parquet``. Next to it go
        ``radiomics.diagnostics.parquet`` (one row per case) and
        ``radiomics.provenance.json`` (settings, versions, failures). Each file is
        written atomically.

    Returns
    -------
    dict
        ``{"features": path, "diagnostics": ..., "provenance": ...}``.
    """
    path = Path(path)
    diag_path, prov_path = _sidecars(path)
    with atomic_path(path) as tmp:
        result.features.to_parquet(tmp, engine="pyarrow")
    with atomic_path(diag_path) as tmp:
        result.diagnostics.to_parquet(tmp, engine="pyarrow")
    atomic_write_json(
        prov_path,
        {
            **result.provenance,
            "features": list(result.features.columns),
            "case_ids": list(result.features.index),
            "failures": [{"case_id": c, "error": m} for c, m in result.failures],
        },
    )
    return {"features": path, "diagnostics": diag_path, "provenance": prov_path}


def extraction_failures(path: str | Path) -> dict[str, str]:
    """Cases whose extraction failed, as recorded beside a feature table (case id -> error).

    ``path`` is the feature table written by :func:`write_feature_table`; ``{}`` when its
    provenance file is absent.
    """
    prov = _sidecars(Path(path))[1]
    if not prov.is_file():
        return {}
    return {str(f["case_id"]): str(f["error"]) for f in json.loads(prov.read_text())["failures"]}


def read_feature_table(path: str | Path) -> pd.DataFrame:
    """Read a feature table written by :func:`write_feature_table` (float64, by case_id)."""
    table = pd.read_parquet(Path(path), engine="pyarrow")
    return table.astype(np.float64)  # copy-on-write (pandas 3): no copy until written
