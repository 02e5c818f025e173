"""Cross-fitting, in one place: scores of training cases from models that never saw them.

Stacked fusion (:mod:`radfusion.fusion.stacking`) fits its meta-learner on such scores.
The training cases are split into folds whole groups at a time (:func:`crossfit_folds`);
for each fold, an arm is refit on the other folds and scores the fold's cases: a
scikit-learn pipeline (:func:`crossfit_scores`, the radiomics arm) or a new network
trained exactly like the arm's main one (:func:`crossfit_deep_arm`, resumable fold by
fold through :mod:`radfusion.deep.resume`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from sklearn.base import clone
from torch import nn

from radfusion.config import StudyConfig
from radfusion.data import Cohort
from radfusion.deep.arm import (
    ArmInputs,
    check_arm,
    network_and_fingerprint,
    prepare_arm,
    train_arm_network,
)
from radfusion.deep.features import infer, resolve_device
from radfusion.deep.inputs import DeepDataset, InputRow
from radfusion.deep.resume import claim_fold_dir, finished_fold_scores
from radfusion.errors import ConfigError
from radfusion.layout import CrossfitLayout
from radfusion.utils import atomic_path, atomic_write_json, json_sha256

__all__ = ["crossfit_deep_arm", "crossfit_folds", "crossfit_scores"]

log = logging.getLogger(__name__)


def crossfit_folds(
    case_ids: Sequence[str],
    labels: Any,
    groups: Any,
    *,
    n_splits: int,
    seed: int,
) -> pd.Series:
    """Assign training cases to cross-fitting folds, whole groups at a time.

    Parameters
    ----------
    case_ids : sequence of str
        The original training cases (not their augmented copies).
    labels : array-like
        Their labels (folds are stratified).
    groups : array-like
        Their groups (patient, or the case itself): a group never straddles folds, so
        no fold model sees another image of a patient it scores.
    n_splits : int
        Folds wanted (fewer, with a logged warning, when the minority class has fewer
        groups).
    seed : int

    Returns
    -------
    Series
        case id -> fold number (0 ... K-1), named ``fold``.
    """
    from radfusion.models import inner_cv

    ids = np.asarray(list(case_ids), dtype=object)
    y = np.asarray(labels).astype(int)
    g = np.asarray(groups)
    cv = inner_cv(y, g, n_splits, seed)
    fold = np.full(len(ids), -1)
    for k, (_, held) in enumerate(cv.split(np.zeros(len(ids)), y, g)):
        fold[held] = k
    return pd.Series(fold, index=pd.Index(ids, name="case_id"), name="fold")


def crossfit_scores(
    pipeline: Any,
    X: pd.DataFrame,
    y: Any,
    groups: Any,
    folds: pd.Series,
    *,
    fit_params: Any = None,
    X_other: pd.DataFrame | None = None,
    reader2: Any = None,
    case_meta: pd.DataFrame | None = None,
) -> tuple[pd.Series, pd.Series | None]:
    """Out-of-fold probabilities of a scikit-learn pipeline refit once per fold.

    Parameters
    ----------
    pipeline : estimator
        The recipe (cloned per fold, so the caller's object is never changed).
    X : DataFrame
        Training rows indexed by case id: original cases and their augmented copies.
    y, groups : array-like
        Labels and groups of the rows of ``X`` (copies share their source's group).
    folds : Series
        Original case id -> fold (:func:`crossfit_folds`). A row's fold is its group's.
    fit_params : callable, optional
        ``fit_params(estimator, groups) -> dict`` of fit parameters for one fold's fit
        (e.g. routing the fold's groups to a grouped LASSO).
    X_other : DataFrame, optional
        Further rows (validation, test) to score with every fold model.
    reader2, case_meta : optional
        Reader 2's features and centres / covariates by case id
        (:func:`radfusion.models.case_data`), routed to each fold's fit; ``case_meta``
        also to its predictions.

    Returns
    -------
    oof : Series
        Original case id -> probability from the model of its fold, which never saw the
        case, its copies or its group.
    other : Series or None
        Mean probability of the fold models for each row of ``X_other``.
    """
    from radfusion.models.routing import case_data, group_routing, positive_proba, routed

    g = pd.Series(np.asarray(groups), index=X.index)
    y = np.asarray(y).astype(int)
    group_fold = pd.Series(folds.to_numpy(), index=g.loc[folds.index].to_numpy())
    group_fold = group_fold[~group_fold.index.duplicated()]
    row_fold = g.map(group_fold)
    if row_fold.isna().any():
        missing = row_fold.index[row_fold.isna()].tolist()
        raise ValueError(f"rows of groups without a fold: {missing[:5]}")
    out = pd.Series(np.nan, index=folds.index, name="probability")
    other = []
    for k in sorted(set(folds)):
        fit_rows = (row_fold != k).to_numpy()
        est = clone(pipeline)
        params = fit_params(est, g.to_numpy()[fit_rows]) if fit_params is not None else {}
        X_fit = X.loc[fit_rows]
        params.update(routed(est, "fit", case_data(X_fit, reader2=reader2, case_meta=case_meta)))
        with group_routing():  # the fold's groups reach every grouped inner CV
            est.fit(X_fit, y[fit_rows], **params)
        held = folds.index[folds == k]
        out.loc[held] = positive_proba(est, X.loc[held], case_meta=case_meta)
        if X_other is not None and len(X_other):
            other.append(positive_proba(est, X_other, case_meta=case_meta))
    mean_other = (
        pd.Series(np.mean(other, axis=0), index=X_other.index, name="probability")
        if other and X_other is not None
        else None
    )
    return out, mean_other


def _check_folds(originals: Sequence[InputRow], fold_of: pd.Series) -> None:
    """Refuse training cases without a fold."""
    unassigned = [r.case_id for r in originals if r.split == "train" and r.case_id not in fold_of]
    if unassigned:
        raise ConfigError(f"{len(unassigned)} training case(s) have no fold: {unassigned[:10]}")


def _score_fold(
    model: nn.Module,
    prep: ArmInputs,
    score_rows: Sequence[InputRow],
    cfg: StudyConfig,
    device: torch.device,
    use_amp: bool,
    k: int,
) -> pd.DataFrame:
    """Fold ``k``'s network's probabilities for its scored rows (``case_id`` ... ``probability``).

    Training rows are the fold's own held-out cases (``out_of_fold`` True); the rest are
    validation and test cases. Leaves ``model`` on the CPU.
    """
    net = model.to(device)
    out = infer(
        net,
        DeepDataset(prep.arrays, score_rows),
        device=device,
        batch_size=cfg.deep.batch_size,
        amp=use_amp,
        num_workers=cfg.deep.num_workers,
    )
    net.to("cpu")
    return pd.DataFrame(
        {
            "case_id": [r.case_id for r in score_rows],
            "split": [r.split for r in score_rows],
            "fold": int(k),
            "out_of_fold": [r.split == "train" for r in score_rows],
            "probability": out.probabilities.astype(float),
        }
    )


def _crossfit_fold(
    prep: ArmInputs,
    cfg: StudyConfig,
    k: int,
    held: set[str],
    out_dir: Path,
    device: torch.device,
    use_amp: bool,
    progress: bool,
) -> pd.DataFrame:
    """Scores of fold ``k``: its network trained without the ``held`` cases (and their copies).

    A fold finished earlier with the same identity is read back; otherwise the network is
    trained (resuming its checkpoint), scores the held-out, validation and test cases, and
    ``scores.parquet`` and ``fold.json`` are written under ``out_dir / fold_<k>``.
    """
    originals = prep.rows[: len(prep.cases)]
    train_rows = [r for r in prep.rows if r.split == "train" and r.source_case_id not in held]
    val_rows = [r for r in prep.rows if r.split == "val"]
    score_rows = [r for r in originals if r.case_id in held or r.split in ("val", "test")]
    model, _, fingerprint = network_and_fingerprint(prep, cfg, train_rows, val_rows)
    fingerprint["crossfit_fold"] = int(k)
    key = json_sha256(fingerprint)
    files = CrossfitLayout(out_dir)
    finished = finished_fold_scores(files, k, key)
    if finished is not None:
        log.info("%s fold %d: finished earlier, reused", prep.net_spec.model_name, k)
        return finished
    claim_fold_dir(files, k, key)
    result = train_arm_network(
        prep,
        cfg,
        model,
        train_rows,
        val_rows,
        device=device,
        checkpoint_path=files.fold_checkpoint(k),
        fingerprint=fingerprint,
        name=f"{prep.net_spec.model_name} fold {k}",
        progress=progress,
    )
    scores = _score_fold(result.model, prep, score_rows, cfg, device, use_amp, k)
    with atomic_path(files.fold_scores(k)) as tmp:
        scores.to_parquet(tmp, index=False)
    atomic_write_json(
        files.fold_record(k),
        {
            "key": key,
            "fold": int(k),
            "best_epoch": result.best_epoch,
            "selection": result.selection,
            "n_train_samples": len(train_rows),
            # what this network learnt from, so anyone can check it never saw its fold
            "trained_on": sorted({r.source_case_id for r in train_rows}),
            "scored_out_of_fold": sorted(held),
        },
    )
    files.fold_checkpoint(k).unlink(missing_ok=True)  # the scores are what is kept
    return scores


def crossfit_deep_arm(
    cohort: Cohort,
    assignment: pd.Series,
    cfg: StudyConfig,
    arm: Literal["1ch", "2ch"] | str,
    out_dir: Path,
    folds: pd.Series,
    augmentations: pd.DataFrame | None = None,
    progress: bool = True,
    *,
    cache_dir: Path | None = None,
) -> pd.DataFrame:
    """Cross-fitted scores of one arm: one network per fold, each blind to its fold.

    Fold ``k``'s network is trained exactly like the arm's main network (same settings,
    seed and initialisation, early-stopped on the same validation set) but only on the
    training cases of the other folds and their augmented copies. It then scores the
    training cases of fold ``k``, which it never saw (their out-of-fold score), and the
    validation and test cases (for comparing the fold models' mean with the main network).
    Every fold is resumable: a finished fold is read back, an interrupted one resumes
    from its checkpoint, one trained on other data or settings starts afresh.

    Parameters
    ----------
    cohort, assignment, cfg, arm, augmentations, progress, cache_dir
        As :func:`run_deep_arm`.
    out_dir : Path
        Folder of the folds (``fold_<k>/`` each with ``scores.parquet`` and ``fold.json``,
        which lists the training cases the fold's network learnt from).
    folds : Series
        Training case id -> fold number, for every original training case; augmented
        copies follow their source case. Groups (patients) must not straddle folds.

    Returns
    -------
    DataFrame
        ``case_id``, ``split``, ``fold``, ``out_of_fold`` (True for training cases scored by
        the network of their own fold), ``probability``.
    """
    check_arm(arm)
    out_dir = Path(out_dir)
    files = CrossfitLayout(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.deep.device)
    prep = prepare_arm(
        cohort, assignment, cfg, arm, cache_dir or files.cache, augmentations, progress
    )
    fold_of = folds.astype(int)
    _check_folds(prep.rows[: len(prep.cases)], fold_of)
    use_amp = bool(cfg.deep.amp and device.type == "cuda")
    parts = [
        _crossfit_fold(
            prep, cfg, k, set(fold_of.index[fold_of == k]), out_dir, device, use_amp, progress
        )
        for k in sorted(set(fold_of))
    ]
    return pd.concat(parts, ignore_index=True)
