"""Stage ``radiomics``: PyRadiomics extraction, feature selection and the classifier zoo."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from radfusion.errors import RadfusionError
from radfusion.families import ModelId
from radfusion.layout import RunLayout
from radfusion.pipeline.context import (
    DATA_COLUMNS,
    Stage,
    StudyContext,
    config_parts,
    data_fingerprint,
    fit_family_zoo,
    split_labels,
    train_rows,
    zoo_parts,
)
from radfusion.pipeline.persist import save_family, selection_json

log = logging.getLogger("radfusion.pipeline")


def _ibsi_check(cache_dir: Path, layout: RunLayout) -> None:
    """The IBSI digital-phantom check of this PyRadiomics version, for the report and card.

    Cached in the radiomics cache per PyRadiomics / SimpleITK / numpy version: a study pays
    for it once. A value outside its tolerance is logged, not fatal: the report shows it. A
    PyRadiomics version the mapping does not fit is logged too, and the report then says
    nothing about IBSI rather than something wrong.
    """
    from radfusion.radiomics.ibsi import ibsi_check, write_ibsi

    try:
        check = ibsi_check(cache_dir=cache_dir)
    except RadfusionError as exc:
        log.warning("IBSI digital-phantom check not possible: %s", exc)
        return
    write_ibsi(check, layout.radiomics_ibsi, layout.radiomics_ibsi_summary)
    if not check.ok:
        log.warning(
            "IBSI digital phantom: %d value(s) outside tolerance, unmapped features %s; see %s",
            check.counts["failed"],
            check.unmapped or "none",
            layout.radiomics_ibsi,
        )


def stage_radiomics(ctx: StudyContext) -> None:
    """PyRadiomics extraction (+ reader 2 for the ICC), selection and the classifier zoo."""
    from radfusion.radiomics import extract_radiomics, write_feature_table
    from radfusion.selection import selection_report

    cfg = ctx.cfg
    cohort = ctx.cohort
    cases = cohort.cases()
    ctx._excluded = {}  # every case is extracted; what fails is known below
    aug = ctx.augmentation()
    cache = cfg.radiomics.cache_dir or ctx.layout.radiomics_cache
    res = extract_radiomics(
        cases,
        cfg,
        cache,
        augmentations=aug,
        progress=ctx.progress,
        allow_failures=ctx.allow_failures,
    )
    write_feature_table(res, ctx.layout.radiomics_features())
    _ibsi_check(cache, ctx.layout)
    originals = set(cohort.case_ids)
    ctx._excluded = {c: msg for c, msg in res.failures if c in originals}
    if ctx._excluded:
        log.warning(
            "radiomics extraction failed for %d case(s), left out of every model (radiomics, "
            "deep, fusion) and of the evaluation (--allow-failures): %s",
            len(ctx._excluded),
            ", ".join(ctx._excluded),
        )
    assignment = ctx.assignment()
    r2_cases = [
        c for c in cases if c.mask_reader2 is not None and assignment.get(c.case_id) == "train"
    ]
    reader2 = None
    if r2_cases:
        res2 = extract_radiomics(
            r2_cases,
            cfg,
            cache,
            reader="mask_reader2",
            progress=ctx.progress,
            allow_failures=ctx.allow_failures,
        )
        write_feature_table(res2, ctx.layout.radiomics_features(reader=2))
        reader2 = res2.features
    X_train, y_train, groups = train_rows(ctx, res.features)
    from radfusion.models import build_model

    models = fit_family_zoo(
        ctx,
        X_train,
        y_train,
        groups,
        build=lambda n, r: build_model(
            n,
            selection_cfg=cfg.selection,
            models_cfg=cfg.models,
            seed=cfg.seed,
            class_ratio=r,
        ),
        reader2=reader2,
    )
    first = next(iter(models.values())).pipeline
    report = selection_report(first)
    meta = split_labels(ctx)
    meta = meta[meta.index.isin(res.features.index)]
    save_family(
        ctx,
        "radiomics",
        models,
        res.features,
        X_train,
        y_train,
        meta,
        lambda n: ModelId("radiomics", n).name,
        selection_json(report, first.named_steps.get("lasso")),
    )


def _inputs(ctx: StudyContext, up: list[str | None]) -> dict[str, Any]:
    cfg = config_parts(ctx)
    return {
        "up": up[0],
        "files": data_fingerprint(ctx, DATA_COLUMNS),
        "preprocess": cfg["preprocess"],
        "radiomics": cfg["radiomics"],
        "selection_split": cfg["evaluation"]["selection_split"],
        **zoo_parts(cfg),
    }


def _outputs(layout: RunLayout) -> tuple[Path, ...]:
    return (layout.radiomics_dir, layout.family_dir("radiomics"), layout.selection("radiomics"))


RADIOMICS = Stage("radiomics", ("split",), _inputs, stage_radiomics, _outputs)
