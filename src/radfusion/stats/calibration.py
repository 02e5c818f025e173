"""Calibration intercept (calibration-in-the-large) and slope, with Wald 95 % intervals.

Both come from logistic recalibration on the logit of the predicted probability, the standard
of prediction-model validation (Van Calster B et al., J Clin Epidemiol 2016;74:167-76;
Steyerberg EW, Clinical Prediction Models, 2nd ed., ch. 15):

- slope: ``logit P(y=1) = a + b * logit(p)``; ``b`` = 1 is ideal, ``b`` < 1 means predictions
  too extreme (overfitting), ``b`` > 1 too moderate.
- calibration-in-the-large (CITL): ``logit P(y=1) = a + logit(p)`` (slope fixed at 1 as an
  offset); ``a`` = 0 is ideal, ``a`` < 0 means risks overestimated on average.

The two-parameter logistic fits are solved by Newton-Raphson (the same maximum-likelihood
estimate as any GLM package; checked against statsmodels in the tests), to keep statsmodels a
test-only dependency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as _sps

from radfusion.stats.confusion import Estimate
from radfusion.stats.curves import brier_score
from radfusion.stats.inputs import _check_alpha, _check_labels, _check_scores

__all__ = ["CalibrationFit", "calibration_fit", "miscalibration_reasons"]

#: Probabilities are clipped to [EPS, 1 - EPS] before the logit (a model printing 0 or 1).
EPS = 1e-6
#: A Brier score at or above this is no better than a coin flip at 0.5 for every case.
BRIER_UNINFORMATIVE = 0.25

_NAN = Estimate(math.nan, math.nan, math.nan)


@dataclass(frozen=True)
class CalibrationFit:
    """Calibration of one model on one set."""

    n: int
    events: int
    brier: float
    intercept: Estimate  # calibration-in-the-large (ideal 0)
    slope: Estimate  # calibration slope (ideal 1)


def _logistic(
    X: np.ndarray, y: np.ndarray, offset: np.ndarray, max_iter: int = 100
) -> tuple[np.ndarray, np.ndarray] | None:
    """Maximum-likelihood logistic regression with an offset (damped Newton-Raphson).

    Returns (beta, covariance), or None.

    None when the fit does not converge (complete separation) or the information matrix is
    singular: no finite estimate exists then.
    """

    def loglik(b: np.ndarray) -> float:
        eta = X @ b + offset
        return float(np.sum(y * eta - np.logaddexp(0.0, eta)))

    beta = np.zeros(X.shape[1])
    current = loglik(beta)
    for _ in range(max_iter):
        eta = np.clip(X @ beta + offset, -30.0, 30.0)
        mu = 1.0 / (1.0 + np.exp(-eta))
        w = mu * (1.0 - mu)
        info = X.T @ (X * w[:, None])
        try:
            step = np.linalg.solve(info, X.T @ (y - mu))
        except np.linalg.LinAlgError:
            return None
        # Step halving: a full Newton step from a far start (e.g. every p near 1) overshoots.
        for _ in range(40):
            new = loglik(beta + step)
            if new >= current - 1e-12:
                break
            step = step / 2.0
        beta, current = beta + step, new
        if np.max(np.abs(step)) < 1e-10:
            try:
                cov = np.linalg.inv(info)
            except np.linalg.LinAlgError:
                return None
            if not np.all(np.isfinite(cov)) or np.any(np.abs(beta) > 25):
                return None
            return beta, cov
    return None


def _wald(value: float, var: float, z: float) -> Estimate:
    se = math.sqrt(var) if var > 0 else math.nan
    return Estimate(value, value - z * se, value + z * se)


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
    _check_alpha(alpha)
    y = _check_labels(y_true, need_both=False).astype(float)
    p = _check_scores(y_prob, len(y), "y_prob")
    brier = brier_score(y, p)
    k = int(y.sum())
    if k == 0 or k == len(y):
        return CalibrationFit(len(y), k, brier, _NAN, _NAN)
    lp = np.log(np.clip(p, EPS, 1 - EPS) / (1 - np.clip(p, EPS, 1 - EPS)))
    z = float(_sps.norm.ppf(1 - alpha / 2))
    ones = np.ones((len(y), 1))
    citl = _logistic(ones, y, offset=lp)
    intercept = _wald(float(citl[0][0]), float(citl[1][0, 0]), z) if citl else _NAN
    fit = _logistic(np.column_stack([ones, lp]), y, offset=np.zeros(len(y)))
    slope = _wald(float(fit[0][1]), float(fit[1][1, 1]), z) if fit else _NAN
    return CalibrationFit(len(y), k, brier, intercept, slope)


def miscalibration_reasons(y_true: Any, y_prob: Any) -> list[str]:
    """Why a model's probabilities should not be read as risks; empty when none applies.

    Flags (each a short phrase): a Brier score >= 0.25 (no better than 0.5 for everyone), a
    Brier score above that of predicting the prevalence for every case, and every probability
    on one side of 0.5 while both classes are present (a degenerate model).

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
    if 0 < prev < 1 and ((p >= 0.5).all() or (p < 0.5).all()):
        side = "at or above" if (p >= 0.5).all() else "below"
        out.append(f"every probability {side} 0.5")
    return out
