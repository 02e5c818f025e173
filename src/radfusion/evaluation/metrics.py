"""Operating thresholds, per-model metrics and the paper's tables from a predictions table.

Every function takes the run's predictions (one row per original case and model; see
:func:`validate_predictions`) and uses :mod:`radfusion.stats` for the statistics, so the numbers
here are the numbers checked there.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd

from radfusion.config import EvaluationConfig, StudyConfig
from radfusion.errors import ConfigError, RadfusionError
from radfusion.evaluation.palette import SPLIT_LABELS, SPLITS, model_order
from radfusion.families import FAMILIES, FAMILY_LABELS
from radfusion.stats import (
    Estimate,
    baseline_table,
    binary_metrics,
    brier_score,
    calibration_curve_data,
    decision_curve,
    pairwise_delong,
    youden_threshold,
)
from radfusion.stats.formatting import format_number

__all__ = [
    "METRIC_NAMES",
    "PREDICTION_COLUMNS",
    "calibration_table",
    "choose_thresholds",
    "decision_curve_table",
    "delong_matrices",
    "families_present",
    "family_models",
    "main_models",
    "metrics_table",
    "splits_present",
    "table1",
    "table2",
    "validate_predictions",
]

PREDICTION_COLUMNS = (
    "case_id",
    "split",
    "label",
    "family",
    "model",
    "classifier",
    "probability",
    "selected",
)
#: Threshold metrics of Table 2 (besides AUC), in the paper's order.
METRIC_NAMES = ("acc", "sen", "spe", "ppv", "npv", "f1")
_COHORT_LABELS = {"train": "Training cohort", "val": "Validation cohort", "test": "Test cohort"}


# ---------------------------------------------------------------------------------------------
# The predictions table
# ---------------------------------------------------------------------------------------------
def validate_predictions(preds: pd.DataFrame) -> pd.DataFrame:
    """Check a run's predictions table and return a clean copy.

    Parameters
    ----------
    preds : pandas.DataFrame
        Columns :data:`PREDICTION_COLUMNS`: one row per (original case, model).

    Returns
    -------
    pandas.DataFrame
        ``case_id``, ``model``, ``family``, ``classifier``, ``split`` as str, ``label`` as int,
        ``probability`` as float, ``selected`` as bool.

    Raises
    ------
    RadfusionError
        Missing columns, an unknown split, a label other than 0/1, a probability outside
        [0, 1] or missing, a duplicated (model, case), a case whose label differs between
        models, a model in two families, or a family without exactly one selected model.
    """
    missing = [c for c in PREDICTION_COLUMNS if c not in preds.columns]
    if missing:
        raise RadfusionError(f"predictions table lacks column(s) {missing}")
    df = preds.copy()
    for col in ("case_id", "model", "family", "classifier", "split"):
        df[col] = df[col].astype(str)
    bad_split = sorted(set(df["split"]) - set(SPLITS))
    if bad_split:
        raise RadfusionError(f"predictions have unknown split(s) {bad_split}; expected {SPLITS}")
    label = pd.to_numeric(df["label"], errors="coerce")
    if label.isna().any() or not label.isin((0, 1)).all():
        bad = df.loc[label.isna() | ~label.isin((0, 1)), "case_id"].unique()[:5].tolist()
        raise RadfusionError(f"labels must be 0 or 1; cases {bad} have other values")
    df["label"] = label.astype(int)
    prob = pd.to_numeric(df["probability"], errors="coerce")
    bad_p = prob.isna() | (prob < 0) | (prob > 1)
    if bad_p.any():
        row = df[bad_p].iloc[0]
        raise RadfusionError(
            f"model {row['model']}, case {row['case_id']}: probability "
            f"{row['probability']!r} is not a number in [0, 1] ({int(bad_p.sum())} such rows)"
        )
    df["probability"] = prob.astype(float)
    sel = df["selected"]
    if sel.dtype == object:  # e.g. "True"/"False" text from a CSV round trip
        sel = sel.map(lambda v: str(v).strip().lower() in ("true", "1", "yes"))
    df["selected"] = sel.astype(bool)
    dup = df.duplicated(["model", "case_id"])
    if dup.any():
        row = df[dup].iloc[0]
        raise RadfusionError(
            f"model {row['model']} has more than one row for case {row['case_id']}"
        )
    n_labels = df.groupby("case_id")["label"].nunique()
    if (n_labels > 1).any():
        raise RadfusionError(
            f"case(s) {n_labels[n_labels > 1].index[:5].tolist()} have different labels in "
            "different models' predictions"
        )
    n_split = df.groupby("case_id")["split"].nunique()
    if (n_split > 1).any():
        raise RadfusionError(
            f"case(s) {n_split[n_split > 1].index[:5].tolist()} are in different splits in "
            "different models' predictions"
        )
    per_model = df.groupby("model")[["family", "classifier", "selected"]].nunique()
    if (per_model > 1).any().any():
        bad_m = per_model[(per_model > 1).any(axis=1)].index.tolist()
        raise RadfusionError(f"model(s) {bad_m} have more than one family/classifier/selected")
    sel = df.drop_duplicates("model").groupby("family")["selected"].sum()
    wrong = sel[sel != 1]
    if len(wrong):
        detail = ", ".join(f"{f}: {int(k)}" for f, k in wrong.items())
        raise RadfusionError(
            f"every family needs exactly one selected model; selected models per family: {detail}"
        )
    return df


def splits_present(preds: pd.DataFrame) -> list[str]:
    """The splits that have predictions, in train / val / test order."""
    have = set(preds["split"].astype(str))
    return [s for s in SPLITS if s in have]


def main_models(preds: pd.DataFrame) -> list[str]:
    """The selected model of each family (the paper's Figure 4 models), in family order."""
    order = model_order(preds)
    chosen = set(preds.loc[preds["selected"].astype(bool), "model"].astype(str))
    return [m for m in order if m in chosen]


def family_models(preds: pd.DataFrame, family: str) -> list[str]:
    """All models of one family (e.g. the 7 radiomics classifiers of Figure 3), in zoo order."""
    return model_order(preds[preds["family"] == family])


# ---------------------------------------------------------------------------------------------
# Thresholds and metrics
# ---------------------------------------------------------------------------------------------
def choose_thresholds(preds: pd.DataFrame, cfg: EvaluationConfig) -> dict[str, float]:
    """Operating threshold of every model, chosen on the training or validation split only.

    Parameters
    ----------
    preds : pandas.DataFrame
        Validated predictions (:func:`validate_predictions`).
    cfg : EvaluationConfig
        ``threshold`` ("youden" or "fixed"), ``threshold_source`` ("train" or "val") and
        ``fixed_threshold``.

    Returns
    -------
    dict
        Model -> threshold (predicted positive iff ``probability >= threshold``). Test-set
        predictions are never read, so they cannot influence any threshold.

    Raises
    ------
    ConfigError
        Youden's threshold is requested on a split where a model has no predictions or only
        one class.
    """
    if cfg.threshold_source not in ("train", "val"):  # guarded by the config; never test
        raise ConfigError(f"threshold_source must be train or val, got {cfg.threshold_source!r}")
    out: dict[str, float] = {}
    source = preds[preds["split"] == cfg.threshold_source]
    for model in model_order(preds):
        if cfg.threshold == "fixed":
            out[model] = float(cfg.fixed_threshold)
            continue
        sub = source[source["model"] == model]
        n_pos = int(sub["label"].sum())
        n_neg = len(sub) - n_pos
        if n_pos == 0 or n_neg == 0:
            raise ConfigError(
                f"cannot choose the Youden threshold of {model} on the "
                f"{cfg.threshold_source} split: it has {n_pos} positive and {n_neg} negative "
                "case(s). Use evaluation.threshold_source=train or threshold=fixed."
            )
        out[model] = youden_threshold(sub["label"].to_numpy(), sub["probability"].to_numpy())
    return out


def _nan_estimate() -> Estimate:
    return Estimate(math.nan, math.nan, math.nan)


def metrics_table(
    preds: pd.DataFrame,
    thresholds: Mapping[str, float],
    cfg: EvaluationConfig,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Performance of every model on every split at its fixed threshold.

    Parameters
    ----------
    preds : pandas.DataFrame
        Validated predictions.
    thresholds : Mapping[str, float]
        Model -> threshold (from :func:`choose_thresholds`).
    cfg : EvaluationConfig
        ``ci_method`` ("delong" or "bootstrap") and ``n_bootstrap``.
    seed : int, default 0
        Bootstrap seed (F1 interval, and the AUC interval with ``ci_method="bootstrap"``).
    alpha : float, default 0.05
        Two-sided error rate (95 % intervals).

    Returns
    -------
    pandas.DataFrame
        One row per (model, split): ``model, family, classifier, selected, split, n, n_pos``,
        ``auc, auc_low, auc_high`` and the same triple for ``acc, sen, spe, ppv, npv, f1``
        (Wilson intervals for proportions, bootstrap for F1), ``tp, fp, tn, fn, brier,
        threshold, auc_method, note``. A split with one class only gets NaN metrics and a note.

    Raises
    ------
    KeyError
        A model has no threshold.
    """
    rows = []
    meta = preds.drop_duplicates("model").set_index("model")
    for model in model_order(preds):
        thr = float(thresholds[model])
        for split in splits_present(preds):
            sub = preds[(preds["model"] == model) & (preds["split"] == split)]
            if sub.empty:
                continue
            y = sub["label"].to_numpy()
            p = sub["probability"].to_numpy()
            row: dict[str, object] = {
                "model": model,
                "family": meta.at[model, "family"],
                "classifier": meta.at[model, "classifier"],
                "selected": bool(meta.at[model, "selected"]),
                "split": split,
                "n": len(sub),
                "n_pos": int(y.sum()),
            }
            note = ""
            if 0 < y.sum() < y.size:
                bm = binary_metrics(
                    y,
                    p,
                    thr,
                    alpha=alpha,
                    n_boot=cfg.n_bootstrap,
                    seed=seed,
                    auc_method=cfg.ci_method,
                )
                values = bm.as_dict()
                for name in ("auc", *METRIC_NAMES):
                    for suffix in ("", "_low", "_high"):
                        row[f"{name}{suffix}"] = values[f"{name}{suffix}"]
                row.update(tp=bm.tp, fp=bm.fp, tn=bm.tn, fn=bm.fn)
            else:
                note = "one class only: AUC and threshold metrics undefined"
                for name in ("auc", *METRIC_NAMES):
                    for suffix in ("", "_low", "_high"):
                        row[f"{name}{suffix}"] = math.nan
                pred = p >= thr
                row.update(
                    tp=int((pred & (y == 1)).sum()),
                    fp=int((pred & (y == 0)).sum()),
                    tn=int((~pred & (y == 0)).sum()),
                    fn=int((~pred & (y == 1)).sum()),
                )
            row.update(brier=brier_score(y, p), threshold=thr, auc_method=cfg.ci_method, note=note)
            rows.append(row)
    return pd.DataFrame(rows)


def delong_matrices(
    preds: pd.DataFrame, models: Sequence[str], splits: Sequence[str] | None = None
) -> dict[str, pd.DataFrame]:
    """Pairwise two-sided DeLong p-values between ``models``, one matrix per split.

    Parameters
    ----------
    preds : pandas.DataFrame
        Validated predictions.
    models : sequence of str
        Models compared (row / column order).
    splits : sequence of str, optional
        Default: every split with predictions.

    Returns
    -------
    dict
        Split -> square symmetric DataFrame (diagonal 1). Only cases scored by every model
        are used (the test is paired). A split with fewer than 2 cases of a class gets NaN
        off the diagonal.
    """
    out: dict[str, pd.DataFrame] = {}
    models = list(models)
    for split in splits or splits_present(preds):
        sub = preds[(preds["split"] == split) & preds["model"].isin(models)]
        wide = sub.pivot(index="case_id", columns="model", values="probability")
        wide = wide.reindex(columns=models).dropna()
        labels = sub.drop_duplicates("case_id").set_index("case_id")["label"]
        y = labels.reindex(wide.index).to_numpy()
        n_pos = int(y.sum()) if y.size else 0
        if len(models) == 0 or wide.empty or min(n_pos, y.size - n_pos) < 2:
            mat = np.full((len(models), len(models)), math.nan)
            np.fill_diagonal(mat, 1.0)
            out[split] = pd.DataFrame(mat, index=pd.Index(models, name="model"), columns=models)
            continue
        with warnings.catch_warnings():
            # A perfect model against a constant one gives p = 0 with a warning; the matrix
            # still records it, and the report says how few events a split has.
            warnings.simplefilter("ignore", RuntimeWarning)
            out[split] = pairwise_delong(y, {m: wide[m].to_numpy() for m in models})
    return out


# ---------------------------------------------------------------------------------------------
# The paper's tables
# ---------------------------------------------------------------------------------------------
def table2(metrics: pd.DataFrame, models: Sequence[str], digits: int = 3) -> pd.DataFrame:
    """Table 2 of the paper: each model's AUC (95 % CI), ACC, SEN, SPE, PPV, NPV, F1 per split.

    Parameters
    ----------
    metrics : pandas.DataFrame
        Output of :func:`metrics_table`.
    models : sequence of str
        Rows, in this order (usually :func:`main_models`).
    digits : int, default 3

    Returns
    -------
    pandas.DataFrame
        Columns ``Model, Family, Set, AUC (95% CI), ACC, SEN, SPE, PPV, NPV, F1, Threshold``.
    """
    rows = []
    for model in models:
        sub = metrics[metrics["model"] == model]
        for split in SPLITS:
            r = sub[sub["split"] == split]
            if r.empty:
                continue
            r = r.iloc[0]
            auc = Estimate(r["auc"], r["auc_low"], r["auc_high"]).format(digits)
            rows.append(
                {
                    "Model": model,
                    "Family": FAMILY_LABELS.get(r["family"], r["family"]),
                    "Set": SPLIT_LABELS[split],
                    "AUC (95% CI)": auc.replace("-", "–") if auc != "NA" else auc,
                    **{m.upper(): format_number(float(r[m]), digits) for m in METRIC_NAMES},
                    "Threshold": format_number(float(r["threshold"]), digits),
                }
            )
    return pd.DataFrame(rows)


def _curve_per_model_split(
    preds: pd.DataFrame,
    models: Sequence[str],
    curve: Callable[[np.ndarray, np.ndarray], pd.DataFrame],
) -> pd.DataFrame:
    """One curve table per model and split, stacked.

    ``curve(labels, probabilities)`` makes each table; ``model, split`` are put in front. An
    empty frame when no model has predictions.
    """
    parts = []
    for model in models:
        for split in splits_present(preds):
            sub = preds[(preds["model"] == model) & (preds["split"] == split)]
            if sub.empty:
                continue
            part = curve(sub["label"].to_numpy(), sub["probability"].to_numpy())
            part.insert(0, "split", split)
            part.insert(0, "model", model)
            parts.append(part)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def calibration_table(
    preds: pd.DataFrame,
    models: Sequence[str],
    n_bins: int = 10,
    strategy: Literal["quantile", "uniform"] = "quantile",
) -> pd.DataFrame:
    """Calibration-curve bins of each model per split, with its Brier score.

    Returns
    -------
    pandas.DataFrame
        ``model, split, brier`` and the columns of :func:`radfusion.stats.calibration_curve_data`.
    """

    def curve(y: np.ndarray, p: np.ndarray) -> pd.DataFrame:
        cal = calibration_curve_data(y, p, n_bins=n_bins, strategy=strategy)
        cal.insert(0, "brier", brier_score(y, p))
        return cal

    return _curve_per_model_split(preds, models, curve)


def decision_curve_table(preds: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame:
    """Decision-curve net benefit of each model per split (threshold 0.01 ... 0.99).

    Returns
    -------
    pandas.DataFrame
        ``model, split`` and the columns of :func:`radfusion.stats.decision_curve`.
    """
    return _curve_per_model_split(preds, models, decision_curve)


def _display_digits(values: pd.Series) -> int:
    # Serum values around 1 (calcium 2.7, phosphate 0.5 mmol/L) need two decimals to differ.
    med = pd.to_numeric(values, errors="coerce").abs().median()
    return 2 if pd.notna(med) and med < 10 else 1


def table1(cases: pd.DataFrame, cfg: StudyConfig) -> tuple[pd.DataFrame, list[str]]:
    """Table 1 of the paper: baseline characteristics by split with between-split p-values.

    One row per patient when ``cases`` has a ``patient_id`` column (a patient's first image),
    else one row per case. The label is shown as ``cfg.evaluation.outcome_name`` with
    ``cfg.evaluation.class_names`` as its levels.

    Parameters
    ----------
    cases : pandas.DataFrame
        The run's ``cases.csv``: ``case_id, label, split`` and the clinical columns.
    cfg : StudyConfig
        Clinical columns (``data.clinical``) and the outcome's display names.

    Returns
    -------
    (table, notes) : (pandas.DataFrame, list of str)
        The :func:`radfusion.stats.baseline_table` result (numeric p-values; ``attrs`` kept)
        and notes on configured columns that ``cases`` lacks.
    """
    notes: list[str] = []
    df = cases.copy()
    if "patient_id" in df.columns and df["patient_id"].notna().all():
        n_before = len(df)
        df = df.drop_duplicates("patient_id", keep="first")
        if len(df) < n_before:
            notes.append(f"Table 1 counts {len(df)} patients ({n_before} images).")
    numeric = [c for c in cfg.data.clinical.numeric if c in df.columns]
    categorical = [c for c in cfg.data.clinical.categorical if c in df.columns]
    absent = [c for c in cfg.data.clinical.all if c not in df.columns]
    if absent:
        notes.append(f"Configured clinical column(s) not in cases.csv: {', '.join(absent)}.")
    outcome = cfg.evaluation.outcome_name
    if outcome in df.columns and outcome != "label":
        outcome = f"{outcome} (label)"
    names = list(cfg.evaluation.class_names)
    df[outcome] = pd.Categorical(
        [names[int(v)] for v in df["label"]], categories=names, ordered=True
    )
    groups = [s for s in SPLITS if s in set(df["split"].astype(str))]
    comparisons = [(a, b) for i, a in enumerate(groups) for b in groups[i + 1 :]]
    table = baseline_table(
        df,
        "split",
        numeric=numeric,
        categorical=[*categorical, outcome],
        group_order=groups,
        comparisons=comparisons,
        group_labels={g: _COHORT_LABELS[g] for g in groups},
        digits={c: _display_digits(df[c]) for c in numeric},
    )
    return table, notes


def families_present(preds: pd.DataFrame) -> list[str]:
    """Families with predictions, in display order (unknown families last)."""
    have = list(dict.fromkeys(preds["family"].astype(str)))
    return [f for f in FAMILIES if f in have] + sorted(f for f in have if f not in FAMILIES)
