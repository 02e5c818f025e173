"""The clinical + imaging model (the paper's stated future work).

"Future studies should integrate clinical and demographic predictors into the
decision-making process." :class:`ClinicalImagingModel` is a logistic regression on
the configured clinical columns plus the logit of an imaging model's probability,
with its coefficients, odds ratios, Wald 95% CIs and p-values reported.

To keep the training rows honest, the imaging score given to ``fit`` should be an
out-of-fold prediction on the training data (the study pipeline does this): an
in-sample score of a flexible imaging model would look far more reliable than it is
and swamp the clinical terms.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted

SCORE_COLUMN = "imaging_score"


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


class ClinicalImagingModel(ClassifierMixin, BaseEstimator):
    """Logistic regression on clinical columns + the logit of an imaging score.

    Parameters
    ----------
    numeric : list of str
        Continuous clinical columns (median-imputed, standardised: coefficients are per SD).
    categorical : list of str
        Categorical columns (mode-imputed, one-hot with the first level as reference).
    score_column : str
        Column holding the imaging model's probability of APT/PC / malignancy.
    C : float
        Inverse L2 strength on the standardised predictors. The default 1.0 is a mild
        ridge: a strong imaging score often (quasi-)separates the training cases, and
        unpenalised maximum likelihood then diverges (huge coefficients, meaningless
        Wald intervals, probabilities of exactly 0 or 1). Use a large C (e.g. 1e4) for
        plain maximum likelihood when the data are not separated. The reported SEs and
        CIs are Wald intervals of the penalised fit (ridge term included in the
        information matrix).

    Attributes
    ----------
    pipeline_ : Pipeline
        Fitted preprocessing + logistic regression.
    coef_table_ : dict of lists
        term, coef, se, odds_ratio, ci_low, ci_high (of the odds ratio), p_value (Wald);
        plain lists so the fitted model serialises safely (skops, no pickle).
    coefficients_ : DataFrame
        ``coef_table_`` as a table.
    """

    def __init__(
        self,
        numeric: list[str] | None = None,
        categorical: list[str] | None = None,
        score_column: str = SCORE_COLUMN,
        C: float = 1.0,
    ) -> None:
        self.numeric = numeric
        self.categorical = categorical
        self.score_column = score_column
        self.C = C

    #: Standardise the score logits (per-SD coefficients); the clinical model keeps the
    #: plain logit so its odds ratio reads "per unit of imaging logit".
    _standardize_scores = False

    def _score_columns(self) -> list[str]:
        return [self.score_column]

    def _design(self) -> ColumnTransformer:
        numeric = list(self.numeric or [])
        categorical = list(self.categorical or [])
        logit = FunctionTransformer(_logit, feature_names_out="one-to-one")
        score: Any = (
            Pipeline([("logit", logit), ("z", StandardScaler())])
            if self._standardize_scores
            else logit
        )
        parts: list[tuple[str, Any, list[str]]] = [("score", score, self._score_columns())]
        if numeric:
            parts.append(
                (
                    "num",
                    Pipeline(
                        [("impute", SimpleImputer(strategy="median")), ("z", StandardScaler())]
                    ),
                    numeric,
                )
            )
        if categorical:
            parts.append(
                (
                    "cat",
                    Pipeline(
                        [
                            ("impute", SimpleImputer(strategy="most_frequent")),
                            ("onehot", OneHotEncoder(drop="first", handle_unknown="ignore")),
                        ]
                    ),
                    categorical,
                )
            )
        return ColumnTransformer(parts, sparse_threshold=0.0)

    def fit(self, X: pd.DataFrame, y: Any) -> ClinicalImagingModel:
        """Fit on training rows: ``X`` holds the clinical columns and ``score_column``."""
        missing = [
            c
            for c in [*self._score_columns(), *(self.numeric or []), *(self.categorical or [])]
            if c not in X.columns
        ]
        if missing:
            raise ValueError(f"{type(self).__name__}: columns missing from X: {missing}")
        y = np.asarray(y).astype(int)
        self.classes_ = np.unique(y)
        X = X.copy()
        for c in self.categorical or []:
            X[c] = X[c].astype(object)
        self.pipeline_ = Pipeline(
            [
                ("design", self._design()),
                ("lr", LogisticRegression(C=self.C, max_iter=5000)),
            ]
        ).fit(X, y)
        self.coef_table_ = self._wald_table(X, y).to_dict("list")
        return self

    @property
    def coefficients_(self) -> pd.DataFrame:
        check_is_fitted(self, "coef_table_")
        return pd.DataFrame(self.coef_table_)

    def _wald_table(self, X: pd.DataFrame, y: np.ndarray) -> pd.DataFrame:
        design = self.pipeline_.named_steps["design"]
        lr = self.pipeline_.named_steps["lr"]
        Z = np.asarray(design.transform(X), dtype=float)
        names = ["intercept", *[n.split("__", 1)[-1] for n in design.get_feature_names_out()]]
        Zc = np.column_stack([np.ones(len(Z)), Z])
        beta = np.concatenate([lr.intercept_, lr.coef_.ravel()])
        p = 1 / (1 + np.exp(-(Zc @ beta)))
        info = (Zc * (p * (1 - p))[:, None]).T @ Zc
        # the tiny ridge from C is part of the fitted objective, so it belongs in the Hessian
        info[1:, 1:] += np.eye(len(beta) - 1) / self.C
        cov = np.linalg.pinv(info)
        se = np.sqrt(np.clip(np.diag(cov), 0, None))
        z = np.divide(beta, se, out=np.full_like(beta, np.nan), where=se > 0)
        q = stats.norm.ppf(0.975)
        return pd.DataFrame(
            {
                "term": names,
                "coef": beta,
                "se": se,
                "odds_ratio": np.exp(beta),
                "ci_low": np.exp(beta - q * se),
                "ci_high": np.exp(beta + q * se),
                "p_value": 2 * stats.norm.sf(np.abs(z)),
            }
        )

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "pipeline_")
        X = X.copy()
        for c in self.categorical or []:
            X[c] = X[c].astype(object)
        return self.pipeline_.predict_proba(X)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        positive = self.predict_proba(X)[:, 1] >= 0.5  # first: NotFittedError before fit
        return self.classes_[positive.astype(int)]
