"""The study's statistics: AUC confidence intervals, the DeLong test, confusion-matrix metrics,
Table 1 baseline characteristics, calibration and decision curves.

Everything here is a pure function of arrays or data frames (numpy / scipy / pandas), so it can
be reused on any model's scores and checked against independent implementations.

Conventions
-----------
- ``y_true`` holds the reference standard (histopathology): 1 = positive (APT/PC, malignant),
  0 = negative. Booleans and the floats 0.0 / 1.0 are accepted too.
- A score is "higher = more likely positive". A case is *predicted positive* iff
  ``score >= threshold``.
- ``alpha`` is the two-sided error rate, so ``alpha=0.05`` gives 95 % intervals.

References
----------
DeLong ER, DeLong DM, Clarke-Pearson DL. Comparing the areas under two or more correlated
receiver operating characteristic curves: a nonparametric approach. Biometrics 1988;44:837-45.

Sun X, Xu W. Fast implementation of DeLong's algorithm for comparing the areas under correlated
receiver operating characteristic curves. IEEE Signal Process Lett 2014;21:1389-93.

Wilson EB. Probable inference, the law of succession, and statistical inference.
J Am Stat Assoc 1927;22:209-12.

Vickers AJ, Elkin EB. Decision curve analysis: a novel method for evaluating prediction models.
Med Decis Making 2006;26:565-74.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as _sps

__all__ = [
    "AUCInterval",
    "BinaryMetrics",
    "DeLongResult",
    "Estimate",
    "auc_or_nan",
    "baseline_table",
    "binary_metrics",
    "bootstrap_auc_ci",
    "brier_score",
    "calibration_curve_data",
    "compare_categorical",
    "compare_continuous",
    "decision_curve",
    "delong_auc_ci",
    "delong_covariance",
    "delong_test",
    "format_baseline_table",
    "format_p_value",
    "pairwise_delong",
    "wilson_interval",
    "youden_threshold",
]

# Below this standard error (on the AUC scale, which lives in [0, 1]) the DeLong variance is
# treated as exactly zero: it only arises from floating-point residue of a constant vector.
_DEGENERATE_SE = 1e-12
# Bootstrap work is done in blocks of at most this many matrix elements, to bound memory.
_BLOCK_ELEMENTS = 4_000_000


# ---------------------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------------------
def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be strictly between 0 and 1, got {alpha!r}")
    return alpha


def _check_labels(y_true: Any, *, need_both: bool = True) -> np.ndarray:
    """Return ``y_true`` as a 1-D boolean array (True = positive) or raise ValueError."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got shape {y.shape}")
    if y.size == 0:
        raise ValueError("y_true is empty")
    if y.dtype == bool:
        yb = y
    else:
        try:
            yf = y.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"y_true must be binary 0/1 labels, got values of dtype {y.dtype}"
            ) from None
        bad = ~np.isin(yf, (0.0, 1.0))
        if bad.any():
            found = np.unique(y[bad])[:5].tolist()
            raise ValueError(
                f"y_true must contain only 0 and 1; found {found} (and NaN counts as invalid)"
            )
        yb = yf == 1.0
    if need_both:
        n_pos = int(yb.sum())
        if n_pos == 0 or n_pos == yb.size:
            only = "positive (1)" if n_pos else "negative (0)"
            raise ValueError(f"y_true must contain both classes; all {yb.size} cases are {only}")
    return yb


def _check_scores(score: Any, n: int, name: str = "score") -> np.ndarray:
    s = np.asarray(score)
    if s.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {s.shape}")
    if s.shape[0] != n:
        raise ValueError(f"{name} has {s.shape[0]} values but y_true has {n}; lengths must match")
    try:
        s = s.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric, got dtype {s.dtype}") from None
    if not np.isfinite(s).all():
        n_bad = int((~np.isfinite(s)).sum())
        raise ValueError(f"{name} contains {n_bad} non-finite value(s) (NaN or inf)")
    return s


# ---------------------------------------------------------------------------------------------
# DeLong (fast midrank algorithm of Sun & Xu 2014)
# ---------------------------------------------------------------------------------------------
def _structural_components(
    y: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DeLong's structural components for ``k`` score vectors on the same cases.

    Parameters
    ----------
    y : (N,) bool
    scores : (k, N) float

    Returns
    -------
    auc : (k,)
    v10 : (k, m)  one component per positive case: P(score_pos > score_neg) + 0.5 P(=)
    v01 : (k, n)  one component per negative case
    """
    pos = scores[:, y]
    neg = scores[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    # Midranks within the positives, within the negatives and over all cases. For a positive
    # case, (overall rank - rank among positives) counts the negatives below it, ties as 1/2:
    # that is the Mann-Whitney kernel summed over negatives, in O(N log N) instead of O(m n).
    tx = _sps.rankdata(pos, axis=1)
    ty = _sps.rankdata(neg, axis=1)
    tz = _sps.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    auc = v10.mean(axis=1)
    return auc, v10, v01


def _require_variance_sizes(y: np.ndarray) -> tuple[int, int]:
    m = int(y.sum())
    n = int(y.size - m)
    if m < 2 or n < 2:
        raise ValueError(
            "the DeLong variance needs at least 2 positive and 2 negative cases; "
            f"got {m} positive and {n} negative"
        )
    return m, n


def delong_covariance(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of several models and DeLong's covariance matrix of those AUCs.

    Parameters
    ----------
    y_true : array-like of shape (n_cases,)
        Binary reference labels (0/1).
    scores : array-like of shape (n_models, n_cases)
        One row of scores per model, on the same cases.

    Returns
    -------
    auc : ndarray of shape (n_models,)
    covariance : ndarray of shape (n_models, n_models)
        ``S10 / m + S01 / n`` (DeLong et al. 1988), with ``m`` positive and ``n`` negative cases.

    Raises
    ------
    ValueError
        Invalid labels or scores, or fewer than 2 cases in a class.
    """
    y = _check_labels(y_true)
    s = np.atleast_2d(np.asarray(scores))
    if s.ndim != 2:
        raise ValueError(f"scores must be 2-D (n_models, n_cases), got shape {s.shape}")
    rows = np.stack([_check_scores(r, y.size, f"scores[{i}]") for i, r in enumerate(s)])
    m, n = _require_variance_sizes(y)
    auc, v10, v01 = _structural_components(y, rows)
    cov = np.atleast_2d(np.cov(v10, ddof=1)) / m + np.atleast_2d(np.cov(v01, ddof=1)) / n
    return auc, cov


@dataclass(frozen=True)
class DeLongResult:
    """Result of a paired two-sided DeLong test of ``AUC_a`` against ``AUC_b``.

    Attributes
    ----------
    auc_a, auc_b : float
        AUCs of the two models (Mann-Whitney estimate, ties counted 1/2).
    auc_diff : float
        ``auc_a - auc_b``.
    z : float
        ``auc_diff / SE(auc_diff)``; positive when model a has the larger AUC.
    p_value : float
        Two-sided p-value from the standard normal distribution.
    ci_low, ci_high : float
        ``1 - alpha`` Wald confidence interval of ``auc_diff`` (not clipped).
    var_a, var_b, covariance : float
        DeLong variances of the two AUCs and their covariance;
        ``Var(auc_diff) = var_a + var_b - 2 * covariance``.
    n_pos, n_neg : int
        Number of positive and negative cases.
    alpha : float
        Error rate of the confidence interval.
    """

    auc_a: float
    auc_b: float
    auc_diff: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float
    var_a: float
    var_b: float
    covariance: float
    n_pos: int
    n_neg: int
    alpha: float = 0.05

    @property
    def se_diff(self) -> float:
        """Standard error of ``auc_diff``."""
        return (self.ci_high - self.ci_low) / (2.0 * _sps.norm.isf(self.alpha / 2.0))


def _diff_test(
    auc: np.ndarray, v10: np.ndarray, v01: np.ndarray, i: int, j: int, alpha: float
) -> DeLongResult:
    m, n = v10.shape[1], v01.shape[1]
    # Variance of the difference from the per-case differences of the components: equal to
    # var_a + var_b - 2 cov in exact arithmetic, but exactly 0 for identical scores, and free of
    # the cancellation error of subtracting two nearly equal variances.
    var_diff = float(np.var(v10[i] - v10[j], ddof=1) / m + np.var(v01[i] - v01[j], ddof=1) / n)
    cov = (
        np.cov(np.stack([v10[i], v10[j]]), ddof=1) / m
        + np.cov(np.stack([v01[i], v01[j]]), ddof=1) / n
    )
    diff = float(auc[i] - auc[j])
    se = math.sqrt(max(var_diff, 0.0))
    if se <= _DEGENERATE_SE:
        # Zero variance means V10_a - V10_b and V01_a - V01_b are constant over cases: the two
        # models order every (positive, negative) pair the same way relative to each other.
        if abs(diff) <= _DEGENERATE_SE:
            z, p = 0.0, 1.0
        else:
            warnings.warn(
                "DeLong variance of the AUC difference is zero although the AUCs differ "
                f"({auc[i]:.4f} vs {auc[j]:.4f}); z is infinite and p = 0. This happens when one "
                "model is perfect and the other constant; use a bootstrap or larger sample.",
                RuntimeWarning,
                stacklevel=3,
            )
            z, p = math.copysign(math.inf, diff), 0.0
        se = 0.0
    else:
        z = diff / se
        p = float(2.0 * _sps.norm.sf(abs(z)))
    half = float(_sps.norm.isf(alpha / 2.0)) * se
    return DeLongResult(
        auc_a=float(auc[i]),
        auc_b=float(auc[j]),
        auc_diff=diff,
        z=float(z),
        p_value=float(min(p, 1.0)),
        ci_low=diff - half,
        ci_high=diff + half,
        var_a=float(cov[0, 0]),
        var_b=float(cov[1, 1]),
        covariance=float(cov[0, 1]),
        n_pos=int(m),
        n_neg=int(n),
        alpha=alpha,
    )


def auc_or_nan(y_true: Any, score: Any) -> float:
    """ROC AUC of ``score`` for binary ``y_true``; NaN when only one class is present.

    The one place radfusion computes a plain AUC that may be undefined (a small split or
    fold with one class), so every caller treats that case alike.
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y_true)
    if np.unique(y).size < 2:
        return float("nan")
    return float(roc_auc_score(y, np.asarray(score, dtype=float)))


def delong_test(y_true: Any, score_a: Any, score_b: Any, alpha: float = 0.05) -> DeLongResult:
    """Two-sided paired DeLong test for two correlated ROC curves.

    Both models are scored on the same cases. AUCs, their variances and covariance follow
    DeLong, DeLong & Clarke-Pearson (1988), computed with the midrank algorithm of Sun & Xu
    (2014) in O(N log N); ties are handled exactly (Mann-Whitney kernel 1/2).

    Parameters
    ----------
    y_true : array-like of shape (n_cases,)
        Binary reference labels (0/1 or bool).
    score_a, score_b : array-like of shape (n_cases,)
        Finite scores of models a and b (higher = more likely positive).
    alpha : float, default 0.05
        Error rate of the confidence interval of ``auc_a - auc_b``.

    Returns
    -------
    DeLongResult

    Raises
    ------
    ValueError
        Labels not binary, a class absent or with fewer than 2 cases, lengths differ, or a score
        is NaN / infinite.

    Notes
    -----
    Degenerate case: when the estimated variance of the difference is zero, e.g. the two score
    vectors are identical (or both models are perfect), the AUCs are equal and the result is
    ``z = 0``, ``p = 1`` with a zero-width CI. If the variance is zero while the AUCs differ
    (one perfect model against a constant one), ``z = ±inf``, ``p = 0`` and a RuntimeWarning
    is emitted, because the asymptotic test is not informative there.

    Examples
    --------
    >>> y = [0, 0, 0, 1, 1, 1]
    >>> r = delong_test(y, [0.1, 0.4, 0.35, 0.8, 0.7, 0.9], [0.2, 0.3, 0.6, 0.5, 0.4, 0.9])
    >>> round(r.auc_a, 3), round(r.auc_b, 3)
    (1.0, 0.778)
    """
    alpha = _check_alpha(alpha)
    y = _check_labels(y_true)
    a = _check_scores(score_a, y.size, "score_a")
    b = _check_scores(score_b, y.size, "score_b")
    _require_variance_sizes(y)
    auc, v10, v01 = _structural_components(y, np.stack([a, b]))
    return _diff_test(auc, v10, v01, 0, 1, alpha)


class AUCInterval(NamedTuple):
    """An AUC with its confidence interval; unpacks as ``auc, low, high``."""

    auc: float
    low: float
    high: float


def delong_auc_ci(
    y_true: Any,
    score: Any,
    alpha: float = 0.05,
    transform: Literal["none", "logit"] = "none",
) -> AUCInterval:
    """AUC with a DeLong (asymptotic normal) confidence interval.

    Parameters
    ----------
    y_true : array-like of shape (n_cases,)
        Binary reference labels.
    score : array-like of shape (n_cases,)
        Model scores.
    alpha : float, default 0.05
        Two-sided error rate (0.05 gives a 95 % CI).
    transform : {"none", "logit"}, default "none"
        ``"none"``: ``AUC ± z * SE``, clipped to [0, 1] -- the usual DeLong interval, as reported
        by pROC's ``ci.auc(method="delong")`` and by most radiomics papers, so numbers are
        comparable with the literature. ``"logit"``: the interval is built on ``logit(AUC)``
        with the delta-method SE ``SE / (AUC (1 - AUC))`` and mapped back; it stays inside
        (0, 1) without clipping and behaves better for AUC near 1 in small samples.
        When AUC is exactly 0 or 1 the DeLong variance is 0 and both give ``(AUC, AUC)``.

    Returns
    -------
    AUCInterval
        ``(auc, low, high)``.

    Raises
    ------
    ValueError
        Invalid inputs or fewer than 2 cases in a class.
    """
    alpha = _check_alpha(alpha)
    if transform not in ("none", "logit"):
        raise ValueError(f"transform must be 'none' or 'logit', got {transform!r}")
    y = _check_labels(y_true)
    s = _check_scores(score, y.size)
    m, n = _require_variance_sizes(y)
    auc_arr, v10, v01 = _structural_components(y, s[None, :])
    auc = float(auc_arr[0])
    var = float(np.var(v10[0], ddof=1) / m + np.var(v01[0], ddof=1) / n)
    se = math.sqrt(max(var, 0.0))
    zc = float(_sps.norm.isf(alpha / 2.0))
    if transform == "logit" and 0.0 < auc < 1.0:
        centre = math.log(auc / (1.0 - auc))
        half = zc * se / (auc * (1.0 - auc))
        low, high = (
            1.0 / (1.0 + math.exp(-(centre - half))),
            1.0 / (1.0 + math.exp(-(centre + half))),
        )
    else:
        low, high = auc - zc * se, auc + zc * se
    return AUCInterval(auc, max(0.0, low), min(1.0, high))


def _auc_rows(scores: np.ndarray, is_pos: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC for each row of ``scores`` with row-wise positive masks."""
    ranks = _sps.rankdata(scores, axis=1)
    m = is_pos.sum(axis=1).astype(np.float64)
    n = is_pos.shape[1] - m
    rank_sum = np.where(is_pos, ranks, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rank_sum - m * (m + 1.0) / 2.0) / (m * n)


def bootstrap_auc_ci(
    y_true: Any,
    score: Any,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    stratified: bool = True,
) -> AUCInterval:
    """AUC with a percentile bootstrap confidence interval.

    Parameters
    ----------
    y_true : array-like of shape (n_cases,)
        Binary reference labels.
    score : array-like of shape (n_cases,)
        Model scores.
    n_boot : int, default 1000
        Number of bootstrap resamples.
    seed : int, default 0
        Seed of the ``numpy.random.default_rng`` generator; the result is reproducible.
    alpha : float, default 0.05
        Two-sided error rate.
    stratified : bool, default True
        Resample positives and negatives separately, keeping both class counts fixed (so every
        resample has an AUC). With ``False`` cases are resampled jointly and the rare resamples
        that miss a class are discarded (they have no AUC).

    Returns
    -------
    AUCInterval
        ``(auc, low, high)``: the AUC of the original data and the ``alpha/2`` and
        ``1 - alpha/2`` quantiles of the bootstrap AUCs (numpy's linear interpolation).

    Raises
    ------
    ValueError
        Invalid inputs, ``n_boot < 1``, or no resample with both classes.
    """
    alpha = _check_alpha(alpha)
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    y = _check_labels(y_true)
    s = _check_scores(score, y.size)
    aucs = _bootstrap_aucs(y, s, int(n_boot), np.random.default_rng(seed), stratified)
    aucs = aucs[np.isfinite(aucs)]
    if aucs.size == 0:
        raise ValueError("no bootstrap resample contained both classes; use stratified=True")
    auc = float(_auc_rows(s[None, :], y[None, :])[0])
    low, high = np.quantile(aucs, [alpha / 2.0, 1.0 - alpha / 2.0])
    return AUCInterval(auc, float(low), float(high))


def _bootstrap_aucs(
    y: np.ndarray, s: np.ndarray, n_boot: int, rng: np.random.Generator, stratified: bool
) -> np.ndarray:
    N = y.size
    block = max(1, _BLOCK_ELEMENTS // N)
    out = np.empty(n_boot)
    pos_idx, neg_idx = np.flatnonzero(y), np.flatnonzero(~y)
    for start in range(0, n_boot, block):
        b = min(block, n_boot - start)
        if stratified:
            idx = np.concatenate(
                [
                    pos_idx[rng.integers(0, pos_idx.size, size=(b, pos_idx.size))],
                    neg_idx[rng.integers(0, neg_idx.size, size=(b, neg_idx.size))],
                ],
                axis=1,
            )
        else:
            idx = rng.integers(0, N, size=(b, N))
        out[start : start + b] = _auc_rows(s[idx], y[idx])
    return out


# ---------------------------------------------------------------------------------------------
# Threshold and confusion-matrix metrics
# ---------------------------------------------------------------------------------------------
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
        if not math.isfinite(self.value):
            return "NA"
        f = f"{{:.{digits}f}}"
        if math.isfinite(self.low) and math.isfinite(self.high):
            return f"{f.format(self.value)} ({f.format(self.low)}-{f.format(self.high)})"
        return f.format(self.value)


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
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
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
            auc_val = float(_auc_rows(s[None, :], y[None, :])[0])
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


def pairwise_delong(y_true: Any, scores: Mapping[str, Any]) -> pd.DataFrame:
    """Two-sided DeLong p-values between every pair of models (the paper's heatmaps).

    Parameters
    ----------
    y_true : array-like of shape (n_cases,)
        Binary reference labels.
    scores : Mapping[str, array-like]
        Model name -> scores on the same cases. The mapping order is the row/column order.

    Returns
    -------
    pandas.DataFrame
        Square, symmetric matrix of p-values indexed and labelled by model name; the diagonal
        is 1.0. Degenerate pairs follow :func:`delong_test`.

    Raises
    ------
    ValueError
        No model given, or invalid inputs for any model (the message names it).
    """
    if len(scores) == 0:
        raise ValueError("scores is empty; give at least one model")
    y = _check_labels(y_true)
    names = [str(k) for k in scores]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {names}")
    mat = np.stack([_check_scores(v, y.size, f"scores[{k!r}]") for k, v in scores.items()])
    k = len(names)
    p = np.ones((k, k))
    if k > 1:
        _require_variance_sizes(y)
        # Structural components once per model; each pair then costs O(N).
        auc, v10, v01 = _structural_components(y, mat)
        for i in range(k):
            for j in range(i + 1, k):
                p[i, j] = p[j, i] = _diff_test(auc, v10, v01, i, j, 0.05).p_value
    return pd.DataFrame(p, index=pd.Index(names, name="model"), columns=names)


# ---------------------------------------------------------------------------------------------
# Calibration and decision curves
# ---------------------------------------------------------------------------------------------
def _check_probabilities(prob: Any, n: int) -> np.ndarray:
    p = _check_scores(prob, n, "y_prob")
    if (p < 0).any() or (p > 1).any():
        raise ValueError("y_prob must be probabilities in [0, 1]")
    return p


def brier_score(y_true: Any, y_prob: Any) -> float:
    """Brier score: mean squared difference between predicted probability and outcome.

    Parameters
    ----------
    y_true : array-like of shape (n_cases,)
        Binary labels (one class alone is allowed).
    y_prob : array-like of shape (n_cases,)
        Predicted probabilities of the positive class, in [0, 1].

    Returns
    -------
    float
        0 is perfect; 0.25 is the score of always predicting 0.5.
    """
    y = _check_labels(y_true, need_both=False)
    p = _check_probabilities(y_prob, y.size)
    return float(np.mean((p - y) ** 2))


def calibration_curve_data(
    y_true: Any,
    y_prob: Any,
    n_bins: int = 10,
    strategy: Literal["uniform", "quantile"] = "uniform",
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Binned reliability-diagram data with Wilson intervals of the observed fraction.

    Parameters
    ----------
    y_true : array-like of shape (n_cases,)
        Binary labels.
    y_prob : array-like of shape (n_cases,)
        Predicted probabilities in [0, 1].
    n_bins : int, default 10
        Number of bins.
    strategy : {"uniform", "quantile"}, default "uniform"
        Equal-width bins on [0, 1], or bins with (about) equal numbers of cases.
    alpha : float, default 0.05
        Error rate of the observed-fraction intervals.

    Returns
    -------
    pandas.DataFrame
        One row per non-empty bin: ``bin_low, bin_high, n, mean_predicted, observed,
        observed_low, observed_high``.
    """
    alpha = _check_alpha(alpha)
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    y = _check_labels(y_true, need_both=False)
    p = _check_probabilities(y_prob, y.size)
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    elif strategy == "quantile":
        edges = np.unique(np.quantile(p, np.linspace(0.0, 1.0, int(n_bins) + 1)))
        if edges.size < 2:
            edges = np.array([p[0], p[0]])
    else:
        raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    # Right-closed last bin so that p == 1 (or the maximum) is counted.
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(edges.size - 2, 0))
    rows = []
    for b in range(max(edges.size - 1, 1)):
        sel = idx == b
        cnt = int(sel.sum())
        if cnt == 0:
            continue
        k = int(y[sel].sum())
        low, high = wilson_interval(k, cnt, alpha)
        rows.append(
            {
                "bin_low": float(edges[b]),
                "bin_high": float(edges[min(b + 1, edges.size - 1)]),
                "n": cnt,
                "mean_predicted": float(p[sel].mean()),
                "observed": k / cnt,
                "observed_low": low,
                "observed_high": high,
            }
        )
    return pd.DataFrame(rows)


def decision_curve(
    y_true: Any, y_prob: Any, thresholds: Sequence[float] | np.ndarray | None = None
) -> pd.DataFrame:
    """Net benefit of the model, treat-all and treat-none (Vickers & Elkin 2006).

    ``net benefit = TP/N - FP/N * pt / (1 - pt)`` at threshold probability ``pt``; a case is
    treated iff ``y_prob >= pt``. Treat-all: ``prevalence - (1 - prevalence) * pt / (1 - pt)``;
    treat-none: 0.

    Parameters
    ----------
    y_true : array-like of shape (n_cases,)
        Binary labels.
    y_prob : array-like of shape (n_cases,)
        Predicted probabilities in [0, 1].
    thresholds : sequence of float in (0, 1), optional
        Threshold probabilities; default 0.01, 0.02, ..., 0.99.

    Returns
    -------
    pandas.DataFrame
        Columns ``threshold, net_benefit_model, net_benefit_all, net_benefit_none``.
    """
    y = _check_labels(y_true, need_both=False)
    p = _check_probabilities(y_prob, y.size)
    pt = np.round(np.arange(1, 100) / 100.0, 2) if thresholds is None else np.asarray(thresholds)
    pt = pt.astype(np.float64).ravel()
    if pt.size == 0 or not ((pt > 0) & (pt < 1)).all():
        raise ValueError("thresholds must be a non-empty sequence of values strictly in (0, 1)")
    N = y.size
    treat = p[None, :] >= pt[:, None]
    tp = (treat & y[None, :]).sum(axis=1)
    fp = (treat & ~y[None, :]).sum(axis=1)
    odds = pt / (1.0 - pt)
    prevalence = y.mean()
    return pd.DataFrame(
        {
            "threshold": pt,
            "net_benefit_model": tp / N - fp / N * odds,
            "net_benefit_all": prevalence - (1.0 - prevalence) * odds,
            "net_benefit_none": np.zeros_like(pt),
        }
    )


# ---------------------------------------------------------------------------------------------
# Table 1: baseline characteristics
# ---------------------------------------------------------------------------------------------
def format_p_value(p: float, digits: int = 3) -> str:
    """Format a p-value as in the paper: ``"<0.001"``, ``"0.022"``; NaN -> ``""``.

    Parameters
    ----------
    p : float
        The p-value.
    digits : int, default 3
        Decimal places; values below ``10**-digits`` print as ``"<0.001"`` (for digits=3).

    Returns
    -------
    str
    """
    if p is None or not np.isfinite(p):
        return ""
    floor = 10.0 ** (-digits)
    if p < floor:
        return f"<{floor:.{digits}f}"
    return f"{min(float(p), 1.0):.{digits}f}"


def _is_normal(x: np.ndarray, alpha: float) -> bool:
    """Shapiro-Wilk p >= alpha. Fewer than 3 values or a constant sample count as not normal
    (Shapiro-Wilk is undefined there and a t-test would be meaningless)."""
    if x.size < 3 or np.ptp(x) == 0:
        return False
    with warnings.catch_warnings():
        # scipy warns that p may be inaccurate for N > 5000; the decision is still usable.
        warnings.simplefilter("ignore", UserWarning)
        return bool(_sps.shapiro(x).pvalue >= alpha)


def compare_continuous(
    a: Any,
    b: Any,
    alpha_normality: float = 0.05,
    equal_var: bool = False,
    force: Literal["auto", "t-test", "mann-whitney"] = "auto",
) -> tuple[float, str]:
    """Compare one continuous variable between two independent groups.

    Shapiro-Wilk is run in each group; if ``p >= alpha_normality`` in both, an independent
    two-sample t-test is used (Welch's unless ``equal_var``), otherwise a two-sided
    Mann-Whitney U test (scipy's ``method="auto"``: exact for small samples without ties,
    normal approximation with continuity correction otherwise). NaNs are dropped.

    Parameters
    ----------
    a, b : array-like
        Values of the two groups.
    alpha_normality : float, default 0.05
        Shapiro-Wilk level.
    equal_var : bool, default False
        Student's t-test instead of Welch's.
    force : {"auto", "t-test", "mann-whitney"}, default "auto"
        Skip the normality check and use the named test.

    Returns
    -------
    (p_value, test_name) : tuple of (float, str)
        ``(nan, "")`` when a group has no value (or fewer than 2 for a t-test).
    """
    xa = pd.to_numeric(pd.Series(a), errors="raise").dropna().to_numpy(np.float64)
    xb = pd.to_numeric(pd.Series(b), errors="raise").dropna().to_numpy(np.float64)
    if xa.size == 0 or xb.size == 0:
        return math.nan, ""
    if force == "auto":
        use_t = _is_normal(xa, alpha_normality) and _is_normal(xb, alpha_normality)
    elif force in ("t-test", "mann-whitney"):
        use_t = force == "t-test"
    else:
        raise ValueError(f"force must be 'auto', 't-test' or 'mann-whitney', got {force!r}")
    if use_t:
        name = "Student t-test" if equal_var else "Welch t-test"
        if xa.size < 2 or xb.size < 2:
            return math.nan, name
        return float(_sps.ttest_ind(xa, xb, equal_var=equal_var).pvalue), name
    return float(_sps.mannwhitneyu(xa, xb, alternative="two-sided").pvalue), "Mann-Whitney U"


def compare_categorical(table: Any, yates: bool = False) -> tuple[float, str]:
    """Test independence in a contingency table (levels x groups).

    Rows or columns that are all zero are dropped first. A 2x2 table uses Fisher's exact test
    (two-sided) when any expected count is < 5, else Pearson's chi-square (with Yates'
    continuity correction only if ``yates``). Larger tables use Pearson's chi-square without
    correction (Fisher's exact test is only available for 2x2 here; with small expected counts
    the chi-square approximation is rough; the test name is reported so readers can judge).

    Parameters
    ----------
    table : array-like of shape (n_levels, n_groups)
        Counts.
    yates : bool, default False
        Apply Yates' correction to a 2x2 chi-square.

    Returns
    -------
    (p_value, test_name) : tuple of (float, str)
        ``(nan, "")`` when fewer than 2 non-empty rows or columns remain.
    """
    t = np.asarray(table, dtype=np.float64)
    if t.ndim != 2 or (t < 0).any() or not np.isfinite(t).all():
        raise ValueError("table must be a 2-D array of non-negative counts")
    t = t[t.sum(axis=1) > 0][:, t.sum(axis=0) > 0]
    if t.shape[0] < 2 or t.shape[1] < 2:
        return math.nan, ""
    expected = _sps.contingency.expected_freq(t)
    if t.shape == (2, 2) and (expected < 5).any():
        return float(_sps.fisher_exact(t.astype(np.int64)).pvalue), "Fisher exact"
    res = _sps.chi2_contingency(t, correction=yates and t.shape == (2, 2))
    name = "chi-square (Yates)" if yates and t.shape == (2, 2) else "chi-square"
    return float(res.pvalue), name


def _fmt(x: float, digits: int) -> str:
    return f"{x:.{digits}f}"


def _summarise_numeric(x: np.ndarray, normal: bool, digits: int) -> str:
    if x.size == 0:
        return ""
    if normal:
        sd = float(np.std(x, ddof=1)) if x.size > 1 else math.nan
        return f"{_fmt(float(np.mean(x)), digits)} ± {_fmt(sd, digits)}"
    q1, med, q3 = np.quantile(x, [0.25, 0.5, 0.75])
    return f"{_fmt(med, digits)} ({_fmt(q1, digits)}, {_fmt(q3, digits)})"


def _combine_tests(names: list[str], comparisons: Sequence[tuple[str, str]]) -> str:
    used = [n for n in names if n]
    if not used:
        return ""
    if len(set(used)) == 1:
        return used[0]
    return "; ".join(f"{a} vs {b}: {n}" for (a, b), n in zip(comparisons, names, strict=True) if n)


def _levels(values: pd.Series) -> list[Any]:
    if isinstance(values.dtype, pd.CategoricalDtype):
        return list(values.cat.categories)
    uniq = pd.unique(values.dropna())
    try:
        return sorted(uniq)
    except TypeError:
        return sorted(uniq, key=str)


def baseline_table(
    df: pd.DataFrame,
    group_col: str,
    numeric: Sequence[str],
    categorical: Sequence[str],
    group_order: Sequence[str] = ("train", "val", "test"),
    comparisons: Sequence[tuple[str, str]] = (("train", "val"), ("train", "test"), ("val", "test")),
    alpha_normality: float = 0.05,
    equal_var: bool = False,
    test_choice: Literal["per_comparison", "per_variable"] = "per_comparison",
    digits: int | Mapping[str, int] = 1,
    yates: bool = False,
    group_labels: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Table 1: baseline characteristics of the study sets with between-set p-values.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per patient (or case).
    group_col : str
        Column holding the set of each row (e.g. ``"split"``).
    numeric : sequence of str
        Continuous variables.
    categorical : sequence of str
        Categorical variables; levels follow a pandas Categorical's order, else sorted order.
    group_order : sequence of str, default ("train", "val", "test")
        Groups shown, in this order. Every row must belong to one of them.
    comparisons : sequence of (str, str)
        Pairs of groups tested; one p-value column each.
    alpha_normality : float, default 0.05
        Shapiro-Wilk level.
    equal_var : bool, default False
        False: Welch's t-test (R's ``t.test`` default, robust to unequal variances);
        True: Student's t-test.
    test_choice : {"per_comparison", "per_variable"}, default "per_comparison"
        ``"per_comparison"``: for each pair, a t-test if Shapiro-Wilk ``p >= alpha_normality``
        in both compared groups, else Mann-Whitney U. ``"per_variable"``: a t-test for all
        pairs if the variable is normal in every group, else Mann-Whitney U for all pairs, so
        the test always matches the display form.
    digits : int or Mapping[str, int], default 1
        Decimal places of continuous summaries (per variable if a mapping; default 1).
    yates : bool, default False
        Yates' correction for 2x2 chi-square tests (see :func:`compare_categorical`).
    group_labels : Mapping[str, str], optional
        Display names for groups (e.g. ``{"train": "Training cohort"}``).

    Returns
    -------
    pandas.DataFrame
        Columns: ``variable``, ``level``, ``Total (n=N)``, one ``<group> (n=k)`` column per
        group, one float column ``p (<a> vs <b>)`` per comparison, and ``test`` (the test
        used; when comparisons of one variable used different tests, each is listed as
        ``"a vs b: test"``). ``df.attrs["columns"]`` maps ``"Total"`` and each group name to its
        column label, ``df.attrs["p_columns"]`` each comparison to its p column.

        Continuous variable: one row. Display form is decided once per variable: mean ± SD in
        every column if Shapiro-Wilk ``p >= alpha_normality`` in **every** group, otherwise
        median (Q1, Q3) (numpy linear quantiles, R type 7).
        Categorical variable: a header row carrying the p-values and test, then one row per
        level with ``n (%)`` (percent of the non-missing values of that column).
        Missing values are excluded from summaries and tests; a variable with any missing value
        gets an extra ``Missing`` row with the count per column.

    Raises
    ------
    ValueError
        Unknown columns or groups, a comparison naming a group not in ``group_order``, rows in
        groups outside ``group_order``, or a non-numeric value in a numeric column.
    """
    alpha_normality = _check_alpha(alpha_normality)
    if test_choice not in ("per_comparison", "per_variable"):
        raise ValueError(
            f"test_choice must be 'per_comparison' or 'per_variable', got {test_choice!r}"
        )
    missing_cols = [c for c in [group_col, *numeric, *categorical] if c not in df.columns]
    if missing_cols:
        raise ValueError(f"columns not in the data frame: {missing_cols}")
    overlap = set(numeric) & set(categorical)
    if overlap:
        raise ValueError(f"variables listed as both numeric and categorical: {sorted(overlap)}")
    group_order = [str(g) for g in group_order]
    if len(set(group_order)) != len(group_order):
        raise ValueError(f"group_order has duplicates: {group_order}")
    comparisons = [(str(a), str(b)) for a, b in comparisons]
    for a, b in comparisons:
        if a not in group_order or b not in group_order:
            raise ValueError(f"comparison ({a!r}, {b!r}) names a group not in {group_order}")
    groups = df[group_col].astype("string")
    unknown = sorted(set(groups.dropna().unique()) - set(group_order))
    n_no_group = int(groups.isna().sum())
    if unknown or n_no_group:
        raise ValueError(
            f"rows outside group_order {group_order}: groups {unknown}"
            + (f" and {n_no_group} row(s) with no group" if n_no_group else "")
        )
    masks = {g: (groups == g).to_numpy(dtype=bool) for g in group_order}
    labels = {g: (group_labels or {}).get(g, g) for g in group_order}
    col_total = f"Total (n={len(df)})"
    col_group = {g: f"{labels[g]} (n={int(masks[g].sum())})" for g in group_order}
    col_p = {(a, b): f"p ({labels[a]} vs {labels[b]})" for a, b in comparisons}
    value_cols = [col_total, *col_group.values()]
    if len(set(value_cols) | set(col_p.values()) | {"variable", "level", "test"}) != (
        len(value_cols) + len(col_p) + 3
    ):
        raise ValueError("group labels produce duplicate column names; use group_labels")
    column_masks = {col_total: np.ones(len(df), dtype=bool)} | {
        col_group[g]: masks[g] for g in group_order
    }

    rows: list[dict[str, Any]] = []

    def blank_row(variable: str, level: str) -> dict[str, Any]:
        row: dict[str, Any] = {"variable": variable, "level": level}
        row.update({c: "" for c in value_cols})
        row.update({c: math.nan for c in col_p.values()})
        row["test"] = ""
        return row

    def missing_row(variable: str, isna: np.ndarray) -> None:
        if isna.any():
            row = blank_row(variable, "Missing")
            for c, mk in column_masks.items():
                row[c] = str(int((isna & mk).sum()))
            rows.append(row)

    for var in numeric:
        try:
            values = pd.to_numeric(df[var], errors="raise").to_numpy(dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"numeric variable {var!r} has non-numeric values: {exc}") from None
        if np.isinf(values).any():
            raise ValueError(f"numeric variable {var!r} has infinite values")
        isna = np.isnan(values)
        by_group = {g: values[masks[g] & ~isna] for g in group_order}
        normal_all = all(_is_normal(by_group[g], alpha_normality) for g in group_order)
        d = digits.get(var, 1) if isinstance(digits, Mapping) else int(digits)
        row = blank_row(var, "")
        for c, mk in column_masks.items():
            row[c] = _summarise_numeric(values[mk & ~isna], normal_all, d)
        names = []
        for a, b in comparisons:
            force: Literal["auto", "t-test", "mann-whitney"] = "auto"
            if test_choice == "per_variable":
                force = "t-test" if normal_all else "mann-whitney"
            p, name = compare_continuous(
                by_group[a], by_group[b], alpha_normality, equal_var=equal_var, force=force
            )
            row[col_p[(a, b)]] = p
            names.append(name)
        row["test"] = _combine_tests(names, comparisons)
        rows.append(row)
        missing_row(var, isna)

    for var in categorical:
        series = df[var]
        isna = series.isna().to_numpy(dtype=bool)
        levels = _levels(series)
        header = blank_row(var, "")
        counts = {
            g: np.array(
                [int(((series == lv).to_numpy(dtype=bool) & masks[g]).sum()) for lv in levels]
            )
            for g in group_order
        }
        names = []
        for a, b in comparisons:
            p, name = compare_categorical(np.column_stack([counts[a], counts[b]]), yates=yates)
            header[col_p[(a, b)]] = p
            names.append(name)
        header["test"] = _combine_tests(names, comparisons)
        rows.append(header)
        for lv in levels:
            is_lv = (series == lv).to_numpy(dtype=bool)
            row = blank_row(var, str(lv))
            for c, mk in column_masks.items():
                denom = int((mk & ~isna).sum())
                k = int((mk & is_lv).sum())
                row[c] = f"{k} ({100.0 * k / denom:.1f})" if denom else "0"
            rows.append(row)
        missing_row(var, isna)

    table = pd.DataFrame(rows, columns=["variable", "level", *value_cols, *col_p.values(), "test"])
    table.attrs["columns"] = {"Total": col_total, **col_group}
    table.attrs["p_columns"] = {f"{a} vs {b}": c for (a, b), c in col_p.items()}
    return table


def format_baseline_table(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Copy of a :func:`baseline_table` result with p-value columns as display strings.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`baseline_table`.
    digits : int, default 3
        See :func:`format_p_value`.

    Returns
    -------
    pandas.DataFrame
    """
    out = table.copy()
    p_cols = list(table.attrs.get("p_columns", {}).values()) or [
        c for c in table.columns if str(c).startswith("p (")
    ]
    for c in p_cols:
        out[c] = [format_p_value(p, digits) for p in table[c]]
    return out
