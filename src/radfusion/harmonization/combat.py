"""ComBat harmonisation fitted on training cases only, as a scikit-learn transformer.

ComBat (Johnson et al. 2007; Fortin et al. 2017/2018 for imaging features) removes
additive and multiplicative centre ("batch") effects from every feature while keeping
the effects of chosen covariates (e.g. age, sex). The common tools fit it on the whole
data set, which lets validation and test cases shape their own features. Here the
location/scale model and the empirical-Bayes batch estimates are fitted on the rows
given to :meth:`ComBatHarmonizer.fit` only (the training cases of a split, or of an
inner cross-validation fold) and then applied, unchanged, to any other case: this is
the learn/apply scheme of neuroHarmonize, with the arithmetic of neuroCombat (the
reference implementations; the tests check agreement to 1e-6).

How a case's centre reaches the transformer
-------------------------------------------
Feature tables in radfusion are indexed by case id. The centre and covariates of the
cases are patient data, not settings of the model: ``fit`` and ``transform`` take them
as ``case_meta`` (case id -> centre and covariates; each row of ``X`` is looked up by
its index), and scikit-learn's metadata routing hands them down (requested by default)
through every Pipeline, ColumnTransformer and search, like ``groups`` to the LASSO:
``model.fit(X, y, case_meta=meta)`` and ``model.predict_proba(X, case_meta=meta)``
inside ``sklearn.config_context(enable_metadata_routing=True)``
(:func:`radfusion.models.case_data` aligns the tables with the rows, so that
cross-validation gives each fold its own). The fitted harmoniser keeps nothing of
them but what it learnt; ``radfusion predict`` passes the new cases' centres (manifest
``center`` column, ``--center``).

A new centre (external validation)
----------------------------------
:meth:`ComBatHarmonizer.add_batches` estimates the location and scale of a centre that
was not in training from that centre's own rows (reference-batch harmonisation: the
training grand mean, covariate effects and pooled variance stay the reference; labels are
never used), so that ``radfusion evaluate`` can map an external centre onto the training
reference. :func:`recorded_inputs` records what each harmoniser of a scored model was
given, which is the input those estimates need.

Cases ComBat cannot adjust
--------------------------
A case whose centre was not among the training centres (or was seen fewer than
:data:`MIN_BATCH_SIZE` times), with no centre, or with a missing covariate is passed
through unadjusted and an :class:`UnadjustedCaseWarning` names it. Unadjusted raw
features are on their own centre's scale, so their predictions are less reliable; the
warning says so. Nothing crashes.
"""

from __future__ import annotations

import bisect
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

#: Fewest training cases a centre needs to get its own ComBat estimates (a variance).
MIN_BATCH_SIZE = 2
#: Relative change at which the empirical-Bayes iteration stops (neuroCombat's value).
EB_TOLERANCE = 1e-4
#: Fewest cases of a new centre for :meth:`ComBatHarmonizer.add_batches` to estimate it.
MIN_NEW_BATCH_SIZE = 10
#: Harmoniser tag -> the last DataFrame it transformed, while :func:`recorded_inputs` runs.
_RECORDED: ContextVar[dict[str, pd.DataFrame] | None] = ContextVar("combat_inputs", default=None)


@contextmanager
def recorded_inputs() -> Iterator[dict[str, pd.DataFrame]]:
    """Record what every tagged harmoniser transforms inside the ``with`` block.

    A harmoniser is tagged by setting its ``tag_`` attribute (a deep copy keeps it); the
    dict yielded maps each tag to the features it was given, i.e. whatever the steps
    before it made of the model's input, at any nesting (Merged models' blocks included).
    """
    seen: dict[str, pd.DataFrame] = {}
    token = _RECORDED.set(seen)
    try:
        yield seen
    finally:
        _RECORDED.reset(token)


class UnadjustedCaseWarning(UserWarning):
    """Some cases could not be harmonised and were passed through unchanged."""


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or str(v).strip() == ""


class ComBatHarmonizer(TransformerMixin, BaseEstimator):
    """Train-fitted ComBat with parametric empirical Bayes (neuroCombat's estimator).

    Parameters
    ----------
    batch_column : str, default="center"
        The centre (scanner, site) column of the ``case_meta`` given to ``fit`` and
        ``transform`` (indexed by case id, the index of ``X``; it holds this column and
        the covariate columns).
    continuous : sequence of str, default=()
        Numeric covariates whose effect on the features is preserved (e.g. age).
    categorical : sequence of str, default=()
        Categorical covariates whose effect is preserved (e.g. sex); dummy-coded with
        the first level (sorted) as reference.
    columns : sequence of str or None, default=None
        The feature columns to harmonise; the others pass through unchanged. None:
        every column.
    empirical_bayes : bool, default=True
        Shrink the per-centre estimates toward their across-feature prior (ComBat);
        False: plain per-centre location/scale estimates.

    Attributes
    ----------
    batches_ : ndarray of str
        Training centres with their own estimates (sorted), and any centre added by
        :meth:`add_batches`.
    batch_counts_ : ndarray of int
        Training rows per centre in ``batches_``.
    harmonized_ : ndarray of bool
        Which input columns were harmonised.
    grand_mean_, var_pooled_ : ndarray of shape (n_harmonized,)
        Per-feature grand mean and pooled residual variance of the training rows.
    beta_ : ndarray of shape (n_covariate_terms, n_harmonized)
        Covariate effects (regression coefficients), preserved by the adjustment.
    gamma_star_, delta_star_ : ndarray of shape (n_batches, n_harmonized)
        Empirical-Bayes additive and multiplicative centre effects.
    levels_ : list of ndarray
        Levels of each categorical covariate seen in training.
    """

    # Metadata routing: ask for ``case_meta`` by default in fit and transform, so every
    # enclosing Pipeline, ColumnTransformer and search hands the cases' centres down.
    __metadata_request__fit: ClassVar[dict[str, bool]] = {"case_meta": True}
    __metadata_request__transform: ClassVar[dict[str, bool]] = {"case_meta": True}

    def __init__(
        self,
        batch_column: str = "center",
        continuous: Sequence[str] = (),
        categorical: Sequence[str] = (),
        columns: Sequence[str] | None = None,
        empirical_bayes: bool = True,
    ) -> None:
        self.batch_column = batch_column
        self.continuous = continuous
        self.categorical = categorical
        self.columns = columns
        self.empirical_bayes = empirical_bayes

    # --- metadata -------------------------------------------------------------------
    def _meta(self, index: pd.Index, case_meta: pd.DataFrame | None) -> pd.DataFrame:
        if case_meta is None:
            raise ValueError(
                "ComBatHarmonizer needs case_meta (the centre of every case, indexed by case "
                "id) to fit or transform; pass it to fit/transform, or to the enclosing "
                "model's fit/predict_proba with metadata routing on"
            )
        need = [self.batch_column, *self.continuous, *self.categorical]
        missing = [c for c in need if c not in case_meta.columns]
        if missing:
            raise ValueError(f"case metadata lacks the column(s) {missing}")
        if case_meta.index.has_duplicates and case_meta.index.equals(index):
            return case_meta[need]  # row-aligned (augmented copies share their source's)
        return case_meta.reindex(index)[need]

    def _design(self, meta: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Covariate design (without batch columns) and a row mask of complete rows."""
        parts: list[np.ndarray] = []
        ok = np.ones(len(meta), dtype=bool)
        for col, levels in zip(self.categorical, self.levels_, strict=True):
            v = meta[col].astype(object).to_numpy()
            blank = np.array([_blank(x) for x in v])
            ok &= ~blank
            s = np.array([str(x) for x in v])
            ok &= blank | np.isin(s, levels)  # an unseen level cannot be adjusted for
            parts.append(np.stack([(s == lv).astype(float) for lv in levels[1:]], axis=1))
        for col in self.continuous:
            v = pd.to_numeric(meta[col], errors="coerce").to_numpy(dtype=float)
            ok &= np.isfinite(v)
            parts.append(np.nan_to_num(v)[:, None])
        if not parts:
            return np.zeros((len(meta), 0)), ok
        return np.hstack([p.reshape(len(meta), -1) for p in parts]), ok

    # --- fit ------------------------------------------------------------------------------
    def fit(
        self, X: pd.DataFrame, y: Any = None, case_meta: pd.DataFrame | None = None
    ) -> ComBatHarmonizer:
        """Estimate the ComBat model on the rows of ``X`` (training cases only).

        Parameters
        ----------
        X : pandas.DataFrame
            Features, indexed by case id.
        y : ignored
            The label is never used (a study config refuses it as a covariate).
        case_meta : pandas.DataFrame
            Centre and covariates by case id (at least the rows of ``X``).

        Returns
        -------
        self

        Raises
        ------
        ValueError
            A training case without a centre or covariate value, or fewer than two
            training cases with a centre seen at least twice.
        """
        if not isinstance(X, pd.DataFrame):
            raise TypeError("ComBatHarmonizer needs a DataFrame indexed by case id")
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        cols = set(X.columns if self.columns is None else self.columns)
        self.harmonized_ = np.array([c in cols for c in X.columns])
        meta = self._meta(X.index, case_meta)
        batch = meta[self.batch_column].astype(object).to_numpy()
        no_batch = [str(i) for i, b in zip(X.index, batch, strict=True) if _blank(b)]
        if no_batch:
            raise ValueError(
                f"training case(s) {no_batch[:5]} have no {self.batch_column!r}; ComBat "
                "needs the centre of every training case"
            )
        batch = np.array([str(b) for b in batch])
        levels, counts = np.unique(batch, return_counts=True)
        small = levels[counts < MIN_BATCH_SIZE]
        if len(small):
            warnings.warn(
                f"centre(s) {small.tolist()} have fewer than {MIN_BATCH_SIZE} training "
                "cases: ComBat leaves them unadjusted",
                UnadjustedCaseWarning,
                stacklevel=2,
            )
        keep = ~np.isin(batch, small)
        self.levels_ = [
            np.unique([str(v) for v in meta[c] if not _blank(v)]) for c in self.categorical
        ]
        cov, complete = self._design(meta)
        if not complete[keep].all():
            bad = X.index[keep & ~complete].tolist()[:5]
            raise ValueError(f"training case(s) {bad} lack a covariate value for ComBat")
        if keep.sum() < 2:
            raise ValueError("ComBat needs at least two training cases from a known centre")
        Y = X.to_numpy(dtype=float)[keep][:, self.harmonized_].T  # (features, samples)
        self.batches_, self.batch_counts_ = (
            levels[counts >= MIN_BATCH_SIZE],
            counts[counts >= MIN_BATCH_SIZE],
        )
        self._fit_arrays(Y, batch[keep], cov[keep])
        return self

    def _fit_arrays(self, Y: np.ndarray, batch: np.ndarray, cov: np.ndarray) -> None:
        n_batch, n = len(self.batches_), Y.shape[1]
        onehot = (batch[:, None] == self.batches_[None, :]).astype(float)
        design = np.hstack([onehot, cov])
        # Location/scale model: one least-squares fit per feature (all at once here).
        B_hat = np.linalg.inv(design.T @ design) @ design.T @ Y.T  # (terms, features)
        grand_mean = (self.batch_counts_ / n) @ B_hat[:n_batch]
        var_pooled = ((Y - (design @ B_hat).T) ** 2).mean(axis=1)
        # A feature constant in training: neuroCombat sets its variance to 1 (no scaling).
        var_pooled[var_pooled == 0] = 1.0
        beta = B_hat[n_batch:]
        stand = grand_mean[:, None] + (cov @ beta).T
        s = (Y - stand) / np.sqrt(var_pooled)[:, None]
        gamma_hat = np.linalg.inv(onehot.T @ onehot) @ onehot.T @ s.T  # (batches, features)
        delta_hat = np.stack([s[:, batch == b].var(axis=1, ddof=1) for b in self.batches_])
        delta_hat[delta_hat == 0] = 1.0
        if self.empirical_bayes:
            gamma_star, delta_star = _parametric_eb(s, batch, self.batches_, gamma_hat, delta_hat)
        else:
            gamma_star, delta_star = gamma_hat, delta_hat
        self.grand_mean_, self.var_pooled_, self.beta_ = grand_mean, var_pooled, beta
        self.gamma_star_, self.delta_star_ = gamma_star, delta_star

    # --- transform ----------------------------------------------------------------------
    def fit_transform(
        self, X: pd.DataFrame, y: Any = None, case_meta: pd.DataFrame | None = None
    ) -> pd.DataFrame:
        """:meth:`fit`, then :meth:`transform` of the same rows (both read ``case_meta``)."""
        return self.fit(X, y, case_meta=case_meta).transform(X, case_meta=case_meta)

    def transform(self, X: pd.DataFrame, case_meta: pd.DataFrame | None = None) -> pd.DataFrame:
        """Harmonise the rows of ``X`` with the training estimates.

        Rows from a centre without training estimates, without a centre, or with a
        missing covariate pass through unchanged (an :class:`UnadjustedCaseWarning`
        names them).

        Parameters
        ----------
        X : pandas.DataFrame
            Features, indexed by case id.
        case_meta : pandas.DataFrame
            Centre and covariates by case id (at least the rows of ``X``).
        """
        check_is_fitted(self, "gamma_star_")
        if not isinstance(X, pd.DataFrame):
            raise TypeError("ComBatHarmonizer needs a DataFrame indexed by case id")
        if list(X.columns) != list(self.feature_names_in_):
            raise ValueError("X has other columns than the data ComBat was fitted on")
        recording, tag = _RECORDED.get(), getattr(self, "tag_", None)
        if recording is not None and tag is not None:
            recording[tag] = X.copy()
        meta = self._meta(X.index, case_meta)
        batch = np.array(
            ["" if _blank(b) else str(b) for b in meta[self.batch_column].astype(object)]
        )
        cov, complete = self._design(meta)
        where = np.searchsorted(self.batches_, batch)
        where = np.clip(where, 0, len(self.batches_) - 1)
        known = (self.batches_[where] == batch) & complete
        out = X.to_numpy(dtype=float, copy=True)
        if known.any():
            Y = out[known][:, self.harmonized_].T
            stand = self.grand_mean_[:, None] + (cov[known] @ self.beta_).T
            sd = np.sqrt(self.var_pooled_)[:, None]
            s = (Y - stand) / sd
            b = where[known]
            adj = (s - self.gamma_star_[b].T) / np.sqrt(self.delta_star_[b].T)
            sub = out[known]
            sub[:, self.harmonized_] = (adj * sd + stand).T
            out[known] = sub
        if (~known).any():
            ids = X.index[~known].tolist()
            why = sorted({batch[i] or "(none)" for i in np.flatnonzero(~known)})
            warnings.warn(
                f"{len(ids)} case(s) not harmonised (centre {', '.join(why)} has no training "
                f"estimates, or a covariate is missing), passed through unchanged; their "
                f"features keep their own centre's scale: {', '.join(map(str, ids[:5]))}"
                + (" ..." if len(ids) > 5 else ""),
                UnadjustedCaseWarning,
                stacklevel=2,
            )
        return pd.DataFrame(out, index=X.index, columns=X.columns)

    # --- a new centre ---------------------------------------------------------------
    def add_batches(
        self, X: pd.DataFrame, case_meta: pd.DataFrame, min_cases: int = MIN_NEW_BATCH_SIZE
    ) -> dict[str, int]:
        """Estimate the centre effects of centres unseen in training from their own rows.

        The training reference (grand mean, covariate effects, pooled variance) is kept;
        each new centre's additive and multiplicative effects are estimated from its
        standardised features as ComBat estimates a training centre's (with empirical
        Bayes when ``empirical_bayes``), so that :meth:`transform` maps it onto the
        reference. Labels are never used.

        Parameters
        ----------
        X : pandas.DataFrame
            The new cases' features at this step's input, indexed by case id.
        case_meta : pandas.DataFrame
            Their centre and covariates, by case id.
        min_cases : int
            Fewest complete cases a centre needs; smaller centres stay unadjusted.

        Returns
        -------
        dict
            Centre -> number of cases its estimates come from (centres added).
        """
        check_is_fitted(self, "gamma_star_")
        if list(X.columns) != list(self.feature_names_in_):
            raise ValueError("X has other columns than the data ComBat was fitted on")
        meta = self._meta(X.index, case_meta)
        batch = np.array(
            ["" if _blank(b) else str(b) for b in meta[self.batch_column].astype(object)]
        )
        cov, complete = self._design(meta)
        added: dict[str, int] = {}
        for centre in sorted(set(batch) - set(self.batches_) - {""}):
            rows = (batch == centre) & complete
            n = int(rows.sum())
            if n < max(int(min_cases), MIN_BATCH_SIZE):
                continue
            Y = X.to_numpy(dtype=float)[rows][:, self.harmonized_].T
            stand = self.grand_mean_[:, None] + (cov[rows] @ self.beta_).T
            z = (Y - stand) / np.sqrt(self.var_pooled_)[:, None]
            gamma_hat = z.mean(axis=1)[None, :]
            delta_hat = z.var(axis=1, ddof=1)[None, :]
            delta_hat[delta_hat == 0] = 1.0
            if self.empirical_bayes:
                one = np.full(n, centre)
                gamma, delta = _parametric_eb(z, one, np.array([centre]), gamma_hat, delta_hat)
            else:
                gamma, delta = gamma_hat, delta_hat
            # transform finds a centre by binary search: keep the centres sorted
            names = [str(b) for b in self.batches_]
            at = bisect.bisect_left(names, centre)
            names.insert(at, centre)
            self.batches_ = np.array(names)  # a new array: a longer name is not truncated
            self.batch_counts_ = np.insert(self.batch_counts_, at, n)
            self.gamma_star_ = np.insert(self.gamma_star_, at, gamma[0], axis=0)
            self.delta_star_ = np.insert(self.delta_star_, at, delta[0], axis=0)
            added[str(centre)] = n
        return added

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "feature_names_in_")
        return np.asarray(self.feature_names_in_, dtype=object)

    def set_output(self, *, transform: str | None = None) -> ComBatHarmonizer:
        # transform always returns a DataFrame (it needs the case-id index anyway)
        return self


def _parametric_eb(
    s: np.ndarray,
    batch: np.ndarray,
    batches: np.ndarray,
    gamma_hat: np.ndarray,
    delta_hat: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Parametric empirical-Bayes centre effects (neuroCombat's ``it_sol``, per centre)."""
    gamma_star = np.empty_like(gamma_hat)
    delta_star = np.empty_like(delta_hat)
    for i, b in enumerate(batches):
        sd = s[:, batch == b]
        g_hat, d_hat = gamma_hat[i], delta_hat[i]
        g_bar, t2 = g_hat.mean(), g_hat.var(ddof=1)
        m, s2 = d_hat.mean(), d_hat.var(ddof=1)
        a, bb = (2 * s2 + m**2) / s2, (m * s2 + m**3) / s2
        n = sd.shape[1]
        g_old, d_old = g_hat.copy(), d_hat.copy()
        with np.errstate(divide="ignore", invalid="ignore"):
            for _ in range(10_000):
                g_new = (t2 * n * g_hat + d_old * g_bar) / (t2 * n + d_old)
                sum2 = ((sd - g_new[:, None]) ** 2).sum(axis=1)
                d_new = (0.5 * sum2 + bb) / (n / 2.0 + a - 1.0)
                change = max(
                    np.nanmax(np.abs(g_new - g_old) / g_old),
                    np.nanmax(np.abs(d_new - d_old) / d_old),
                )
                g_old, d_old = g_new, d_new
                if not change > EB_TOLERANCE:
                    break
        gamma_star[i], delta_star[i] = g_new, d_new
    return gamma_star, delta_star


def iter_harmonizers(model: Any) -> list[ComBatHarmonizer]:
    """Every :class:`ComBatHarmonizer` inside a (fitted) pipeline or column transformer."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    found: list[ComBatHarmonizer] = []

    def walk(obj: Any) -> None:
        obj = getattr(obj, "pipeline", obj)  # radfusion.models.FittedModel
        if isinstance(obj, ComBatHarmonizer):
            found.append(obj)
        elif isinstance(obj, Pipeline):
            for _, step in obj.steps:
                walk(step)
        elif isinstance(obj, ColumnTransformer):
            for part in [*obj.transformers, *getattr(obj, "transformers_", [])]:
                walk(part[1])

    walk(model)
    return found
