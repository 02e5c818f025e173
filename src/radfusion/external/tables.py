"""The statistics of an external validation, from the scored external cases.

Every number comes from the study's own code: :func:`radfusion.evaluation.metrics_table`
(AUC with DeLong CI, ACC/SEN/SPE/PPV/NPV/F1 with CIs at a given threshold, Brier score),
:func:`radfusion.evaluation.delong_matrices`, the calibration / decision-curve tables,
:func:`radfusion.evaluation.subgroups.subgroup_table` and
:func:`~radfusion.evaluation.subgroups.external_validation` (per-centre rows, pooled
random-effects AUC) and :func:`radfusion.stats.logistic_calibration` (calibration-in-the-
large and slope). The external cases are evaluated as the study evaluates its test set:
they are given the split ``"test"`` in the frames passed to those functions, and the
threshold of every model is the one frozen in the bundle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from radfusion.config import EvaluationConfig
from radfusion.evaluation import (
    calibration_table,
    decision_curve_table,
    delong_matrices,
    main_models,
    metrics_table,
    model_order,
)
from radfusion.evaluation.subgroups import external_validation, subgroup_columns, subgroup_table
from radfusion.stats import (
    RECALIBRATION_METHODS,
    brier_score,
    delong_test,
    logistic_calibration,
    recalibrate,
)

__all__ = [
    "EVAL_SPLIT",
    "calibration_summary",
    "centre_tables",
    "delong_and_curves",
    "evaluation_frame",
    "external_metrics",
    "frozen_vs_harmonised",
    "internal_external",
    "recalibrated_predictions",
    "recalibration_table",
]

#: The split the external cases take in the study's evaluation functions.
EVAL_SPLIT = "test"


def evaluation_frame(scored: pd.DataFrame, labels: Mapping[str, int]) -> pd.DataFrame:
    """Scored cases (``predict_bundle``'s output) as a predictions table of the study.

    Adds ``label`` and ``split`` (:data:`EVAL_SPLIT`); the columns are those that
    :func:`radfusion.evaluation.validate_predictions` expects.
    """
    df = scored.copy()
    df["case_id"] = df["case_id"].astype(str)
    df["label"] = df["case_id"].map(labels).astype(int)
    df["split"] = EVAL_SPLIT
    df["selected"] = df["selected"].astype(bool)
    return df


def external_metrics(
    preds: pd.DataFrame,
    thresholds: Mapping[str, float],
    ev: EvaluationConfig,
    *,
    seed: int = 0,
) -> pd.DataFrame:
    """Every model's performance on the external cases at its frozen threshold.

    Returns
    -------
    DataFrame
        :func:`radfusion.evaluation.metrics_table`'s columns (without ``split``) plus
        :meth:`radfusion.stats.LogisticCalibration.as_dict`'s (calibration-in-the-large and
        slope with their CIs).
    """
    m = metrics_table(preds, thresholds, ev, seed=seed).drop(columns=["split"])
    cal = calibration_summary(preds)
    return m.merge(cal, on="model", how="left")


def calibration_summary(preds: pd.DataFrame) -> pd.DataFrame:
    """Calibration-in-the-large and calibration slope (95 % CIs) of every model."""
    rows = []
    for model in model_order(preds):
        sub = preds[preds["model"] == model]
        cal = logistic_calibration(sub["label"].to_numpy(), sub["probability"].to_numpy())
        rows.append({"model": model, **cal.as_dict()})
    return pd.DataFrame(rows)


def _se_from_ci(auc: float, low: float, high: float) -> float:
    # the study's DeLong intervals are symmetric unless clipped at 0 or 1: the wider side
    # is the unclipped one
    z = float(sps.norm.isf(0.025))
    half = max(auc - low, high - auc)
    return half / z if math.isfinite(half) and half > 0 else math.nan


def internal_external(metrics: pd.DataFrame, card_test: Mapping[str, Any]) -> pd.DataFrame:
    """Each model's development test AUC (from the bundle's model card) beside the external.

    The two cohorts are independent, so the difference's standard error is
    ``sqrt(SE_int² + SE_ext²)``, each SE read from its 95 % DeLong interval.

    Returns
    -------
    DataFrame
        ``model, family, selected, internal_n, internal_auc, internal_auc_low,
        internal_auc_high, external_n, external_auc, external_auc_low, external_auc_high,
        difference, difference_low, difference_high, p_value`` (NaN where the card has no
        test result for a model).
    """
    z = float(sps.norm.isf(0.025))
    rows = []
    for r in metrics.itertuples(index=False):
        t = card_test.get(r.model) or {}

        def num(key: str, t: Mapping[str, Any] = t) -> float:
            v = t.get(key)
            return float(v) if isinstance(v, int | float) else math.nan

        ia, il, ih = num("auc"), num("auc_low"), num("auc_high")
        diff = float(r.auc) - ia
        se = math.hypot(_se_from_ci(ia, il, ih), _se_from_ci(r.auc, r.auc_low, r.auc_high))
        ok = math.isfinite(diff) and math.isfinite(se) and se > 0
        rows.append(
            {
                "model": r.model,
                "family": r.family,
                "selected": r.selected,
                "internal_n": t.get("n", math.nan),
                "internal_auc": ia,
                "internal_auc_low": il,
                "internal_auc_high": ih,
                "external_n": r.n,
                "external_auc": r.auc,
                "external_auc_low": r.auc_low,
                "external_auc_high": r.auc_high,
                "difference": diff,
                "difference_low": diff - z * se if ok else math.nan,
                "difference_high": diff + z * se if ok else math.nan,
                "p_value": float(2 * sps.norm.sf(abs(diff) / se)) if ok else math.nan,
            }
        )
    return pd.DataFrame(rows)


def centre_tables(
    preds: pd.DataFrame,
    cases: pd.DataFrame,
    thresholds: Mapping[str, float],
    ev: EvaluationConfig,
) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Per-centre performance of the selected models, and their pooled AUC.

    Returns
    -------
    (per_centre, pooled) or None
        :func:`radfusion.evaluation.subgroups.subgroup_table` rows for the ``center``
        column (AUC with DeLong CI, SEN and SPE at the frozen threshold), and
        :func:`~radfusion.evaluation.subgroups.external_validation` rows (per centre and
        DerSimonian-Laird pooled per family); None without a ``center`` column.
    """
    groups, _ = subgroup_columns(cases, [], {})
    if "center" not in groups.columns:
        return None
    mains = main_models(preds)
    per_centre = subgroup_table(
        preds,
        groups[["center"]],
        thresholds,
        mains,
        splits=(EVAL_SPLIT,),
        min_events=ev.min_subgroup_events,
    )
    sel = preds[preds["model"].isin(mains)].copy()
    centre = groups["center"].reindex(sel["case_id"].astype(str)).to_numpy()
    sel = sel.assign(fold=centre).dropna(subset=["fold"])
    pooled = external_validation(sel, {})
    return per_centre, pooled


def recalibration_table(preds: pd.DataFrame, calibration: pd.DataFrame) -> pd.DataFrame:
    """The two updating maps of every model, fitted on the external cases, and their effect.

    Returns
    -------
    DataFrame
        Per model and method (:data:`radfusion.stats.RECALIBRATION_METHODS`):
        ``intercept, slope`` of the map ``expit(intercept + slope * logit p)``, the Brier
        score before and after and the calibration-in-the-large / slope after (apparent:
        measured on the cases the map was fitted on), and ``note`` when a model cannot be
        recalibrated (one class, separated scores, a slope <= 0).
    """
    rows = []
    cal = calibration.set_index("model")
    for model in model_order(preds):
        sub = preds[preds["model"] == model]
        y, p = sub["label"].to_numpy(), sub["probability"].to_numpy(dtype=float)
        c = cal.loc[model]
        for method in RECALIBRATION_METHODS:
            if method == "intercept":
                a, b = float(c["citl"]), 1.0
            else:
                a, b = float(c["slope_intercept"]), float(c["slope"])
            row: dict[str, Any] = {
                "model": model,
                "method": method,
                "intercept": a,
                "slope": b,
                "brier_frozen": brier_score(y, p),
            }
            if not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
                why = c["calibration_note"] or "the fitted slope is not positive"
                rows.append({**row, "brier_recalibrated": math.nan, "note": why})
                continue
            q = recalibrate(p, a, b)
            after = logistic_calibration(y, q)
            rows.append(
                {
                    **row,
                    "brier_recalibrated": brier_score(y, q),
                    "citl_recalibrated": after.citl.value,
                    "slope_recalibrated": after.slope.value,
                    "note": "",
                }
            )
    return pd.DataFrame(rows)


def recalibrated_predictions(
    preds: pd.DataFrame, table: pd.DataFrame, models: Sequence[str]
) -> pd.DataFrame:
    """Predictions of ``models`` as frozen and under each recalibration, as pseudo-models.

    The model column reads ``"<model> (frozen)"``, ``"<model> (intercept)"``,
    ``"<model> (logistic)"``, so that the study's calibration plot draws them together.
    """
    parts = []
    for model in models:
        sub = preds[preds["model"] == model]
        parts.append(sub.assign(model=f"{model} (frozen)"))
        for r in table[(table["model"] == model) & (table["note"] == "")].itertuples():
            q = recalibrate(sub["probability"].to_numpy(dtype=float), r.intercept, r.slope)
            parts.append(sub.assign(model=f"{model} ({r.method})", probability=q))
    return pd.concat(parts, ignore_index=True) if parts else preds.iloc[:0]


def delong_and_curves(
    preds: pd.DataFrame, ev: EvaluationConfig
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """DeLong p-values between the selected models, calibration bins and decision curves."""
    mains = main_models(preds)
    delong = delong_matrices(preds, mains, [EVAL_SPLIT])[EVAL_SPLIT]
    cal = calibration_table(preds, mains, ev.calibration_bins, ev.calibration_strategy)
    dca = decision_curve_table(preds, mains)
    return delong, cal.drop(columns="split"), dca.drop(columns="split")


def frozen_vs_harmonised(
    preds: pd.DataFrame,
    harmonised: pd.DataFrame,
    metrics: pd.DataFrame,
    metrics_h: pd.DataFrame,
) -> pd.DataFrame:
    """Each model as frozen and with its new centres harmonised, side by side.

    The two score the same cases, so their AUCs are compared with the paired DeLong test.

    Returns
    -------
    DataFrame
        ``model, family, selected``, then ``auc, auc_low, auc_high, sen, spe, brier, citl,
        slope`` with the suffixes ``_frozen`` and ``_harmonised``, and ``delong_p``.
    """
    keep = ["auc", "auc_low", "auc_high", "sen", "spe", "brier", "citl", "slope"]
    left = metrics[["model", "family", "selected", *keep]]
    right = metrics_h[["model", *keep]]
    out = left.merge(right, on="model", suffixes=("_frozen", "_harmonised"))
    p_values = []
    for model in out["model"]:
        a = preds[preds["model"] == model].set_index("case_id")
        b = harmonised[harmonised["model"] == model].set_index("case_id").reindex(a.index)
        y = a["label"].to_numpy()
        if np.allclose(a["probability"], b["probability"]) or min(y.sum(), (1 - y).sum()) < 2:
            p_values.append(math.nan)  # nothing changed (e.g. a deep model) or too few cases
            continue
        p_values.append(delong_test(y, a["probability"], b["probability"]).p_value)
    out["delong_p"] = p_values
    return out
