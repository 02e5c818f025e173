"""Stacked (score-level) fusion: a logistic meta-learner on the single arms' scores.

Why not only the paper's early fusion? A Merged model concatenates radiomics features
with the deep features of the training cases, and those come from a network that was
trained on those very cases: they are memorised (training AUC near 1), so the Merged
classifier leans on them and transfers no better than the deep arm alone. Stacking
combines the arms' *scores* instead, and fits the combiner only on scores that are
honest for every row it learns from:

``crossfit`` (the default)
    The training cases are split into K folds, grouped by patient (augmented copies
    stay with their source) and stratified by label. For each fold, every arm is refit
    on the other folds (the radiomics arm: its selected pipeline, selection included;
    a deep arm: a new network) and scores the fold's cases, which it never saw. The
    meta-learner is fitted on these out-of-fold scores. Validation, test and new cases
    are scored by each arm's model fitted on the whole training set, then combined.
``blend``
    The meta-learner is fitted on the arms' validation scores (no extra training). The
    validation set then no longer gives an unbiased estimate for the stacked model;
    the report says so, and the test set stays untouched.

The meta-learner (:class:`StackedFusionModel`) is a mildly ridge-penalised logistic
regression on the standardised logits of the arms' probabilities (optionally with
clinical columns); its coefficients say how much each arm contributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from radfusion.fusion.clinical import ClinicalImagingModel

__all__ = [
    "StackedFusionModel",
    "crossfit_folds",
    "crossfit_scores",
    "score_column",
]

#: Prefix of the meta-learner's input column holding an arm's probability.
SCORE_PREFIX = "score_"


def score_column(arm: str) -> str:
    """The meta-learner's input column of an arm (``score_radiomics``, ``score_2ch``)."""
    return f"{SCORE_PREFIX}{arm}"


class StackedFusionModel(ClinicalImagingModel):
    """Logistic meta-learner on the logits of the arms' probabilities (+ clinical columns).

    Parameters
    ----------
    arms : list of str
        The arms combined; ``X`` holds each one's probability in ``score_<arm>``.
    numeric, categorical : list of str, optional
        Clinical columns added to the meta-learner (median / mode imputed).
    C : float
        Inverse L2 strength on the standardised predictors (mild ridge by default: the
        arms' scores are correlated, and an unpenalised fit would split their weight
        unstably).

    Attributes
    ----------
    pipeline_, coef_table_, coefficients_
        As :class:`~radfusion.fusion.clinical.ClinicalImagingModel`; the coefficients of
        ``score_<arm>`` are per standard deviation of that arm's logit.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 200)
    >>> X = pd.DataFrame({"score_radiomics": np.clip(0.3 * y + rng.uniform(0, 0.7, 200), 0, 1),
    ...                   "score_2ch": rng.uniform(0, 1, 200)})
    >>> m = StackedFusionModel(arms=["radiomics", "2ch"]).fit(X, y)
    >>> m.coefficients_.set_index("term").loc["score_radiomics", "coef"] > 1
    True
    """

    _standardize_scores = True

    def __init__(
        self,
        arms: list[str] | None = None,
        numeric: list[str] | None = None,
        categorical: list[str] | None = None,
        C: float = 1.0,
    ) -> None:
        self.arms = arms
        self.numeric = numeric
        self.categorical = categorical
        self.C = C

    def _score_columns(self) -> list[str]:
        if not self.arms:
            raise ValueError("StackedFusionModel needs at least one arm")
        return [score_column(a) for a in self.arms]


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
    from radfusion.models.tuning import case_data, group_routing, positive_proba, routed

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
