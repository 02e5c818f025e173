"""Version shims shared by radfusion's selectors (scikit-learn >= 1.4)."""

from __future__ import annotations

from typing import Any

import numpy as np

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
