"""Studies over several assignments: repeated k-fold CV and leave-each-center-out.

``split.method: kfold`` (and ``center`` without a ``test_center``) gives one
train/val/test assignment per fold or center. Each becomes a complete sub-run
(``RUN/folds/<name>/``, with its own manifest carrying the fixed ``split`` column,
models, evaluation, report and bundle), all sharing one radiomics feature cache, so
the features of a case are extracted once. The test-set predictions of every
family's selected model are then pooled across folds:

    RUN/cv_predictions.parquet   fold, case_id, label, family, model, probability
    RUN/cv_summary.csv           per family: fold AUCs, mean +/- SD, pooled AUC (95% CI)

In repeated k-fold CV each case is tested once per repeat; the pooled AUC is
computed per repeat and averaged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from radfusion.config import SplitConfig, StudyConfig
from radfusion.data import Cohort, load_cohort
from radfusion.data.splits import make_splits
from radfusion.pipeline.run import RunFolder
from radfusion.utils import atomic_path, remove_stray_temps

log = logging.getLogger("radfusion.pipeline")


def needs_folds(cfg: StudyConfig) -> bool:
    """Whether the split gives several assignments (k-fold, or every center in turn)."""
    return cfg.split.method == "kfold" or (
        cfg.split.method == "center" and cfg.split.test_center is None
    )


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name)


def run_folds(
    cfg: StudyConfig,
    run_dir: str | Path | None = None,
    *,
    from_stage: str | None = None,
    progress: bool = True,
    allow_failures: bool = False,
    on_stage: Callable[[str, str], None] | None = None,
) -> RunFolder:
    """Run one sub-study per assignment and pool their test predictions.

    Parameters are those of :func:`radfusion.pipeline.run_study`.
    """
    from radfusion.pipeline.study import run_study, validate_or_raise

    run = RunFolder(run_dir or cfg.output_dir, cfg)
    remove_stray_temps(run.path)
    run.write_provenance()
    cohort = load_cohort(cfg.data.manifest, cfg.data)  # type: ignore[arg-type]
    validate_or_raise(cohort, run)
    assignments = make_splits(cohort, cfg.split, cfg.seed)
    cache = cfg.radiomics.cache_dir or (run / "radiomics_cache")
    folds: list[tuple[str, Path]] = []
    for a in assignments:
        fold_dir = run / "folds" / _safe(a.name)
        (fold_dir / "stages").mkdir(parents=True, exist_ok=True)  # a run folder from the start
        fold_cohort = Cohort(cohort.table.copy(), cohort.root, cohort.data)
        fold_cohort.table["split"] = a.split.reindex(fold_cohort.case_ids).to_numpy()
        manifest = fold_dir / "manifest.csv"
        fold_cohort.to_csv(manifest)
        child = cfg.model_copy(deep=True)
        child.name = f"{cfg.name} [{a.name}]"
        child.data.manifest = manifest
        child.split = SplitConfig(
            method="column", train=cfg.split.train, val=cfg.split.val, test=cfg.split.test
        )
        child.radiomics.cache_dir = Path(cache)
        child.output_dir = fold_dir
        log.info("fold %s: %s", a.name, fold_dir)

        def tagged(stage: str, state: str, name: str = a.name) -> None:
            if on_stage:
                on_stage(f"{name}: {stage}", state)

        run_study(
            child,
            fold_dir,
            from_stage=from_stage,
            progress=progress,
            allow_failures=allow_failures,
            on_stage=tagged,
        )
        folds.append((a.name, fold_dir))
    pool_folds(run, folds)
    return run


def pool_folds(run: RunFolder, folds: list[tuple[str, Path]]) -> pd.DataFrame:
    """Pool the selected models' test predictions of every fold; write the CV summary."""
    from sklearn.metrics import roc_auc_score

    from radfusion.stats import delong_auc_ci

    parts = []
    for name, d in folds:
        p = pd.read_parquet(d / "predictions.parquet")
        p = p[(p["split"] == "test") & p["selected"]].copy()
        p.insert(0, "fold", name)
        parts.append(p)
    pooled = pd.concat(parts, ignore_index=True)
    pooled["repeat"] = pooled["fold"].str.extract(r"^r(\d+)f", expand=False).fillna("0")
    with atomic_path(run / "cv_predictions.parquet") as tmp:
        pooled.to_parquet(tmp)
    rows = []
    for family, df in pooled.groupby("family", sort=False):
        fold_auc = [
            roc_auc_score(f["label"], f["probability"])
            for _, f in df.groupby("fold", sort=False)
            if f["label"].nunique() == 2
        ]
        rep = []
        for _, r in df.groupby("repeat"):
            if r["label"].nunique() == 2:
                rep.append(delong_auc_ci(r["label"].to_numpy(), r["probability"].to_numpy()))
        rows.append(
            {
                "family": family,
                "models_selected": ", ".join(sorted(df["model"].unique())),
                "n_folds": int(df["fold"].nunique()),
                "fold_aucs": " ".join(f"{v:.3f}" for v in fold_auc),
                "mean_auc": float(np.mean(fold_auc)) if fold_auc else np.nan,
                "sd_auc": float(np.std(fold_auc, ddof=1)) if len(fold_auc) > 1 else np.nan,
                "pooled_auc": float(np.mean([r.auc for r in rep])) if rep else np.nan,
                "pooled_ci_low": float(np.mean([r.low for r in rep])) if rep else np.nan,
                "pooled_ci_high": float(np.mean([r.high for r in rep])) if rep else np.nan,
            }
        )
    summary = pd.DataFrame(rows)
    with atomic_path(run / "cv_summary.csv") as tmp:
        summary.to_csv(tmp, index=False)
    return summary
