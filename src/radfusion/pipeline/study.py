"""The whole study as resumable stages over one run folder.

validate -> split -> radiomics -> deep_1ch -> deep_2ch -> fusion -> evaluation -> report
-> bundle. Each stage reads only what the stages before it wrote (see
:mod:`radfusion.layout` for where each file lives, :mod:`radfusion.pipeline.run` for the
resume rule).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from radfusion.config import StudyConfig
from radfusion.data import Cohort, load_cohort
from radfusion.data.splits import join_groups, make_splits
from radfusion.data.validate import validate_cohort
from radfusion.errors import ConfigError, InputError, RadfusionError
from radfusion.families import (
    CLINICAL_MODEL_NAME,
    MERGED_ARMS,
    STACKED_MODEL_NAME,
    model_name,
)
from radfusion.layout import ArmLayout, RunLayout
from radfusion.pipeline.folds import finish_folds, needs_folds, plan_folds, split_links
from radfusion.pipeline.run import RunFolder, check_run_folder
from radfusion.preprocessing import plan_augmentation
from radfusion.reproducibility import reproducible_numerics
from radfusion.stats import auc_or_nan
from radfusion.utils import (
    atomic_path,
    atomic_write_json,
    file_sha256,
    json_sha256,
    remove_stray_temps,
)

if TYPE_CHECKING:
    from radfusion.fusion.study_model import CaseInputs

log = logging.getLogger("radfusion.pipeline")

STAGES = (
    "validate",
    "split",
    "radiomics",
    "deep_1ch",
    "deep_2ch",
    "fusion",
    "stacking",
    "evaluation",
    "report",
    "bundle",
)


@dataclass
class StudyContext:
    """What the stages share while a study runs."""

    run: RunFolder
    cfg: StudyConfig
    progress: bool = True
    allow_failures: bool = False
    keys: dict[str, str] = field(default_factory=dict)
    #: Content hash of every data file (path -> SHA-256, None when missing).
    file_hashes: dict[str, str | None] = field(default_factory=dict)
    _cohort: Cohort | None = None
    #: Set by the radiomics stage (None: :meth:`excluded` reads what it recorded).
    _excluded: dict[str, str] | None = None

    @property
    def layout(self) -> RunLayout:
        """Where each file of the run lives."""
        return self.run.layout

    @property
    def cohort(self) -> Cohort:
        if self._cohort is None:
            manifest = self.cfg.data.manifest
            if manifest is None:
                raise ConfigError("data.manifest is not set in the config")
            self._cohort = load_cohort(manifest, self.cfg.data)
        return self._cohort

    _tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    def _table(self, path: Path, dtype: dict[str, type]) -> pd.DataFrame:
        # read once: the split stage writes these files before any stage that reads them
        if path.name not in self._tables:
            self._tables[path.name] = pd.read_csv(path, dtype=dtype)
        return self._tables[path.name].copy()

    def excluded(self) -> dict[str, str]:
        """Cases left out of the analysis because their radiomics extraction failed.

        Case id -> error, for original cases only (``--allow-failures``; a failed
        augmented copy is just one training row fewer). The radiomics stage sets it; a
        later stage run by another process reads what that stage recorded. Every stage
        after radiomics leaves these cases and their copies out (:meth:`cases_table`,
        :meth:`augmentation`, :meth:`analysed_cohort`), so that every model, deep arms
        included, is trained and evaluated on the same cases.
        """
        if self._excluded is not None:
            return self._excluded
        from radfusion.radiomics import extraction_failures

        originals = set(self.cohort.case_ids)
        failed = extraction_failures(self.layout.radiomics_features())
        return {c: e for c, e in failed.items() if c in originals}

    def analysed_cohort(self) -> Cohort:
        """The cohort without the :meth:`excluded` cases."""
        excluded = self.excluded()
        return self.cohort.drop(list(excluded)) if excluded else self.cohort

    def cases_table(self) -> pd.DataFrame:
        """``cases.csv`` without the :meth:`excluded` cases."""
        t = self._table(self.layout.cases, {"case_id": str, "group": str})
        return t[~t["case_id"].isin(self.excluded())].reset_index(drop=True)

    def assignment(self) -> pd.Series:
        t = self.cases_table()
        return pd.Series(t["split"].to_numpy(), index=t["case_id"].to_numpy(), name="split")

    def augmentation(self) -> pd.DataFrame:
        """``augmentation.csv`` without the copies of the :meth:`excluded` cases."""
        aug = self._table(
            self.layout.augmentation, {"case_id": str, "source_case_id": str, "group": str}
        )
        return aug[~aug["source_case_id"].isin(self.excluded())].reset_index(drop=True)


# --- helpers -------------------------------------------------------------------------
def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp)


def _family_predictions(
    family: str,
    models: dict[str, Any],
    X: pd.DataFrame,
    meta: pd.DataFrame,
    model_label: Callable[[str], str],
) -> pd.DataFrame:
    """Probabilities of every model of a family for the original cases."""
    from radfusion.harmonization.pipeline import logged_harmonization_warnings

    rows = []
    for name, fitted in models.items():
        with logged_harmonization_warnings():  # e.g. a held-out centre ComBat cannot adjust
            prob = fitted.predict_proba(X.loc[meta.index])
        rows.append(
            pd.DataFrame(
                {
                    "case_id": meta.index,
                    "split": meta["split"].to_numpy(),
                    "label": meta["label"].to_numpy(),
                    "family": family,
                    "model": model_label(name),
                    "classifier": name,
                    "probability": prob,
                    "cv_auc": fitted.cv_auc,
                    "cv_auc_se": fitted.cv_auc_sd / np.sqrt(max(fitted.n_splits, 1)),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def _save_family(
    ctx: StudyContext,
    family: str,
    models: dict[str, Any],
    X_all: pd.DataFrame,
    train_X: pd.DataFrame,
    train_y: np.ndarray,
    meta: pd.DataFrame,
    model_label: Callable[[str], str],
    selection: dict[str, Any] | None,
) -> pd.DataFrame:
    """Write a family's fitted models, CV results, predictions and selection report."""
    from radfusion.models import feature_importance, select_best
    from radfusion.models.io import save_pipeline

    layout = ctx.layout
    layout.family_dir(family).mkdir(parents=True, exist_ok=True)
    preds = _family_predictions(family, models, X_all, meta, model_label)
    preds = select_best(
        preds, ctx.cfg.evaluation.selection_split, ctx.cfg.evaluation.selection_rule
    )
    best_clf = preds.loc[preds["selected"], "classifier"].iloc[0]
    cv_rows = []
    for name, fitted in models.items():
        save_pipeline(fitted.pipeline, layout.model_file(family, name))
        cv_rows.append(
            {
                "classifier": name,
                "cv_auc": fitted.cv_auc,
                "cv_auc_sd": fitted.cv_auc_sd,
                "n_splits": fitted.n_splits,
                "best_params": json.dumps(fitted.best_params, default=str),
                "fit_seconds": round(fitted.fit_seconds, 2),
                "failed_fits": fitted.failed_fits,
                "tuning_note": fitted.tuning_note,
            }
        )
        if name == best_clf:
            imp_path = layout.importance(family, name)
            imp_path.parent.mkdir(exist_ok=True)
            imp = feature_importance(fitted, train_X, train_y, ctx.cfg.seed)
            with atomic_path(imp_path) as tmp:
                imp.to_csv(tmp, index=False)
    with atomic_path(layout.cv_results(family)) as tmp:
        pd.DataFrame(cv_rows).to_csv(tmp, index=False)
    if selection is not None:
        notes = {name: f.tuning_note for name, f in models.items() if f.tuning_note}
        atomic_write_json(layout.selection(family), {**selection, "tuning_notes": notes})
    _write_parquet(preds.drop(columns=["cv_auc", "cv_auc_se"]), layout.family_predictions(family))
    return preds


def _single_model_predictions(
    meta: pd.DataFrame, family: str, model: str, prob: np.ndarray
) -> pd.DataFrame:
    """Predictions of a family's one logistic model (``meta``: split and label by case id)."""
    return pd.DataFrame(
        {
            "case_id": meta.index,
            "split": meta["split"].to_numpy(),
            "label": meta["label"].to_numpy(),
            "family": family,
            "model": model,
            "classifier": "LR",
            "probability": prob,
            "selected": True,
        }
    )


def _selection_json(report: dict[str, Any], lasso: Any | None) -> dict[str, Any]:
    """The run-folder form of a selection report (counts, kept, coefficients, LASSO path)."""
    counts = dict(report.get("n_features", {}))
    notes = report.get("notes", {})
    out: dict[str, Any] = {
        "counts": counts,
        "icc_skipped": notes.get("icc"),
        "notes": notes,
        "kept": list(report.get("kept", [])),
        "coefficients": dict(report.get("lasso", {}).get("coef", {})),
        "C": report.get("lasso", {}).get("C"),
        # whether the LASSO penalty search kept each patient / augmented group in one fold
        "grouped": report.get("lasso", {}).get("grouped"),
    }
    if lasso is not None and hasattr(lasso, "path_Cs_"):
        out["lasso_path"] = {
            "Cs": np.asarray(lasso.path_Cs_).tolist(),
            "coefs": np.asarray(lasso.path_coefs_).tolist(),
            "features": [str(f) for f in lasso.feature_names_in_]
            if hasattr(lasso, "feature_names_in_")
            else [],
        }
    return out


def _train_rows(
    ctx: StudyContext, features: pd.DataFrame
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Training rows (original training cases + their augmented copies) with labels/groups."""
    cases = ctx.cases_table().set_index("case_id")
    aug = ctx.augmentation()
    train_ids = cases.index[cases["split"] == "train"].tolist()
    aug_train = aug[aug["split"] == "train"]
    ids = [*train_ids, *[c for c in aug_train["case_id"] if c in features.index]]
    labels = pd.concat([cases["label"], aug_train.set_index("case_id")["label"]])
    groups = pd.concat([cases["group"], aug_train.set_index("case_id")["group"]])
    return features.loc[ids], labels.loc[ids].to_numpy().astype(int), groups.loc[ids].to_numpy()


def _case_meta(ctx: StudyContext) -> pd.DataFrame:
    """Centre and covariates of every case and copy, for the ComBat harmoniser."""
    from radfusion.harmonization.pipeline import study_case_meta

    return study_case_meta(ctx.cfg, ctx.cohort.table, ctx.cases_table(), ctx.augmentation())


def _harmonized_builder(
    ctx: StudyContext, build: Callable[[str, float | None], Any], blocks: list[str] | None = None
) -> Callable[[str, float | None], Any] | None:
    """A zoo builder with the configured harmoniser inserted (None: no harmonisation)."""
    from radfusion.harmonization.pipeline import add_harmonizer, make_harmonizer

    if ctx.cfg.harmonization.method == "none":
        return None
    harm = make_harmonizer(ctx.cfg, _case_meta(ctx))
    return lambda name, ratio: add_harmonizer(build(name, ratio), harm, blocks)


def _meta(ctx: StudyContext) -> pd.DataFrame:
    return ctx.cases_table().set_index("case_id")[["split", "label"]]


# --- stages --------------------------------------------------------------------------
def validate_or_raise(cohort: Cohort, run: RunFolder, data_sha256: str | None = None) -> None:
    """Validate every case into ``validation.json``; raise with every error, log warnings.

    ``data_sha256`` (the content of every data file, see :func:`data_fingerprint`) is
    recorded with the report when given.
    """
    report = validate_cohort(cohort)
    extra = {"data_sha256": data_sha256} if data_sha256 else {}
    atomic_write_json(run.layout.validation, {**report.to_dict(), **extra})
    if not report.ok:
        lines = [
            f"  case {i.case_id}: {i.message}" if i.case_id else f"  {i.message}"
            for i in report.errors
        ]
        raise InputError(
            f"the cohort has {len(report.errors)} error(s); fix them or run "
            "`radfusion validate --drop-invalid`:\n" + "\n".join(lines)
        )
    for w in report.warnings:
        log.warning("validate: %s%s", f"case {w.case_id}: " if w.case_id else "", w.message)


def stage_validate(ctx: StudyContext) -> None:
    """Validate every case; stop with all errors before any long work."""
    validate_or_raise(ctx.cohort, ctx.run, data_fingerprint(ctx, DATA_COLUMNS))


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


#: The manifest columns naming data files, which stages' keys hash by content.
DATA_COLUMNS = ("image", "mask", "mask_reader2")


def data_files(cohort: Cohort) -> dict[tuple[str, str], Path]:
    """(case_id, column) -> path of every image, mask and second-reader mask of a cohort."""
    out: dict[tuple[str, str], Path] = {}
    for col in DATA_COLUMNS:
        if col not in cohort.table.columns:
            continue
        for cid, v in zip(cohort.table["case_id"], cohort.table[col], strict=True):
            if v:
                out[(str(cid), col)] = cohort.resolve(v)
    return out


def data_fingerprint(ctx: StudyContext, columns: Sequence[str]) -> str:
    """SHA-256 over the content hashes of the cohort's files in ``columns`` (case by case).

    What a stage reading those files keys on: a changed file changes it, a file
    merely touched (same content) does not.
    """
    return json_sha256(
        [
            [cid, col, ctx.file_hashes.get(str(path))]
            for (cid, col), path in data_files(ctx.cohort).items()
            if col in columns
        ]
    )


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
    from radfusion.models import fit_zoo
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
    X_train, y_train, groups = _train_rows(ctx, res.features)
    from radfusion.models import build_model

    builder = _harmonized_builder(
        ctx,
        lambda n, r: build_model(
            n,
            selection_cfg=cfg.selection,
            models_cfg=cfg.models,
            reader2=reader2,
            seed=cfg.seed,
            class_ratio=r,
        ),
    )
    models = fit_zoo(
        X_train,
        y_train,
        groups,
        selection_cfg=cfg.selection,
        models_cfg=cfg.models,
        reader2=reader2,
        seed=cfg.seed,
        builder=builder,
    )
    first = next(iter(models.values())).pipeline
    report = selection_report(first)
    meta = _meta(ctx)
    meta = meta[meta.index.isin(res.features.index)]
    _save_family(
        ctx,
        "radiomics",
        models,
        res.features,
        X_train,
        y_train,
        meta,
        lambda n: model_name("radiomics", n),
        _selection_json(report, first.named_steps.get("lasso")),
    )


def stage_deep(ctx: StudyContext, arm: str) -> None:
    """Train one ResNet arm end to end; write its features and predictions."""
    from radfusion.deep import run_deep_arm

    cfg = ctx.cfg
    out = ctx.layout.deep_dir(arm)
    _discard_stale_training(out, json_sha256(_deep_training(ctx, arm)))
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
    meta = _meta(ctx)
    preds = preds[preds["case_id"].isin(meta.index)]
    preds["family"] = arm
    preds["classifier"] = "ResNet"
    preds["selected"] = True
    preds["label"] = meta.loc[preds["case_id"], "label"].to_numpy()
    preds["split"] = meta.loc[preds["case_id"], "split"].to_numpy()
    ctx.layout.family_dir(arm).mkdir(parents=True, exist_ok=True)
    cols = ["case_id", "split", "label", "family", "model", "classifier", "probability", "selected"]
    _write_parquet(preds[cols].reset_index(drop=True), ctx.layout.family_predictions(arm))


def _deep_training(ctx: StudyContext, arm: str) -> dict[str, Any]:
    """What an arm's training depends on: the split, its files' contents and settings.

    The settings part is :func:`radfusion.deep.arm.training_settings`, the same that
    fingerprints the checkpoint, so a runtime-only change (device, AMP, workers, the
    other arm) neither reruns the stage nor discards the training.
    """
    from radfusion.deep.arm import training_settings
    from radfusion.deep.inputs import InputSpec

    cfg = ctx.cfg
    spec = InputSpec.from_config(arm, cfg.deep, cfg.preprocess)  # type: ignore[arg-type]
    weights = cfg.deep.pretrained_weights
    return {
        "up": ctx.keys.get("split"),
        # the 2ch input holds the ROI (and its reader-2 features), the 1ch input does not
        "files": data_fingerprint(ctx, DATA_COLUMNS if spec.uses_mask else ("image",)),
        "settings": training_settings(cfg, arm),
        "pretrained_sha256": ctx.file_hashes.get(str(weights)) if weights else None,
        # only when some case is left out, so that other runs keep their keys
        **({"excluded": sorted(ctx.excluded())} if ctx.excluded() else {}),
    }


def _discard_stale_training(out: Path, key: str) -> None:
    """Start an arm afresh when its training inputs changed; resume it when they did not.

    The arm folder records the training key (:func:`_deep_training`) it is training
    for. A checkpoint left by a run with other training settings or data is removed,
    with its results; one left by an interrupted run with the same key is resumed. The
    input cache is content-keyed and kept.
    """
    arm = ArmLayout(out)
    marker = arm.training_key
    previous = marker.read_text().strip() if marker.is_file() else None
    if previous != key and arm.checkpoint.exists():
        log.info("%s: settings or data changed since the last training; starting afresh", out)
        for item in out.iterdir():
            if item == arm.cache:
                continue
            if item.is_dir():
                shutil.rmtree(item)
            else:
                item.unlink()
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(key + "\n")


def _reader2_tables(ctx: StudyContext, family: str) -> Any:
    """Reader 2's feature tables a family's ICC filters are fitted with.

    ``radiomics``: the radiomics table (or None). A Merged model: block name -> table,
    the radiomics block and the 2ch block (the 1ch network's input has no ROI, so a
    second delineation does not change its features).
    """
    from radfusion.radiomics import read_feature_table

    path = ctx.layout.radiomics_features(reader=2)
    rad_r2 = read_feature_table(path) if path.is_file() else None
    if family not in MERGED_ARMS:
        return rad_r2
    arm = MERGED_ARMS[family]
    return {"radiomics": rad_r2, arm: _deep_features(ctx, arm)[1] if arm == "2ch" else None}


def _deep_features(ctx: StudyContext, arm: str) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    from radfusion.deep.arm import read_deep_features

    d = ctx.layout.deep(arm)
    feats, _ = read_deep_features(d.features())
    r2 = None
    if d.features(reader=2).is_file():
        r2, _ = read_deep_features(d.features(reader=2))
    return feats, r2


def _case_inputs(ctx: StudyContext, family: str) -> CaseInputs:
    """The feature tables a feature-level family reads (radiomics, + deep for Merged)."""
    from radfusion.fusion.study_model import CaseInputs
    from radfusion.radiomics import read_feature_table

    inputs = CaseInputs(radiomics=read_feature_table(ctx.layout.radiomics_features()))
    if family in MERGED_ARMS:
        arm = MERGED_ARMS[family]
        inputs.deep[arm] = _deep_features(ctx, arm)[0]
    return inputs


def stage_fusion(ctx: StudyContext) -> None:
    """Merged models 1 and 2 through the zoo, then the clinical + imaging model."""
    from radfusion.fusion import fit_merged_zoo
    from radfusion.fusion.merge import block_pipelines, build_merged_model
    from radfusion.models import fit_zoo
    from radfusion.selection import selection_report

    cfg = ctx.cfg
    meta = _meta(ctx)
    for family, arm in MERGED_ARMS.items():
        if arm not in cfg.deep.arms:
            continue
        inputs = _case_inputs(ctx, family)
        X, blocks = inputs.features(family), inputs.blocks(family)
        reader2 = _reader2_tables(ctx, family)
        X_train, y_train, groups = _train_rows(ctx, X)
        builder = _harmonized_builder(
            ctx,
            lambda n, r, b=blocks, r2=reader2: build_merged_model(
                n,
                b,
                selection_cfg=cfg.selection,
                models_cfg=cfg.models,
                reader2=r2,
                seed=cfg.seed,
                class_ratio=r,
            ),
            None if cfg.harmonization.features == "all" else ["radiomics"],
        )
        if builder is None:
            models = fit_merged_zoo(
                X_train,
                y_train,
                groups,
                blocks,
                selection_cfg=cfg.selection,
                models_cfg=cfg.models,
                reader2=reader2,
                seed=cfg.seed,
            )
        else:
            models = fit_zoo(
                X_train,
                y_train,
                groups,
                selection_cfg=cfg.selection,
                models_cfg=cfg.models,
                seed=cfg.seed,
                builder=builder,
            )
        first = next(iter(models.values())).pipeline
        sel: dict[str, Any] = {"counts": {}, "blocks": {}}
        kept: list[str] = []
        coefs: dict[str, float] = {}
        for block, pipe in block_pipelines(first).items():
            rep = _selection_json(selection_report(pipe), pipe.named_steps.get("lasso"))
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
        _save_family(
            ctx,
            family,
            models,
            X,
            X_train,
            y_train,
            meta[meta.index.isin(X.index)],
            lambda n, fam=family: model_name(fam, n),
            sel,
        )
    if cfg.fusion.clinical_model and cfg.data.clinical.all:
        _clinical_model(ctx)


def _imaging_source(ctx: StudyContext) -> str | None:
    for family in ("merged2", "merged1", "radiomics"):
        if ctx.layout.family_predictions(family).is_file():
            return family
    return None


def _clinical_model(ctx: StudyContext) -> None:
    """Clinical columns + the out-of-fold score of the best imaging model, in one LR."""
    from radfusion.fusion import ClinicalImagingModel
    from radfusion.fusion.study_model import ScoreInputs
    from radfusion.models import inner_cv
    from radfusion.models.io import load_pipeline, restore_training_data, save_pipeline
    from radfusion.models.tuning import TunedModel, out_of_fold_probability

    cfg = ctx.cfg
    family = _imaging_source(ctx)
    if family is None:
        return
    preds = pd.read_parquet(ctx.layout.family_predictions(family))
    chosen = preds[preds["selected"]]
    clf = chosen["classifier"].iloc[0]
    pipe = load_pipeline(ctx.layout.model_file(family, clf))
    if ctx.cfg.harmonization.method != "none":
        from radfusion.harmonization import set_case_meta

        set_case_meta(pipe, _case_meta(ctx))  # saved models carry no case metadata
    X = _case_inputs(ctx, family).features(family)
    X_train, y_train, groups = _train_rows(ctx, X)
    # Out-of-fold training scores: an in-sample imaging score would look perfect. Each
    # fold refits the fitted model's recipe, reader-2 data (the ICC filter) included, and
    # re-tunes its hyperparameters on the fold's training part (nested): hyperparameters
    # tuned on all training cases have seen the held-out fold. The folds run one after
    # another; each fold's search uses the cores.
    cv = inner_cv(y_train, groups, cfg.models.cv, cfg.seed)
    recipe = restore_training_data(pipe, _reader2_tables(ctx, family))
    nested = TunedModel(recipe, models_cfg=cfg.models, seed=cfg.seed)
    oof = pd.Series(
        out_of_fold_probability(nested, X_train, y_train, groups, cv),
        index=X_train.index,
    )
    cases = ctx.cases_table().set_index("case_id")
    score = chosen.set_index("case_id")["probability"]
    train_ids = [i for i in X_train.index if i in cases.index]  # originals only
    score.loc[train_ids] = oof.loc[train_ids]
    spec = ScoreInputs.for_clinical(
        (family, clf), cfg.data.clinical.numeric, cfg.data.clinical.categorical
    )
    clinical = spec.frame(cases.index, {(family, clf): score}, cases)
    model = ClinicalImagingModel(
        numeric=cfg.data.clinical.numeric, categorical=cfg.data.clinical.categorical
    )
    model.fit(clinical.loc[train_ids], cases.loc[train_ids, "label"].to_numpy())
    ctx.layout.family_dir("clinical").mkdir(parents=True, exist_ok=True)
    save_pipeline(model, ctx.layout.model_file("clinical", "LR"))
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
    res = _single_model_predictions(
        _meta(ctx).loc[clinical.index], "clinical", CLINICAL_MODEL_NAME, prob
    )
    _write_parquet(res, ctx.layout.family_predictions("clinical"))


def _selected_arm_models(ctx: StudyContext) -> dict[str, pd.DataFrame]:
    """The chosen model of each stacked arm: its predictions for every original case."""
    out = {}
    for arm in ctx.cfg.fusion.stacking_arms:
        path = ctx.layout.family_predictions(arm)
        if path.is_file():
            p = pd.read_parquet(path)
            out[arm] = p[p["selected"]].set_index("case_id")
    return out


def _radiomics_crossfit(
    ctx: StudyContext, classifier: str, folds: pd.Series, other_ids: list[str]
) -> tuple[pd.Series, pd.Series | None]:
    """Out-of-fold radiomics scores: the chosen pipeline re-tuned and refit on the other folds."""
    from radfusion.fusion.stacking import crossfit_scores
    from radfusion.models import group_fit_params
    from radfusion.models.io import load_pipeline, restore_training_data
    from radfusion.models.tuning import TunedModel

    rad = _case_inputs(ctx, "radiomics").features("radiomics")
    # the same recipe as the fitted model: tuned hyperparameters, reader 2 for the ICC
    recipe = restore_training_data(
        load_pipeline(ctx.layout.model_file("radiomics", classifier)),
        _reader2_tables(ctx, "radiomics"),
    )
    if ctx.cfg.harmonization.method != "none":
        from radfusion.harmonization import set_case_meta

        set_case_meta(recipe, _case_meta(ctx))  # saved models carry no case metadata
    X_train, y_train, groups = _train_rows(ctx, rad)
    return crossfit_scores(
        # nested: each fold tunes the hyperparameters without its held-out cases
        TunedModel(recipe, models_cfg=ctx.cfg.models, seed=ctx.cfg.seed),
        X_train,
        y_train,
        groups,
        folds[folds.index.isin(X_train.index)],
        fit_params=group_fit_params,
        X_other=rad.loc[[i for i in other_ids if i in rad.index]],
    )


def stage_stacking(ctx: StudyContext) -> None:
    """Stacked fusion: a logistic meta-learner on the arms' (cross-fitted) scores."""
    from radfusion.deep.arm import crossfit_deep_arm
    from radfusion.fusion.stacking import StackedFusionModel, crossfit_folds, score_column
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
    X = spec.frame(cases.index, {ref: chosen[ref[0]]["probability"] for ref in spec.reads}, cases)
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
                oof[arm], other = _radiomics_crossfit(ctx, clf, folds, other_ids)
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
        _write_parquet(oof_table, ctx.layout.stacking_oof_scores)
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
    save_pipeline(model, ctx.layout.model_file("stacked", "LR"))
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
    res = _single_model_predictions(cases, "stacked", STACKED_MODEL_NAME, prob)
    _write_parquet(res, ctx.layout.family_predictions("stacked"))


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
    _write_parquet(preds, run.layout.predictions)
    return preds


def evaluate(run: RunFolder) -> None:
    """Collect every family's predictions and evaluate them (metrics, tables, figures)."""
    from radfusion.evaluation import evaluate_run

    collect_predictions(run)
    evaluate_run(run.path)


def stage_evaluation(ctx: StudyContext) -> None:
    evaluate(ctx.run)


def stage_report(ctx: StudyContext) -> None:
    from radfusion.report import write_report

    write_report(ctx.run.path)


def stage_bundle(ctx: StudyContext) -> None:
    from radfusion.bundle import export_bundle

    export_bundle(ctx.run.path, ctx.layout.bundle_dir)


# --- orchestration -----------------------------------------------------------------------
def _stage_parts(ctx: StudyContext, stage: str) -> dict[str, Any]:
    """What each stage's result depends on (config sections, data files, upstream keys)."""
    from radfusion.deep.arm import output_settings
    from radfusion.models.calibration import CALIBRATION_FOLDS

    cfg = ctx.cfg.model_dump(mode="json")
    k = ctx.keys
    links = split_links(ctx.cfg, ctx.layout)  # read from validation.json, once it exists
    # only when on, so that runs from before harmonisation existed keep their keys
    harmonization = (
        {"harmonization": cfg["harmonization"]} if cfg["harmonization"]["method"] != "none" else {}
    )
    # strict mode's kernels give other last digits: only when on, so fast runs keep their keys
    strict = (
        {"reproducibility": cfg["reproducibility"]}
        if cfg["reproducibility"]["mode"] != "fast"
        else {}
    )
    deps: dict[str, dict[str, Any]] = {
        "validate": {
            "data": cfg["data"],
            "fingerprint": ctx.keys.get("_data"),
            "files": data_fingerprint(ctx, DATA_COLUMNS),
        },
        # the split reads the manifest only: a changed image does not redo it
        "split": {
            "data": cfg["data"],
            "fingerprint": ctx.keys.get("_data"),
            "split": cfg["split"],
            "augment": cfg["augment"],
            "seed": cfg["seed"],
            # only when some are joined, so that other runs keep their keys
            **({"linked": links} if links else {}),
        },
        "radiomics": {
            "up": k.get("split"),
            "files": data_fingerprint(ctx, DATA_COLUMNS),
            "preprocess": cfg["preprocess"],
            "radiomics": {
                kk: v
                for kk, v in cfg["radiomics"].items()
                if kk not in ("n_jobs", "dask_scheduler", "cache_dir")
            },
            "selection": cfg["selection"],
            "models": cfg["models"],
            "selection_split": cfg["evaluation"]["selection_split"],
            "calibration_folds": CALIBRATION_FOLDS,
            **harmonization,
            **strict,
        },
        "deep_1ch": {"training": _deep_training(ctx, "1ch"), "outputs": output_settings(ctx.cfg)},
        "deep_2ch": {"training": _deep_training(ctx, "2ch"), "outputs": output_settings(ctx.cfg)},
        "fusion": {
            "up": [k.get("radiomics"), k.get("deep_1ch"), k.get("deep_2ch")],
            "fusion": {kk: v for kk, v in cfg["fusion"].items() if not kk.startswith("stacking")},
            "selection": cfg["selection"],
            "models": cfg["models"],
            "clinical": cfg["data"]["clinical"],
            "calibration_folds": CALIBRATION_FOLDS,
            **harmonization,
            **strict,
        },
        "stacking": {
            "up": [k.get(s) for s in ("radiomics", "deep_1ch", "deep_2ch")],
            "fusion": {kk: v for kk, v in cfg["fusion"].items() if kk.startswith("stacking")},
            "clinical": cfg["data"]["clinical"],
            "calibration_folds": CALIBRATION_FOLDS,
            **strict,
        },
        "evaluation": {
            "up": [k.get(s) for s in ("radiomics", "deep_1ch", "deep_2ch", "fusion", "stacking")],
            "evaluation": cfg["evaluation"],
        },
        "report": {"up": k.get("evaluation"), "config": cfg},
        "bundle": {"up": k.get("evaluation")},
    }
    return deps[stage]


def _enabled(cfg: StudyConfig, stage: str) -> bool:
    if stage.startswith("deep_"):
        return stage.split("_")[1] in cfg.deep.arms
    if stage == "fusion":
        return cfg.fusion.enabled
    if stage == "stacking":
        return cfg.fusion.stacking != "off"
    return True


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
        funcs: dict[str, Callable[[StudyContext], None]] = {
            "validate": stage_validate,
            "split": stage_split,
            "radiomics": stage_radiomics,
            "deep_1ch": lambda c: stage_deep(c, "1ch"),
            "deep_2ch": lambda c: stage_deep(c, "2ch"),
            "fusion": stage_fusion,
            "stacking": stage_stacking,
            "evaluation": stage_evaluation,
            "report": stage_report,
            "bundle": stage_bundle,
        }
        redone: set[str] = set()  # keys of the stages run in this call
        for stage in STAGES:
            if not _enabled(cfg, stage):
                continue
            parts = _stage_parts(ctx, stage)
            key = run.stage_key(stage, parts)
            ctx.keys[stage] = key
            if only is not None and stage not in {"validate", "split", *only}:
                continue
            # A stage redone with an unchanged key (a damaged output was recomputed) may
            # still have changed what the stages reading it see: redo those too.
            upstream_redone = any(k in json.dumps(parts.get("up")) for k in redone)
            if not upstream_redone and run.is_done(stage, key):
                log.info("stage %s: up to date, skipped", stage)
                if on_stage:
                    on_stage(stage, "skipped")
            else:
                # later stages need no invalidation: their keys include this stage's key
                run.invalidate_from([stage])
                redone.add(key)
                log.info("stage %s: running", stage)
                if on_stage:
                    on_stage(stage, "running")
                start = time.perf_counter()
                before = run.snapshot()
                funcs[stage](ctx)
                outputs = run.written_since(before)
                run.mark_done(stage, key, time.perf_counter() - start, {"outputs": outputs})
                log.info("stage %s: done in %.1f s", stage, time.perf_counter() - start)
                if on_stage:
                    on_stage(stage, "done")
            if until is not None and stage == until:
                break
        return run
    except BaseException:
        # the traceback goes to logs/run.log only (the console shows one line; -v: all)
        log.info("run stopped", exc_info=True)
        raise
    finally:
        run.detach_log()
        run.unlock()


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
