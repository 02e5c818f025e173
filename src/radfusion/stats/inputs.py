"""Input checks shared by every part of :mod:`radfusion.stats`.

They enforce the package's conventions (binary ``y_true``, finite 1-D scores, ``alpha`` in
(0, 1)) and say which value was wrong, so every statistic fails the same way on bad input.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be strictly between 0 and 1, got {alpha!r}")
    return alpha


def _check_n_boot(n_boot: int) -> int:
    """``n_boot`` as an int, or ValueError when there would be no bootstrap resample."""
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    return int(n_boot)


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
