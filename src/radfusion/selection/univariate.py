"""Optional univariate filter: two-sided Mann-Whitney U test between the two classes."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu

from radfusion.selection._base import BinaryTargetSelector, binary_positive_mask, validate_data


class MannWhitneyFilter(BinaryTargetSelector):
    """Keep features whose two-sided Mann-Whitney U test between classes has p < ``alpha``.

    Unadjusted p-values: this is a screening step before LASSO, not an inference.
    When no feature reaches ``alpha`` the single feature with the smallest p-value is
    kept (``fallback_ = True``) rather than none, so a pipeline can still be fitted.

    Parameters
    ----------
    alpha : float, default=0.05
        Significance level, in (0, 1).

    Attributes
    ----------
    pvalues_ : ndarray of shape (n_features_in_,)
        Two-sided p-values (1.0 for features constant in the training data).
    support_ : ndarray of bool of shape (n_features_in_,)
    fallback_ : bool
        True when no feature reached ``alpha`` and the smallest-p feature was kept.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined when ``X`` has string column names.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 30)
    >>> X = np.column_stack([y + rng.normal(size=60), rng.normal(size=60)])
    >>> MannWhitneyFilter().fit(X, y).get_support().tolist()
    [True, False]
    """

    def __init__(self, alpha: float = 0.05):
        self.alpha = alpha

    def fit(self, X: Any, y: Any) -> MannWhitneyFilter:
        """Test every feature between the two classes of ``y``.

        Parameters
        ----------
        X : array-like or pandas.DataFrame of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Two-class labels.

        Returns
        -------
        self : MannWhitneyFilter

        Raises
        ------
        ValueError
            If ``alpha`` is outside (0, 1) or ``y`` does not have exactly two classes.
        """
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1); got {self.alpha!r}")
        X, y = validate_data(self, X, y, dtype=np.float64)
        pos = binary_positive_mask(y)
        p = mannwhitneyu(X[pos], X[~pos], alternative="two-sided", axis=0).pvalue
        self.pvalues_ = np.nan_to_num(np.atleast_1d(p).astype(float), nan=1.0)
        self.support_ = self.pvalues_ < self.alpha
        self.fallback_ = not self.support_.any()
        if self.fallback_:
            self.support_[np.argmin(self.pvalues_)] = True
        return self
