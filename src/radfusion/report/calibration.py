"""Calibration of the selected models in numbers: Brier score, calibration-in-the-large and
slope with 95 % CIs per model and set, and a flag for a model whose probabilities must not be
read as risks. The statistics are :mod:`radfusion.stats.calibration`'s; this module only
tabulates them for the report (and the checklists).
"""

from __future__ import annotations

import pandas as pd

from radfusion.evaluation.palette import SPLIT_LABELS, SPLITS
from radfusion.stats import calibration_fit, miscalibration_reasons

__all__ = ["calibration_summary", "flagged_models"]


def calibration_summary(preds: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """One row per model and set: n, events, Brier, CITL and slope with CIs, flag.

    Parameters
    ----------
    preds : pandas.DataFrame
        The run's predictions (``model, split, label, probability``).
    models : list of str
        Models to tabulate, in display order (the selected model of each family).

    Returns
    -------
    pandas.DataFrame
        ``model, split, n, events, brier, citl, citl_low, citl_high, slope, slope_low,
        slope_high, flag`` (``flag`` empty when none applies).
    """
    rows = []
    for model in models:
        for split in SPLITS:
            sub = preds[(preds["model"] == model) & (preds["split"] == split)]
            if sub.empty:
                continue
            y = sub["label"].to_numpy(dtype=int)
            p = sub["probability"].to_numpy(dtype=float)
            fit = calibration_fit(y, p)
            rows.append(
                {
                    "model": model,
                    "split": split,
                    "n": fit.n,
                    "events": fit.events,
                    "brier": fit.brier,
                    "citl": fit.intercept.value,
                    "citl_low": fit.intercept.low,
                    "citl_high": fit.intercept.high,
                    "slope": fit.slope.value,
                    "slope_low": fit.slope.low,
                    "slope_high": fit.slope.high,
                    "flag": "; ".join(miscalibration_reasons(y, p)),
                }
            )
    return pd.DataFrame(rows)


def flagged_models(summary: pd.DataFrame) -> list[str]:
    """``"<model> (<set>): <reasons>"`` for every flagged row of :func:`calibration_summary`."""
    if summary.empty:
        return []
    bad = summary[summary["flag"].astype(str) != ""]
    return [
        f"{r.model} ({SPLIT_LABELS.get(r.split, r.split).lower()} set): {r.flag}"
        for r in bad.itertuples()
    ]
