"""What the stages of a study share: the run, the config, the cohort and the stage keys.

:class:`StudyContext` is handed to every stage (:mod:`radfusion.pipeline.stages`); the
functions below read the tables the early stages wrote (cases, augmentation, features)
in the form the later stages fit on, and fingerprint the cohort's data files by content.
:class:`Stage` is what a stage module declares.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from radfusion.config import StudyConfig
from radfusion.data import Cohort, load_cohort
from radfusion.errors import ConfigError
from radfusion.families import MERGED_ARMS
from radfusion.layout import RunLayout
from radfusion.neutral import without_neutral
from radfusion.pipeline.run import RunFolder
from radfusion.utils import json_sha256

if TYPE_CHECKING:
    from radfusion.fusion.study_model import CaseInputs
    from radfusion.models import FittedModel


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


def _always(cfg: StudyConfig) -> bool:
    return True


@dataclass(frozen=True)
class Stage:
    """One stage of the study: what it reads, what it does and what it writes, together.

    Each module of :mod:`radfusion.pipeline.stages` declares its stage(s) with one of
    these; :func:`radfusion.pipeline.study.run_study` iterates over them in order.

    Attributes
    ----------
    name : str
        The stage's name (``--from``, ``--until``, ``stages/<name>.json``).
    upstream : tuple of str
        The earlier stages whose results this one reads. Their keys are part of its key,
        and when one of them is redone in a call, this one is redone too.
    inputs : callable
        ``inputs(ctx, up)`` -> what the result depends on (config sections, data-file
        contents, and ``up``: the upstream stages' keys in ``upstream`` order), hashed
        into the stage key (:meth:`radfusion.pipeline.run.RunFolder.stage_key`).
    run : callable
        ``run(ctx)`` does the stage's work.
    outputs : callable
        ``outputs(layout)`` -> the files and folders the stage writes (a folder: anything
        under it); the files it wrote are recorded in its marker when it finishes.
    enabled : callable
        ``enabled(cfg)``: whether the study's config runs this stage.
    """

    name: str
    upstream: tuple[str, ...]
    inputs: Callable[[StudyContext, list[str | None]], dict[str, Any]]
    run: Callable[[StudyContext], None]
    outputs: Callable[[RunLayout], tuple[Path, ...]]
    enabled: Callable[[StudyConfig], bool] = _always


def config_parts(ctx: StudyContext) -> dict[str, Any]:
    """The config as stage keys hash it: JSON, without the result-neutral settings."""
    return without_neutral(ctx.cfg.model_dump(mode="json"))


def numerics_parts(cfg: dict[str, Any], *, harmonization: bool = True) -> dict[str, Any]:
    """Key parts of the feature-level stages that exist only when switched on.

    Harmonisation, and strict reproducibility (whose kernels give other last digits):
    only when on, so that the keys of runs without them stay what they were.
    """
    parts: dict[str, Any] = {}
    if harmonization and cfg["harmonization"]["method"] != "none":
        parts["harmonization"] = cfg["harmonization"]
    if cfg["reproducibility"]["mode"] != "fast":
        parts["reproducibility"] = cfg["reproducibility"]
    return parts


def zoo_parts(cfg: dict[str, Any]) -> dict[str, Any]:
    """Key parts of a stage that fits the classifier zoo (:func:`fit_family_zoo`).

    The selection and classifier settings, the calibration folds, and
    :func:`numerics_parts` (harmonisation, strict reproducibility) when switched on.
    """
    from radfusion.models.calibration import CALIBRATION_FOLDS

    return {
        "selection": cfg["selection"],
        "models": cfg["models"],
        "calibration_folds": CALIBRATION_FOLDS,
        **numerics_parts(cfg),
    }


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


def train_rows(
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


def split_labels(ctx: StudyContext) -> pd.DataFrame:
    return ctx.cases_table().set_index("case_id")[["split", "label"]]


def case_meta(ctx: StudyContext) -> pd.DataFrame:
    """Centre and covariates of every case and copy, for the ComBat harmoniser."""
    from radfusion.harmonization.pipeline import study_case_meta

    return study_case_meta(ctx.cfg, ctx.cohort.table, ctx.cases_table(), ctx.augmentation())


def harmonization_meta(ctx: StudyContext) -> pd.DataFrame | None:
    """The cases' centres and covariates for ComBat (routed metadata); None without it."""
    return None if ctx.cfg.harmonization.method == "none" else case_meta(ctx)


def harmonized_builder(
    ctx: StudyContext, build: Callable[[str, float | None], Any], blocks: list[str] | None = None
) -> Callable[[str, float | None], Any] | None:
    """A zoo builder with the configured harmoniser inserted (None: no harmonisation)."""
    from radfusion.harmonization.pipeline import add_harmonizer, make_harmonizer

    if ctx.cfg.harmonization.method == "none":
        return None
    harm = make_harmonizer(ctx.cfg, case_meta(ctx))
    return lambda name, ratio: add_harmonizer(build(name, ratio), harm, blocks)


def fit_family_zoo(
    ctx: StudyContext,
    X_train: pd.DataFrame,
    y_train: np.ndarray,
    groups: np.ndarray,
    *,
    build: Callable[[str, float | None], Any],
    reader2: Any,
    harmonized_blocks: list[str] | None = None,
) -> dict[str, FittedModel]:
    """Tune and fit the configured classifier zoo of a feature-level family on its training rows.

    Parameters
    ----------
    ctx : StudyContext
    X_train, y_train, groups
        The family's training rows (:func:`train_rows`).
    build : callable
        ``build(name, class_ratio) -> Pipeline``: one classifier's unfitted model, with the
        study's selection and classifier settings and seed.
    reader2 : pandas.DataFrame, dict or None
        Reader 2's features for the ICC filters (:func:`reader2_tables`).
    harmonized_blocks : list of str, optional
        Blocks the configured harmoniser adjusts (:func:`harmonized_builder`; None: all).

    Returns
    -------
    dict[str, FittedModel]
        :func:`radfusion.models.fit_zoo`'s result: the configured harmoniser is inserted in
        every model and the centres and covariates are routed to it.
    """
    from radfusion.models import fit_zoo

    cfg = ctx.cfg
    builder = harmonized_builder(ctx, build, harmonized_blocks) or build
    return fit_zoo(
        X_train,
        y_train,
        groups,
        selection_cfg=cfg.selection,
        models_cfg=cfg.models,
        reader2=reader2,
        case_meta=harmonization_meta(ctx),
        seed=cfg.seed,
        builder=builder,
    )


def deep_features(ctx: StudyContext, arm: str) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    from radfusion.deep.arm import read_deep_features

    d = ctx.layout.deep(arm)
    feats, _ = read_deep_features(d.features())
    r2 = None
    if d.features(reader=2).is_file():
        r2, _ = read_deep_features(d.features(reader=2))
    return feats, r2


def reader2_tables(ctx: StudyContext, family: str) -> Any:
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
    return {"radiomics": rad_r2, arm: deep_features(ctx, arm)[1] if arm == "2ch" else None}


def case_inputs(ctx: StudyContext, family: str) -> CaseInputs:
    """The feature tables a feature-level family reads (radiomics, + deep for Merged)."""
    from radfusion.fusion.study_model import CaseInputs
    from radfusion.radiomics import read_feature_table

    inputs = CaseInputs(radiomics=read_feature_table(ctx.layout.radiomics_features()))
    if family in MERGED_ARMS:
        arm = MERGED_ARMS[family]
        inputs.deep[arm] = deep_features(ctx, arm)[0]
    return inputs
