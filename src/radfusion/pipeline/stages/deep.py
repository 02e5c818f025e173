"""Stages ``deep_1ch`` and ``deep_2ch``: one ResNet arm trained end to end each."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from radfusion.families import DEEP_CLASSIFIER
from radfusion.layout import RunLayout
from radfusion.pipeline.context import (
    DATA_COLUMNS,
    Stage,
    StudyContext,
    data_fingerprint,
    split_labels,
)
from radfusion.pipeline.persist import write_parquet
from radfusion.utils import json_sha256


def deep_training(ctx: StudyContext, arm: str, split_key: str | None) -> dict[str, Any]:
    """What an arm's training depends on: the split, its files' contents and settings.

    The settings part is :func:`radfusion.deep.resume.training_settings`, the same that
    fingerprints the checkpoint, so a runtime-only change (device, workers, the other
    arm) neither reruns the stage nor discards the training.
    """
    from radfusion.deep.inputs import InputSpec
    from radfusion.deep.resume import training_settings

    cfg = ctx.cfg
    spec = InputSpec.from_config(arm, cfg.deep, cfg.preprocess)  # type: ignore[arg-type]
    weights = cfg.deep.pretrained_weights
    return {
        "up": split_key,
        # the 2ch input holds the ROI (and its reader-2 features), the 1ch input does not
        "files": data_fingerprint(ctx, DATA_COLUMNS if spec.uses_mask else ("image",)),
        "settings": training_settings(cfg, arm),
        "pretrained_sha256": ctx.file_hashes.get(str(weights)) if weights else None,
        # only when some case is left out, so that other runs keep their keys
        **({"excluded": sorted(ctx.excluded())} if ctx.excluded() else {}),
    }


def stage_deep(ctx: StudyContext, arm: str) -> None:
    """Train one ResNet arm end to end; write its features and predictions."""
    from radfusion.deep import run_deep_arm
    from radfusion.deep.resume import discard_stale_training

    cfg = ctx.cfg
    out = ctx.layout.deep_dir(arm)
    discard_stale_training(out, json_sha256(deep_training(ctx, arm, ctx.keys.get("split"))))
    res = run_deep_arm(
        ctx.analysed_cohort(),
        ctx.assignment(),
        cfg,
        arm,
        out,
        ctx.augmentation(),
        progress=ctx.progress,
    )
    preds = res.predictions.copy()
    meta = split_labels(ctx)
    preds = preds[preds["case_id"].isin(meta.index)]
    preds["family"] = arm
    preds["classifier"] = DEEP_CLASSIFIER
    preds["selected"] = True
    preds["label"] = meta.loc[preds["case_id"], "label"].to_numpy()
    preds["split"] = meta.loc[preds["case_id"], "split"].to_numpy()
    ctx.layout.family_dir(arm).mkdir(parents=True, exist_ok=True)
    cols = ["case_id", "split", "label", "family", "model", "classifier", "probability", "selected"]
    write_parquet(preds[cols].reset_index(drop=True), ctx.layout.family_predictions(arm))


def _inputs(ctx: StudyContext, up: list[str | None], arm: str) -> dict[str, Any]:
    from radfusion.deep.resume import output_settings

    return {"training": deep_training(ctx, arm, up[0]), "outputs": output_settings(ctx.cfg)}


def _outputs(layout: RunLayout, arm: str) -> tuple[Path, ...]:
    return (layout.deep_dir(arm), layout.family_dir(arm))


def _stage(arm: str) -> Stage:
    return Stage(
        f"deep_{arm}",
        ("split",),
        partial(_inputs, arm=arm),
        partial(stage_deep, arm=arm),
        partial(_outputs, arm=arm),
        enabled=lambda cfg: arm in cfg.deep.arms,
    )


DEEP_1CH = _stage("1ch")
DEEP_2CH = _stage("2ch")
