"""Studies over several assignments: repeated k-fold CV and leave-each-center-out.

``split.method: kfold`` (and ``center`` without a ``test_center``) gives one
train/val/test assignment per fold or center. Each becomes a complete sub-run
(``RUN/folds/<name>/``, with its own manifest carrying the fixed ``split`` column,
models, evaluation, report and bundle), all sharing one radiomics feature cache, so
the features of a case are extracted once. The test-set predictions of every
family's selected model are then pooled across folds:

    RUN/cv_predictions.parquet   fold, repeat, case_id, label, family, model, probability
    RUN/cv_repeats.csv           per family and repeat: pooled AUC with its DeLong 95% CI
    RUN/cv_summary.csv           per family: fold AUCs, mean +/- SD, pooled AUC, and how
                                 its interval was computed (``method``)

In repeated k-fold CV each case is tested once per repeat, so the test predictions
of one repeat are one pooled sample of every case and have a valid DeLong interval;
the repeats re-use the same cases and are not independent, so their intervals are
not combined. With one repeat the summary gives that repeat's pooled AUC and
DeLong CI; with several, the mean of the repeats' pooled AUCs and their range (min
to max), each repeat's interval staying in ``cv_repeats.csv``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from radfusion.config import SplitConfig, StudyConfig
from radfusion.data import Cohort
from radfusion.data.splits import make_splits
from radfusion.data.validate import duplicate_links
from radfusion.layout import RunLayout
from radfusion.pipeline.run import RunFolder
from radfusion.utils import atomic_path

log = logging.getLogger("radfusion.pipeline")


def needs_folds(cfg: StudyConfig) -> bool:
    """Whether the split gives several assignments (k-fold, or every center in turn)."""
    return cfg.split.method == "kfold" or (
        cfg.split.method == "center" and cfg.split.test_center is None
    )


def split_links(cfg: StudyConfig, layout: RunLayout) -> list[list[str]]:
    """Duplicate-image clusters a run's split keeps in one group (``split.join_duplicates``).

    Read from the run's ``validation.json`` (none before it is written, or when the
    setting is off).
    """
    if not cfg.split.join_duplicates or not layout.validation.is_file():
        return []
    return duplicate_links(json.loads(layout.validation.read_text()))


@dataclass(frozen=True)
class FoldStudy:
    """One assignment's sub-study: a complete run folder with a fixed-split manifest."""

    name: str
    config: StudyConfig
    path: Path


def plan_folds(cfg: StudyConfig, run: RunFolder, cohort: Cohort) -> list[FoldStudy]:
    """The sub-studies of a k-fold or leave-each-center-out study, their folders made.

    Each fold gets ``RUN/folds/<name>/`` with its own manifest (the cohort with the fold's
    fixed ``split`` column) and a copy of the config that reads it; all folds share one
    radiomics feature cache, so a case's features are extracted once.
    """
    cache = cfg.radiomics.cache_dir or run.layout.shared_radiomics_cache
    folds = []
    for a in make_splits(cohort, cfg.split, cfg.seed, linked=split_links(cfg, run.layout)):
        fold = RunLayout(run.layout.fold_dir(a.name))
        fold_dir = fold.root
        fold.stages_dir.mkdir(parents=True, exist_ok=True)  # a run folder from the start
        fold_cohort = Cohort(cohort.table.copy(), cohort.root, cohort.data)
        fold_cohort.table["split"] = a.split.reindex(fold_cohort.case_ids).to_numpy()
        manifest = fold.fold_manifest
        fold_cohort.to_csv(manifest)
        child = cfg.model_copy(deep=True)
        child.name = f"{cfg.name} [{a.name}]"
        child.data.manifest = manifest
        child.split = SplitConfig(
            method="column",
            train=cfg.split.train,
            val=cfg.split.val,
            test=cfg.split.test,
            join_duplicates=cfg.split.join_duplicates,
        )
        child.radiomics.cache_dir = Path(cache)
        child.output_dir = fold_dir
        folds.append(FoldStudy(a.name, child, fold_dir))
    return folds


def finish_folds(cfg: StudyConfig, run: RunFolder, folds: list[FoldStudy]) -> None:
    """Pool the finished folds' test predictions (and, per center, external validation)."""
    done = [(f.name, f.path) for f in folds]
    pool_folds(run, done)
    if cfg.split.method == "center":
        from radfusion.report.multicentre import write_external_validation

        write_external_validation(run.path, cfg, done)


def _pooled_method(n_repeats: int) -> str:
    """The sentence saying how a family's pooled AUC and its interval were computed."""
    if n_repeats == 1:
        return "pooled AUC of the test predictions of all folds (each case once), 95% CI by DeLong"
    return (
        f"mean of the {n_repeats} repeats' pooled AUCs (each repeat tests every case once), "
        f"with their range (min-max); each repeat's DeLong 95% CI is in cv_repeats.csv "
        "(the repeats share their cases, so no interval averages them)"
    )


def pool_folds(run: RunFolder, folds: list[tuple[str, Path]]) -> pd.DataFrame:
    """Pool the selected models' test predictions of every fold; write the CV summary.

    Per family and repeat: the pooled AUC of that repeat's test predictions with its
    DeLong 95% CI (``cv_repeats.csv``). Per family (``cv_summary.csv``): the fold AUCs
    with mean and SD, the mean pooled AUC over repeats with its range (``pooled_auc_min``,
    ``pooled_auc_max``), the DeLong CI when there is one repeat (``pooled_ci_low`` /
    ``pooled_ci_high``; empty with several, see the module docstring) and ``method``.
    """
    from sklearn.metrics import roc_auc_score

    from radfusion.stats import delong_auc_ci

    parts = []
    for name, d in folds:
        p = pd.read_parquet(RunLayout(d).predictions)
        p = p[(p["split"] == "test") & p["selected"]].copy()
        p.insert(0, "fold", name)
        parts.append(p)
    pooled = pd.concat(parts, ignore_index=True)
    pooled["repeat"] = pooled["fold"].str.extract(r"^r(\d+)f", expand=False).fillna("0")
    with atomic_path(run.layout.cv_predictions) as tmp:
        pooled.to_parquet(tmp)
    rows = []
    rep_rows = []
    for family, df in pooled.groupby("family", sort=False):
        fold_auc = [
            roc_auc_score(f["label"], f["probability"])
            for _, f in df.groupby("fold", sort=False)
            if f["label"].nunique() == 2
        ]
        rep = []
        for repeat, r in df.groupby("repeat"):
            if r["label"].nunique() == 2:
                ci = delong_auc_ci(r["label"].to_numpy(), r["probability"].to_numpy())
                rep.append(ci)
                rep_rows.append(
                    {
                        "family": family,
                        "repeat": int(repeat),
                        "n_cases": len(r),
                        "pooled_auc": ci.auc,
                        "ci_low": ci.low,
                        "ci_high": ci.high,
                    }
                )
        aucs = [r.auc for r in rep]
        one = len(rep) == 1
        rows.append(
            {
                "family": family,
                "models_selected": ", ".join(sorted(df["model"].unique())),
                "n_folds": int(df["fold"].nunique()),
                "n_repeats": len(rep),
                "fold_aucs": " ".join(f"{v:.3f}" for v in fold_auc),
                "mean_auc": float(np.mean(fold_auc)) if fold_auc else np.nan,
                "sd_auc": float(np.std(fold_auc, ddof=1)) if len(fold_auc) > 1 else np.nan,
                "pooled_auc": float(np.mean(aucs)) if rep else np.nan,
                "pooled_auc_min": float(np.min(aucs)) if rep else np.nan,
                "pooled_auc_max": float(np.max(aucs)) if rep else np.nan,
                "pooled_ci_low": rep[0].low if one else np.nan,
                "pooled_ci_high": rep[0].high if one else np.nan,
                "method": _pooled_method(len(rep)) if rep else "one class only: no AUC",
            }
        )
    summary = pd.DataFrame(rows)
    with atomic_path(run.layout.cv_repeats) as tmp:
        pd.DataFrame(
            rep_rows, columns=["family", "repeat", "n_cases", "pooled_auc", "ci_low", "ci_high"]
        ).to_csv(tmp, index=False)
    with atomic_path(run.layout.cv_summary) as tmp:
        summary.to_csv(tmp, index=False)
    return summary
