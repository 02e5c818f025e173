"""Stage ``fusion``: the Merged models (early fusion) and the clinical + imaging model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from radfusion.families import MERGED_ARMS, ModelId
from radfusion.layout import RunLayout
from radfusion.pipeline.context import (
    Stage,
    StudyContext,
    case_inputs,
    config_parts,
    fit_family_zoo,
    harmonization_meta,
    reader2_tables,
    split_labels,
    train_rows,
    zoo_parts,
)
from radfusion.pipeline.persist import (
    save_family,
    selection_json,
    single_model_predictions,
    write_parquet,
)
from radfusion.utils import atomic_path, atomic_write_json


def stage_fusion(ctx: StudyContext) -> None:
    """Merged models 1 and 2 through the zoo, then the clinical + imaging model."""
    from radfusion.fusion.merge import block_pipelines, build_merged_model
    from radfusion.selection import selection_report

    cfg = ctx.cfg
    meta = split_labels(ctx)
    for family, arm in MERGED_ARMS.items():
        if arm not in cfg.deep.arms:
            continue
        inputs = case_inputs(ctx, family)
        X, blocks = inputs.features(family), inputs.blocks(family)
        reader2 = reader2_tables(ctx, family)
        X_train, y_train, groups = train_rows(ctx, X)
        models = fit_family_zoo(
            ctx,
            X_train,
            y_train,
            groups,
            build=lambda n, r, b=blocks: build_merged_model(
                n,
                b,
                selection_cfg=cfg.selection,
                models_cfg=cfg.models,
                seed=cfg.seed,
                class_ratio=r,
            ),
            reader2=reader2,
            harmonized_blocks=None if cfg.harmonization.features == "all" else ["radiomics"],
        )
        first = next(iter(models.values())).pipeline
        sel: dict[str, Any] = {"counts": {}, "blocks": {}}
        kept: list[str] = []
        coefs: dict[str, float] = {}
        for block, pipe in block_pipelines(first).items():
            rep = selection_json(selection_report(pipe), pipe.named_steps.get("lasso"))
            sel["blocks"][block] = rep
            kept += rep["kept"]
            coefs.update(rep["coefficients"])
            for step, n in rep["counts"].items():
                sel["counts"][step] = sel["counts"].get(step, 0) + (n or 0)
        grouped = [b["grouped"] for b in sel["blocks"].values() if b["grouped"] is not None]
        sel.update(
            {
                "kept": kept,
                "coefficients": coefs,
                "icc_skipped": None,
                "grouped": all(grouped) if grouped else None,
            }
        )
        save_family(
            ctx,
            family,
            models,
            X,
            X_train,
            y_train,
            meta[meta.index.isin(X.index)],
            lambda n, fam=family: ModelId(fam, n).name,
            sel,
        )
    if cfg.fusion.clinical_model and cfg.data.clinical.all:
        clinical_model(ctx)


def _imaging_source(ctx: StudyContext) -> str | None:
    for family in ("merged2", "merged1", "radiomics"):
        if ctx.layout.family_predictions(family).is_file():
            return family
    return None


def clinical_model(ctx: StudyContext) -> None:
    """Clinical columns + the out-of-fold score of the best imaging model, in one LR."""
    from radfusion.fusion import ClinicalImagingModel
    from radfusion.fusion.study_model import ScoreInputs
    from radfusion.models import inner_cv
    from radfusion.models.io import load_pipeline, save_pipeline
    from radfusion.models.tuning import TunedModel, out_of_fold_probability

    cfg = ctx.cfg
    family = _imaging_source(ctx)
    if family is None:
        return
    preds = pd.read_parquet(ctx.layout.family_predictions(family))
    chosen = preds[preds["selected"]]
    clf = chosen["classifier"].iloc[0]
    pipe = load_pipeline(ctx.layout.model_file(ModelId(family, clf)))
    X = case_inputs(ctx, family).features(family)
    X_train, y_train, groups = train_rows(ctx, X)
    # Out-of-fold training scores: an in-sample imaging score would look perfect. Each
    # fold refits the fitted model's recipe, reader-2 data (the ICC filter) included, and
    # re-tunes its hyperparameters on the fold's training part (nested): hyperparameters
    # tuned on all training cases have seen the held-out fold. The folds run one after
    # another; each fold's search uses the cores.
    cv = inner_cv(y_train, groups, cfg.models.cv, cfg.seed)
    nested = TunedModel(pipe, models_cfg=cfg.models, seed=cfg.seed)
    oof = pd.Series(
        out_of_fold_probability(
            nested,
            X_train,
            y_train,
            groups,
            cv,
            reader2=reader2_tables(ctx, family),
            case_meta=harmonization_meta(ctx),
        ),
        index=X_train.index,
    )
    cases = ctx.cases_table().set_index("case_id")
    score = chosen.set_index("case_id")["probability"]
    train_ids = [i for i in X_train.index if i in cases.index]  # originals only
    score.loc[train_ids] = oof.loc[train_ids]
    spec = ScoreInputs.for_clinical(
        ModelId(family, clf), cfg.data.clinical.numeric, cfg.data.clinical.categorical
    )
    clinical = spec.frame(cases.index, {ModelId(family, clf): score}, cases)
    model = ClinicalImagingModel(
        numeric=cfg.data.clinical.numeric, categorical=cfg.data.clinical.categorical
    )
    model.fit(clinical.loc[train_ids], cases.loc[train_ids, "label"].to_numpy())
    ctx.layout.family_dir("clinical").mkdir(parents=True, exist_ok=True)
    save_pipeline(model, ctx.layout.model_file(ModelId.single("clinical")))
    ctx.layout.clinical_dir.mkdir(exist_ok=True)
    with atomic_path(ctx.layout.clinical_coefficients) as tmp:
        model.coefficients_.to_csv(tmp, index=False)
    atomic_write_json(
        ctx.layout.model_source("clinical"),
        {
            "imaging_family": family,
            "imaging_classifier": clf,
            "score": "out-of-fold on train, hyperparameters re-tuned inside each fold",
        },
    )
    prob = model.predict_proba(clinical)[:, 1]
    res = single_model_predictions(
        split_labels(ctx).loc[clinical.index], "clinical", ModelId.single("clinical").name, prob
    )
    write_parquet(res, ctx.layout.family_predictions("clinical"))


def _inputs(ctx: StudyContext, up: list[str | None]) -> dict[str, Any]:
    cfg = config_parts(ctx)
    return {
        "up": up,
        "fusion": {kk: v for kk, v in cfg["fusion"].items() if not kk.startswith("stacking")},
        "clinical": cfg["data"]["clinical"],
        **zoo_parts(cfg),
    }


def _outputs(layout: RunLayout) -> tuple[Path, ...]:
    merged = [p for f in MERGED_ARMS for p in (layout.family_dir(f), layout.selection(f))]
    return (*merged, layout.family_dir("clinical"), layout.clinical_dir)


FUSION = Stage(
    "fusion",
    ("radiomics", "deep_1ch", "deep_2ch"),
    _inputs,
    stage_fusion,
    _outputs,
    enabled=lambda cfg: cfg.fusion.enabled,
)
