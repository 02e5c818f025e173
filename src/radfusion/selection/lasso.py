"""LASSO selection: L1-penalised logistic regression with the penalty chosen by inner CV."""

from __future__ import annotations

import inspect
import numbers
import warnings
from typing import Any, ClassVar

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.svm import l1_min_c

from radfusion.selection._base import BinaryTargetSelector, binary_positive_mask, validate_data

# scikit-learn 1.8 deprecated ``penalty`` in favour of ``l1_ratio(s)``; support both.
_NEW_PENALTY_API = (
    inspect.signature(LogisticRegression).parameters["penalty"].default == "deprecated"
)
_HAS_LEGACY_ATTRS = "use_legacy_attributes" in inspect.signature(LogisticRegressionCV).parameters


def _l1_kwargs(cv: bool) -> dict[str, Any]:
    if not _NEW_PENALTY_API:
        return {"penalty": "l1"}
    kw: dict[str, Any] = {"l1_ratios": (1.0,)} if cv else {"l1_ratio": 1.0}
    if cv and _HAS_LEGACY_ATTRS:
        kw["use_legacy_attributes"] = False
    return kw


def _fold_scores(scores: Any, n_cs: int) -> np.ndarray:
    """CV scores as (n_folds, n_Cs) from either LogisticRegressionCV attribute layout."""
    if isinstance(scores, dict):  # legacy layout: {class: (n_folds, n_Cs)}
        scores = next(iter(scores.values()))
    return np.asarray(scores, dtype=float).reshape(-1, n_cs)


class LassoSelector(BinaryTargetSelector):
    """Keep the features with non-zero coefficients of a cross-validated LASSO logistic model.

    An L1-penalised logistic regression (liblinear) is fitted over a path of ``Cs``
    penalties; the penalty is chosen on the mean inner-CV ROC AUC (``rule``) with
    stratified folds, grouped when ``groups`` is passed to :meth:`fit` so that
    augmented copies of one image stay in one fold. Features must be
    standardised upstream (e.g. ``StandardScaler`` in the pipeline): the L1 penalty
    is not scale-invariant.

    If the chosen penalty zeroes every coefficient, the selector falls back to the
    strongest penalty on the path that still keeps at least one feature (the
    sparsest non-empty model, the nearest to the CV choice) and sets
    ``fallback_ = True``.

    Parameters
    ----------
    Cs : int or list of float, default=20
        Penalties tried (inverse regularisation strengths). An int gives that many
        values log-spaced over three decades from ``sklearn.svm.l1_min_c`` (the
        strongest penalty at which a feature enters the model) upwards.
    cv : int, default=5
        Inner CV folds; reduced to the number of cases (or groups) of the smaller
        class when that is fewer.
    max_features : int or None, default=None
        Keep at most this many features, those with the largest ``|coef|``.
    random_state : int or None, default=0
        Seeds the inner fold assignment and liblinear.
    class_weight : "balanced", dict or None, default="balanced"
        Class weights of the logistic model.
    max_iter : int, default=1000
        Solver iterations.
    rule : {"best", "1se"}, default="best"
        ``"best"``: the penalty with the highest mean inner-CV AUC. ``"1se"``: the
        strongest penalty whose mean AUC is within one standard error (across folds)
        of the best (glmnet's ``lambda.1se``): fewer, more stable features.

    Attributes
    ----------
    support_ : ndarray of bool of shape (n_features_in_,)
        Kept features.
    coef_ : ndarray of shape (n_selected,)
        Coefficients of the kept features (column order) at ``C_``.
    intercept_ : float
        Intercept at ``C_``.
    C_ : float
        The penalty used (the CV choice, or the fallback).
    cv_C_ : float
        The penalty chosen by inner CV under ``rule``.
    path_Cs_ : ndarray of shape (n_Cs,)
        The penalties of the path (increasing, i.e. decreasing penalty strength).
    path_coefs_ : ndarray of shape (n_Cs, n_features_in_)
        Coefficients of the model fitted on all of ``X`` at each penalty: the LASSO
        path (plot against ``log(1 / path_Cs_)``).
    cv_scores_ : ndarray of shape (n_splits_, n_Cs)
        Inner-CV ROC AUC per fold and penalty.
    n_splits_ : int
        Inner CV folds used.
    n_iter_ : int
        Solver iterations of the model at ``C_``.
    grouped_ : bool
        Whether the inner folds were grouped (``groups`` given and at least 2 groups
        in each class; otherwise a warning is issued and folds are only stratified).
    fallback_ : bool
        True when the CV choice kept no feature.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined when ``X`` has string column names.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> X, y = make_classification(300, 12, n_informative=3, n_redundant=0,
    ...                            shuffle=False, random_state=0)  # informative: 0, 1, 2
    >>> LassoSelector(Cs=10, cv=5).fit(X, y).get_support().nonzero()[0].tolist()
    [0, 1, 2]
    """

    # Metadata routing: ask for ``groups`` by default, so every enclosing Pipeline,
    # ColumnTransformer and search hands the patients/augmentation groups to the inner CV
    # (see :func:`radfusion.models.routing.group_routing`).
    __metadata_request__fit: ClassVar[dict[str, bool]] = {"groups": True}

    def __init__(
        self,
        Cs: int | list[float] = 20,
        cv: int = 5,
        max_features: int | None = None,
        random_state: int | None = 0,
        class_weight: Any = "balanced",
        max_iter: int = 1000,
        rule: str = "best",
    ):
        self.Cs = Cs
        self.cv = cv
        self.max_features = max_features
        self.random_state = random_state
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.rule = rule

    def fit(self, X: Any, y: Any, groups: Any = None) -> LassoSelector:
        """Choose the penalty by inner CV and keep the non-zero coefficients.

        Parameters
        ----------
        X : array-like or pandas.DataFrame of shape (n_samples, n_features)
            Standardised features.
        y : array-like of shape (n_samples,)
            Two-class labels.
        groups : array-like of shape (n_samples,), optional
            Group of each row (patient, or source image of augmented copies); the
            inner folds then never split a group.

        Returns
        -------
        self : LassoSelector

        Raises
        ------
        ValueError
            If ``y`` is not two-class, a class has fewer than 2 cases (or groups),
            ``max_features`` or ``cv`` is below 1 or 2, or no penalty keeps a feature.
        """
        if self.max_features is not None and self.max_features < 1:
            raise ValueError(f"max_features must be >= 1 or None; got {self.max_features!r}")
        if self.rule not in ("best", "1se"):
            raise ValueError(f"rule must be 'best' or '1se'; got {self.rule!r}")
        if self.cv < 2:
            raise ValueError(f"cv must be >= 2; got {self.cv!r}")
        X, y = validate_data(self, X, y, dtype=np.float64)
        pos = binary_positive_mask(y)
        splits = self._inner_splits(X, pos, groups)
        self.n_splits_ = len(splits)

        common = {
            "solver": "liblinear",
            "class_weight": self.class_weight,
            "random_state": self.random_state,
            "max_iter": self.max_iter,
        }
        # Increasing C (decreasing penalty strength): the fallback walks the path in order.
        if isinstance(self.Cs, numbers.Integral):
            # Data-driven grid, as glmnet's: from the penalty that first lets a feature in
            # up to 1000 times weaker, where the model is practically unpenalised.
            Cs = l1_min_c(X, pos, loss="log") * np.logspace(0, 3, int(self.Cs))
        else:
            Cs = np.sort(np.asarray(self.Cs, dtype=float))
        with warnings.catch_warnings():
            # liblinear often stops at max_iter for the weakest penalties of the path
            # (C ~ 1e4), which CV does not choose; the chosen fit is checked below.
            warnings.simplefilter("ignore", ConvergenceWarning)
            # refit=False: the final model is taken from the full-data path below.
            cv_model = LogisticRegressionCV(
                Cs=Cs, cv=splits, scoring="roc_auc", refit=False, **common, **_l1_kwargs(True)
            ).fit(X, pos.astype(int))
            self.path_Cs_ = np.asarray(cv_model.Cs_, dtype=float)
            path = [
                LogisticRegression(C=C, **common, **_l1_kwargs(False)).fit(X, pos.astype(int))
                for C in self.path_Cs_
            ]
        self.cv_scores_ = _fold_scores(cv_model.scores_, self.path_Cs_.size)
        self.path_coefs_ = np.vstack([m.coef_.ravel() for m in path])
        mean = self.cv_scores_.mean(axis=0)
        chosen = int(np.nanargmax(mean))  # first maximum, as LogisticRegressionCV
        if self.rule == "1se":
            se = self.cv_scores_[:, chosen].std(ddof=1) / np.sqrt(self.n_splits_)
            chosen = int(np.flatnonzero(mean >= mean[chosen] - se)[0])
        self.cv_C_ = float(self.path_Cs_[chosen])
        self.fallback_ = not np.any(self.path_coefs_[chosen] != 0)
        if self.fallback_:
            nonempty = np.flatnonzero((self.path_coefs_ != 0).any(axis=1))
            stronger = nonempty[nonempty > chosen]
            if stronger.size == 0:
                raise ValueError(
                    "LASSO kept no feature at any penalty on the path "
                    f"(C up to {self.path_Cs_.max():.3g}); the features do not separate "
                    "the classes"
                )
            chosen = int(stronger[0])
        model = path[chosen]
        self.C_ = float(self.path_Cs_[chosen])
        self.n_iter_ = int(np.max(model.n_iter_))
        if self.n_iter_ >= self.max_iter:
            warnings.warn(
                f"LASSO at the chosen C={self.C_:.3g} did not converge in {self.max_iter} "
                "iterations; increase max_iter",
                ConvergenceWarning,
                stacklevel=2,
            )
        coef = model.coef_.ravel()
        intercept = float(np.ravel(model.intercept_)[0])

        support = coef != 0
        if self.max_features is not None and support.sum() > self.max_features:
            # Stable sort: equal |coef| keep column order.
            top = np.argsort(-np.abs(coef), kind="stable")[: self.max_features]
            support = np.zeros_like(support)
            support[top] = True
        self.support_ = support
        self.coef_ = coef[support]
        self.intercept_ = intercept
        return self

    def _inner_splits(
        self, X: np.ndarray, pos: np.ndarray, groups: Any
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        shuffle = {"shuffle": True, "random_state": self.random_state}
        self.grouped_ = False
        if groups is not None:
            groups = np.asarray(groups)
            if groups.shape[0] != X.shape[0]:
                raise ValueError(f"groups has {groups.shape[0]} rows, X has {X.shape[0]}")
            per_class = min(np.unique(groups[pos]).size, np.unique(groups[~pos]).size)
            if per_class >= 2:
                self.grouped_ = True
                splitter = StratifiedGroupKFold(min(self.cv, per_class), **shuffle)
                return list(splitter.split(X, pos, groups))
            # Happens inside an outer grouped fold with very few minority groups; the
            # penalty choice may then be optimistic, but the outer estimate stays honest.
            warnings.warn(
                f"only {per_class} group(s) in the smaller class: LASSO inner CV is not grouped",
                UserWarning,
                stacklevel=3,
            )
        per_class = min(int(pos.sum()), int((~pos).sum()))
        if per_class < 2:
            raise ValueError(
                "LassoSelector needs at least 2 cases of each class for its inner CV; the "
                f"smaller class has {per_class}"
            )
        return list(StratifiedKFold(min(self.cv, per_class), **shuffle).split(X, pos))
