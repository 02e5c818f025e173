"""Stacked (score-level) fusion: a logistic meta-learner on the single arms' scores.

Why not only the paper's early fusion? A Merged model concatenates radiomics features
with the deep features of the training cases, and those come from a network that was
trained on those very cases: they are memorised (training AUC near 1), so the Merged
classifier leans on them and transfers no better than the deep arm alone. Stacking
combines the arms' *scores* instead, and fits the combiner only on scores that are
honest for every row it learns from:

``crossfit`` (the default)
    The training cases are split into K folds, grouped by patient (augmented copies
    stay with their source) and stratified by label. For each fold, every arm is refit
    on the other folds (the radiomics arm: its selected pipeline, selection included;
    a deep arm: a new network) and scores the fold's cases, which it never saw. The
    meta-learner is fitted on these out-of-fold scores. Validation, test and new cases
    are scored by each arm's model fitted on the whole training set, then combined.
``blend``
    The meta-learner is fitted on the arms' validation scores (no extra training). The
    validation set then no longer gives an unbiased estimate for the stacked model;
    the report says so, and the test set stays untouched.

The meta-learner (:class:`StackedFusionModel`) is a mildly ridge-penalised logistic
regression on the standardised logits of the arms' probabilities (optionally with
clinical columns); its coefficients say how much each arm contributes.
"""

from __future__ import annotations

from radfusion.fusion.clinical import ClinicalImagingModel

__all__ = [
    "StackedFusionModel",
    "score_column",
]

#: Prefix of the meta-learner's input column holding an arm's probability.
SCORE_PREFIX = "score_"


def score_column(arm: str) -> str:
    """The meta-learner's input column of an arm (``score_radiomics``, ``score_2ch``)."""
    return f"{SCORE_PREFIX}{arm}"


class StackedFusionModel(ClinicalImagingModel):
    """Logistic meta-learner on the logits of the arms' probabilities (+ clinical columns).

    Parameters
    ----------
    arms : list of str
        The arms combined; ``X`` holds each one's probability in ``score_<arm>``.
    numeric, categorical : list of str, optional
        Clinical columns added to the meta-learner (median / mode imputed).
    C : float
        Inverse L2 strength on the standardised predictors (mild ridge by default: the
        arms' scores are correlated, and an unpenalised fit would split their weight
        unstably).

    Attributes
    ----------
    pipeline_, coef_table_, coefficients_
        As :class:`~radfusion.fusion.clinical.ClinicalImagingModel`; the coefficients of
        ``score_<arm>`` are per standard deviation of that arm's logit.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 200)
    >>> X = pd.DataFrame({"score_radiomics": np.clip(0.3 * y + rng.uniform(0, 0.7, 200), 0, 1),
    ...                   "score_2ch": rng.uniform(0, 1, 200)})
    >>> m = StackedFusionModel(arms=["radiomics", "2ch"]).fit(X, y)
    >>> m.coefficients_.set_index("term").loc["score_radiomics", "coef"] > 1
    True
    """

    _standardize_scores = True

    def __init__(
        self,
        arms: list[str] | None = None,
        numeric: list[str] | None = None,
        categorical: list[str] | None = None,
        C: float = 1.0,
    ) -> None:
        self.arms = arms
        self.numeric = numeric
        self.categorical = categorical
        self.C = C

    def _score_columns(self) -> list[str]:
        if not self.arms:
            raise ValueError("StackedFusionModel needs at least one arm")
        return [score_column(a) for a in self.arms]
