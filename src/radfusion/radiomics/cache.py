"""The plan of a radiomics extraction and its per-case cache.

Every case (and planned augmented copy) is a :class:`Unit`; units whose crops are the same
share one task, keyed by the SHA-256 of everything the values depend on
(:func:`plan_tasks`); a finished task is one JSON file ``<key>.json`` in the cache folder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from radfusion.config import StudyConfig
from radfusion.data import Case
from radfusion.radiomics._worker import ExtractionTask
from radfusion.utils import atomic_write_text, file_sha256, json_sha256

log = logging.getLogger(__name__)

# Bump when radfusion's preprocessing or the cache file layout changes meaning:
# every cached case is then recomputed.
CACHE_FORMAT = "radfusion-radiomics-case/1"
READERS = ("mask", "mask_reader2")
_AUG_COLUMNS = ("case_id", "source_case_id", "ops", "noise_seed")


@dataclass(frozen=True)
class Unit:
    """One row of the output table: a case or an augmented copy of one."""

    case_id: str
    source_case_id: str
    image: Path
    mask: Path | None
    ops: str = ""
    noise_seed: int = 0


def plan_units(
    cases: Sequence[Case], reader: str, augmentations: pd.DataFrame | None
) -> list[Unit]:
    """The units to extract, in input order: every case, then every planned copy.

    Raises ``ValueError`` for an unknown ``reader``, a duplicate case id, or augmentations
    without the planned columns, with an unknown source case or a repeated copy id.
    """
    if reader not in READERS:
        raise ValueError(f"reader must be one of {READERS}, got {reader!r}")
    by_id: dict[str, Case] = {}
    for case in cases:
        if case.case_id in by_id:
            raise ValueError(f"duplicate case_id {case.case_id!r} in the cases to extract")
        by_id[case.case_id] = case

    def unit(case: Case, copy_id: str | None = None, ops: str = "", seed: int = 0) -> Unit:
        mask = case.mask if reader == "mask" else case.mask_reader2
        return Unit(
            copy_id or case.case_id,
            case.case_id,
            Path(case.image),
            None if mask is None else Path(mask),
            ops,
            seed,
        )

    units = [unit(c) for c in cases]
    if augmentations is None or len(augmentations) == 0:
        return units
    missing_cols = [c for c in _AUG_COLUMNS if c not in augmentations.columns]
    if missing_cols:
        raise ValueError(
            f"augmentations lacks column(s) {', '.join(missing_cols)} (use plan_augmentation)"
        )
    unknown = sorted(set(map(str, augmentations["source_case_id"])) - set(by_id))
    if unknown:
        raise ValueError(
            f"augmentations refer to source case(s) not among the cases: {', '.join(unknown[:10])}"
        )
    seen = set(by_id)
    for rec in augmentations.itertuples(index=False):
        cid = str(rec.case_id)
        if cid in seen:
            raise ValueError(f"augmented copy id {cid!r} is not unique")
        seen.add(cid)
        units.append(unit(by_id[str(rec.source_case_id)], cid, str(rec.ops), int(rec.noise_seed)))
    return units


def _read_cache(path: Path, key: str) -> dict[str, Any] | None:
    try:
        entry = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable radiomics cache file %s (%s); recomputing", path, exc)
        return None
    if (
        not isinstance(entry, dict)
        or entry.get("format") != CACHE_FORMAT
        or entry.get("key") != key
        or len(entry.get("feature_names", ())) != len(entry.get("feature_values", (None,)))
    ):
        log.warning("ignoring radiomics cache file %s written in another format", path)
        return None
    return entry


@dataclass
class TaskPlan:
    """The extraction work: one task per distinct crop, and which case needs which.

    Attributes
    ----------
    tasks : dict
        Cache key -> task, one per distinct key (a copy identical to another shares it).
    unit_key : dict
        case_id -> cache key, for every unit whose input files could be read.
    key_material : dict
        Cache key -> what it hashes (kept in the cache file as ``inputs``).
    file_hash : dict
        Image / mask path -> SHA-256 of its content.
    errors : dict
        case_id -> why it cannot be extracted (missing ROI, unreadable file).
    """

    tasks: dict[str, ExtractionTask] = field(default_factory=dict)
    unit_key: dict[str, str] = field(default_factory=dict)
    key_material: dict[str, dict[str, Any]] = field(default_factory=dict)
    file_hash: dict[Path, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def _key_material(
    unit: Unit,
    file_hash: dict[Path, str],
    cfg: StudyConfig,
    preprocess: dict[str, Any],
    params_sha: str,
    versions: dict[str, str],
) -> dict[str, Any]:
    """Everything a unit's feature values depend on (its cache key is the SHA-256 of this)."""
    assert unit.mask is not None
    noisy = "noise" in unit.ops.split("+")
    return {
        "format": CACHE_FORMAT,
        "image_sha256": file_hash[unit.image],
        "mask_sha256": file_hash[unit.mask],
        "preprocess": preprocess,
        "mask_label": cfg.data.mask_label,
        "dicom_frame": cfg.data.dicom_frame,
        "params_sha256": params_sha,
        "versions": {k: versions[k] for k in ("pyradiomics", "SimpleITK", "numpy")},
        "augmentation": {
            "ops": unit.ops,
            "noise_seed": unit.noise_seed if noisy else 0,
            "noise_std": cfg.augment.noise_std if noisy else 0.0,
        }
        if unit.ops
        else None,
    }


def plan_tasks(
    units: Sequence[Unit],
    cfg: StudyConfig,
    preprocess: dict[str, Any],
    params_sha: str,
    params: dict[str, Any],
    versions: dict[str, str],
) -> TaskPlan:
    """Hash every input file and key every unit: content hashes of all the values depend on."""
    plan = TaskPlan()
    file_hash, errors = plan.file_hash, plan.errors
    for unit in units:
        if unit.mask is None:
            errors[unit.case_id] = "InputError: no mask_reader2 (second delineation) for this case"
            continue
        try:
            for p in (unit.image, unit.mask):
                if p not in file_hash:
                    file_hash[p] = file_sha256(p)
        except OSError as exc:
            errors[unit.case_id] = f"InputError: cannot read {exc.filename}: {exc.strerror}"
            continue
        material = _key_material(unit, file_hash, cfg, preprocess, params_sha, versions)
        key = json_sha256(material)
        plan.unit_key[unit.case_id] = key
        if key not in plan.tasks:
            plan.key_material[key] = material
            plan.tasks[key] = ExtractionTask(
                key=key,
                image=str(unit.image),
                mask=str(unit.mask),
                preprocess=preprocess,
                mask_label=cfg.data.mask_label,
                dicom_frame=cfg.data.dicom_frame,
                params_sha256=params_sha,
                params=params,
                ops=unit.ops,
                noise_seed=unit.noise_seed,
                noise_std=cfg.augment.noise_std,
            )
    return plan


def read_cached(keys: Iterable[str], cache_dir: Path) -> dict[str, dict[str, Any]]:
    """Cache key -> cache entry, for the keys with a valid cache file."""
    entries: dict[str, dict[str, Any]] = {}
    for key in keys:
        entry = _read_cache(cache_dir / f"{key}.json", key)
        if entry is not None:
            entries[key] = entry
    return entries


def write_cached(
    cache_dir: Path, key: str, inputs: dict[str, Any], output: dict[str, Any]
) -> dict[str, Any]:
    """Cache a finished task's ``output`` (features and diagnostics) as ``<key>.json``.

    Written atomically, so a killed run leaves whole cache files only. Returns the entry,
    as :func:`read_cached` would read it back.
    """
    entry = {
        "format": CACHE_FORMAT,
        "key": key,
        "inputs": inputs,
        # Names and values as parallel lists: PyRadiomics' order is kept.
        "feature_names": list(output["features"]),
        "feature_values": list(output["features"].values()),
        "diagnostics": output["diagnostics"],
    }
    # Compact, unsorted JSON; repr-exact floats make cached values bit-identical.
    atomic_write_text(cache_dir / f"{key}.json", json.dumps(entry))
    return entry
