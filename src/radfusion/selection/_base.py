"""What radfusion's selectors share: base classes, the binary-target mask and version shims
(scikit-learn >= 1.4)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.feature_selection import SelectorMixin
from sklearn.utils.validation import check_is_fitted

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    _validate_data = None


def validate_data(estimator: Any, X: Any, y: Any = "no_validation", **kwargs: Any) -> Any:
    """``sklearn.utils.validation.validate_data`` on any supported scikit-learn.

    Sets ``n_features_in_`` / ``feature_names_in_`` on ``estimator`` when ``reset``.
    """
    if _validate_data is not None:
        return _validate_data(estimator, X, y, **kwargs)
    if "ensure_all_finite" in kwargs:  # pragma: no cover - renamed in 1.6
        kwargs["force_all_finite"] = kwargs.pop("ensure_all_finite")
    return estimator._validate_data(X, y, **kwargs)  # pragma: no cover


def binary_positive_mask(y: np.ndarray) -> np.ndarray:
    """Mask of the positive class (the larger label) of a two-class target.

    Raises
    ------
    ValueError
        If ``y`` does not hold exactly two classes.
    """
    classes = np.unique(y)
    if classes.size != 2:
        raise ValueError(
            f"a two-class target is required; y has {classes.size} class(es): "
            f"{classes[:5].tolist()}"
        )
    return y == classes[1]


class SupportSelector(SelectorMixin, BaseEstimator):
    """Base of radfusion's selectors: ``fit`` stores the mask of kept features in ``support_``.

    :class:`~sklearn.feature_selection.SelectorMixin` then provides ``transform``,
    ``get_support`` and ``get_feature_names_out``. Subclasses define ``__init__`` (storing
    their parameters unchanged) and ``fit``.
    """

    def _get_support_mask(self) -> np.ndarray:
        check_is_fitted(self, "support_")
        return self.support_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


class BinaryTargetSelector(SupportSelector):
    """A :class:`SupportSelector` whose ``fit`` requires a two-class target."""

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags

        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        # Binary targets only: tells scikit-learn's common checks to give it two classes.
        tags.classifier_tags = ClassifierTags(multi_class=False)
        return tags
