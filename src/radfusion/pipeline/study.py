"""The whole study as resumable stages over one run folder.

The stages and what each reads, does and writes are declared in
:mod:`radfusion.pipeline.stages`; :func:`run_study` runs them in order, skipping those
whose result is up to date (see :mod:`radfusion.pipeline.run` for the resume rule), or
runs one sub-study per fold (:mod:`radfusion.pipeline.folds`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from radfusion.config import StudyConfig
from radfusion.data import Cohort, load_cohort
from radfusion.errors import ConfigError
from radfusion.pipeline import stages
from radfusion.pipeline.context import Stage, StudyContext, data_files
from radfusion.pipeline.folds import finish_folds, needs_folds, plan_folds
from radfusion.pipeline.run import RunFolder, check_run_folder
from radfusion.pipeline.stages import evaluate, validate_or_raise
from radfusion.reproducibility import reproducible_numerics
from radfusion.utils import file_sha256, remove_stray_temps

__all__ = ["STAGES", "StudyContext", "evaluate", "run_study", "stage_key"]

log = logging.getLogger("radfusion.pipeline")

#: The stages' names, in the order they run (``--from``, ``--until``, ``--only``).
STAGES: tuple[str, ...] = tuple(s.name for s in stages.STAGES)


def run_study(
    cfg: StudyConfig,
    run_dir: str | Path | None = None,
    *,
    from_stage: str | None = None,
    until: str | None = None,
    only: Sequence[str] | None = None,
    progress: bool = True,
    allow_failures: bool = False,
    on_stage: Callable[[str, str], None] | None = None,
) -> RunFolder:
    """Run (or resume) the whole study into a run folder.

    Parameters
    ----------
    cfg : StudyConfig
        The study; ``data.manifest`` must be set.
    run_dir : Path, optional
        The run folder (default ``cfg.output_dir``).
    from_stage : str, optional
        Redo this stage and every later one even if finished.
    until : str, optional
        Stop after this stage.
    only : sequence of str, optional
        Run just these stages (plus ``validate`` and ``split``, which they need).
    progress : bool
        Progress bars.
    allow_failures : bool
        Continue when some cases fail radiomics extraction (they are reported).
    on_stage : callable, optional
        Called with (stage, "skipped" | "running" | "done").

    Returns
    -------
    RunFolder
    """
    with reproducible_numerics(cfg.reproducibility):
        return _run_study(
            cfg,
            run_dir,
            from_stage=from_stage,
            until=until,
            only=only,
            progress=progress,
            allow_failures=allow_failures,
            on_stage=on_stage,
        )


def _run_study(
    cfg: StudyConfig,
    run_dir: str | Path | None,
    *,
    from_stage: str | None,
    until: str | None,
    only: Sequence[str] | None,
    progress: bool,
    allow_failures: bool,
    on_stage: Callable[[str, str], None] | None,
) -> RunFolder:
    if cfg.data.manifest is None:
        raise ConfigError("data.manifest is not set: point it at your cohort manifest CSV")
    for name in (from_stage, until, *(only or ())):
        if name is not None and name not in STAGES:
            raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    # Config, parameter file and manifest must be known good before a run folder is created.
    from radfusion.radiomics import load_params

    load_params(cfg.radiomics.params)
    cohort = load_cohort(cfg.data.manifest, cfg.data)
    check_run_folder(run_dir or cfg.output_dir)
    if needs_folds(cfg):
        if only is not None or until is not None:
            raise ConfigError(
                f"split.method '{cfg.split.method}' runs one sub-study per fold; run the "
                "whole study (`radfusion run`) rather than single stages"
            )
        return _run_folds(
            cfg,
            run_dir,
            cohort,
            from_stage=from_stage,
            progress=progress,
            allow_failures=allow_failures,
            on_stage=on_stage,
        )
    run = RunFolder(run_dir or cfg.output_dir, cfg)
    run.lock()
    run.attach_log()
    try:
        for stray in remove_stray_temps(run.path):
            log.info("removed %s, left by an interrupted run", stray)
        run.write_provenance()
        ctx = StudyContext(
            run, cfg, progress=progress, allow_failures=allow_failures, _cohort=cohort
        )
        ctx.keys["_data"] = file_sha256(cfg.data.manifest)
        weights = [cfg.deep.pretrained_weights] if cfg.deep.pretrained_weights else []
        ctx.file_hashes = run.content_hashes([*data_files(ctx.cohort).values(), *weights])
        if from_stage is not None:
            run.invalidate_from(list(STAGES[STAGES.index(from_stage) :]))
        redone: set[str] = set()  # the stages run in this call
        for stage in stages.STAGES:
            if not stage.enabled(cfg):
                continue
            key = ctx.keys[stage.name] = stage_key(ctx, stage)
            if only is not None and stage.name not in {"validate", "split", *only}:
                continue
            # A stage redone with an unchanged key (a damaged output was recomputed) may
            # still have changed what the stages reading it see: redo those too.
            upstream_redone = not redone.isdisjoint(stage.upstream)
            if not upstream_redone and run.is_done(stage.name, key):
                log.info("stage %s: up to date, skipped", stage.name)
                if on_stage:
                    on_stage(stage.name, "skipped")
            else:
                _run_stage(ctx, stage, key, on_stage)
                redone.add(stage.name)
            if until is not None and stage.name == until:
                break
        return run
    except BaseException:
        # the traceback goes to logs/run.log only (the console shows one line; -v: all)
        log.info("run stopped", exc_info=True)
        raise
    finally:
        run.detach_log()
        run.unlock()


def stage_key(ctx: StudyContext, stage: Stage) -> str:
    """The key of ``stage`` given the keys of its upstream stages in ``ctx.keys``.

    A disabled upstream stage counts as None.
    """
    up = [ctx.keys.get(s) for s in stage.upstream]
    return ctx.run.stage_key(stage.name, stage.inputs(ctx, up))


def _run_stage(
    ctx: StudyContext, stage: Stage, key: str, on_stage: Callable[[str, str], None] | None
) -> None:
    """Run one stage and record its key and the files it wrote."""
    run = ctx.run
    # later stages need no invalidation: their keys include this stage's key
    run.invalidate_from([stage.name])
    log.info("stage %s: running", stage.name)
    if on_stage:
        on_stage(stage.name, "running")
    start = time.perf_counter()
    before = run.snapshot()
    stage.run(ctx)
    outputs = run.written_since(before)
    run.mark_done(stage.name, key, time.perf_counter() - start, {"outputs": outputs})
    log.info("stage %s: done in %.1f s", stage.name, time.perf_counter() - start)
    if on_stage:
        on_stage(stage.name, "done")


def _run_folds(
    cfg: StudyConfig,
    run_dir: str | Path | None,
    cohort: Cohort,
    *,
    from_stage: str | None,
    progress: bool,
    allow_failures: bool,
    on_stage: Callable[[str, str], None] | None,
) -> RunFolder:
    """One complete sub-study per fold or center, then their test predictions pooled."""
    run = RunFolder(run_dir or cfg.output_dir, cfg)
    run.lock()
    try:
        remove_stray_temps(run.path)
        run.write_provenance()
        validate_or_raise(cohort, run)
        folds = plan_folds(cfg, run, cohort)
        for fold in folds:
            log.info("fold %s: %s", fold.name, fold.path)

            def tagged(stage: str, state: str, name: str = fold.name) -> None:
                if on_stage:
                    on_stage(f"{name}: {stage}", state)

            run_study(
                fold.config,
                fold.path,
                from_stage=from_stage,
                progress=progress,
                allow_failures=allow_failures,
                on_stage=tagged,
            )
        finish_folds(cfg, run, folds)
    finally:
        run.unlock()
    return run
