"""Logistic calibration of predicted probabilities: calibration-in-the-large, the calibration
slope, and the logistic recalibration map fitted from them.

A model's probabilities ``p`` are well calibrated on a cohort when, in the logistic model of
the outcomes on their logits, ``logit P(y = 1) = a + b * logit(p)``, the slope ``b`` is 1 and
the intercept is 0. Two fits answer two questions (Van Calster et al. 2019; Steyerberg 2019,
ch. 15; the ``val.prob`` quantities of R's rms):

*calibration-in-the-large* (CITL)
    ``logit P(y = 1) = a + offset(logit p)``: the slope held at 1, ``a`` says whether the
    predictions are systematically too high (``a < 0``) or too low (``a > 0``).
*calibration slope*
    ``logit P(y = 1) = a' + b * logit p``: ``b < 1`` means predictions too extreme
    (overfitting), ``b > 1`` too moderate.

Both are maximum-likelihood fits (Newton-Raphson) with Wald intervals from the observed
information. The same fits, made on an external cohort, are the two standard updating
methods (Steyerberg 2004; Vergouwe 2017): *intercept* recalibration
``p* = expit(a + logit p)`` and *logistic* (intercept + slope) recalibration
``p* = expit(a' + b logit p)``; :func:`recalibrate` applies either. Both maps are
increasing, so the AUC and every case's rank are unchanged.

Probabilities of exactly 0 or 1 (a random forest gives them) have infinite logits; they are
clipped to ``[LOGIT_EPS, 1 - LOGIT_EPS]`` first.

References
----------
Van Calster B, McLernon DJ, van Smeden M, et al. Calibration: the Achilles heel of predictive
analytics. BMC Med 2019;17:230.
Steyerberg EW, Borsboom GJ, van Houwelingen HC, et al. Validation and updating of predictive
logistic regression models. Stat Med 2004;23:2567-86.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats as sps
from scipy.special import expit, logit

from radfusion.stats.confusion import Estimate
from radfusion.stats.inputs import _check_alpha, _check_labels, _check_scores

__all__ = [
    "LOGIT_EPS",
    "RECALIBRATION_METHODS",
    "LogisticCalibration",
    "logistic_calibration",
    "recalibrate",
]

#: Probabilities are clipped to ``[LOGIT_EPS, 1 - LOGIT_EPS]`` before taking logits.
LOGIT_EPS = 1e-6
#: The updating methods: the intercept alone, or the intercept and the slope.
RECALIBRATION_METHODS = ("intercept", "logistic")
_MAX_ITER = 100
# A slope this large means the outcomes are (nearly) separated by the scores: the
# maximum-likelihood estimate does not exist and no finite answer would mean anything.
_DIVERGED = 1e3


def _logits(p: np.ndarray) -> np.ndarray:
    return logit(np.clip(p, LOGIT_EPS, 1.0 - LOGIT_EPS))


def _newton(
    y: np.ndarray, X: np.ndarray, offset: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """ML logistic regression with an offset: coefficients and their covariance.

    None when the fit does not converge or diverges (separation).
    """
    beta = np.zeros(X.shape[1])

    def loglik(b: np.ndarray) -> float:
        eta = offset + X @ b
        return float(np.sum(y * eta - np.logaddexp(0.0, eta)))

    current = loglik(beta)
    for _ in range(_MAX_ITER):
        mu = expit(offset + X @ beta)
        w = mu * (1.0 - mu)
        info = X.T @ (X * w[:, None])
        try:
            step = np.linalg.solve(info, X.T @ (y - mu))
        except np.linalg.LinAlgError:
            return None
        # step halving keeps every iteration an ascent step (Newton can overshoot)
        for _ in range(30):
            new = loglik(beta + step)
            if new >= current - 1e-12:
                break
            step = step / 2.0
        beta = beta + step
        if not np.all(np.isfinite(beta)) or np.abs(beta).max() > _DIVERGED:
            return None
        converged = abs(new - current) < 1e-10 * (1.0 + abs(current))
        current = new
        if converged and np.abs(step).max() < 1e-8:
            break
    else:
        return None
    mu = expit(offset + X @ beta)
    info = X.T @ (X * (mu * (1.0 - mu))[:, None])
    try:
        cov = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        return None
    return beta, cov


@dataclass(frozen=True)
class LogisticCalibration:
    """Calibration-in-the-large and calibration slope of probabilities on one cohort.

    Attributes
    ----------
    citl : Estimate
        Calibration-in-the-large ``a`` (slope fixed at 1) with its Wald CI; 0 is ideal.
    slope : Estimate
        Calibration slope ``b`` with its Wald CI; 1 is ideal.
    slope_intercept : float
        The intercept ``a'`` fitted together with the slope (the logistic recalibration's
        intercept; not a calibration measure on its own).
    n : int
        Cases.
    note : str
        Why a fit is NaN (one class only, separated outcomes), else empty.
    """

    citl: Estimate
    slope: Estimate
    slope_intercept: float
    n: int
    note: str = ""

    def parameters(self, method: Literal["intercept", "logistic"]) -> tuple[float, float]:
        """``(intercept, slope)`` of the recalibration map of ``method``."""
        if method == "intercept":
            return self.citl.value, 1.0
        if method == "logistic":
            return self.slope_intercept, self.slope.value
        raise ValueError(f"method must be one of {RECALIBRATION_METHODS}, got {method!r}")

    def as_dict(self) -> dict[str, float | int | str]:
        """Flat dict: ``citl, citl_low, citl_high, slope, slope_low, slope_high, ...``."""
        return {
            "citl": self.citl.value,
            "citl_low": self.citl.low,
            "citl_high": self.citl.high,
            "slope": self.slope.value,
            "slope_low": self.slope.low,
            "slope_high": self.slope.high,
            "slope_intercept": self.slope_intercept,
            "calibration_n": self.n,
            "calibration_note": self.note,
        }


def logistic_calibration(y_true: Any, y_prob: Any, alpha: float = 0.05) -> LogisticCalibration:
    """Calibration-in-the-large and calibration slope with ``1 - alpha`` Wald intervals.

    Parameters
    ----------
    y_true : array-like of shape (n_cases,)
        Binary outcomes (1 = positive).
    y_prob : array-like of shape (n_cases,)
        Predicted probabilities of the positive class, in [0, 1].
    alpha : float, default 0.05
        Two-sided error rate (95 % intervals).

    Returns
    -------
    LogisticCalibration
        NaN estimates and a note when a cohort holds one class only or the scores separate
        the classes perfectly (no finite maximum-likelihood estimate).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(0.05, 0.95, 2000)
    >>> y = rng.random(2000) < p
    >>> cal = logistic_calibration(y, p)
    >>> bool(abs(cal.slope.value - 1) < 0.2 and abs(cal.citl.value) < 0.2)
    True
    """
    alpha = _check_alpha(alpha)
    y = _check_labels(y_true, need_both=False).astype(float)
    p = _check_scores(y_prob, y.size, "y_prob")
    if (p < 0).any() or (p > 1).any():
        raise ValueError("y_prob must be probabilities in [0, 1]")
    nan = Estimate(math.nan, math.nan, math.nan)
    if y.min() == y.max():
        return LogisticCalibration(nan, nan, math.nan, y.size, "one class only")
    z = float(sps.norm.isf(alpha / 2.0))
    lp = _logits(p)
    ones = np.ones((y.size, 1))

    def est(beta: np.ndarray, cov: np.ndarray, i: int) -> Estimate:
        se = math.sqrt(max(float(cov[i, i]), 0.0))
        return Estimate(float(beta[i]), float(beta[i] - z * se), float(beta[i] + z * se))

    notes = []
    fit = _newton(y, ones, lp)
    citl = est(*fit, 0) if fit is not None else nan
    if fit is None:
        notes.append("calibration-in-the-large did not converge")
    fit2 = _newton(y, np.column_stack([ones, lp]), np.zeros(y.size))
    if fit2 is None:
        slope, a2 = nan, math.nan
        notes.append("calibration slope undefined: the scores separate the classes")
    else:
        slope, a2 = est(*fit2, 1), float(fit2[0][0])
    return LogisticCalibration(citl, slope, a2, y.size, "; ".join(notes))


def recalibrate(y_prob: Any, intercept: float, slope: float = 1.0) -> np.ndarray:
    """The logistic recalibration map ``expit(intercept + slope * logit(p))``.

    Parameters
    ----------
    y_prob : array-like
        Probabilities in [0, 1] (clipped to ``[LOGIT_EPS, 1 - LOGIT_EPS]`` first).
    intercept : float
    slope : float, default 1.0
        Must be positive, so that the map keeps every case's rank (and the AUC).

    Returns
    -------
    numpy.ndarray
        The recalibrated probabilities, same shape.

    Raises
    ------
    ValueError
        A non-finite intercept or slope, or a slope <= 0.
    """
    a, b = float(intercept), float(slope)
    if not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
        raise ValueError(
            f"recalibration needs a finite intercept and a positive slope, got {a!r}, {b!r}"
        )
    p = np.asarray(y_prob, dtype=float)
    return expit(a + b * _logits(p))
