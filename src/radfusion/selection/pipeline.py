"""The paper's feature-selection chain as one scikit-learn Pipeline, and its report."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.feature_selection import SelectorMixin
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from radfusion.config import SelectionConfig
from radfusion.selection.icc import ICCFilter
from radfusion.selection.lasso import LassoSelector
from radfusion.selection.power import YeoJohnsonTransformer
from radfusion.selection.spearman import SpearmanFilter
from radfusion.selection.univariate import MannWhitneyFilter

#: Step names of :func:`build_selector`, in order ("univariate" only when enabled).
SELECTION_STEPS = ("icc", "scaler", "spearman", "univariate", "lasso")


def make_scaler(kind: str = "zscore") -> Any:
    """The feature standardisation step of the selection chain.

    ``zscore``: the paper's z-score. ``yeo-johnson``: a z-score first (so the power
    transform's optimisation is numerically safe on features of any magnitude), then
    the Yeo-Johnson transform with its own standardisation, making skewed and
    heavy-tailed features closer to normal (scikit-learn's PowerTransformer, computed
    for all features at once: :class:`~radfusion.selection.power.YeoJohnsonTransformer`).
    """
    if kind == "zscore":
        return StandardScaler()
    if kind == "yeo-johnson":
        return Pipeline([("z", StandardScaler()), ("power", YeoJohnsonTransformer())])
    raise ValueError(f"unknown scaler {kind!r}; use 'zscore' or 'yeo-johnson'")


def selector_steps(cfg: SelectionConfig, seed: int = 0) -> list[tuple[str, Any]]:
    """The (name, estimator) steps of the selection chain, unfitted.

    See :func:`build_selector`; this form lets a model pipeline append its
    classifier to the same flat list of steps.
    """
    steps: list[tuple[str, Any]] = [
        ("icc", ICCFilter(threshold=cfg.icc_threshold, form=cfg.icc_form)),
        ("scaler", make_scaler(cfg.scaler)),
        ("spearman", SpearmanFilter(threshold=cfg.spearman_threshold)),
    ]
    if cfg.univariate:
        steps.append(("univariate", MannWhitneyFilter(alpha=cfg.univariate_alpha)))
    steps.append(
        (
            "lasso",
            LassoSelector(
                Cs=cfg.lasso_cs,
                cv=cfg.lasso_cv,
                max_features=cfg.max_features,
                random_state=seed,
                rule=cfg.lasso_rule,
            ),
        )
    )
    return steps


def build_selector(cfg: SelectionConfig, seed: int = 0) -> Pipeline:
    """The feature-selection pipeline: ICC -> z-score -> Spearman -> [Mann-Whitney] -> LASSO.

    Every step is fitted on the rows given to ``fit`` only, so inside a
    cross-validation fold or a train/validation/test split nothing outside the
    training rows influences which features are kept.

    The ICC filter comes first because the ICC is unchanged by any transform
    applied to both readers, whereas a scaler fitted on ``X`` would transform
    reader 1 only. Spearman's rank correlation is unchanged by the z-score, so the
    kept set is the same as with the paper's order z-score -> Spearman -> ICC ->
    LASSO up to the order in which the two filters are applied.

    Parameters
    ----------
    cfg : SelectionConfig
        Thresholds and LASSO settings.
    seed : int
        Seeds the LASSO inner CV.

    Returns
    -------
    sklearn.pipeline.Pipeline
        Unfitted, with steps named ``icc``, ``scaler``, ``spearman``, [``univariate``],
        ``lasso``; outputs pandas DataFrames so feature names flow through. Its ``fit``
        takes reader 2's feature table as ``reader2`` (routed to the ICC filter, see
        :class:`ICCFilter`; without it the ICC filter is skipped, as
        :func:`selection_report` records) and ``groups`` (routed to the LASSO).
    """
    return Pipeline(selector_steps(cfg, seed)).set_output(transform="pandas")


def _unwrap(model: Any) -> Pipeline:
    model = getattr(model, "best_estimator_", model)  # a fitted hyperparameter search
    model = getattr(model, "pipeline", model)  # radfusion.models.FittedModel
    if not isinstance(model, Pipeline):
        raise TypeError(f"expected a fitted Pipeline, got {type(model).__name__}")
    return model


def selection_report(pipeline: Any) -> dict[str, Any]:
    """How many features survived each selection step, which, and their LASSO weights.

    Parameters
    ----------
    pipeline : Pipeline, fitted search or FittedModel
        A fitted :func:`build_selector` pipeline, or a model pipeline that starts
        with those steps.

    Returns
    -------
    dict
        ``n_features``: ``{"input": 567, "icc": 540, "spearman": 210, "lasso": 77}``
        (features left after each selector, in pipeline order); ``notes``: e.g.
        ``{"icc": "skipped: no second delineation"}``; ``kept``: names after the last
        selector; ``dropped``: names dropped per step; ``spearman_redundant_with``:
        dropped name -> the kept name it duplicates; ``icc``: form, threshold, number
        of cases, ICC per input feature; ``lasso``: ``C``, CV-chosen C, fallback
        flag, whether its inner CV was grouped, best mean inner-CV AUC, and ``coef``
        name -> coefficient.

    Raises
    ------
    TypeError
        If ``pipeline`` is not a Pipeline.
    sklearn.exceptions.NotFittedError
        If it is not fitted.
    """
    pipe = _unwrap(pipeline)
    first = pipe.steps[0][1]
    n_in = int(first.n_features_in_)
    names = np.asarray(
        getattr(first, "feature_names_in_", [f"x{i}" for i in range(n_in)]), dtype=object
    )
    report: dict[str, Any] = {
        "n_features": {"input": n_in},
        "notes": {},
        "dropped": {},
    }
    for step_name, step in pipe.steps:
        if not isinstance(step, SelectorMixin):
            continue
        mask = step.get_support()
        report["n_features"][step_name] = int(mask.sum())
        report["dropped"][step_name] = names[~mask].tolist()
        if isinstance(step, ICCFilter):
            report["icc"] = {
                "form": step.form,
                "threshold": step.threshold,
                "n_cases": step.n_cases_,
                "skipped": step.skipped_,
                "values": dict(zip(names.tolist(), step.icc_.tolist(), strict=True)),
            }
            if step.skipped_:
                report["notes"][step_name] = f"skipped: {step.skip_reason_}"
        elif isinstance(step, SpearmanFilter):
            report["spearman_redundant_with"] = {
                names[i]: names[j] for i, j in enumerate(step.redundant_with_) if j >= 0
            }
            if step.constant_.any():
                report["notes"][step_name] = f"{int(step.constant_.sum())} constant feature(s)"
        elif isinstance(step, MannWhitneyFilter) and step.fallback_:
            report["notes"][step_name] = "no feature reached alpha: smallest p kept"
        elif isinstance(step, LassoSelector):
            report["lasso"] = {
                "C": step.C_,
                "cv_C": step.cv_C_,
                "fallback": step.fallback_,
                "grouped": bool(step.grouped_),
                "cv_auc": float(np.nanmax(step.cv_scores_.mean(axis=0))),
                "coef": dict(zip(names[mask].tolist(), step.coef_.tolist(), strict=True)),
            }
            if step.fallback_:
                report["notes"][step_name] = (
                    f"CV-chosen C={step.cv_C_:.3g} kept no feature: used C={step.C_:.3g}"
                )
        names = names[mask]
    report["kept"] = names.tolist()
    return report
