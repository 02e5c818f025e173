"""Stage ``split``: train / validation / test assignment and the augmentation plan."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from radfusion.data.splits import join_groups, make_splits
from radfusion.errors import ConfigError
from radfusion.layout import RunLayout
from radfusion.pipeline.context import Stage, StudyContext, config_parts
from radfusion.pipeline.folds import split_links
from radfusion.preprocessing import plan_augmentation
from radfusion.utils import atomic_path, atomic_write_json, file_sha256

log = logging.getLogger("radfusion.pipeline")


def stage_split(ctx: StudyContext) -> None:
    """Assign train/val/test, plan the augmentation and write cases.csv + fingerprint."""
    cfg = ctx.cfg
    cohort = ctx.cohort
    links = split_links(cfg, ctx.layout)
    assignments = make_splits(cohort, cfg.split, cfg.seed, linked=links)
    if len(assignments) > 1:  # run_study hands these to radfusion.pipeline.folds
        raise ConfigError(f"split.method '{cfg.split.method}' needs one sub-run per fold")
    split = assignments[0].split
    t = cohort.table
    cases = pd.DataFrame(
        {
            "case_id": cohort.case_ids,
            "label": cohort.labels,
            "split": split.reindex(cohort.case_ids).to_numpy(),
            # duplicate images share a group, so inner-CV and cross-fitting folds keep
            # them together too
            "group": join_groups(cohort.case_ids, cohort.groups, links),
        }
    )
    if links:
        log.warning(
            "split: %d cluster(s) of duplicate images with different %s values are each "
            "kept in one split group (split.join_duplicates): %s",
            len(links),
            cohort.group_column or "case_id",
            "; ".join(", ".join(c) for c in links[:10]) + (" ..." if len(links) > 10 else ""),
        )
    for col in ("center", "patient_id"):
        if cohort.has(col):
            cases[col] = t[col].to_numpy()
    clinical = cohort.clinical_frame().reset_index(drop=True)
    for col in clinical.columns:
        cases[col] = clinical[col].to_numpy()
    cases["image"] = [str(cohort.resolve(v)) for v in t["image"]]
    cases["mask"] = [str(cohort.resolve(v)) for v in t["mask"]]
    if cohort.has("mask_reader2"):
        cases["mask_reader2"] = [str(cohort.resolve(v)) if v else "" for v in t["mask_reader2"]]
    if not (cases["split"] == "train").any():
        raise ConfigError("the split has no training cases")
    for name in ("val", "test"):
        labels = set(cases.loc[cases["split"] == name, "label"])
        if len(labels) == 1:
            log.warning(
                "the %s split holds only class %s: its AUC, sensitivity or specificity "
                "cannot be computed; use more cases, another seed or split.method",
                name,
                labels.pop(),
            )
    with atomic_path(ctx.layout.cases) as tmp:
        cases.to_csv(tmp, index=False)
    aug = plan_augmentation(cases, cfg.augment, cfg.seed)
    with atomic_path(ctx.layout.augmentation) as tmp:
        aug.to_csv(tmp, index=False)
    per_split = cases.groupby("split")["label"].value_counts().unstack(fill_value=0)
    atomic_write_json(
        ctx.layout.fingerprint,
        {
            "manifest": str(cfg.data.manifest),
            "manifest_sha256": file_sha256(cfg.data.manifest),  # type: ignore[arg-type]
            "n_cases": len(cases),
            "cases_per_label": {str(k): int(v) for k, v in cases["label"].value_counts().items()},
            "cases_per_split": {
                s: {str(k): int(v) for k, v in row.items()} for s, row in per_split.iterrows()
            },
            "n_groups": len(set(cohort.groups)),  # the manifest's, before duplicates joined
            "group_column": cohort.group_column,
            "augmented_copies": {s: int(n) for s, n in aug["split"].value_counts().items()},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )


def _inputs(ctx: StudyContext, up: list[str | None]) -> dict[str, Any]:
    # the split reads the manifest only: a changed image does not redo it
    cfg = config_parts(ctx)
    links = split_links(ctx.cfg, ctx.layout)  # read from validation.json, once it exists
    return {
        "data": cfg["data"],
        "fingerprint": ctx.keys.get("_data"),
        "split": cfg["split"],
        "augment": cfg["augment"],
        "seed": cfg["seed"],
        # only when some are joined, so that other runs keep their keys
        **({"linked": links} if links else {}),
    }


def _outputs(layout: RunLayout) -> tuple[Path, ...]:
    return (layout.cases, layout.augmentation, layout.fingerprint)


SPLIT = Stage("split", (), _inputs, stage_split, _outputs)
