"""Redundancy filter: drop one feature of every pair with a high Spearman correlation."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata

from radfusion.selection._base import SupportSelector, validate_data


def spearman_matrix(X: Any) -> np.ndarray:
    """Spearman rank correlation between the columns of ``X`` (ranks, then Pearson).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Non-constant columns (a constant column has no defined correlation).

    Returns
    -------
    numpy.ndarray of shape (n_features, n_features)
    """
    ranks = rankdata(np.asarray(X, dtype=float), axis=0)
    ranks -= ranks.mean(axis=0)
    ranks /= np.linalg.norm(ranks, axis=0)
    rho = ranks.T @ ranks
    np.clip(rho, -1.0, 1.0, out=rho)
    return rho


class SpearmanFilter(SupportSelector):
    """Drop one feature of each pair whose absolute Spearman correlation exceeds ``threshold``.

    The rule is greedy and deterministic: features are visited from the least to the
    most redundant (increasing mean absolute correlation with all other features,
    ties to 1e-10 broken by column order) and a feature is kept unless it correlates above the
    threshold with a feature already kept. As a result no kept pair exceeds the
    threshold, and every dropped feature is represented by a kept one it correlates
    with above the threshold (``redundant_with_``). Of two features that are monotone
    transforms of each other, the one in the earlier column is kept.

    Constant columns have no rank correlation and carry no information: they are
    dropped (``constant_``).

    Parameters
    ----------
    threshold : float, default=0.9
        Absolute Spearman correlation above which a pair counts as redundant, in (0, 1].

    Attributes
    ----------
    support_ : ndarray of bool of shape (n_features_in_,)
        Kept features.
    mean_abs_rho_ : ndarray of shape (n_features_in_,)
        Mean absolute correlation of each feature with the other non-constant
        features (NaN for constant features); the visiting order.
    redundant_with_ : ndarray of int of shape (n_features_in_,)
        For a dropped feature, the column index of the kept feature it is most
        correlated with; -1 for kept and constant features.
    max_abs_rho_ : ndarray of shape (n_features_in_,)
        For a dropped feature, its absolute correlation with that kept feature; NaN
        otherwise.
    constant_ : ndarray of bool of shape (n_features_in_,)
        Constant features (dropped).
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined when ``X`` has string column names.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(2, 50))
    >>> X = np.column_stack([a, np.exp(a), b])  # exp(a) is a monotone transform of a
    >>> SpearmanFilter(0.9).fit(X).get_support().tolist()
    [True, False, True]
    """

    def __init__(self, threshold: float = 0.9):
        self.threshold = threshold

    def fit(self, X: Any, y: Any = None) -> SpearmanFilter:
        """Find the redundant features of ``X``.

        Parameters
        ----------
        X : array-like or pandas.DataFrame of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        self : SpearmanFilter

        Raises
        ------
        ValueError
            If ``threshold`` is outside (0, 1], ``X`` has fewer than 2 rows, or every
            feature is constant.
        """
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1]; got {self.threshold!r}")
        X = validate_data(self, X, ensure_min_samples=2, dtype=np.float64)
        p = X.shape[1]
        self.constant_ = np.ptp(X, axis=0) == 0
        varying = np.flatnonzero(~self.constant_)
        if varying.size == 0:
            raise ValueError(f"No feature in X varies: all {p} features are constant")

        abs_rho = np.abs(spearman_matrix(X[:, varying]))
        m = varying.size
        mean_abs = (abs_rho.sum(axis=1) - 1.0) / max(m - 1, 1)
        # Rounded so that floating-point noise cannot break a tie (e.g. between a feature
        # and a monotone transform of it, whose correlations are identical).
        order = np.lexsort((np.arange(m), np.round(mean_abs, 10)))
        kept = np.zeros(m, dtype=bool)
        partner = np.full(m, -1)
        partner_rho = np.full(m, np.nan)
        for i in order:
            row = abs_rho[i]
            close = np.flatnonzero(kept & (row > self.threshold))
            if close.size:
                j = close[np.argmax(row[close])]
                partner[i], partner_rho[i] = varying[j], row[j]
            else:
                kept[i] = True

        self.support_ = np.zeros(p, dtype=bool)
        self.support_[varying[kept]] = True
        self.mean_abs_rho_ = np.full(p, np.nan)
        self.mean_abs_rho_[varying] = mean_abs
        self.redundant_with_ = np.full(p, -1)
        self.redundant_with_[varying] = partner
        self.max_abs_rho_ = np.full(p, np.nan)
        self.max_abs_rho_[varying] = partner_rho
        return self
