"""Threshold and confusion-matrix metrics: Youden's threshold, Wilson intervals and the
paper's Table 2 row (AUC, ACC, SEN, SPE, PPV, NPV, F1 with confidence intervals).

References
----------
Wilson EB. Probable inference, the law of succession, and statistical inference.
J Am Stat Assoc 1927;22:209-12.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats as _sps

from radfusion.stats.formatting import format_number
from radfusion.stats.inputs import _check_alpha, _check_labels, _check_n_boot, _check_scores
from radfusion.stats.roc import _auc, bootstrap_auc_ci, delong_auc_ci

__all__ = ["BinaryMetrics", "Estimate", "binary_metrics", "wilson_interval", "youden_threshold"]


def youden_threshold(y_true: Any, score: Any) -> float:
    """Threshold maximising Youden's J = SEN + SPE - 1.

    Candidates are the observed score values; a case is predicted positive iff
    ``score >= threshold``.

    Parameters
    ----------
    y_true : array-like of shape (n_cases,)
        Binary reference labels.
    score : array-like of shape (n_cases,)
        Model scores.

    Returns
    -------
    float
        The chosen threshold. Ties in J (compared exactly, in integer arithmetic) are broken by
        taking the **largest** threshold, i.e. the operating point with the highest
        specificity and fewest predicted positives among the optimal ones.

    Raises
    ------
    ValueError
        Invalid labels or scores.

    Notes
    -----
    Choose the threshold on training (or validation) data and apply it unchanged to the test
    set; tuning it on the test set biases every threshold-based metric.
    """
    y = _check_labels(y_true)
    s = _check_scores(score, y.size)
    m, n = int(y.sum()), int(y.size - y.sum())
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # Cumulative counts at the last position of each run of equal scores: the confusion matrix
    # for threshold = that score (all cases with score >= it are positive).
    tp = np.cumsum(y_sorted, dtype=np.int64)
    fp = np.cumsum(~y_sorted, dtype=np.int64)
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    thr, tp, fp = s_sorted[last], tp[last], fp[last]
    # J * m * n in integers: exact comparison, so ties are real ties, not rounding noise.
    j_scaled = tp * n - fp * m
    best = np.flatnonzero(j_scaled == j_scaled.max())
    return float(thr[best].max())


def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score confidence interval of a binomial proportion.

    Parameters
    ----------
    successes : int
        Number of successes ``x`` (0 <= x <= n).
    n : int
        Number of trials.
    alpha : float, default 0.05
        Two-sided error rate.

    Returns
    -------
    (low, high) : tuple of float
        ``(nan, nan)`` when ``n == 0`` (the proportion is undefined).

    Raises
    ------
    ValueError
        ``successes`` outside ``[0, n]`` or ``n < 0``.
    """
    alpha = _check_alpha(alpha)
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return (math.nan, math.nan)
    z = float(_sps.norm.isf(alpha / 2.0))
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval (NaN where undefined)."""

    value: float
    low: float
    high: float

    def format(self, digits: int = 3) -> str:
        """``"0.905 (0.850-0.960)"``; ``"NA"`` when undefined."""
        value = format_number(self.value, digits)
        if not (math.isfinite(self.value) and math.isfinite(self.low) and math.isfinite(self.high)):
            return value
        return f"{value} ({format_number(self.low, digits)}-{format_number(self.high, digits)})"


def _proportion(x: int, n: int, alpha: float) -> Estimate:
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan)
    low, high = wilson_interval(x, n, alpha)
    return Estimate(x / n, low, high)


_METRICS = ("auc", "acc", "sen", "spe", "ppv", "npv", "f1")


@dataclass(frozen=True)
class BinaryMetrics:
    """Diagnostic performance of one model at one threshold (the paper's Table 2 row).

    Attributes
    ----------
    threshold : float
        Predicted positive iff ``score >= threshold``.
    tp, fp, tn, fn : int
        Confusion matrix.
    auc, acc, sen, spe, ppv, npv, f1 : Estimate
        Value and ``1 - alpha`` CI; NaN where undefined (e.g. PPV with no predicted positive).
    auc_method : str
        ``"delong"`` or ``"bootstrap"``.
    alpha : float
    """

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    auc: Estimate
    acc: Estimate
    sen: Estimate
    spe: Estimate
    ppv: Estimate
    npv: Estimate
    f1: Estimate
    auc_method: str
    alpha: float

    @property
    def n(self) -> int:
        """Number of cases."""
        return self.tp + self.fp + self.tn + self.fn

    def as_dict(self) -> dict[str, float | int | str]:
        """Flat dict: ``auc, auc_low, auc_high, acc, ..., tp, fp, tn, fn, threshold``."""
        out: dict[str, float | int | str] = {}
        for name in _METRICS:
            est: Estimate = getattr(self, name)
            out[name] = est.value
            out[f"{name}_low"] = est.low
            out[f"{name}_high"] = est.high
        out.update(
            tp=self.tp,
            fp=self.fp,
            tn=self.tn,
            fn=self.fn,
            threshold=self.threshold,
            auc_method=self.auc_method,
            alpha=self.alpha,
        )
        return out

    def to_series(self) -> pd.Series:
        """The flat dict as a pandas Series (one row of a metrics table)."""
        return pd.Series(self.as_dict())


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denom = 2.0 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2.0 * tp / np.where(denom > 0, denom, 1.0), np.nan)


def binary_metrics(
    y_true: Any,
    score: Any,
    threshold: float,
    alpha: float = 0.05,
    n_boot: int = 1000,
    seed: int = 0,
    auc_method: Literal["delong", "bootstrap"] = "delong",
    stratified: bool = True,
) -> BinaryMetrics:
    """AUC, ACC, SEN, SPE, PPV, NPV and F1 with confidence intervals at a fixed threshold.

    Parameters
    ----------
    y_true : array-like of shape (n_cases,)
        Binary reference labels.
    score : array-like of shape (n_cases,)
        Model scores; predicted positive iff ``score >= threshold``.
    threshold : float
        Operating threshold, chosen beforehand on training/validation data
        (e.g. :func:`youden_threshold`).
    alpha : float, default 0.05
        Two-sided error rate of every interval.
    n_boot : int, default 1000
        Bootstrap resamples for the F1 interval (and the AUC when ``auc_method="bootstrap"``).
    seed : int, default 0
        Seed of the bootstrap.
    auc_method : {"delong", "bootstrap"}, default "delong"
        AUC interval: :func:`delong_auc_ci` (untransformed, clipped) or
        :func:`bootstrap_auc_ci` (percentile).
    stratified : bool, default True
        Bootstrap keeps the class counts fixed.

    Returns
    -------
    BinaryMetrics
        Proportions (ACC, SEN, SPE, PPV, NPV) carry Wilson score intervals; F1 a percentile
        bootstrap interval. A metric whose denominator is zero (PPV with no predicted positive,
        NPV with no predicted negative) is NaN with a NaN interval, never an exception. With
        ``auc_method="delong"`` and fewer than 2 cases in a class the AUC interval is NaN.

    Raises
    ------
    ValueError
        Invalid labels, scores, threshold or method.
    """
    alpha = _check_alpha(alpha)
    if auc_method not in ("delong", "bootstrap"):
        raise ValueError(f"auc_method must be 'delong' or 'bootstrap', got {auc_method!r}")
    if not math.isfinite(float(threshold)):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    n_boot = _check_n_boot(n_boot)
    y = _check_labels(y_true)
    s = _check_scores(score, y.size)
    pred = s >= float(threshold)
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    tn = int(np.sum(~pred & ~y))
    fn = int(np.sum(~pred & y))
    N = y.size

    # F1 bootstrap. Resampling cases with replacement and counting the confusion-matrix cells
    # is exactly a multinomial draw on the four cells (binomials per class when stratified),
    # so draw the counts directly: same distribution, O(n_boot) instead of O(n_boot * N).
    rng = np.random.default_rng(seed)
    if stratified:
        tp_b = rng.binomial(tp + fn, tp / (tp + fn), size=n_boot)
        fp_b = rng.binomial(fp + tn, fp / (fp + tn), size=n_boot)
        fn_b = (tp + fn) - tp_b
    else:
        cells = rng.multinomial(N, np.array([tp, fp, tn, fn]) / N, size=n_boot)
        tp_b, fp_b, fn_b = cells[:, 0], cells[:, 1], cells[:, 3]
    f1_b = _f1(tp_b, fp_b, fn_b)
    f1_b = f1_b[np.isfinite(f1_b)]
    f1_value = float(_f1(np.array(tp), np.array(fp), np.array(fn)))
    if f1_b.size and math.isfinite(f1_value):
        lo, hi = np.quantile(f1_b, [alpha / 2.0, 1.0 - alpha / 2.0])
        f1 = Estimate(f1_value, float(lo), float(hi))
    else:
        f1 = Estimate(f1_value, math.nan, math.nan)

    if auc_method == "delong":
        if min(tp + fn, fp + tn) >= 2:
            auc = Estimate(*delong_auc_ci(y, s, alpha=alpha))
        else:
            auc_val = _auc(y, s)
            auc = Estimate(auc_val, math.nan, math.nan)
    else:
        # A different stream from the F1 bootstrap, still determined by ``seed``.
        auc = Estimate(
            *bootstrap_auc_ci(
                y, s, n_boot=n_boot, seed=seed + 1, alpha=alpha, stratified=stratified
            )
        )

    return BinaryMetrics(
        threshold=float(threshold),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        auc=auc,
        acc=_proportion(tp + tn, N, alpha),
        sen=_proportion(tp, tp + fn, alpha),
        spe=_proportion(tn, tn + fp, alpha),
        ppv=_proportion(tp, tp + fp, alpha),
        npv=_proportion(tn, tn + fn, alpha),
        f1=f1,
        auc_method=auc_method,
        alpha=alpha,
    )
