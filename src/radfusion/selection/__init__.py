"""Feature selection fitted on training data only: ICC, scaling, Spearman, Mann-Whitney, LASSO.

Every selector is a scikit-learn estimator (``fit`` learns, ``transform`` selects,
``get_feature_names_out`` names the kept features), so the whole selection chain
lives inside a :class:`~sklearn.pipeline.Pipeline` and is refit within every
training fold.
"""

from radfusion.selection.icc import ICC_FORMS, ICCFilter, intraclass_correlation
from radfusion.selection.lasso import LassoSelector
from radfusion.selection.pipeline import (
    SELECTION_STEPS,
    build_selector,
    selection_report,
    selector_steps,
)
from radfusion.selection.power import YeoJohnsonTransformer
from radfusion.selection.spearman import SpearmanFilter, spearman_matrix
from radfusion.selection.univariate import MannWhitneyFilter

__all__ = [
    "ICC_FORMS",
    "SELECTION_STEPS",
    "ICCFilter",
    "LassoSelector",
    "MannWhitneyFilter",
    "SpearmanFilter",
    "YeoJohnsonTransformer",
    "build_selector",
    "intraclass_correlation",
    "selection_report",
    "selector_steps",
    "spearman_matrix",
]
