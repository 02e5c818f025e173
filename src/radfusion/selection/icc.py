"""Reproducibility filter: keep features whose intraclass correlation exceeds a threshold.

The paper kept radiomics features with ICC > 0.80 between two delineations of the
same lesions. :class:`ICCFilter` computes the ICC of every feature between the
feature table of reader 1 (the ``X`` it is fitted on) and the table extracted from
reader 2's delineation, using only the cases present in both, i.e. only training
cases when it sits in a leakage-safe pipeline.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd

from radfusion.selection._base import SupportSelector, validate_data

ICCForm = Literal["ICC(3,1)", "ICC(2,1)"]
ICC_FORMS: tuple[str, ...] = ("ICC(3,1)", "ICC(2,1)")
MIN_ICC_CASES = 3


def intraclass_correlation(ratings: Any, form: ICCForm = "ICC(3,1)") -> np.ndarray:
    """Single-rater intraclass correlation of many features at once.

    Two-way ANOVA mean squares (Shrout & Fleiss 1979; McGraw & Wong 1996) with
    ``n`` cases (targets) and ``k`` raters:

    * ``ICC(3,1)``: two-way mixed effects, consistency, single rater (McGraw & Wong
      ICC(C,1)): ``(MSR - MSE) / (MSR + (k-1) MSE)``;
    * ``ICC(2,1)``: two-way random effects, absolute agreement, single rater
      (ICC(A,1)): ``(MSR - MSE) / (MSR + (k-1) MSE + k (MSC - MSE) / n)``.

    Parameters
    ----------
    ratings : array-like of shape (n_cases, n_raters, n_features)
        The value of each feature for each case as measured by each rater
        (e.g. reader 1 and reader 2 stacked on axis 1). A 2-D array is read as one
        feature, shape (n_cases, n_raters).
    form : {"ICC(3,1)", "ICC(2,1)"}
        Which ICC.

    Returns
    -------
    numpy.ndarray of shape (n_features,)
        ICC per feature. A feature that is constant over all cases and raters has no
        between-case variance, so its ICC is undefined and returned as NaN.

    Raises
    ------
    ValueError
        On an unknown form, fewer than 2 cases or raters, or non-finite values.

    Examples
    --------
    >>> import numpy as np
    >>> r1 = np.array([[1.0], [2.0], [3.0], [4.0]])
    >>> r2 = r1 + 10.0  # a constant offset: perfect consistency, poor agreement
    >>> ratings = np.stack([r1, r2], axis=1)
    >>> float(intraclass_correlation(ratings, "ICC(3,1)")[0])
    1.0
    >>> float(intraclass_correlation(ratings, "ICC(2,1)")[0]) < 0.1
    True
    """
    if form not in ICC_FORMS:
        raise ValueError(f"unknown ICC form {form!r}; choose one of {', '.join(ICC_FORMS)}")
    Y = np.asarray(ratings, dtype=float)
    if Y.ndim == 2:
        Y = Y[:, :, None]
    if Y.ndim != 3:
        raise ValueError(f"ratings must be (n_cases, n_raters, n_features); got shape {Y.shape}")
    n, k, _ = Y.shape
    if n < 2 or k < 2:
        raise ValueError(f"the ICC needs at least 2 cases and 2 raters; got {n} and {k}")
    if not np.isfinite(Y).all():
        raise ValueError("ratings contain NaN or infinite values")

    grand = Y.mean(axis=(0, 1))
    case_means = Y.mean(axis=1)  # (n, p)
    rater_means = Y.mean(axis=0)  # (k, p)
    ms_rows = k * ((case_means - grand) ** 2).sum(axis=0) / (n - 1)
    ms_cols = n * ((rater_means - grand) ** 2).sum(axis=0) / (k - 1)
    # Residuals computed directly, not as SST - SSR - SSC, to avoid cancellation.
    resid = Y - case_means[:, None, :] - rater_means[None, :, :] + grand
    ms_err = (resid**2).sum(axis=(0, 1)) / ((n - 1) * (k - 1))

    denom = ms_rows + (k - 1) * ms_err
    if form == "ICC(2,1)":
        denom = denom + k * (ms_cols - ms_err) / n
    constant = np.ptp(Y, axis=(0, 1)) == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        icc = (ms_rows - ms_err) / denom
    icc[constant] = np.nan
    return icc


class ICCFilter(SupportSelector):
    """Keep features whose inter-reader ICC exceeds ``threshold``.

    ``X`` (given to :meth:`fit`) holds the features extracted from reader 1's
    delineations; ``reader2`` (also given to :meth:`fit`) the same features from reader
    2's delineation of (a subset of) the same lesions. The ICC of each feature is
    computed on the cases present in both, so in a pipeline fitted on training rows only
    training cases count, even when ``reader2`` also holds validation or test cases.

    ``reader2`` is patient data, not a setting: it is a fit argument that scikit-learn's
    metadata routing hands down (requested by default), like ``groups`` to the LASSO. A
    Pipeline, ColumnTransformer or search fitted with ``reader2=...`` inside
    ``sklearn.config_context(enable_metadata_routing=True)`` passes it on; inside
    cross-validation give it row-aligned with ``X`` (:func:`radfusion.models.case_data`)
    so that each fold gets its own rows. Nothing of it is kept but the case ids used.

    Parameters
    ----------
    threshold : float, default=0.80
        Keep features with ICC strictly above this value (paper: 0.80).
    form : {"ICC(3,1)", "ICC(2,1)"}, default="ICC(3,1)"
        ICC(3,1): two-way mixed, consistency, single rater (Koo & Li 2016).
        ICC(2,1): two-way random, absolute agreement, single rater.

    Attributes
    ----------
    icc_ : ndarray of shape (n_features_in_,)
        ICC per feature (NaN when skipped, and for features constant over all paired
        cases: their ICC is undefined, and they are dropped).
    support_ : ndarray of bool of shape (n_features_in_,)
        Kept features.
    skipped_ : bool
        True when no second delineation of these features was given.
    skip_reason_ : str or None
        Why the filter was skipped.
    n_cases_ : int
        Number of paired cases the ICC was computed on.
    case_ids_ : list or None
        Their ids, when ``X`` and ``reader2`` are DataFrames.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when ``X`` has string column names.

    Notes
    -----
    Augmented copies (ids ``<case_id>#aug<k>``) are not in reader 2's table and so
    never enter the ICC. When ``X`` has duplicated index labels, the first row of
    each label is used.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> ids = [f"c{i}" for i in range(30)]
    >>> r1 = pd.DataFrame({"stable": rng.normal(size=30), "noisy": rng.normal(size=30)}, ids)
    >>> r2 = r1.assign(stable=r1["stable"] + 0.05 * rng.normal(size=30),
    ...                noisy=rng.normal(size=30))
    >>> ICCFilter().fit(r1, reader2=r2).get_feature_names_out().tolist()
    ['stable']
    """

    # Metadata routing: ask for ``reader2`` by default, so every enclosing Pipeline,
    # ColumnTransformer and search hands reader 2's features (routed like ``groups``) here.
    __metadata_request__fit: ClassVar[dict[str, bool]] = {"reader2": True}

    def __init__(self, threshold: float = 0.80, form: ICCForm = "ICC(3,1)"):
        self.threshold = threshold
        self.form = form

    def fit(self, X: Any, y: Any = None, reader2: Any = None) -> ICCFilter:
        """Compute the ICC of every feature on the cases present in ``X`` and ``reader2``.

        Parameters
        ----------
        X : pandas.DataFrame or array-like of shape (n_samples, n_features)
            Reader 1's feature table (training rows).
        y : ignored
        reader2 : pandas.DataFrame, array-like or None
            Reader 2's feature table.

            * A DataFrame indexed by case id with the columns of ``X`` (it may hold
              other columns too, e.g. every block of a Merged model); ``X`` must then be
              a DataFrame indexed by case id. Rows are matched by index and only cases
              in both are used; a row left empty (NaN) marks a case not re-delineated.
              A table with none of ``X``'s columns holds no second delineation of these
              features: the filter is skipped, as with None.
            * An array row-aligned with ``X`` (same shape); rows that are entirely NaN
              mark cases that were not re-delineated.
            * ``None``: no second delineation; the filter keeps every feature and sets
              ``skipped_ = True`` and ``skip_reason_``.

        Returns
        -------
        self : ICCFilter

        Raises
        ------
        ValueError
            On an unknown form, some (not all) columns missing in ``reader2``, misaligned
            arrays, fewer than 3 paired cases, or when no feature exceeds the threshold.
        """
        if self.form not in ICC_FORMS:
            raise ValueError(f"unknown ICC form {self.form!r}; choose one of {ICC_FORMS}")
        Xv = validate_data(self, X, ensure_min_samples=1)
        p = Xv.shape[1]
        if reader2 is None or (
            isinstance(reader2, pd.DataFrame)
            and isinstance(X, pd.DataFrame)
            and not X.columns.isin(reader2.columns).any()
        ):
            self.skipped_ = True
            self.skip_reason_ = "no second delineation"
            self.icc_ = np.full(p, np.nan)
            self.support_ = np.ones(p, dtype=bool)
            self.n_cases_ = 0
            self.case_ids_ = None
            return self

        r1, r2, ids = self._paired(X, Xv, reader2)
        if r1.shape[0] < MIN_ICC_CASES:
            hint = ""
            if isinstance(reader2, pd.DataFrame) and len(X.index) and len(reader2):
                hint = (
                    f" (X is indexed like {X.index[0]!r}, reader2 like "
                    f"{reader2.index[0]!r}: both must be indexed by case id)"
                )
            raise ValueError(
                f"ICCFilter needs at least {MIN_ICC_CASES} cases with a second delineation "
                f"among the {Xv.shape[0]} rows it is fitted on; found {r1.shape[0]}{hint}"
            )
        self.skipped_ = False
        self.skip_reason_ = None
        self.icc_ = intraclass_correlation(np.stack([r1, r2], axis=1), self.form)
        self.support_ = np.nan_to_num(self.icc_, nan=-np.inf) > self.threshold
        self.n_cases_ = int(r1.shape[0])
        self.case_ids_ = ids
        if not self.support_.any():
            raise ValueError(
                f"No feature has {self.form} above {self.threshold:.2f} "
                f"(max {np.nanmax(self.icc_) if np.isfinite(self.icc_).any() else float('nan'):.3f}"
                f" over {self.n_cases_} cases)"
            )
        return self

    def _paired(
        self, X: Any, Xv: np.ndarray, r2: Any
    ) -> tuple[np.ndarray, np.ndarray, list | None]:
        """Reader-1 and reader-2 rows of the cases both read, and their ids."""
        if isinstance(r2, pd.DataFrame):
            if not isinstance(X, pd.DataFrame):
                raise ValueError(
                    "reader2 is a DataFrame indexed by case id, so X must be a DataFrame "
                    "indexed by case id too (rows are matched by index)"
                )
            if r2.index.has_duplicates and r2.index.equals(X.index):
                r2 = r2[~r2.index.duplicated()]  # row-aligned: X's duplicates are dropped too
            if r2.index.has_duplicates:
                dup = r2.index[r2.index.duplicated()][0]
                raise ValueError(f"reader2 has duplicated case id {dup!r}")
            missing = [c for c in X.columns if c not in r2.columns]
            if missing:
                raise ValueError(
                    f"reader2 lacks {len(missing)} feature(s) of X, e.g. {missing[:3]}"
                )
            r2 = r2.loc[:, list(X.columns)]
            # A case missing from reader 2 (or a row left empty) was not re-delineated.
            r2 = r2[~r2.isna().all(axis=1)]
            use = ~X.index.duplicated() & X.index.isin(r2.index)
            ids = X.index[use]
            r2v = r2.loc[ids].to_numpy(dtype=float)
            bad = ~np.isfinite(r2v).all(axis=1)
            if bad.any():
                raise ValueError(
                    f"case {ids[np.flatnonzero(bad)[0]]}: reader2 features contain NaN or "
                    "infinite values"
                )
            return Xv[use], r2v, ids.tolist()

        r2v = np.asarray(r2, dtype=float)
        if r2v.shape != Xv.shape:
            raise ValueError(
                f"reader2 is an array of shape {r2v.shape}, so it must be row-aligned with X "
                f"{Xv.shape}; inside cross-validation pass DataFrames indexed by case id"
            )
        use = ~np.isnan(r2v).all(axis=1)
        if not np.isfinite(r2v[use]).all():
            row = np.flatnonzero(use & ~np.isfinite(r2v).all(axis=1))[0]
            raise ValueError(f"reader2 row {row} contains NaN or infinite values")
        return Xv[use], r2v[use], None
