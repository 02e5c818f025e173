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
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from radfusion.config import StudyConfig
from radfusion.data import Case
from radfusion.errors import ConfigError, RadfusionError
from radfusion.radiomics._worker import ExtractionTask, run_task
from radfusion.radiomics.cache import (
    TaskPlan,
    Unit,
    plan_tasks,
    plan_units,
    read_cached,
    write_cached,
)
from radfusion.radiomics.params import load_params, radiomics_versions
from radfusion.radiomics.tables import (
    RadiomicsResult,
    diagnostics_table,
    feature_table,
    run_provenance,
)

log = logging.getLogger(__name__)

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


def _compute_missing(
    plan: TaskPlan,
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
                entries[key] = write_cached(cache_dir, key, plan.key_material[key], out)
            bar.update(units_per_key[key])
    return task_errors


def _split_outcomes(
    units: Sequence[Unit], plan: TaskPlan, task_errors: dict[str, str]
) -> tuple[list[Unit], list[tuple[str, str]]]:
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
    versions = radiomics_versions()
    preprocess = cfg.preprocess.model_dump(mode="json")
    units = plan_units(cases, reader, augmentations)
    plan = plan_tasks(units, cfg, preprocess, params_sha, params, versions)
    entries = read_cached(plan.tasks, cache_dir)
    from_cache = set(entries)
    task_errors = _compute_missing(plan, entries, len(units), cfg, n_jobs, cache_dir, progress)

    # Assemble, in input order.
    ok_units, failures = _split_outcomes(units, plan, task_errors)
    ordered = [entries[plan.unit_key[u.case_id]] for u in ok_units]
    features = feature_table(ok_units, ordered)
    diagnostics = diagnostics_table(
        ok_units, ordered, plan, from_cache, reader, params_sha, features.index
    )
    provenance = run_provenance(
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
