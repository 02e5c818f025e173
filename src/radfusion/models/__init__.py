"""The classifier zoo (LR, SVM, KNN, RF, MLP, XGBoost, LightGBM) and its tuning.

A model is one scikit-learn Pipeline: the selection chain of
:mod:`radfusion.selection` followed by a classifier, tuned by (grouped)
cross-validation inside the training data. :func:`select_best` chooses each family's model
among its classifiers; :func:`feature_importance` explains the chosen one.
"""

from radfusion.models.calibration import GroupedCalibratedClassifierCV
from radfusion.models.choose import select_best
from radfusion.models.importance import feature_importance
from radfusion.models.routing import case_data, group_fit_params, group_routing, positive_proba
from radfusion.models.tuning import (
    FittedModel,
    TuningOutcome,
    fit_zoo,
    inner_cv,
    tune_model,
    tuning_outcome,
)
from radfusion.models.zoo import (
    CALIBRATION_CV,
    CLASSIFIER_STEP,
    CLASSIFIERS,
    build_model,
    classifier_name,
    make_classifier,
    with_classifier,
)

__all__ = [
    "CALIBRATION_CV",
    "CLASSIFIERS",
    "CLASSIFIER_STEP",
    "FittedModel",
    "GroupedCalibratedClassifierCV",
    "TuningOutcome",
    "build_model",
    "case_data",
    "classifier_name",
    "feature_importance",
    "fit_zoo",
    "group_fit_params",
    "group_routing",
    "inner_cv",
    "make_classifier",
    "positive_proba",
    "select_best",
    "tune_model",
    "tuning_outcome",
    "with_classifier",
]
