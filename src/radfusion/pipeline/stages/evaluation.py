"""Stage ``evaluation``: every family's predictions in one table, then metrics and figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from radfusion.errors import ConfigError
from radfusion.layout import RunLayout
from radfusion.pipeline.context import Stage, StudyContext, config_parts
from radfusion.pipeline.persist import write_parquet
from radfusion.pipeline.run import RunFolder


def collect_predictions(run: RunFolder) -> pd.DataFrame:
    """All families' predictions in one table (``RUN/predictions.parquet``)."""
    found = [run.layout.family_predictions(f) for f in run.layout.families()]
    parts = [pd.read_parquet(p) for p in found if p.is_file()]
    if not parts:
        raise ConfigError(f"{run.path} has no model predictions yet")
    preds = pd.concat(parts, ignore_index=True)
    preds = preds[
        ["case_id", "split", "label", "family", "model", "classifier", "probability", "selected"]
    ]
    # the prior each model was trained at (augmentation, class weights) undone here, once:
    # the thresholds, evaluation, report and bundle read these probabilities
    from radfusion.evaluation.prior import run_prior_shifts, shift_predictions

    preds = shift_predictions(preds, run_prior_shifts(run.layout, run.config, preds))
    write_parquet(preds, run.layout.predictions)
    return preds


def evaluate(run: RunFolder) -> None:
    """Collect every family's predictions and evaluate them (metrics, tables, figures)."""
    from radfusion.evaluation import evaluate_run

    collect_predictions(run)
    evaluate_run(run.path)


def stage_evaluation(ctx: StudyContext) -> None:
    evaluate(ctx.run)


def _inputs(ctx: StudyContext, up: list[str | None]) -> dict[str, Any]:
    return {"up": up, "evaluation": config_parts(ctx)["evaluation"]}


def _outputs(layout: RunLayout) -> tuple[Path, ...]:
    return (layout.predictions, layout.evaluation_dir)


EVALUATION = Stage(
    "evaluation",
    ("radiomics", "deep_1ch", "deep_2ch", "fusion", "stacking"),
    _inputs,
    stage_evaluation,
    _outputs,
)
