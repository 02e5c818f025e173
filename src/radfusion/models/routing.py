"""How patient data reaches each step of a model: scikit-learn metadata routing.

Groups (patients, augmented copies) reach every grouped inner CV; reader 2's features
reach the ICC filter; each case's centre and covariates reach ComBat. They travel as
routed fit / transform / predict parameters, never as constructor parameters, so a model
carries no patient data and ``clone`` / ``get_params`` stay plain.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import sklearn


def case_data(
    X: Any, *, reader2: Any = None, case_meta: pd.DataFrame | None = None
) -> dict[str, Any]:
    """Per-case patient data for the rows of ``X``, as metadata-routed parameters.

    Reader 2's features (``reader2``, for the ICC filters' ``fit``) and the centre and
    covariates (``case_meta``, for the ComBat harmonisers' ``fit`` and ``transform``)
    are not settings of a model: they travel with the rows, like ``groups``, through
    scikit-learn's metadata routing. Given row-aligned with ``X`` (same index), they are
    split with ``X`` by every cross-validation of a search.

    Parameters
    ----------
    X : pandas.DataFrame or array-like
        The rows (a DataFrame indexed by case id when the tables are DataFrames).
    reader2 : DataFrame, dict or None
        Reader 2's feature table by case id, or block name -> table (a Merged model's
        blocks, joined into one table: each block's ICC filter reads its own columns).
    case_meta : DataFrame or None
        Centre and covariates by case id.

    Returns
    -------
    dict
        ``reader2`` / ``case_meta`` (those given) aligned with the rows of ``X``.
    """
    if isinstance(reader2, Mapping):
        tables = [t for t in reader2.values() if t is not None]
        reader2 = pd.concat(tables, axis=1) if tables else None
    out: dict[str, Any] = {}
    for key, table in (("reader2", reader2), ("case_meta", case_meta)):
        if table is not None:
            out[key] = _aligned(table, X)
    return out


def _aligned(table: Any, X: Any) -> Any:
    """``table``'s rows for the rows of ``X`` (by case id; NaN for cases it lacks)."""
    if not (isinstance(table, pd.DataFrame) and isinstance(X, pd.DataFrame)):
        return table  # an array is row-aligned already
    if table.index.equals(X.index):
        return table
    return table.reindex(X.index)


def routed(estimator: Any, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """The ``params`` that ``estimator``'s ``method`` consumes by metadata routing.

    A model without an ICC filter (or a ComBat step) does not take ``reader2`` (or
    ``case_meta``), and scikit-learn refuses metadata that nothing requests.
    """
    if not params:
        return {}
    from sklearn.utils.metadata_routing import get_routing_for_object

    with group_routing():
        consumed = get_routing_for_object(estimator).consumes(method, list(params))
    return {k: v for k, v in params.items() if k in consumed}


def positive_proba(model: Any, X: Any, *, case_meta: pd.DataFrame | None = None) -> np.ndarray:
    """Probability of the positive class of a fitted model, its ComBat steps given ``case_meta``.

    Parameters
    ----------
    model : estimator
        Fitted, with ``predict_proba``.
    X : pandas.DataFrame or array-like
        The rows to score.
    case_meta : DataFrame, optional
        Centre and covariates by case id, routed to every ComBat harmoniser of ``model``
        (ignored by a model without one).

    Returns
    -------
    ndarray of shape (n_samples,)
    """
    return routed_call(model, "predict_proba", X, case_meta=case_meta)[:, -1]


def routed_call(
    model: Any, method: str, X: Any, *, case_meta: pd.DataFrame | None = None
) -> np.ndarray:
    """``model.<method>(X)`` with ``case_meta`` routed to the steps that request it."""
    params = routed(model, method, case_data(X, case_meta=case_meta))
    if not params:
        return getattr(model, method)(X)
    with group_routing():
        return getattr(model, method)(X, **params)


class RoutedAUC:
    """ROC AUC scorer of a search whose held-out folds' ``case_meta`` reaches the model.

    scikit-learn's ``"roc_auc"`` scorer scores ``decision_function`` (or the positive
    column of ``predict_proba``) without metadata; a ComBat step needs each held-out
    case's centre at ``transform``. This scorer requests ``case_meta`` (the search
    splits it with ``X``) and computes exactly what ``"roc_auc"`` does.
    """

    def get_metadata_routing(self) -> Any:
        """Request ``case_meta`` for scoring (a scorer has no ``score`` method to inspect)."""
        from sklearn.utils.metadata_routing import MetadataRequest

        request = MetadataRequest(owner=self)
        request.score.add_request(param="case_meta", alias=True)
        return request

    def __call__(
        self, estimator: Any, X: Any, y_true: Any, case_meta: pd.DataFrame | None = None
    ) -> float:
        from sklearn.metrics import roc_auc_score

        params = {} if case_meta is None else {"case_meta": case_meta}
        if hasattr(estimator, "decision_function"):
            score = estimator.decision_function(X, **params)
        else:
            score = estimator.predict_proba(X, **params)[:, 1]
        return float(roc_auc_score(y_true, score))


def group_routing() -> contextlib.AbstractContextManager[None]:
    """Turn on scikit-learn metadata routing for a fit, so ``groups`` reach every grouped CV.

    :class:`~radfusion.selection.LassoSelector` requests ``groups`` for its ``fit``; with
    routing on, a search, Pipeline or ColumnTransformer at any depth (the Merged models'
    per-block chains included) passes the groups given to the outer ``fit`` down to it,
    next to the outer CV splitter. The setting is scoped to the ``with`` block (and to
    the joblib workers it starts), never global.
    """
    return sklearn.config_context(enable_metadata_routing=True)


def group_fit_params(pipeline: Any, groups: Any) -> dict[str, Any]:
    """Fit parameters that hand ``groups`` to every grouped inner CV of ``pipeline``.

    ``{"groups": groups}`` (empty without groups), passed to the outer ``fit`` and routed
    by metadata routing to each step that requests them, at any depth, so the fit must
    run inside :func:`group_routing`.

    Parameters
    ----------
    pipeline : estimator
        A model pipeline (its LASSO steps, if any, tune their penalty by grouped CV).
    groups : array-like or None
        Group of each training row.

    Returns
    -------
    dict
    """
    return {} if groups is None else {"groups": np.asarray(groups)}
