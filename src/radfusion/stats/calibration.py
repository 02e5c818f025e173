"""Calibration intercept (calibration-in-the-large) and slope, with Wald 95 % intervals.

Both come from logistic recalibration on the logit of the predicted probability, the standard
of prediction-model validation (Van Calster B et al., J Clin Epidemiol 2016;74:167-76;
Steyerberg EW, Clinical Prediction Models, 2nd ed., ch. 15):

- slope: ``logit P(y=1) = a + b * logit(p)``; ``b`` = 1 is ideal, ``b`` < 1 means predictions
  too extreme (overfitting), ``b`` > 1 too moderate.
- calibration-in-the-large (CITL): ``logit P(y=1) = a + logit(p)`` (slope fixed at 1 as an
  offset); ``a`` = 0 is ideal, ``a`` < 0 means risks overestimated on average.

The fits are those of :func:`radfusion.stats.recalibration.logistic_calibration` (the same
maximum-likelihood estimates as any GLM package; checked against statsmodels in the tests);
this module adds the Brier score and the flags a report needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from radfusion.stats.confusion import Estimate
from radfusion.stats.curves import brier_score
from radfusion.stats.inputs import _check_labels, _check_scores
from radfusion.stats.recalibration import logistic_calibration

__all__ = ["CalibrationFit", "calibration_fit", "miscalibration_reasons"]

#: Probabilities are clipped to [EPS, 1 - EPS] before the logit (a model printing 0 or 1).
EPS = 1e-6
#: A Brier score at or above this is no better than a coin flip at 0.5 for every case.
BRIER_UNINFORMATIVE = 0.25


@dataclass(frozen=True)
class CalibrationFit:
    """Calibration of one model on one set."""

    n: int
    events: int
    brier: float
    intercept: Estimate  # calibration-in-the-large (ideal 0)
    slope: Estimate  # calibration slope (ideal 1)


def calibration_fit(y_true: Any, y_prob: Any, alpha: float = 0.05) -> CalibrationFit:
    """Brier score, calibration-in-the-large and calibration slope with Wald intervals.

    Parameters
    ----------
    y_true : array-like of shape (n_cases,)
        Binary labels.
    y_prob : array-like of shape (n_cases,)
        Predicted probabilities of the positive class, in [0, 1].
    alpha : float, default 0.05
        Two-sided error rate of the intervals.

    Returns
    -------
    CalibrationFit
        Intercept and slope are NaN when undefined: one class only, or no finite maximum-
        likelihood estimate (e.g. the logits separate the classes perfectly).
    """
    # one estimation of intercept and slope in the package: the external validation's
    y = _check_labels(y_true, need_both=False).astype(float)
    p = _check_scores(y_prob, len(y), "y_prob")
    fit = logistic_calibration(y, np.clip(p, EPS, 1 - EPS), alpha)
    return CalibrationFit(len(y), int(y.sum()), brier_score(y, p), fit.citl, fit.slope)


def miscalibration_reasons(y_true: Any, y_prob: Any) -> list[str]:
    """Why a model's probabilities should not be read as risks; empty when none applies.

    Flags (each a short phrase): a Brier score >= 0.25 (no better than 0.5 for everyone), a
    Brier score above that of predicting the prevalence for every case, and every probability
    on the far side of 0.5 from the prevalence (a degenerate model).

    Parameters
    ----------
    y_true, y_prob : array-like
        Labels and probabilities of one model on one set.

    Returns
    -------
    list of str
    """
    y = _check_labels(y_true, need_both=False).astype(float)
    p = _check_scores(y_prob, len(y), "y_prob")
    if len(y) == 0:
        return []
    out = []
    brier = brier_score(y, p)
    prev = float(y.mean())
    if brier >= BRIER_UNINFORMATIVE:
        out.append(f"Brier {brier:.3f} >= {BRIER_UNINFORMATIVE}")
    elif 0 < prev < 1 and brier > prev * (1 - prev):
        out.append(
            f"Brier {brier:.3f} worse than predicting the prevalence ({prev * (1 - prev):.3f})"
        )
    # Every probability on the far side of 0.5 from the prevalence: every case called more
    # likely than not to be what most cases are not. (All below 0.5 at a prevalence below
    # 0.5 is what a calibrated model of a rare outcome often gives, so it is not flagged.)
    if 0 < prev < 0.5 and (p >= 0.5).all():
        out.append("every probability at or above 0.5 though most cases are negative")
    elif 0.5 < prev < 1 and (p < 0.5).all():
        out.append("every probability below 0.5 though most cases are positive")
    return out
