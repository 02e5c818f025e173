"""ROC inference: AUCs with DeLong and bootstrap confidence intervals, and the DeLong test.

References
----------
DeLong ER, DeLong DM, Clarke-Pearson DL. Comparing the areas under two or more correlated
receiver operating characteristic curves: a nonparametric approach. Biometrics 1988;44:837-45.

Sun X, Xu W. Fast implementation of DeLong's algorithm for comparing the areas under correlated
receiver operating characteristic curves. IEEE Signal Process Lett 2014;21:1389-93.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as _sps

from radfusion.stats.inputs import _check_alpha, _check_labels, _check_n_boot, _check_scores

__all__ = [
    "AUCInterval",
    "DeLongResult",
    "auc_or_nan",
    "bootstrap_auc_ci",
    "delong_auc_ci",
    "delong_covariance",
    "delong_test",
    "pairwise_delong",
]

# Below this standard error (on the AUC scale, which lives in [0, 1]) the DeLong variance is
# treated as exactly zero: it only arises from floating-point residue of a constant vector.
_DEGENERATE_SE = 1e-12
# Bootstrap work is done in blocks of at most this many matrix elements, to bound memory.
_BLOCK_ELEMENTS = 4_000_000


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


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney AUC of one score vector (checked boolean labels ``y``)."""
    return float(_auc_rows(s[None, :], y[None, :])[0])


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
    n_boot = _check_n_boot(n_boot)
    y = _check_labels(y_true)
    s = _check_scores(score, y.size)
    aucs = _bootstrap_aucs(y, s, n_boot, np.random.default_rng(seed), stratified)
    aucs = aucs[np.isfinite(aucs)]
    if aucs.size == 0:
        raise ValueError("no bootstrap resample contained both classes; use stratified=True")
    auc = _auc(y, s)
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
