"""Probabilities on the cohort's own scale: undo the prior a model was trained at.

The training set is rebalanced before a model sees it: the minority class is augmented
(``augment.factor`` copies per case) and, with ``models.class_weight: balanced`` or a
weighted deep loss, the classes are weighted equally. A model fitted that way learns the
*training* prior ``pi_fit`` (0.5 for a class-weighted fit, the augmented positive
fraction ``pi_aug`` otherwise), not the cohort's ``pi_true`` (the positive fraction of
the original training cases), and its probabilities run high for the minority class: on
the demo most models said P >= 0.98 for a case their threshold called benign.

The correction is the closed-form prior-shift adjustment (Saerens, Latinne & Decaestecker,
Neural Computation 2002; Elkan, IJCAI 2001)::

    odds_corrected = odds * [pi_true / (1 - pi_true)] / [pi_fit / (1 - pi_fit)]

i.e. one fixed shift of the log-odds per model, computed from training labels only (no
validation or test case is read), and strictly increasing, so every rank, AUC and call is
unchanged: the threshold, chosen on the corrected probabilities, moves with them.

Models fitted on original cases without class weights (the Stacked meta-learner and the
clinical + imaging model) need no correction. The study applies the shift once, when it
collects every family's predictions into ``predictions.parquet`` (the evaluation, the report
and the thresholds read that table); the bundle records it per model and
:func:`radfusion.bundle.predict_bundle` applies it after scoring, so ``predict``, ``serve``
and the study agree. Score-level models read the uncorrected scores they were fitted on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from radfusion.config import StudyConfig
from radfusion.families import DEEP_ARMS, MERGED_ARMS
from radfusion.layout import RunLayout
from radfusion.models.zoo import ZOO

__all__ = [
    "apply_prior_shift",
    "predictions_shifted",
    "prior_shifts",
    "probability_card",
    "run_prior_shifts",
    "shift_predictions",
    "training_prevalence",
]

#: Families fitted on the original training (or validation) cases without class weights.
_UNSHIFTED = ("stacked", "clinical")


def training_prevalence(preds: pd.DataFrame, augmentation: pd.DataFrame) -> tuple[float, float]:
    """Positive fraction of the training cases, before and after augmentation.

    Parameters
    ----------
    preds : DataFrame
        Predictions of the original cases (``case_id``, ``split``, ``label``).
    augmentation : DataFrame
        ``augmentation.csv`` (``source_case_id``, ``split``, ``label``).

    Returns
    -------
    (pi_true, pi_aug)
    """
    train = preds[preds["split"] == "train"].drop_duplicates("case_id")
    labels = train["label"].astype(int)
    copies = augmentation[
        (augmentation["split"] == "train")
        & augmentation["source_case_id"].astype(str).isin(train["case_id"].astype(str))
    ]
    n, n_pos = len(labels), int(labels.sum())
    n_aug, n_pos_aug = n + len(copies), n_pos + int(copies["label"].astype(int).sum())
    return n_pos / max(n, 1), n_pos_aug / max(n_aug, 1)


def _trained_prior(
    family: str, classifier: str, cfg: StudyConfig, pi_aug: float
) -> tuple[float | None, str]:
    """The prior a model's probabilities carry, and how it got it (None: the cohort's)."""
    if family in _UNSHIFTED:
        return None, "fitted on the original cases, unweighted"
    if family in DEEP_ARMS:
        if cfg.deep.imbalance != "none":
            return 0.5, f"deep loss balanced ({cfg.deep.imbalance})"
        return pi_aug, "trained on the augmented training set"
    balanced = (
        cfg.models.class_weight == "balanced"
        and classifier in ZOO
        and ZOO[classifier].weighted_probabilities
        and not cfg.models.calibrate
    )
    if balanced:
        return 0.5, "class weights balanced"
    if family == "radiomics" or family in MERGED_ARMS:
        # KNN and MLP take no class weights; a sigmoid calibration (SVM always) is
        # fitted on the augmented rows without weights
        return pi_aug, "trained on the augmented training set"
    return None, "unknown family: left as is"


def prior_shifts(
    preds: pd.DataFrame, augmentation: pd.DataFrame, cfg: StudyConfig
) -> dict[str, dict[str, Any]]:
    """The prior-shift correction of every model of a study.

    Parameters
    ----------
    preds : DataFrame
        Every family's predictions of the original cases (``case_id``, ``split``,
        ``label``, ``family``, ``model``, ``classifier``).
    augmentation : DataFrame
        ``augmentation.csv``.
    cfg : StudyConfig

    Returns
    -------
    dict
        Model -> ``log_odds`` (added to the logit; 0 = unchanged), ``trained_prior``,
        ``true_prior`` and ``reason``. Computed from training labels only.
    """
    pi_true, pi_aug = training_prevalence(preds, augmentation)
    out: dict[str, dict[str, Any]] = {}
    models = preds[["family", "model", "classifier"]].drop_duplicates("model")
    for fam, model, clf in models.itertuples(index=False):
        pi_fit, why = _trained_prior(str(fam), str(clf), cfg, pi_aug)
        shift = 0.0
        if pi_fit is not None and 0 < pi_true < 1 and 0 < pi_fit < 1:
            shift = math.log(pi_true / (1 - pi_true)) - math.log(pi_fit / (1 - pi_fit))
        out[str(model)] = {
            "log_odds": round(shift, 12),
            "trained_prior": None if pi_fit is None else round(pi_fit, 12),
            "true_prior": round(pi_true, 12),
            "reason": why,
        }
    return out


def apply_prior_shift(prob: Any, log_odds: float) -> np.ndarray:
    """Probabilities with ``log_odds`` added to their logit (0: returned unchanged).

    Computed as ``1 / (1 + (1 - p) / (r p))`` with ``r = exp(log_odds)``: no clipping (a
    logit clipped at 1e-6 would tie the 1ch network's probabilities near 1 and change its
    calls) and non-decreasing in floating point, so a case at or above its threshold stays
    there. 0 and 1 map to themselves; NaN stays NaN.
    """
    p = np.asarray(prob, dtype=float)
    if log_odds == 0:
        return p
    r = math.exp(log_odds)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 1.0 / (1.0 + (1.0 - p) / (r * p))
    return np.where(p <= 0, np.where(np.isnan(p), np.nan, 0.0), out)


def shift_predictions(preds: pd.DataFrame, shifts: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """``preds`` with every model's ``probability`` corrected (:func:`prior_shifts`)."""
    out = preds.copy()
    prob = out["probability"].to_numpy(dtype=float).copy()
    for model, s in shifts.items():
        rows = (out["model"] == model).to_numpy()
        prob[rows] = apply_prior_shift(prob[rows], float(s["log_odds"]))
    out["probability"] = prob
    return out


def run_prior_shifts(
    layout: RunLayout, cfg: StudyConfig, preds: pd.DataFrame
) -> dict[str, dict[str, Any]]:
    """:func:`prior_shifts` of a run folder's models (``preds``: its predictions, split and
    label per original case; ``augmentation.csv`` is read from the folder, empty without)."""
    path = layout.augmentation
    aug = (
        pd.read_csv(path, dtype={"case_id": str, "source_case_id": str})
        if path.is_file()
        else pd.DataFrame(columns=["case_id", "source_case_id", "label", "split"])
    )
    return prior_shifts(preds, aug, cfg)


def probability_card(
    preds: pd.DataFrame, shifts: Mapping[str, Mapping[str, Any]], cfg: StudyConfig
) -> dict[str, Any]:
    """What a bundle's model card says about its probabilities.

    Parameters
    ----------
    preds : DataFrame
        The run's (corrected) predictions: ``model``, ``split``, ``label``, ``probability``.
    shifts : mapping
        :func:`prior_shifts`.
    cfg : StudyConfig

    Returns
    -------
    dict
        ``probabilities``: one sentence on the scale of the probabilities (the correction
        applied); ``miscalibration``: model -> the report's miscalibration reasons
        (:func:`radfusion.stats.miscalibration_reasons`) on the split the thresholds were
        chosen on (never test), only for flagged models.
    """
    from radfusion.stats import miscalibration_reasons

    shifted = {m: s for m, s in shifts.items() if s["log_odds"]}
    pi_true = next(iter(shifts.values()))["true_prior"] if shifts else None
    if shifted and pi_true is not None:
        priors = sorted({float(s["trained_prior"]) for s in shifted.values()})
        text = (
            f"Probabilities are on the training cohort's scale ({pi_true:.1%} positive "
            "before augmentation): the models trained on a rebalanced set (minority "
            f"augmentation x{cfg.augment.factor if cfg.augment.enabled else 1}, class weights "
            f"'{cfg.models.class_weight}', deep loss '{cfg.deep.imbalance}'; training prior "
            + " or ".join(f"{p:.1%}" for p in priors)
            + ") had their odds multiplied back by the prevalence ratio (closed-form prior-"
            "shift correction, training labels only). Ranks, AUCs and calls are unchanged; "
            "the thresholds moved with the probabilities. Risks in another population "
            "differ with its prevalence."
        )
    elif any(
        s["trained_prior"] is not None and s["trained_prior"] != s["true_prior"]
        for s in shifts.values()
    ):  # rebalanced, but the run was evaluated before the correction existed
        text = (
            "Probabilities are the models' own, on their rebalanced training scale (not "
            "corrected: the run was evaluated by an older radfusion); they run high for the "
            "minority class, so read the call."
        )
    else:
        text = "Probabilities are the models' own: no model was trained on a rebalanced set."
    source = preds[preds["split"] == cfg.evaluation.threshold_source]
    flagged: dict[str, list[str]] = {}
    for model, sub in source.groupby("model", sort=False):
        reasons = miscalibration_reasons(
            sub["label"].to_numpy(dtype=int), sub["probability"].to_numpy(dtype=float)
        )
        if reasons:
            flagged[str(model)] = reasons
    return {"probabilities": text, "miscalibration": flagged}


def predictions_shifted(
    layout: RunLayout, preds: pd.DataFrame, shifts: Mapping[str, Mapping[str, Any]]
) -> bool:
    """Whether a run's ``predictions.parquet`` (``preds``) already carries ``shifts``.

    A run folder evaluated before radfusion undid the training prior holds the models' own
    probabilities, and its thresholds are on that scale: a bundle exported from it must not
    shift them (its calls would change). Compared on one shifted model against its
    family's own predictions.
    """
    moved = [m for m, s in shifts.items() if s["log_odds"]]
    if not moved:
        return True
    row = preds[preds["model"] == moved[0]].iloc[:20]
    raw = pd.read_parquet(layout.family_predictions(str(row["family"].iloc[0])))
    raw = raw[raw["model"] == moved[0]].set_index("case_id")["probability"]
    own = raw.reindex(row["case_id"]).to_numpy(dtype=float)
    want = apply_prior_shift(own, float(shifts[moved[0]]["log_odds"]))
    got = row["probability"].to_numpy(dtype=float)
    return bool(np.allclose(got, want, rtol=1e-9, atol=1e-12, equal_nan=True))
