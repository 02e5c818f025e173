"""The Yeo-Johnson power transform, fitted for all features at once.

scikit-learn's :class:`~sklearn.preprocessing.PowerTransformer` finds each feature's
lambda with SciPy's :func:`~scipy.stats.yeojohnson_normmax`, one feature at a time,
and every likelihood evaluation goes through SciPy's generic axis/NaN wrapper. On a
radiomics table (hundreds of features, a few hundred cases) that wrapper, not the
arithmetic, is the cost: ~8 s per fit, paid again in every CV fold of every model of
the zoo. :class:`YeoJohnsonTransformer` runs the same bounded Brent search (the
Forsythe-Malcolm-Moler ``fmin`` that :func:`scipy.optimize.fminbound` implements)
for every feature in lock-step on one array, with the same bounds, tolerance and
floating-point operations, so its lambdas and outputs equal PowerTransformer's bit
for bit on float64 data (tests/test_power.py checks that) in a few milliseconds.
Float32 data (the networks' deep features) is computed in float64, as if converted
first; PowerTransformer keeps part of that arithmetic in float32.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

#: ``xtol`` of :func:`scipy.stats.yeojohnson_normmax` (it matches ``optimize.brent``).
_XTOL = 1.48e-08
#: ``maxiter`` of :func:`scipy.optimize.fminbound`.
_MAXFUN = 500
_SQRT_EPS = math.sqrt(2.2e-16)
_GOLDEN = 0.5 * (3.0 - math.sqrt(5.0))


def _is_constant(var: np.ndarray, mean: np.ndarray, n_samples: int) -> np.ndarray:
    # Chan, Golub & LeVeque's error bound of the two-pass variance (the criterion
    # PowerTransformer uses to leave a constant feature unchanged, lambda 1).
    eps = np.finfo(np.float64).eps
    return var <= n_samples * eps * var + (n_samples * mean * eps) ** 2


def yeo_johnson(x: np.ndarray, lmbda: np.ndarray) -> np.ndarray:
    """Yeo-Johnson transform of the rows of ``x`` (features x cases), one lambda per row.

    Parameters
    ----------
    x : ndarray of shape (n_features, n_cases)
        Values, NaN allowed (it stays NaN).
    lmbda : ndarray of shape (n_features,)
        Each feature's lambda.

    Returns
    -------
    ndarray of shape (n_features, n_cases)
    """
    lam = np.asarray(lmbda, dtype=np.float64)[:, None]
    eps = np.finfo(np.float64).eps
    pos = x >= 0
    with np.errstate(all="ignore"):  # each branch is computed on the other sign too
        log_pos = np.log1p(x)
        log_neg = np.log1p(-x)
        up = np.where(np.abs(lam) < eps, log_pos, np.expm1(lam * log_pos) / lam)
        down = np.where(np.abs(lam - 2) > eps, -np.expm1((2 - lam) * log_neg) / (2 - lam), -log_neg)
    return np.where(pos, up, down)


def _neg_log_likelihood(x: np.ndarray, lmbda: np.ndarray, sign_log: np.ndarray) -> np.ndarray:
    # Yeo-Johnson profile log-likelihood of each row (SciPy's yeojohnson_llf), negated
    # for minimisation; a vanishing variance counts as the worst value, as in SciPy.
    y = yeo_johnson(x, lmbda)
    sigma = np.var(y, axis=1)
    with np.errstate(divide="ignore"):
        log_sigma = np.where(sigma >= np.finfo(np.float64).smallest_normal, np.log(sigma), -np.inf)
    n = x.shape[1]
    llf = -n / 2 * log_sigma + (lmbda - 1) * sign_log
    llf[np.isinf(llf)] = -np.inf
    return -llf


def _bounds(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # SciPy's overflow-safe search interval for each row: values up to 20 times the
    # largest observed one transform without over- or underflow.
    log1p_max_x = np.log1p(20 * np.max(np.abs(x), axis=1))
    log_eps = np.log(np.finfo(np.float64).eps)
    log_tiny = (np.log(np.finfo(np.float64).tiny) - log_eps) / 2
    log_max = (np.log(np.finfo(np.float64).max) + log_eps) / 2
    with np.errstate(divide="ignore", over="ignore"):  # not finite: refused by the caller
        lb = log_tiny / log1p_max_x
        ub = log_max / log1p_max_x
    all_neg = np.all(x < 0, axis=1)
    some_neg = np.any(x < 0, axis=1) & ~all_neg
    lb, ub = (
        np.where(all_neg, 2 - ub, np.where(some_neg, np.maximum(2 - ub, lb), lb)),
        np.where(all_neg, 2 - lb, np.where(some_neg, np.minimum(2 - lb, ub), ub)),
    )
    return lb, ub


def yeo_johnson_lambdas(x: np.ndarray) -> np.ndarray:
    """Maximum-likelihood Yeo-Johnson lambda of every row of ``x``, found together.

    The bounded Brent minimisation of :func:`scipy.optimize.fminbound` (golden-section
    and parabolic steps), run on all rows in lock-step: each row follows exactly the
    steps it would follow alone, and stops when its own interval has converged.

    Parameters
    ----------
    x : ndarray of shape (n_features, n_cases)
        Finite values (each row one feature); rows must not be constant.

    Returns
    -------
    ndarray of shape (n_features,)

    Raises
    ------
    ValueError
        A row whose values are all within ~1e-307 of 0 but not all 0 (no finite bounds).
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    # rows of zeros keep the identity (lambda 1), as in SciPy; the others are searched
    zero = ~np.any(x != 0, axis=1)
    if zero.any():
        out = np.ones(x.shape[0])
        if not zero.all():
            out[~zero] = yeo_johnson_lambdas(x[~zero])
        return out
    sign_log = np.sum(np.sign(x) * np.log1p(np.abs(x)), axis=1)

    def f(lam: np.ndarray, rows: np.ndarray) -> np.ndarray:
        out = np.full_like(lam, np.nan)  # rows that have converged are not used
        out[rows] = _neg_log_likelihood(x[rows], lam[rows], sign_log[rows])
        return out

    a, b = _bounds(x)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        # values so close to 0 that no overflow-safe interval exists (SciPy refuses too)
        raise ValueError(
            "Yeo-Johnson: a feature's values are too close to 0 for a bounded lambda search "
            f"(largest |value| {np.abs(x).max(axis=1).min():.3g}); rescale it or drop it"
        )
    xf = a + _GOLDEN * (b - a)
    nfc = fulc = xf.copy()
    rat = np.zeros_like(xf)
    e = np.zeros_like(xf)
    fx = _neg_log_likelihood(x, xf, sign_log)
    ffulc = fnfc = fx.copy()
    xm = 0.5 * (a + b)
    tol1 = _SQRT_EPS * np.abs(xf) + _XTOL / 3.0
    tol2 = 2.0 * tol1
    num = 1
    active = np.abs(xf - xm) > (tol2 - 0.5 * (b - a))
    with np.errstate(all="ignore"):  # parabola terms are computed where unused too
        while active.any():
            # a parabola through the three best points, where the last steps allow one
            parabola = np.abs(e) > tol1
            r = (xf - nfc) * (fx - ffulc)
            q = (xf - fulc) * (fx - fnfc)
            p = (xf - fulc) * q - (xf - nfc) * r
            q = 2.0 * (q - r)
            p = np.where(q > 0.0, -p, p)
            q = np.abs(q)
            accept = (
                parabola
                & (np.abs(p) < np.abs(0.5 * q * e))
                & (p > q * (a - xf))
                & (p < q * (b - xf))
            )
            para_rat = (p + 0.0) / q
            near_edge = ((xf + para_rat - a) < tol2) | ((b - (xf + para_rat)) < tol2)
            toward_mid = np.sign(xm - xf) + ((xm - xf) == 0)
            para_rat = np.where(near_edge, tol1 * toward_mid, para_rat)
            # otherwise a golden-section step into the larger part of the interval
            golden_e = np.where(xf >= xm, a - xf, b - xf)
            new_e = np.where(accept, rat, golden_e)
            new_rat = np.where(accept, para_rat, _GOLDEN * golden_e)
            si = np.sign(new_rat) + (new_rat == 0)
            u = xf + si * np.maximum(np.abs(new_rat), tol1)
            fu = f(u, np.flatnonzero(active))
            num += 1

            better = active & (fu <= fx)
            worse = active & ~(fu <= fx)
            shift2 = worse & ((fu <= fnfc) | (nfc == xf))
            shift3 = worse & ~shift2 & ((fu <= ffulc) | (fulc == xf) | (fulc == nfc))
            a = np.where(better & (u >= xf), xf, np.where(worse & (u < xf), u, a))
            b = np.where(better & (u < xf), xf, np.where(worse & (u >= xf), u, b))
            fulc, ffulc = (
                np.where(better | shift2, nfc, np.where(shift3, u, fulc)),
                np.where(better | shift2, fnfc, np.where(shift3, fu, ffulc)),
            )
            nfc, fnfc = (
                np.where(better, xf, np.where(shift2, u, nfc)),
                np.where(better, fx, np.where(shift2, fu, fnfc)),
            )
            xf, fx = np.where(better, u, xf), np.where(better, fu, fx)
            e, rat = np.where(active, new_e, e), np.where(active, new_rat, rat)
            xm = 0.5 * (a + b)
            tol1 = _SQRT_EPS * np.abs(xf) + _XTOL / 3.0
            tol2 = 2.0 * tol1
            if num >= _MAXFUN:
                break
            active &= np.abs(xf - xm) > (tol2 - 0.5 * (b - a))
    return xf


class YeoJohnsonTransformer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Yeo-Johnson power transform of each feature, then zero mean and unit variance.

    The same transform as ``PowerTransformer(method="yeo-johnson")`` (equal lambdas
    and outputs on float64 data; other data is converted to float64 first), with all
    features' lambdas found at once; see the module docstring.
    Constant features keep lambda 1 (identity); NaN values are ignored when fitting
    and stay NaN.

    Parameters
    ----------
    standardize : bool
        Standardise the transformed features (as PowerTransformer does by default).

    Attributes
    ----------
    lambdas_ : ndarray of shape (n_features,)
        Each feature's lambda.
    scaler_ : StandardScaler or None
        The standardisation fitted on the transformed training data.
    """

    def __init__(self, standardize: bool = True) -> None:
        self.standardize = standardize

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def fit(self, X: Any, y: Any = None) -> YeoJohnsonTransformer:
        """Find each feature's lambda (and the standardisation) on ``X``."""
        self.fit_transform(X, y)
        return self

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """Fit on ``X`` and return it transformed."""
        X = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan", reset=True)
        cols = np.ascontiguousarray(X.T)
        n = X.shape[0]
        with np.errstate(invalid="ignore"):
            constant = _is_constant(
                np.var(X, axis=0, dtype=np.float64), np.mean(X, axis=0, dtype=np.float64), n
            )
        self.lambdas_ = np.ones(X.shape[1])
        has_nan = np.isnan(cols).any(axis=1)
        together = ~constant & ~has_nan
        if together.any():
            self.lambdas_[together] = yeo_johnson_lambdas(cols[together])
        for i in np.flatnonzero(~constant & has_nan):  # rare: each with its own cases
            finite = cols[i][~np.isnan(cols[i])]
            self.lambdas_[i] = yeo_johnson_lambdas(finite[None, :])[0]
        # the memory order of X, as PowerTransformer keeps it: the standardisation's
        # column sums (hence its last bits) depend on it
        out = self._power(cols, like=X)
        # PowerTransformer leaves constant features untouched when fitting
        out[:, constant] = X[:, constant]
        self.scaler_ = StandardScaler().fit(out) if self.standardize else None
        return self.scaler_.transform(out) if self.scaler_ is not None else out

    def transform(self, X: Any) -> np.ndarray:
        """Transform ``X`` with the fitted lambdas (and standardisation)."""
        check_is_fitted(self, "lambdas_")
        X = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan", reset=False)
        out = self._power(np.ascontiguousarray(X.T), like=X)
        return self.scaler_.transform(out) if self.scaler_ is not None else out

    def inverse_transform(self, X: Any) -> np.ndarray:
        """Map transformed values back to the original scale (the standardisation undone,
        then the inverse power transform of each feature)."""
        check_is_fitted(self, "lambdas_")
        X = check_array(X, dtype=np.float64, ensure_all_finite="allow-nan", copy=True)
        if X.shape[1] != self.lambdas_.size:
            raise ValueError(
                f"X has {X.shape[1]} features, but YeoJohnsonTransformer is expecting "
                f"{self.lambdas_.size} features as input."
            )
        if self.scaler_ is not None:
            X = self.scaler_.inverse_transform(X)
        lam = self.lambdas_[None, :]
        eps = np.spacing(1.0)
        pos = X >= 0
        with np.errstate(all="ignore"):  # each branch is computed on the other sign too
            up = np.where(np.abs(lam) < eps, np.exp(X) - 1, np.power(X * lam + 1, 1 / lam) - 1)
            down = np.where(
                np.abs(lam - 2) > eps,
                1 - np.power(-(2 - lam) * X + 1, 1 / (2 - lam)),
                1 - np.exp(-X),
            )
        return np.where(pos, up, down)

    def _power(self, cols: np.ndarray, *, like: np.ndarray) -> np.ndarray:
        out = yeo_johnson(cols, self.lambdas_).T  # Fortran order
        return np.ascontiguousarray(out) if like.flags.c_contiguous else out
