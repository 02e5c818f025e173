"""Hyperparameter tuning by cross-validation inside the training data, and the fitted zoo."""

from __future__ import annotations

import logging
import math
import re
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import joblib
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.exceptions import FitFailedWarning
from sklearn.model_selection import (
    GridSearchCV,
    RandomizedSearchCV,
    StratifiedGroupKFold,
    StratifiedKFold,
)
from sklearn.pipeline import Pipeline

from radfusion.config import ModelsConfig, SelectionConfig
from radfusion.errors import ConfigError
from radfusion.models.routing import (
    RoutedAUC,
    case_data,
    group_fit_params,
    group_routing,
    positive_proba,
    routed,
    routed_call,
)
from radfusion.models.zoo import build_model, classifier_name, make_classifier

log = logging.getLogger(__name__)


@dataclass
class FittedModel:
    """One tuned classifier of the zoo, refit on all training data.

    Attributes
    ----------
    name : str
        Classifier name ("LR", ... "LightGBM").
    pipeline : sklearn.pipeline.Pipeline
        Selection steps + classifier, fitted on the training rows.
    best_params : dict
        Chosen hyperparameters (keys as in the pipeline, e.g. ``clf__C``).
    cv_auc : float
        Mean inner-CV ROC AUC of the chosen hyperparameters.
    cv_auc_sd : float
        Its standard deviation across folds.
    n_splits : int
        Inner CV folds the chosen hyperparameters were scored on (fewer than planned when
        fits failed, see ``tuning_note``).
    fit_seconds : float
        Wall time of tuning and refitting.
    failed_fits : int
        Fits of the search (candidate x fold) that raised an error.
    tuning_note : str
        Empty when every fit worked; else how many failed, why, and on how many folds
        the chosen hyperparameters were scored.
    """

    name: str
    pipeline: Pipeline
    best_params: dict[str, Any]
    cv_auc: float
    cv_auc_sd: float
    n_splits: int
    fit_seconds: float
    cv_results: dict[str, Any] = field(default_factory=dict, repr=False)
    failed_fits: int = 0
    tuning_note: str = ""

    def positive_proba(self, X: Any, *, case_meta: pd.DataFrame | None = None) -> np.ndarray:
        """Probability of the positive class (the larger label, 1) for each row of ``X``.

        One value per row (the pipeline's ``predict_proba`` gives both classes' columns).
        ``case_meta`` (centre and covariates by case id) reaches a ComBat step.
        """
        return positive_proba(self.pipeline, X, case_meta=case_meta)


def inner_cv(
    y: Any, groups: Any = None, n_splits: int = 5, seed: int = 0
) -> StratifiedKFold | StratifiedGroupKFold:
    """Stratified (grouped) K-fold for tuning, with as many folds as the minority allows.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Labels.
    groups : array-like of shape (n_samples,), optional
        Group of each row (patient; augmented copies share their source's group).
        When given, no group is split across folds.
    n_splits : int
        Folds wanted.
    seed : int
        Shuffles the fold assignment.

    Returns
    -------
    StratifiedKFold or StratifiedGroupKFold

    Raises
    ------
    ValueError
        If a class has fewer than 2 cases (groups).
    """
    y = np.asarray(y)
    classes = np.unique(y)
    if groups is None:
        per_class = min(int((y == c).sum()) for c in classes)
    else:
        groups = np.asarray(groups)
        per_class = min(np.unique(groups[y == c]).size for c in classes)
    n = min(n_splits, per_class)
    if classes.size < 2 or n < 2:
        raise ValueError(
            f"tuning needs at least 2 cases{' (groups)' if groups is not None else ''} of each "
            f"of 2 classes; got classes {classes.tolist()} with at most {per_class} in one"
        )
    if n < n_splits:
        log.warning(
            "only %d %s in the minority class: tuning with %d-fold instead of %d-fold CV",
            per_class,
            "groups" if groups is not None else "cases",
            n,
            n_splits,
        )
    if groups is None:
        return StratifiedKFold(n, shuffle=True, random_state=seed)
    return StratifiedGroupKFold(n, shuffle=True, random_state=seed)


def out_of_fold_probability(
    estimator: Any,
    X: Any,
    y: Any,
    groups: Any,
    cv: Any,
    *,
    reader2: Any = None,
    case_meta: pd.DataFrame | None = None,
) -> np.ndarray:
    """Out-of-fold probability of the positive class, refitting ``estimator`` in every fold.

    ``groups`` go to the splitter and, by metadata routing (:func:`group_routing`), to every
    grouped inner CV of the estimator, exactly as in :func:`tune_model`; ``reader2`` and
    ``case_meta`` (:func:`case_data`) to its fit, and ``case_meta`` to the held-out fold's
    prediction too (scikit-learn's ``cross_val_predict`` routes nothing to ``predict``).
    """
    from sklearn.utils import _safe_indexing

    y = np.asarray(y)
    data = case_data(X, reader2=reader2, case_meta=case_meta)
    prob = np.full(len(y), np.nan)
    for train, test in cv.split(X, y, groups):
        est = clone(estimator)
        fit_params = {k: _safe_indexing(v, train) for k, v in data.items()}
        fit_params = routed(est, "fit", fit_params)
        if groups is not None:
            fit_params.update(group_fit_params(est, np.asarray(groups)[train]))
        with group_routing():
            est.fit(_safe_indexing(X, train), y[train], **fit_params)
        held = _safe_indexing(X, test)
        meta = None if case_meta is None else _safe_indexing(data["case_meta"], test)
        prob[test] = positive_proba(est, held, case_meta=meta)
    return prob


def _grid_size(space: dict[str, Any]) -> float:
    if all(isinstance(v, list | tuple) for v in space.values()):
        return math.prod(len(v) for v in space.values())
    return math.inf


def _class_ratio(y: np.ndarray) -> float:
    n_pos = int((y == 1).sum())
    return (y.size - n_pos) / n_pos if n_pos else 1.0


def _fold_scores(cv_results: dict[str, Any]) -> np.ndarray:
    """(candidates, folds) test scores of a search; NaN where the fit failed."""
    n = sum(1 for k in cv_results if re.fullmatch(r"split\d+_test_score", k))
    return np.column_stack([cv_results[f"split{k}_test_score"] for k in range(n)])


def best_scored_candidate(cv_results: dict[str, Any]) -> int:
    """The search's refit rule: the best mean AUC among candidates scored on the most folds.

    With every fit working this is scikit-learn's own choice (the first of the best
    means). A candidate whose fit failed in some fold is not ranked on the remaining
    folds against candidates scored on all of them (its hard fold might be the one it
    skipped); when a fold fails for every candidate (e.g. the fold's training part has
    too few second delineations for the ICC filter), all are compared on the other folds.
    """
    scores = _fold_scores(cv_results)
    used = np.isfinite(scores).sum(axis=1)
    if used.max() == 0:
        raise ConfigError("no hyperparameter candidate could be scored in any inner-CV fold")
    mean = np.nansum(scores, axis=1) / np.maximum(used, 1)
    mean[used < used.max()] = -np.inf
    return int(np.argmax(mean))


@dataclass(frozen=True)
class TuningOutcome:
    """What a search chose and the inner-CV folds behind its score.

    Attributes
    ----------
    best_index : int
        Row of ``cv_results_`` chosen by :func:`best_scored_candidate`.
    cv_auc, cv_auc_sd : float
        Mean and SD of its AUC over the folds it was scored on.
    n_folds_used, n_folds : int
        Those folds, and the folds planned.
    n_candidates : int
        Hyperparameter candidates searched.
    failed_fits : int
        Candidate-fold fits that raised an error.
    errors : tuple of str
        Their distinct error messages.
    """

    best_index: int
    cv_auc: float
    cv_auc_sd: float
    n_folds_used: int
    n_folds: int
    n_candidates: int
    failed_fits: int
    errors: tuple[str, ...] = ()

    @property
    def note(self) -> str:
        """Empty when every fit worked; else what failed and what the score rests on."""
        if not self.failed_fits:
            return ""
        n_fits = self.n_folds * self.n_candidates
        why = "; ".join(self.errors) or "error not recorded"
        return (
            f"{self.failed_fits} of {n_fits} inner-CV fits failed ({why}); the chosen "
            f"hyperparameters were scored on {self.n_folds_used} of {self.n_folds} folds"
        )


def tuning_outcome(search: Any, errors: tuple[str, ...] = ()) -> TuningOutcome:
    """The :class:`TuningOutcome` of a fitted search from :func:`tune_model`."""
    scores = _fold_scores(search.cv_results_)
    best = int(search.best_index_)
    row = scores[best][np.isfinite(scores[best])]
    return TuningOutcome(
        best_index=best,
        cv_auc=float(row.mean()),
        cv_auc_sd=float(row.std()),  # population SD over folds, like scikit-learn's
        n_folds_used=int(row.size),
        n_folds=int(scores.shape[1]),
        n_candidates=int(scores.shape[0]),
        failed_fits=int((~np.isfinite(scores)).sum()),
        errors=errors,
    )


def _fit_errors(text: str) -> tuple[str, ...]:
    """The distinct final ``SomeError: message`` lines of scikit-learn's fit-failure report."""
    found = re.findall(r"^(\w*(?:Error|Exception|Warning)\b: .*)$", text, flags=re.MULTILINE)
    return tuple(dict.fromkeys(found))


def tune_model(
    pipeline: Pipeline,
    X: Any,
    y: Any,
    groups: Any = None,
    *,
    cfg: ModelsConfig,
    seed: int = 0,
    search_space: dict[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    reader2: Any = None,
    case_meta: pd.DataFrame | None = None,
) -> GridSearchCV | RandomizedSearchCV:
    """Tune a model pipeline's classifier by CV on the training data, then refit on all of it.

    The whole pipeline, selectors included, is refit inside every CV fold, so the
    CV AUC is an honest estimate. The pipeline caches its selector fits
    (``joblib.Memory``), so selection runs once per fold, not once per candidate.

    Parameters
    ----------
    pipeline : Pipeline
        From :func:`~radfusion.models.build_model` (its last step is the classifier).
    X : pandas.DataFrame or array-like of shape (n_samples, n_features)
        Training features (a DataFrame indexed by case id when the ICC filter uses a
        reader-2 table).
    y : array-like of shape (n_samples,)
        Training labels (0/1).
    groups : array-like of shape (n_samples,), optional
        Patient / source-image groups: augmented copies must share the group of their
        source so they stay in one fold. Folds are then StratifiedGroupKFold, and every
        LASSO inner CV, at any depth of the pipeline, is grouped too (metadata routing,
        see :func:`group_routing`).
    cfg : ModelsConfig
        ``cv`` (reduced, with a logged warning, to what the minority class allows),
        ``n_iter`` (a grid search when the space has at most that many points),
        ``class_weight``, ``calibrate`` and ``n_jobs``.
    seed : int
        Seeds folds and sampling.
    search_space : dict, optional
        Parameter space with pipeline keys (``clf__C``); default: the classifier's
        space from :func:`~radfusion.models.make_classifier`.
    cache_dir : path, optional
        Folder for the selector cache (shared by :func:`fit_zoo` across classifiers,
        whose selection steps are identical). Default: a temporary folder.
    reader2, case_meta : DataFrame, optional
        Reader 2's features and the centres / covariates by case id (:func:`case_data`),
        routed to the ICC filter and the ComBat harmoniser of every fit; ``case_meta``
        also to the held-out folds' scoring (:class:`RoutedAUC`).

    Returns
    -------
    GridSearchCV or RandomizedSearchCV
        Fitted; ``best_estimator_`` is the pipeline refit on all rows (without the
        cache), ``best_params_`` the chosen hyperparameters (:func:`best_scored_candidate`),
        ``fit_errors_`` the distinct errors of failed fits. Fits that fail (e.g. an ICC
        filter whose fold has too few second delineations, a LASSO that keeps nothing)
        score NaN and are left out of the mean: :func:`tuning_outcome` gives the score
        and how many folds it rests on.

    Raises
    ------
    ValueError
        If a class has fewer than 2 cases (groups).
    ConfigError
        If every fit of every candidate failed (the message gives the errors).
    """
    y = np.asarray(y)
    if search_space is None:
        _, space = make_classifier(classifier_name(pipeline), cfg, seed)
        search_space = {f"{pipeline.steps[-1][0]}__{k}": v for k, v in space.items()}
    cv = inner_cv(y, groups, cfg.cv, seed)

    est = clone(pipeline)
    if cfg.class_weight == "balanced":
        # XGBoost's class weighting is a number: the training class ratio.
        for key, value in est.get_params().items():
            if key.endswith("scale_pos_weight") and value is None:
                est.set_params(**{key: _class_ratio(y)})

    common = {
        "scoring": RoutedAUC(),
        "cv": cv,
        "refit": best_scored_candidate,
        "n_jobs": cfg.n_jobs,
    }
    with tempfile.TemporaryDirectory(prefix="radfusion-cache-") as tmp:
        est.set_params(memory=joblib.Memory(str(cache_dir or tmp), verbose=0))
        if _grid_size(search_space) <= cfg.n_iter:
            search: Any = GridSearchCV(est, search_space, **common)
        else:
            search = RandomizedSearchCV(
                est, search_space, n_iter=cfg.n_iter, random_state=seed, **common
            )
        with warnings.catch_warnings(record=True) as caught, group_routing():
            warnings.simplefilter("default")
            # joblib notes when hashing large inputs for the selector cache is slow; the
            # cache still saves far more (one selection per fold instead of per candidate)
            warnings.filterwarnings("ignore", message="Persisting input arguments took")
            try:
                data = routed(est, "fit", case_data(X, reader2=reader2, case_meta=case_meta))
                search.fit(X, y, **group_fit_params(est, groups), **data)
            except ValueError as exc:
                if not re.search(r"All the \d+ fits failed", str(exc)):
                    raise
                errors = "; ".join(_fit_errors(str(exc))) or str(exc).splitlines()[0]
                raise ConfigError(
                    f"{classifier_name(pipeline)}: every inner-CV fit of every hyperparameter "
                    f"candidate failed ({errors}); check the selection settings (e.g. the "
                    "ICC filter needs second delineations in every fold, the LASSO must keep "
                    "a feature) or use fewer inner folds (models.cv)"
                ) from None
    failures = [w for w in caught if issubclass(w.category, FitFailedWarning)]
    for w in caught:  # the other warnings go on to the caller, as without recording
        if w not in failures:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    search.fit_errors_ = tuple(
        dict.fromkeys(e for w in failures for e in _fit_errors(str(w.message)))
    )
    # The cache folder is gone (or shared): the returned models must not point to it.
    search.best_estimator_.set_params(memory=None)
    search.estimator.set_params(memory=None)
    return search


class TunedModel(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """A model pipeline whose ``fit`` re-tunes its classifier's hyperparameters first.

    Fitting runs :func:`tune_model` on the rows given (inner CV inside them, grouped by
    ``groups``) and keeps the refit best pipeline. Refit per fold by
    :func:`out_of_fold_probability` or :func:`radfusion.fusion.crossfit.crossfit_scores`,
    it gives nested out-of-fold scores: the hyperparameters behind a held-out fold's score
    were chosen without that fold, so the score is as honest as a test-set score.

    Parameters
    ----------
    estimator : Pipeline
        The model recipe (e.g. the study's fitted pipeline: its selection settings,
        reader-2 data and classifier; the classifier's hyperparameters are searched anew).
    models_cfg : ModelsConfig
        The search settings (``cv``, ``n_iter``, ``class_weight``, ``n_jobs``).
    seed : int
        Seeds the folds and the sampling of the search.

    Attributes
    ----------
    best_estimator_ : Pipeline
        The pipeline tuned and refit on the rows ``fit`` was given.
    best_params_ : dict
        Its hyperparameters.
    classes_ : ndarray
    """

    # route ``groups`` to fit (the inner CV must keep patients and augmented copies
    # together), and the per-case data of :func:`case_data` to fit and predict
    __metadata_request__fit: ClassVar[dict[str, bool]] = {
        "groups": True,
        "reader2": True,
        "case_meta": True,
    }
    __metadata_request__predict_proba: ClassVar[dict[str, bool]] = {"case_meta": True}
    __metadata_request__predict: ClassVar[dict[str, bool]] = {"case_meta": True}

    def __init__(self, estimator: Any = None, models_cfg: Any = None, seed: int = 0) -> None:
        self.estimator = estimator
        self.models_cfg = models_cfg
        self.seed = seed

    def fit(
        self,
        X: Any,
        y: Any,
        groups: Any = None,
        reader2: Any = None,
        case_meta: pd.DataFrame | None = None,
    ) -> TunedModel:
        """Tune the classifier by (grouped) CV on these rows, then refit on all of them.

        ``reader2`` and ``case_meta`` (:func:`case_data`) reach the ICC filter and the
        ComBat harmoniser of every fit of the search.
        """
        est = clone(self.estimator)
        cfg = self.models_cfg or ModelsConfig()
        if cfg.class_weight == "balanced":
            # XGBoost's class weight is the ratio of the rows fitted on: recomputed here
            est.set_params(**{k: None for k in est.get_params() if k.endswith("scale_pos_weight")})
        search = tune_model(
            est, X, y, groups, cfg=cfg, seed=self.seed, reader2=reader2, case_meta=case_meta
        )
        self.best_estimator_ = search.best_estimator_
        self.best_params_ = dict(search.best_params_)
        self.classes_ = self.best_estimator_.classes_
        return self

    def predict_proba(self, X: Any, case_meta: pd.DataFrame | None = None) -> np.ndarray:
        """Class probabilities of the tuned pipeline (``case_meta``: for its ComBat step)."""
        return routed_call(self.best_estimator_, "predict_proba", X, case_meta=case_meta)

    def predict(self, X: Any, case_meta: pd.DataFrame | None = None) -> np.ndarray:
        """Classes of the tuned pipeline."""
        return routed_call(self.best_estimator_, "predict", X, case_meta=case_meta)


def fit_zoo(
    X: Any,
    y: Any,
    groups: Any = None,
    *,
    names: list[str] | tuple[str, ...] | None = None,
    selection_cfg: SelectionConfig,
    models_cfg: ModelsConfig,
    reader2: Any = None,
    case_meta: pd.DataFrame | None = None,
    seed: int = 0,
    builder: Callable[[str, float], Pipeline] | None = None,
) -> dict[str, FittedModel]:
    """Tune and fit every classifier of the zoo on the training data.

    Parameters
    ----------
    X, y, groups
        Training features (DataFrame indexed by case id), labels (0/1) and groups
        (or None); see :func:`tune_model`.
    names : sequence of str or None
        Classifiers to fit (None: ``models_cfg.classifiers``).
    selection_cfg : SelectionConfig
        Selector settings (the same selection chain precedes every classifier).
    models_cfg : ModelsConfig
        Tuning settings.
    reader2 : pandas.DataFrame, dict or None
        Reader 2's features for the ICC filters (:func:`case_data`).
    case_meta : pandas.DataFrame or None
        Centre and covariates by case id, for ComBat steps (:func:`case_data`).
    seed : int
        Seeds everything.
    builder : callable, optional
        ``builder(name, class_ratio) -> Pipeline`` replacing :func:`build_model`, e.g. the
        Merged models of :mod:`radfusion.fusion` (its last step must be the classifier).

    Returns
    -------
    dict[str, FittedModel]
        In the order of ``names``.
    """
    names = list(models_cfg.classifiers if names is None else names)
    ratio = _class_ratio(np.asarray(y))
    out: dict[str, FittedModel] = {}
    # One cache for all classifiers: their selection steps and folds are identical,
    # so each fold's selection is computed once for the whole zoo.
    with tempfile.TemporaryDirectory(prefix="radfusion-zoo-cache-") as cache:
        for name in names:
            start = time.perf_counter()
            model = (
                builder(name, ratio)
                if builder is not None
                else build_model(
                    name,
                    selection_cfg=selection_cfg,
                    models_cfg=models_cfg,
                    seed=seed,
                    class_ratio=ratio,
                )
            )
            search = tune_model(
                model,
                X,
                y,
                groups,
                cfg=models_cfg,
                seed=seed,
                cache_dir=cache,
                reader2=reader2,
                case_meta=case_meta,
            )
            outcome = tuning_outcome(search, search.fit_errors_)
            if outcome.note:
                log.warning("%s: %s", name, outcome.note)
            out[name] = FittedModel(
                name=name,
                pipeline=search.best_estimator_,
                best_params=dict(search.best_params_),
                cv_auc=outcome.cv_auc,
                cv_auc_sd=outcome.cv_auc_sd,
                n_splits=outcome.n_folds_used,
                fit_seconds=time.perf_counter() - start,
                failed_fits=outcome.failed_fits,
                tuning_note=outcome.note,
                cv_results={
                    "params": list(search.cv_results_["params"]),
                    "mean_test_score": search.cv_results_["mean_test_score"].tolist(),
                    "std_test_score": search.cv_results_["std_test_score"].tolist(),
                },
            )
            log.info(
                "%s: inner-CV AUC %.3f ± %.3f (%d folds) in %.1f s",
                name,
                out[name].cv_auc,
                out[name].cv_auc_sd,
                out[name].n_splits,
                out[name].fit_seconds,
            )
    return out
