"""The paper's seven classifiers, each with a documented hyperparameter search space.

``make_classifier`` returns an unfitted estimator and the space that
:func:`radfusion.models.tune_model` searches by cross-validation inside the
training data. Search spaces (keys relative to the returned estimator):

{zoo_table}

Class imbalance (``ModelsConfig.class_weight = "balanced"``): ``class_weight="balanced"``
for LR, SVM, RF and LightGBM; ``scale_pos_weight = n_negative / n_positive`` of the
training labels for XGBoost (``class_ratio``; set by ``tune_model`` from ``y`` when
not given). KNN and MLP have no class weighting in scikit-learn; the minority-class
augmentation of the training set covers them.

Every model has ``predict_proba``. The SVM is always wrapped in a sigmoid
:class:`~radfusion.models.calibration.GroupedCalibratedClassifierCV` with
``ensemble=False`` (Platt scaling, what ``SVC(probability=True)`` did; that option is
deprecated in scikit-learn 1.9). With ``ModelsConfig.calibrate`` every other model is
wrapped in a cross-fitted sigmoid ``GroupedCalibratedClassifierCV`` too
(``ensemble=True``), and its search-space keys gain the ``estimator__`` prefix. The
calibration uses ``CALIBRATION_CV`` stratified folds of the data it is fitted on,
grouped by patient when the fit is given ``groups`` (as
:func:`~radfusion.models.tune_model` does), so the sigmoid never sees copies of the
rows its classifier was trained on. Tree models and the search run single-threaded
(``n_jobs=1``) so that ``ModelsConfig.n_jobs`` parallelises the search without
oversubscribing cores.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lightgbm import LGBMClassifier
from scipy.stats import loguniform, uniform
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC
from xgboost import XGBClassifier

from radfusion.config import CLASSIFIERS, ModelsConfig, SelectionConfig
from radfusion.models.calibration import GroupedCalibratedClassifierCV
from radfusion.selection.pipeline import selector_steps

#: Name of the classifier step in :func:`build_model` pipelines.
CLASSIFIER_STEP = "clf"
#: Folds of the sigmoid calibration (SVM always, others with ``calibrate``); grouped
#: (StratifiedGroupKFold) when the fit gets ``groups``.
CALIBRATION_CV = 3

Builder = Callable[[str | None, int, float | None], tuple[BaseEstimator, dict[str, Any]]]


@dataclass(frozen=True)
class ZooEntry:
    """One classifier of the zoo: its estimator type, how it is built and its documentation.

    Attributes
    ----------
    estimator_type : type
        The scikit-learn (compatible) class (:func:`classifier_name` recognises it).
    build : callable
        ``build(class_weight, seed, class_ratio) -> (estimator, search_space)``;
        ``class_weight`` is ``"balanced"`` or None.
    space_doc : str
        The search space in words (the module docstring's table).
    weighted_probabilities : bool
        With ``class_weight="balanced"`` its probabilities carry a balanced (0.5) training
        prior (:mod:`radfusion.evaluation.prior` undoes it). False where the weights do not
        reach the probabilities: no class weights (KNN, MLP), or the SVM, whose Platt
        sigmoid is fitted without them.
    """

    estimator_type: type
    build: Builder
    space_doc: str
    weighted_probabilities: bool = False


def _lr(cw: str | None, seed: int, class_ratio: float | None) -> tuple[BaseEstimator, dict]:
    est = LogisticRegression(class_weight=cw, max_iter=5000, random_state=seed)
    return est, {"C": loguniform(1e-3, 1e2)}


def _svm(cw: str | None, seed: int, class_ratio: float | None) -> tuple[BaseEstimator, dict]:
    est = SVC(kernel="rbf", class_weight=cw, random_state=seed)
    return est, {"C": loguniform(1e-2, 1e2), "gamma": loguniform(1e-4, 1.0)}


def _knn(cw: str | None, seed: int, class_ratio: float | None) -> tuple[BaseEstimator, dict]:
    return KNeighborsClassifier(), {
        "n_neighbors": [3, 5, 7, 9, 11, 15, 21],
        "weights": ["uniform", "distance"],
        "p": [1, 2],
    }


def _rf(cw: str | None, seed: int, class_ratio: float | None) -> tuple[BaseEstimator, dict]:
    return RandomForestClassifier(class_weight=cw, n_jobs=1, random_state=seed), {
        "n_estimators": [100, 200, 400],
        "max_depth": [None, 3, 5, 8],
        "min_samples_leaf": [1, 2, 4, 8],
        "max_features": ["sqrt", "log2", 0.5],
    }


def _mlp(cw: str | None, seed: int, class_ratio: float | None) -> tuple[BaseEstimator, dict]:
    return MLPClassifier(max_iter=1000, random_state=seed), {
        "hidden_layer_sizes": [(32,), (64,), (128,), (64, 32)],
        "alpha": loguniform(1e-5, 1e-1),
        "learning_rate_init": loguniform(1e-4, 1e-2),
    }


def _xgboost(cw: str | None, seed: int, class_ratio: float | None) -> tuple[BaseEstimator, dict]:
    spw = class_ratio if (cw and class_ratio is not None) else None
    est = XGBClassifier(
        tree_method="hist",
        eval_metric="logloss",
        scale_pos_weight=spw,
        n_jobs=1,
        random_state=seed,
        verbosity=0,
    )
    return est, {
        "max_depth": [2, 3, 4, 6],
        "learning_rate": loguniform(0.01, 0.3),
        "n_estimators": [100, 200, 400],
        "subsample": uniform(0.6, 0.4),
        "colsample_bytree": uniform(0.6, 0.4),
        "min_child_weight": [1, 3, 5],
    }


def _lightgbm(cw: str | None, seed: int, class_ratio: float | None) -> tuple[BaseEstimator, dict]:
    est = LGBMClassifier(class_weight=cw, subsample_freq=1, n_jobs=1, random_state=seed, verbose=-1)
    return est, {
        "num_leaves": [7, 15, 31],
        "learning_rate": loguniform(0.01, 0.3),
        "n_estimators": [100, 200, 400],
        "min_child_samples": [5, 10, 20],
        "subsample": uniform(0.6, 0.4),
    }


#: The zoo, keyed by the names of :data:`radfusion.config.CLASSIFIERS` (which config
#: validation reads) and in their order; the module docstring's table is made from it.
ZOO: dict[str, ZooEntry] = {
    "LR": ZooEntry(
        LogisticRegression,
        _lr,
        "L2 logistic regression (lbfgs): ``C`` log-uniform [1e-3, 1e2].",
        weighted_probabilities=True,
    ),
    "SVM": ZooEntry(
        SVC,
        _svm,
        "RBF SVC with sigmoid (Platt) probabilities: ``C`` log-uniform [1e-2, 1e2], "
        "``gamma`` log-uniform [1e-4, 1].",
    ),
    "KNN": ZooEntry(
        KNeighborsClassifier,
        _knn,
        "``n_neighbors`` {3, 5, 7, 9, 11, 15, 21}, ``weights`` {uniform, distance}, ``p`` {1, 2}.",
    ),
    "RF": ZooEntry(
        RandomForestClassifier,
        _rf,
        "``n_estimators`` {100, 200, 400}, ``max_depth`` {None, 3, 5, 8}, "
        "``min_samples_leaf`` {1, 2, 4, 8}, ``max_features`` {sqrt, log2, 0.5}.",
        weighted_probabilities=True,
    ),
    "MLP": ZooEntry(
        MLPClassifier,
        _mlp,
        "``hidden_layer_sizes`` {(32,), (64,), (128,), (64, 32)}, ``alpha`` log-uniform "
        "[1e-5, 1e-1], ``learning_rate_init`` log-uniform [1e-4, 1e-2].",
    ),
    "XGBoost": ZooEntry(
        XGBClassifier,
        _xgboost,
        "``max_depth`` {2, 3, 4, 6}, ``learning_rate`` (eta) log-uniform [0.01, 0.3], "
        "``n_estimators`` {100, 200, 400}, ``subsample`` / ``colsample_bytree`` uniform "
        "[0.6, 1], ``min_child_weight`` {1, 3, 5}.",
        weighted_probabilities=True,
    ),
    "LightGBM": ZooEntry(
        LGBMClassifier,
        _lightgbm,
        "``num_leaves`` {7, 15, 31}, ``learning_rate`` log-uniform [0.01, 0.3], "
        "``n_estimators`` {100, 200, 400}, ``min_child_samples`` {5, 10, 20}, "
        "``subsample`` uniform [0.6, 1] (bagging every iteration).",
        weighted_probabilities=True,
    ),
}
if tuple(ZOO) != CLASSIFIERS:  # the config's names and the zoo are one list
    raise ImportError(f"the zoo {tuple(ZOO)} does not match radfusion.config {CLASSIFIERS}")


def _zoo_table() -> str:
    """The zoo as a reStructuredText table (the module docstring's)."""
    rule = "=" * 8 + "  " + "=" * 80
    rows = []
    for name, entry in ZOO.items():
        lines = textwrap.wrap(entry.space_doc, 80)
        rows += [f"{name:<8}  {lines[0]}", *(f"{'':<8}  {line}" for line in lines[1:])]
    return "\n".join([rule, *rows, rule])


__doc__ = (__doc__ or "").replace("{zoo_table}", _zoo_table())


def make_classifier(
    name: str, cfg: ModelsConfig, seed: int = 0, class_ratio: float | None = None
) -> tuple[BaseEstimator, dict[str, Any]]:
    """One classifier of the zoo and its hyperparameter search space.

    Parameters
    ----------
    name : str
        The classifier, in the paper's words: one of :data:`ZOO`.
    cfg : ModelsConfig
        ``class_weight`` and ``calibrate`` are used.
    seed : int
        ``random_state`` of the estimator.
    class_ratio : float, optional
        ``n_negative / n_positive`` of the training labels: XGBoost's
        ``scale_pos_weight`` when ``cfg.class_weight == "balanced"``.

    Returns
    -------
    estimator : sklearn estimator
        Unfitted, with ``predict_proba``. A calibrated one requests ``groups`` for its
        ``fit`` (metadata routing), for patient-grouped calibration folds.
    search_space : dict
        Parameter name -> list of values or scipy distribution (see the module
        docstring), keys relative to ``estimator``.

    Raises
    ------
    ValueError
        On an unknown name.
    """
    if name not in ZOO:
        raise ValueError(f"unknown classifier {name!r}; choose one of {', '.join(ZOO)}")
    cw = "balanced" if cfg.class_weight == "balanced" else None
    est, space = ZOO[name].build(cw, seed, class_ratio)
    if name == "SVM" or cfg.calibrate:
        ensemble = name != "SVM"  # SVM: one SVC on all data, sigmoid fitted cross-validated
        est = GroupedCalibratedClassifierCV(
            est, method="sigmoid", cv=CALIBRATION_CV, ensemble=ensemble
        )
        space = {f"estimator__{k}": v for k, v in space.items()}
    return est, space


def classifier_name(estimator: Any) -> str:
    """The zoo name of a classifier (unwrapping calibration and :func:`build_model` pipelines).

    Raises
    ------
    ValueError
        If the estimator is not one of the zoo's classifiers.
    """
    if isinstance(estimator, Pipeline):
        estimator = estimator.steps[-1][1]
    if isinstance(estimator, CalibratedClassifierCV):
        estimator = estimator.estimator
    for name, entry in ZOO.items():
        if type(estimator) is entry.estimator_type:
            return name
    raise ValueError(f"{type(estimator).__name__} is not one of the zoo's classifiers")


def build_model(
    name: str,
    *,
    selection_cfg: SelectionConfig,
    models_cfg: ModelsConfig,
    seed: int = 0,
    class_ratio: float | None = None,
) -> Pipeline:
    """Selection chain plus one classifier: the whole leakage-safe model as one Pipeline.

    Parameters
    ----------
    name : str
        Classifier name (see :func:`make_classifier`).
    selection_cfg : SelectionConfig
        Settings of the selectors.
    models_cfg : ModelsConfig
        Settings of the classifier.
    seed : int
        Seeds LASSO's inner CV and the classifier.
    class_ratio : float, optional
        See :func:`make_classifier`.

    Returns
    -------
    sklearn.pipeline.Pipeline
        Unfitted; steps ``icc``, ``scaler``, ``spearman``, [``univariate``], ``lasso``,
        ``clf``. Transformers output DataFrames, so the classifier sees feature names.
        Patient data reach it at ``fit`` by metadata routing: reader 2's features
        (``reader2``, for the ICC filter; without them it is skipped) and ``groups``.
    """
    return with_classifier(selector_steps(selection_cfg, seed), name, models_cfg, seed, class_ratio)


def with_classifier(
    steps: list[tuple[str, Any]],
    name: str,
    models_cfg: ModelsConfig,
    seed: int,
    class_ratio: float | None,
) -> Pipeline:
    """``steps`` followed by the zoo's classifier ``name``: a model as tuning expects it.

    The classifier is the last step, named :data:`CLASSIFIER_STEP` (the tuning space and
    :func:`classifier_name` read it there), and the transformers output DataFrames, so the
    classifier sees feature names.

    Returns
    -------
    sklearn.pipeline.Pipeline
        Unfitted.
    """
    clf, _ = make_classifier(name, models_cfg, seed, class_ratio)
    return Pipeline([*steps, (CLASSIFIER_STEP, clf)]).set_output(transform="pandas")
