"""PyRadiomics extraction on the preprocessed lesion crops: parallel, cached, resumable.

Each case (and each planned augmented copy) is one task: a worker reads the image
and ROI, applies the study's preprocessing (ROI bounding-box crop -> resize ->
normalisation; then flip / noise for a copy) and runs PyRadiomics with the study's
parameter file (the shipped ``paper`` file yields the paper's 567 features).

Results are cached per case under ``cache_dir`` as one small JSON file, written
atomically as soon as the case finishes and named by a SHA-256 of everything the
values depend on: the image and mask file contents, the preprocessing settings,
the parameter file's content, the PyRadiomics / SimpleITK / numpy versions and,
for an augmented copy, its operations and noise seed. A re-run, or a run restarted
after being killed, computes only what is missing; JSON stores floats with their
shortest round-trip representation, so cached and fresh values are bit-identical.

Cases run in parallel with joblib (loky worker processes, ``n_jobs`` from the
config) or, when ``RadiomicsConfig.dask_scheduler`` names a scheduler, on a
dask.distributed cluster through joblib's dask backend. Workers then need the
same image paths and the same software versions as the machine that starts the run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import platform
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from radfusion.config import StudyConfig, radiomics_params_path
from radfusion.data import Case
from radfusion.errors import ConfigError, RadfusionError
from radfusion.radiomics._worker import ExtractionTask, configure_radiomics_logging, run_task
from radfusion.utils import (
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    file_sha256,
    json_sha256,
)

log = logging.getLogger(__name__)

# Bump when radfusion's preprocessing or the cache file layout changes meaning:
# every cached case is then recomputed.
CACHE_FORMAT = "radfusion-radiomics-case/1"
READERS = ("mask", "mask_reader2")
_AUG_COLUMNS = ("case_id", "source_case_id", "ops", "noise_seed")

# Indirection so that tests can count or forbid computations in-process.
_run_task = run_task


class RadiomicsExtractionError(RadfusionError):
    """Some cases failed; ``failures`` lists (case_id, error) and ``result`` holds the rest."""

    def __init__(self, failures: list[tuple[str, str]], result: RadiomicsResult) -> None:
        self.failures = failures
        self.result = result
        n_ok = len(result.features)
        lines = [f"  {cid}: {msg}" for cid, msg in failures]
        super().__init__(
            f"radiomics extraction failed for {len(failures)} of {len(failures) + n_ok} "
            "case(s):\n" + "\n".join(lines)
        )


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


@dataclass(frozen=True)
class _Unit:
    """One row of the output table: a case or an augmented copy of one."""

    case_id: str
    source_case_id: str
    image: Path
    mask: Path | None
    ops: str = ""
    noise_seed: int = 0


def _versions() -> dict[str, str]:
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


def _plan_units(
    cases: Sequence[Case], reader: str, augmentations: pd.DataFrame | None
) -> list[_Unit]:
    if reader not in READERS:
        raise ValueError(f"reader must be one of {READERS}, got {reader!r}")
    by_id: dict[str, Case] = {}
    for case in cases:
        if case.case_id in by_id:
            raise ValueError(f"duplicate case_id {case.case_id!r} in the cases to extract")
        by_id[case.case_id] = case

    def unit(case: Case, copy_id: str | None = None, ops: str = "", seed: int = 0) -> _Unit:
        mask = case.mask if reader == "mask" else case.mask_reader2
        return _Unit(
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


def _execute(
    tasks: list[ExtractionTask], n_jobs: int, scheduler: str | None
) -> Iterator[dict[str, Any]]:
    """Yield worker outputs as cases finish (any order)."""
    if not tasks:
        return
    from joblib import Parallel, cpu_count, delayed, effective_n_jobs, parallel_config

    if scheduler:
        from dask.distributed import Client

        try:
            client = Client(scheduler, timeout=30)
        except OSError as exc:
            raise ConfigError(f"cannot reach the dask scheduler {scheduler}: {exc}") from None
        with client, parallel_config(backend="dask", client=client):
            yield from Parallel(n_jobs=-1, return_as="generator_unordered")(
                delayed(run_task)(t) for t in tasks
            )
        return
    n = min(effective_n_jobs(n_jobs), len(tasks))
    if n <= 1:  # no pool to start for one worker: run in this process
        for task in tasks:
            yield _run_task(task)
        return
    threads = max(1, cpu_count() // n)
    tasks = [dataclasses.replace(t, itk_threads=threads) for t in tasks]
    # Tasks take about a second each, so one task per dispatch keeps the workers balanced.
    yield from Parallel(n_jobs=n, backend="loky", batch_size=1, return_as="generator_unordered")(
        delayed(run_task)(t) for t in tasks
    )


def _guarded(outputs: Iterator[dict[str, Any]], cache_dir: Path) -> Iterator[dict[str, Any]]:
    """Turn a worker process dying (killed, out of memory, crash) into a resumable error."""
    from concurrent.futures.process import BrokenProcessPool

    try:
        yield from outputs
    except BrokenProcessPool as exc:
        raise RadfusionError(
            f"a radiomics worker process died ({exc}); this is usually the memory limit: "
            f"lower radiomics.n_jobs. Finished cases are cached in {cache_dir}; run again "
            "to resume."
        ) from exc


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


@dataclass
class _TaskPlan:
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
    unit: _Unit,
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


def _plan_tasks(
    units: Sequence[_Unit],
    cfg: StudyConfig,
    preprocess: dict[str, Any],
    params_sha: str,
    params: dict[str, Any],
    versions: dict[str, str],
) -> _TaskPlan:
    """Hash every input file and key every unit: content hashes of all the values depend on."""
    plan = _TaskPlan()
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


def _read_cached(keys: Iterable[str], cache_dir: Path) -> dict[str, dict[str, Any]]:
    """Cache key -> cache entry, for the keys with a valid cache file."""
    entries: dict[str, dict[str, Any]] = {}
    for key in keys:
        entry = _read_cache(cache_dir / f"{key}.json", key)
        if entry is not None:
            entries[key] = entry
    return entries


def _compute_missing(
    plan: _TaskPlan,
    entries: dict[str, dict[str, Any]],
    n_units: int,
    cfg: StudyConfig,
    n_jobs: int,
    cache_dir: Path,
    progress: bool,
) -> dict[str, str]:
    """Run the tasks not in ``entries``, caching each case as soon as it is done.

    New entries are added to ``entries``; returns cache key -> error of the tasks that
    failed. The progress bar counts units (cases and copies), cached ones at once.
    """
    from tqdm.auto import tqdm

    todo = [t for k, t in plan.tasks.items() if k not in entries]
    units_per_key: dict[str, int] = {}
    for key in plan.unit_key.values():
        units_per_key[key] = units_per_key.get(key, 0) + 1
    task_errors: dict[str, str] = {}
    done_now = n_units - sum(units_per_key[k] for k in plan.tasks if k not in entries)
    with tqdm(
        total=n_units,
        initial=done_now,
        unit="case",
        desc="PyRadiomics",
        disable=not progress,
        dynamic_ncols=True,
    ) as bar:
        for out in _guarded(_execute(todo, n_jobs, cfg.radiomics.dask_scheduler), cache_dir):
            key = out["key"]
            if "error" in out:
                task_errors[key] = out["error"]
            else:
                entry = {
                    "format": CACHE_FORMAT,
                    "key": key,
                    "inputs": plan.key_material[key],
                    # Names and values as parallel lists: PyRadiomics' order is kept.
                    "feature_names": list(out["features"]),
                    "feature_values": list(out["features"].values()),
                    "diagnostics": out["diagnostics"],
                }
                # Compact, unsorted JSON; repr-exact floats make cached values bit-identical.
                atomic_write_text(cache_dir / f"{key}.json", json.dumps(entry))
                entries[key] = entry
            bar.update(units_per_key[key])
    return task_errors


def _split_outcomes(
    units: Sequence[_Unit], plan: _TaskPlan, task_errors: dict[str, str]
) -> tuple[list[_Unit], list[tuple[str, str]]]:
    """Units that have features, and ``(case_id, error)`` of the others, in input order.

    Adds the task errors to ``plan.errors``.
    """
    ok_units = []
    for unit in units:
        key = plan.unit_key.get(unit.case_id)
        if key is not None and key in task_errors:
            plan.errors[unit.case_id] = task_errors[key]
        elif key is not None:
            ok_units.append(unit)
    failures = [(u.case_id, plan.errors[u.case_id]) for u in units if u.case_id in plan.errors]
    return ok_units, failures


def _feature_table(ok_units: Sequence[_Unit], ordered: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """float64 features, one row per unit (index ``case_id``), PyRadiomics' column order."""
    columns = _feature_order(ordered)
    values = np.full((len(ok_units), len(columns)), np.nan, dtype=np.float64)
    col_index = {c: j for j, c in enumerate(columns)}
    for i, entry in enumerate(ordered):
        cols = [col_index[name] for name in entry["feature_names"]]
        values[i, cols] = np.asarray(entry["feature_values"], dtype=np.float64)
    index = pd.Index([u.case_id for u in ok_units], name="case_id")
    return pd.DataFrame(values, index=index, columns=columns)


def _diagnostics_table(
    ok_units: Sequence[_Unit],
    ordered: Sequence[dict[str, Any]],
    plan: _TaskPlan,
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


def _provenance(
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


def extract_radiomics(
    cases: Sequence[Case],
    cfg: StudyConfig,
    cache_dir: str | Path,
    *,
    reader: str = "mask",
    augmentations: pd.DataFrame | None = None,
    n_jobs: int | None = None,
    progress: bool = True,
    allow_failures: bool = False,
    allow_force2d: bool = False,
) -> RadiomicsResult:
    """Extract PyRadiomics features from the preprocessed crop of every case.

    Parameters
    ----------
    cases : sequence of Case
        The cases to extract (unique ``case_id``).
    cfg : StudyConfig
        Uses ``preprocess`` (crop size, margin, normalisation), ``data.mask_label`` /
        ``data.dicom_frame``, ``augment.noise_std`` and ``radiomics`` (parameter file,
        ``n_jobs``, ``dask_scheduler``).
    cache_dir : Path
        Folder of the per-case cache files (created if needed).
    reader : {"mask", "mask_reader2"}
        Which delineation to use: the main ROI, or the second reader's (for the ICC).
    augmentations : DataFrame, optional
        Planned copies from :func:`radfusion.preprocessing.plan_augmentation`
        (``case_id``, ``source_case_id``, ``ops``, ``noise_seed``); each is extracted from
        its source's preprocessed crop after flips / noise (SD ``cfg.augment.noise_std``).
    n_jobs : int, optional
        Worker processes; default ``cfg.radiomics.n_jobs`` (-1: all cores).
    progress : bool
        Show a progress bar (cases done, rate, ETA; cached cases count at once).
    allow_failures : bool
        Return the cases that worked even if some failed, instead of raising.
    allow_force2d : bool
        Accept a parameter file that sets ``force2D`` (see :func:`load_params`): scoring
        with a bundle trained that way.

    Returns
    -------
    RadiomicsResult
        ``features`` (float64, indexed by case_id, cases then copies in input order),
        ``diagnostics``, ``failures``, ``provenance``.

    Raises
    ------
    RadiomicsExtractionError
        At the end, when any case failed and ``allow_failures`` is false; it lists every
        failed case with its error and carries the partial ``result``.
    ConfigError
        The parameter file is missing or invalid, or the dask scheduler is unreachable.
    ValueError
        Unknown ``reader``, duplicate case ids, or augmentations whose source is missing.
    """
    started = time.perf_counter()
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    n_jobs = cfg.radiomics.n_jobs if n_jobs is None else n_jobs
    params_path, params_sha, params = load_params(cfg.radiomics.params, allow_force2d=allow_force2d)
    versions = _versions()
    preprocess = cfg.preprocess.model_dump(mode="json")
    units = _plan_units(cases, reader, augmentations)
    plan = _plan_tasks(units, cfg, preprocess, params_sha, params, versions)
    entries = _read_cached(plan.tasks, cache_dir)
    from_cache = set(entries)
    task_errors = _compute_missing(plan, entries, len(units), cfg, n_jobs, cache_dir, progress)

    # Assemble, in input order.
    ok_units, failures = _split_outcomes(units, plan, task_errors)
    ordered = [entries[plan.unit_key[u.case_id]] for u in ok_units]
    features = _feature_table(ok_units, ordered)
    diagnostics = _diagnostics_table(
        ok_units, ordered, plan, from_cache, reader, params_sha, features.index
    )
    provenance = _provenance(
        cfg, reader, params_path, params_sha, params, preprocess, versions, len(units), features
    )
    result = RadiomicsResult(
        features=features,
        diagnostics=diagnostics,
        failures=failures,
        provenance=provenance,
        n_computed=len(plan.tasks) - len(from_cache),
        n_cached=len(from_cache),
    )
    _report(result, time.perf_counter() - started)
    if failures and not allow_failures:
        raise RadiomicsExtractionError(failures, result)
    return result


def _report(result: RadiomicsResult, seconds: float) -> None:
    log.info(
        "radiomics: %d case(s), %d feature(s): %d computed, %d from cache, %d failed (%.1f s)",
        len(result.features) + len(result.failures),
        result.features.shape[1],
        result.n_computed,
        result.n_cached,
        len(result.failures),
        seconds,
    )
    diag = result.diagnostics
    if "pyradiomics_messages" in diag:
        noisy = diag[diag["pyradiomics_messages"].astype(str) != ""]
        if len(noisy):
            log.warning(
                "PyRadiomics reported problems for %d case(s) (diagnostics column "
                "'pyradiomics_messages'); first, %s: %s",
                len(noisy),
                noisy.index[0],
                noisy["pyradiomics_messages"].iloc[0],
            )
    for cid, msg in result.failures:
        log.warning("radiomics failed for case %s: %s", cid, msg)


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
