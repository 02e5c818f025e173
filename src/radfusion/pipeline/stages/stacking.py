"""Stage ``stacking``: stacked fusion of the arms' scores, cross-fitted or blended.

The arms' out-of-fold scores come from :mod:`radfusion.fusion.crossfit`; this stage
gives it each arm's recipe (the radiomics arm's fitted pipeline, the deep arms' settings).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from radfusion.families import ModelId
from radfusion.layout import RunLayout
from radfusion.pipeline.context import (
    Stage,
    StudyContext,
    case_inputs,
    config_parts,
    harmonization_meta,
    numerics_parts,
    reader2_tables,
    train_rows,
)
from radfusion.pipeline.persist import single_model_predictions, write_parquet
from radfusion.stats import auc_or_nan
from radfusion.utils import atomic_path, atomic_write_json

log = logging.getLogger("radfusion.pipeline")


def _selected_arm_models(ctx: StudyContext) -> dict[str, pd.DataFrame]:
    """The chosen model of each stacked arm: its predictions for every original case."""
    out = {}
    for arm in ctx.cfg.fusion.stacking_arms:
        path = ctx.layout.family_predictions(arm)
        if path.is_file():
            p = pd.read_parquet(path)
            out[arm] = p[p["selected"]].set_index("case_id")
    return out


def radiomics_crossfit(
    ctx: StudyContext, classifier: str, folds: pd.Series, other_ids: list[str]
) -> tuple[pd.Series, pd.Series | None]:
    """Out-of-fold radiomics scores: the chosen pipeline re-tuned and refit on the other folds."""
    from radfusion.fusion.crossfit import crossfit_scores
    from radfusion.models import group_fit_params
    from radfusion.models.io import load_pipeline
    from radfusion.models.tuning import TunedModel

    rad = case_inputs(ctx, "radiomics").features("radiomics")
    # the same recipe as the fitted model (tuned hyperparameters); reader 2 for the ICC
    # and the centres for ComBat are routed to each fold's fit
    recipe = load_pipeline(ctx.layout.model_file(ModelId("radiomics", classifier)))
    X_train, y_train, groups = train_rows(ctx, rad)
    return crossfit_scores(
        # nested: each fold tunes the hyperparameters without its held-out cases
        TunedModel(recipe, models_cfg=ctx.cfg.models, seed=ctx.cfg.seed),
        X_train,
        y_train,
        groups,
        folds[folds.index.isin(X_train.index)],
        fit_params=group_fit_params,
        X_other=rad.loc[[i for i in other_ids if i in rad.index]],
        reader2=reader2_tables(ctx, "radiomics"),
        case_meta=harmonization_meta(ctx),
    )


def stage_stacking(ctx: StudyContext) -> None:
    """Stacked fusion: a logistic meta-learner on the arms' (cross-fitted) scores."""
    from radfusion.fusion.crossfit import crossfit_deep_arm, crossfit_folds
    from radfusion.fusion.stacking import StackedFusionModel, score_column
    from radfusion.fusion.study_model import ScoreInputs
    from radfusion.models.io import save_pipeline

    cfg = ctx.cfg
    mode = cfg.fusion.stacking
    chosen = _selected_arm_models(ctx)
    arms = list(chosen)
    if len(arms) < 2:
        log.warning("stacked fusion needs two arms' scores; found %s: skipped", arms or "none")
        return
    cases = ctx.cases_table().set_index("case_id")
    clinical = cfg.data.clinical if cfg.fusion.stacking_clinical else None
    spec = ScoreInputs.for_stacked(
        {a: str(chosen[a]["classifier"].iloc[0]) for a in arms},
        clinical.numeric if clinical else (),
        clinical.categorical if clinical else (),
    )
    cols = list(spec.scores)
    X = spec.frame(
        cases.index, {ref: chosen[ref.family]["probability"] for ref in spec.reads}, cases
    )
    train_ids = cases.index[cases["split"] == "train"].tolist()
    other_ids = cases.index[cases["split"] != "train"].tolist()
    ctx.layout.stacking_dir.mkdir(exist_ok=True)
    fold_mean: dict[str, pd.Series] = {}
    if mode == "crossfit":
        folds = crossfit_folds(
            train_ids,
            cases.loc[train_ids, "label"],
            cases.loc[train_ids, "group"],
            n_splits=cfg.fusion.stacking_folds,
            seed=cfg.seed,
        )
        oof = {}
        for arm in arms:
            if arm == "radiomics":
                clf = str(chosen[arm]["classifier"].iloc[0])
                oof[arm], other = radiomics_crossfit(ctx, clf, folds, other_ids)
                if other is not None:
                    fold_mean[arm] = other
            else:
                scores = crossfit_deep_arm(
                    ctx.analysed_cohort(),
                    ctx.assignment(),
                    cfg,
                    arm,
                    ctx.layout.stacking_arm(arm).path,
                    folds,
                    ctx.augmentation(),
                    progress=ctx.progress,
                    cache_dir=ctx.layout.deep(arm).cache,
                )
                oof[arm] = scores[scores["out_of_fold"]].set_index("case_id")["probability"]
                fold_mean[arm] = (
                    scores[~scores["out_of_fold"]].groupby("case_id")["probability"].mean()
                )
        # the training rows carry their out-of-fold scores: the meta-learner learns from
        # them, and the training AUC reported for the stacked model is honest
        for arm in arms:
            X.loc[train_ids, score_column(arm)] = oof[arm].reindex(train_ids).to_numpy()
        fit_ids = train_ids
        oof_table = X.loc[train_ids, cols].assign(fold=folds.reindex(train_ids).to_numpy())
        write_parquet(oof_table, ctx.layout.stacking_oof_scores)
    else:
        fit_ids = cases.index[cases["split"] == "val"].tolist()
        if cases.loc[fit_ids, "label"].nunique() < 2:
            log.warning("stacking blend needs both classes in validation: skipped")
            return
    # a case some arm could not score (e.g. a failed radiomics extraction) gets no stacked
    # score either, like it gets none from that arm
    scored = X[cols].notna().all(axis=1)
    if not scored.all():
        log.warning(
            "stacked fusion: %d case(s) lack an arm's score and are not scored: %s",
            int((~scored).sum()),
            list(X.index[~scored][:10]),
        )
    X, cases = X[scored], cases[scored]
    fit_ids = [i for i in fit_ids if i in X.index]
    model = StackedFusionModel(
        arms=arms,
        numeric=clinical.numeric if clinical else None,
        categorical=clinical.categorical if clinical else None,
        C=cfg.fusion.stacking_c,
    ).fit(X.loc[fit_ids], cases.loc[fit_ids, "label"].to_numpy())
    ctx.layout.family_dir("stacked").mkdir(parents=True, exist_ok=True)
    save_pipeline(model, ctx.layout.model_file(ModelId.single("stacked")))
    with atomic_path(ctx.layout.stacking_coefficients) as tmp:
        model.coefficients_.to_csv(tmp, index=False)
    summary: dict[str, Any] = {
        "mode": mode,
        "arms": [
            {
                "family": a,
                "model": str(chosen[a]["model"].iloc[0]),
                "classifier": str(chosen[a]["classifier"].iloc[0]),
            }
            for a in arms
        ],
        "folds": cfg.fusion.stacking_folds if mode == "crossfit" else None,
        "fitted_on": (
            "out-of-fold training scores (each arm refit per fold; the radiomics arm's "
            "hyperparameters re-tuned inside each fold)"
            if mode == "crossfit"
            else "validation"
        ),
        "clinical": clinical.model_dump() if clinical else None,
        "applied_with": "each arm's model fitted on the whole training set",
    }
    if fold_mean:
        summary["transfer"] = _compare_fold_mean(model, X, cases, arms, fold_mean)
    atomic_write_json(ctx.layout.model_source("stacked"), summary)
    prob = model.predict_proba(X)[:, 1]
    res = single_model_predictions(cases, "stacked", ModelId.single("stacked").name, prob)
    write_parquet(res, ctx.layout.family_predictions("stacked"))


def _compare_fold_mean(
    model: Any,
    X: pd.DataFrame,
    cases: pd.DataFrame,
    arms: list[str],
    fold_mean: dict[str, pd.Series],
) -> dict[str, Any]:
    """Validation / test AUC of the stacked model fed full-model vs fold-model-mean scores."""
    from radfusion.fusion.stacking import score_column

    other = cases.index[cases["split"] != "train"]
    Xf = X.loc[other].copy()
    for arm in arms:
        if arm in fold_mean:
            Xf[score_column(arm)] = fold_mean[arm].reindex(other).to_numpy()
    res: dict[str, Any] = {}
    for name, frame in (("full_model", X.loc[other]), ("fold_mean", Xf)):
        p = model.predict_proba(frame)[:, 1]
        for split in ("val", "test"):
            m = (cases.loc[other, "split"] == split).to_numpy()
            res[f"{name}_{split}_auc"] = auc_or_nan(cases.loc[other, "label"].to_numpy()[m], p[m])
    log.info("stacked fusion, full-model vs fold-mean arm scores: %s", res)
    return res


def _inputs(ctx: StudyContext, up: list[str | None]) -> dict[str, Any]:
    from radfusion.models.calibration import CALIBRATION_FOLDS

    cfg = config_parts(ctx)
    return {
        "up": up,
        "fusion": {kk: v for kk, v in cfg["fusion"].items() if kk.startswith("stacking")},
        "clinical": cfg["data"]["clinical"],
        "calibration_folds": CALIBRATION_FOLDS,
        **numerics_parts(cfg, harmonization=False),
    }


def _outputs(layout: RunLayout) -> tuple[Path, ...]:
    return (layout.stacking_dir, layout.family_dir("stacked"))


STACKING = Stage(
    "stacking",
    ("radiomics", "deep_1ch", "deep_2ch"),
    _inputs,
    stage_stacking,
    _outputs,
    enabled=lambda cfg: cfg.fusion.stacking != "off",
)
