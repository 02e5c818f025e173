"""Feature importance of a fitted model, on the features its selection chain kept."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["feature_importance"]


def feature_importance(
    fitted: Any,
    X: pd.DataFrame,
    y: np.ndarray,
    seed: int,
    *,
    case_meta: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Feature importance of a fitted model on its selected features.

    Linear models: |coefficient| of the standardised features; tree ensembles: their
    impurity / gain importances; others: permutation importance (AUC drop) on the
    training rows.

    Parameters
    ----------
    fitted : FittedModel
        A tuned model (:class:`radfusion.models.FittedModel`): its ``pipeline`` ends with
        the classifier.
    X : DataFrame
        The training rows (all features; the pipeline selects).
    y : array
        Their labels (for the permutation importance).
    seed : int
        Seed of the permutations.
    case_meta : DataFrame, optional
        Centre and covariates by case id, for a ComBat step of the pipeline.

    Returns
    -------
    DataFrame
        ``feature``, ``importance``, ``kind``, largest first.
    """
    from sklearn.inspection import permutation_importance

    from radfusion.models.routing import routed_call

    pipe = fitted.pipeline
    clf = pipe.steps[-1][1]
    Xt = routed_call(pipe[:-1], "transform", X, case_meta=case_meta)
    names = list(Xt.columns)
    inner = getattr(clf, "estimator", clf)
    if hasattr(clf, "coef_"):
        imp = np.abs(np.ravel(clf.coef_))
        kind = "|coefficient|"
    elif hasattr(inner, "feature_importances_") and hasattr(clf, "feature_importances_"):
        imp = np.asarray(clf.feature_importances_, dtype=float)
        kind = "impurity/gain"
    else:
        res = permutation_importance(
            clf, Xt, y, scoring="roc_auc", n_repeats=5, random_state=seed, n_jobs=1
        )
        imp = res.importances_mean
        kind = "permutation (AUC drop)"
    out = pd.DataFrame({"feature": names, "importance": imp, "kind": kind})
    return out.sort_values("importance", ascending=False, ignore_index=True)
