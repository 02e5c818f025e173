"""Choosing each family's model among its classifiers (``evaluation.selection_split`` and
``evaluation.selection_rule``).

The choice is made on the training side (inner cross-validation) or on validation, never on
the test set; with the one-standard-error rule the simplest classifier (in the zoo's order)
whose inner-CV AUC is within one standard error of the best is chosen.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from radfusion.stats import auc_or_nan

__all__ = ["select_best"]

log = logging.getLogger("radfusion.models")


def select_best(preds: pd.DataFrame, split: str = "val", rule: str = "best") -> pd.DataFrame:
    """Mark each family's best model.

    Parameters
    ----------
    preds : DataFrame
        A family's predictions with ``cv_auc`` (and ``cv_auc_se`` for the 1se rule).
    split : {"val", "train", "cv"}
        Highest AUC on that split (ties: inner-CV AUC), or ``cv``: highest inner
        cross-validated AUC on the training data (validation plays no part in the choice).
    rule : {"best", "1se"}
        With ``cv``: the best, or the simplest classifier of the zoo order whose inner-CV
        AUC is within one standard error of the best.

    Returns
    -------
    DataFrame
        ``preds`` with a boolean ``selected`` column (one model per family).
    """
    from radfusion.config import CLASSIFIERS

    preds = preds.copy()
    preds["selected"] = False
    for family, df in preds.groupby("family"):
        scores = []
        for model, m in df.groupby("model", sort=False):
            part = m[m["split"] == split]
            auc = auc_or_nan(part["label"], part["probability"]) if split != "cv" else np.nan
            cv = float(m["cv_auc"].iloc[0]) if "cv_auc" in m else np.nan
            se = float(m["cv_auc_se"].iloc[0]) if "cv_auc_se" in m else 0.0
            clf = str(m["classifier"].iloc[0])
            rank = CLASSIFIERS.index(clf) if clf in CLASSIFIERS else len(CLASSIFIERS)
            scores.append((model, auc, cv, se, rank))
        table = pd.DataFrame(scores, columns=["model", "auc", "cv_auc", "se", "rank"])
        if split == "cv":
            table["auc"] = table["cv_auc"]
        elif table["auc"].isna().all():
            log.warning("%s: no %s AUC (one class only); choosing by inner-CV AUC", family, split)
            table["auc"] = table["cv_auc"]
        table = table.fillna({"auc": -np.inf, "cv_auc": -np.inf, "se": 0.0})
        table = table.sort_values(["auc", "cv_auc"], ascending=False, kind="stable")
        best = table["model"].iloc[0]
        if split == "cv" and rule == "1se":
            top = table.iloc[0]
            within = table[table["auc"] >= top["auc"] - top["se"]]
            best = within.sort_values("rank", kind="stable")["model"].iloc[0]
        preds.loc[(preds["family"] == family) & (preds["model"] == best), "selected"] = True
    return preds
