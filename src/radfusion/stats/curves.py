"""Calibration (Brier score, reliability-diagram data) and decision curves.

References
----------
Vickers AJ, Elkin EB. Decision curve analysis: a novel method for evaluating prediction models.
Med Decis Making 2006;26:565-74.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from radfusion.stats.confusion import wilson_interval
from radfusion.stats.inputs import _check_alpha, _check_labels, _check_scores

__all__ = ["brier_score", "calibration_curve_data", "decision_curve"]


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
