"""How a model family's results are written: fitted models, CV results, predictions."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radfusion.families import SINGLE_CLASSIFIER, ModelId
from radfusion.pipeline.context import StudyContext, harmonization_meta
from radfusion.utils import atomic_path, atomic_write_json


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp)


def _family_predictions(
    family: str,
    models: dict[str, Any],
    X: pd.DataFrame,
    meta: pd.DataFrame,
    model_label: Callable[[str], str],
    case_meta: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Probabilities of every model of a family for the original cases."""
    from radfusion.harmonization.pipeline import logged_harmonization_warnings

    rows = []
    for name, fitted in models.items():
        with logged_harmonization_warnings():  # e.g. a held-out centre ComBat cannot adjust
            prob = fitted.positive_proba(X.loc[meta.index], case_meta=case_meta)
        rows.append(
            pd.DataFrame(
                {
                    "case_id": meta.index,
                    "split": meta["split"].to_numpy(),
                    "label": meta["label"].to_numpy(),
                    "family": family,
                    "model": model_label(name),
                    "classifier": name,
                    "probability": prob,
                    "cv_auc": fitted.cv_auc,
                    "cv_auc_se": fitted.cv_auc_sd / np.sqrt(max(fitted.n_splits, 1)),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def save_family(
    ctx: StudyContext,
    family: str,
    models: dict[str, Any],
    X_all: pd.DataFrame,
    train_X: pd.DataFrame,
    train_y: np.ndarray,
    meta: pd.DataFrame,
    model_label: Callable[[str], str],
    selection: dict[str, Any] | None,
) -> pd.DataFrame:
    """Write a family's fitted models, CV results, predictions and selection report."""
    from radfusion.models import feature_importance, select_best
    from radfusion.models.io import save_pipeline

    layout = ctx.layout
    layout.family_dir(family).mkdir(parents=True, exist_ok=True)
    preds = _family_predictions(
        family, models, X_all, meta, model_label, case_meta=harmonization_meta(ctx)
    )
    preds = select_best(
        preds, ctx.cfg.evaluation.selection_split, ctx.cfg.evaluation.selection_rule
    )
    best_clf = preds.loc[preds["selected"], "classifier"].iloc[0]
    cv_rows = []
    for name, fitted in models.items():
        save_pipeline(fitted.pipeline, layout.model_file(ModelId(family, name)))
        cv_rows.append(
            {
                "classifier": name,
                "cv_auc": fitted.cv_auc,
                "cv_auc_sd": fitted.cv_auc_sd,
                "n_splits": fitted.n_splits,
                "best_params": json.dumps(fitted.best_params, default=str),
                "fit_seconds": round(fitted.fit_seconds, 2),
                "failed_fits": fitted.failed_fits,
                "tuning_note": fitted.tuning_note,
            }
        )
        if name == best_clf:
            imp_path = layout.importance(family, name)
            imp_path.parent.mkdir(exist_ok=True)
            imp = feature_importance(
                fitted, train_X, train_y, ctx.cfg.seed, case_meta=harmonization_meta(ctx)
            )
            with atomic_path(imp_path) as tmp:
                imp.to_csv(tmp, index=False)
    with atomic_path(layout.cv_results(family)) as tmp:
        pd.DataFrame(cv_rows).to_csv(tmp, index=False)
    if selection is not None:
        notes = {name: f.tuning_note for name, f in models.items() if f.tuning_note}
        atomic_write_json(layout.selection(family), {**selection, "tuning_notes": notes})
    write_parquet(preds.drop(columns=["cv_auc", "cv_auc_se"]), layout.family_predictions(family))
    return preds


def single_model_predictions(
    meta: pd.DataFrame, family: str, model: str, prob: np.ndarray
) -> pd.DataFrame:
    """Predictions of a family's one logistic model (``meta``: split and label by case id)."""
    return pd.DataFrame(
        {
            "case_id": meta.index,
            "split": meta["split"].to_numpy(),
            "label": meta["label"].to_numpy(),
            "family": family,
            "model": model,
            "classifier": SINGLE_CLASSIFIER,
            "probability": prob,
            "selected": True,
        }
    )


def selection_json(report: dict[str, Any], lasso: Any | None) -> dict[str, Any]:
    """The run-folder form of a selection report (counts, kept, coefficients, LASSO path)."""
    counts = dict(report.get("n_features", {}))
    notes = report.get("notes", {})
    out: dict[str, Any] = {
        "counts": counts,
        "icc_skipped": notes.get("icc"),
        "notes": notes,
        "kept": list(report.get("kept", [])),
        "coefficients": dict(report.get("lasso", {}).get("coef", {})),
        "C": report.get("lasso", {}).get("C"),
        # whether the LASSO penalty search kept each patient / augmented group in one fold
        "grouped": report.get("lasso", {}).get("grouped"),
    }
    if lasso is not None and hasattr(lasso, "path_Cs_"):
        out["lasso_path"] = {
            "Cs": np.asarray(lasso.path_Cs_).tolist(),
            "coefs": np.asarray(lasso.path_coefs_).tolist(),
            "features": [str(f) for f in lasso.feature_names_in_]
            if hasattr(lasso, "feature_names_in_")
            else [],
        }
    return out
