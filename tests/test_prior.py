"""The training prior undone: closed-form prior-shift correction of every model's
probabilities (radfusion.evaluation.prior)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from radfusion.config import load_preset
from radfusion.evaluation.prior import (
    apply_prior_shift,
    prior_shifts,
    shift_predictions,
    training_prevalence,
)
from radfusion.stats import youden_threshold


def _odds(p):
    return p / (1 - p)


def test_shift_is_the_closed_form_odds_ratio():
    p = np.array([0.02, 0.3, 0.5, 0.9, 0.999])
    pi_true, pi_fit = 0.2, 0.5
    shift = math.log(_odds(pi_true)) - math.log(_odds(pi_fit))
    got = apply_prior_shift(p, shift)
    want_odds = _odds(p) * _odds(pi_true) / _odds(pi_fit)
    np.testing.assert_allclose(got, want_odds / (1 + want_odds), rtol=1e-12)
    # 0 and 1 stay, NaN stays NaN, no shift returns the input
    np.testing.assert_array_equal(apply_prior_shift([0.0, 1.0], shift), [0.0, 1.0])
    assert np.isnan(apply_prior_shift([np.nan], shift)).all()
    np.testing.assert_array_equal(apply_prior_shift(p, 0.0), p)


def test_shift_keeps_the_order_of_probabilities_near_one():
    # the 1ch network's probabilities crowd at 1: a clipped logit (1e-6) would tie them
    p = np.sort(1 - np.geomspace(1e-15, 1e-3, 200))
    got = apply_prior_shift(p, math.log(0.25))
    assert (np.diff(got) > 0).all()


def test_calls_are_unchanged_when_the_threshold_is_chosen_on_the_corrected_scale():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.clip(rng.beta(2 + 6 * y, 2 + 0 * y), 0, 1)
    p[:20] = 1 - rng.random(20) * 1e-9  # a saturated model
    q = apply_prior_shift(p, math.log(0.25))
    t_raw, t_new = youden_threshold(y, p), youden_threshold(y, q)
    np.testing.assert_array_equal(p >= t_raw, q >= t_new)


def _study():
    # 10 training cases, 2 positive; each positive augmented x4 (3 copies): 8 of 16
    preds = []
    for model, fam, clf in [
        ("Radiomics-LR", "radiomics", "LR"),
        ("Radiomics-KNN", "radiomics", "KNN"),
        ("Radiomics-SVM", "radiomics", "SVM"),
        ("1ch_ResNet18", "1ch", "ResNet"),
        ("Stacked", "stacked", "LR"),
    ]:
        for i in range(14):
            preds.append(
                {
                    "case_id": f"c{i}",
                    "split": "train" if i < 10 else "test",
                    "label": int(i in (0, 1, 10)),
                    "family": fam,
                    "model": model,
                    "classifier": clf,
                    "probability": 0.5,
                }
            )
    aug = pd.DataFrame(
        [
            {"case_id": f"c{i}#aug{k}", "source_case_id": f"c{i}", "label": 1, "split": "train"}
            for i in (0, 1)
            for k in (1, 2, 3)
        ]
    )
    return pd.DataFrame(preds), aug


def test_training_prevalence_before_and_after_augmentation():
    preds, aug = _study()
    assert training_prevalence(preds, aug) == pytest.approx((0.2, 0.5))


@pytest.mark.parametrize(
    ("class_weight", "imbalance", "lr", "knn", "svm", "deep"),
    [
        # balanced class weights: LR's prior is 0.5; KNN and the SVM's Platt sigmoid are
        # unweighted, so they carry the augmented fraction (here also 0.5)
        ("balanced", "weighted_loss", 0.5, 0.5, 0.5, 0.5),
        ("none", "none", 0.5, 0.5, 0.5, 0.5),
    ],
)
def test_each_model_is_moved_from_its_own_training_prior(
    class_weight, imbalance, lr, knn, svm, deep
):
    cfg = load_preset("demo")
    cfg.models.class_weight = class_weight
    cfg.deep.imbalance = imbalance
    preds, aug = _study()
    shifts = prior_shifts(preds, aug, cfg)
    want = {"Radiomics-LR": lr, "Radiomics-KNN": knn, "Radiomics-SVM": svm, "1ch_ResNet18": deep}
    for model, pi_fit in want.items():
        s = shifts[model]
        assert s["trained_prior"] == pytest.approx(pi_fit) and s["true_prior"] == 0.2
        assert s["log_odds"] == pytest.approx(math.log(0.25) - math.log(_odds(pi_fit)))
    # fitted on the original cases without weights: left alone
    assert shifts["Stacked"]["log_odds"] == 0 and shifts["Stacked"]["trained_prior"] is None
    fixed = shift_predictions(preds, shifts)
    lr_p = fixed.loc[fixed["model"] == "Radiomics-LR", "probability"]
    assert lr_p.to_numpy() == pytest.approx(0.2)  # 0.5 at a 0.5 prior is 0.2 at 0.2
    st = fixed.loc[fixed["model"] == "Stacked", "probability"]
    assert (st == 0.5).all()


def test_class_weights_and_augmentation_are_told_apart():
    # a weaker augmentation (x2): the unweighted models carry 4 / 12 = 1/3, the weighted 0.5
    cfg = load_preset("demo")
    preds, aug = _study()
    aug = aug[aug["case_id"].str.endswith("#aug1")]
    shifts = prior_shifts(preds, aug, cfg)
    assert shifts["Radiomics-LR"]["trained_prior"] == pytest.approx(0.5)
    assert shifts["Radiomics-KNN"]["trained_prior"] == pytest.approx(4 / 12)
    assert shifts["Radiomics-SVM"]["trained_prior"] == pytest.approx(4 / 12)
    cfg.models.class_weight = "none"
    assert prior_shifts(preds, aug, cfg)["Radiomics-LR"]["trained_prior"] == pytest.approx(4 / 12)
    # no augmentation and no weights: nothing to undo
    cfg.deep.imbalance = "none"
    none = prior_shifts(preds, aug.iloc[0:0], cfg)
    assert all(s["log_odds"] == 0 for s in none.values())


def test_served_contributions_are_on_the_corrected_scale():
    # the page shows the corrected probability: the radiomics contributions beside it are
    # differences of corrected probabilities too
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from radfusion.serve.explain import feature_contributions

    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(120, 3)), columns=["a", "b", "c"])
    y = (X["a"] + rng.normal(scale=0.5, size=120) > 0).astype(int).to_numpy()
    model = Pipeline([("scaler", StandardScaler()), ("clf", LogisticRegression())])
    model.set_output(transform="pandas").fit(X, y)
    shift = math.log(0.25)
    rows = {r["feature"]: r for r in feature_contributions(model, X.iloc[[0]], log_odds=shift)}
    centre = X.iloc[[0]].copy()
    centre["a"] = model.named_steps["scaler"].mean_[0]
    p = apply_prior_shift(model.predict_proba(pd.concat([X.iloc[[0]], centre]))[:, 1], shift)
    assert rows["a"]["contribution"] == pytest.approx(p[0] - p[1])


def test_a_run_evaluated_before_the_correction_is_told_apart(tmp_path):
    # its predictions.parquet and thresholds are on the models' own scale: a bundle
    # exported from it must not shift them (its calls would change)
    from radfusion.evaluation.prior import predictions_shifted
    from radfusion.layout import RunLayout

    layout = RunLayout(tmp_path)
    preds, aug = _study()
    preds["probability"] = np.linspace(0.05, 0.95, len(preds))
    for fam, part in preds.groupby("family"):
        path = layout.family_predictions(str(fam))
        path.parent.mkdir(parents=True, exist_ok=True)
        part.to_parquet(path)
    shifts = prior_shifts(preds, aug, load_preset("demo"))
    assert not predictions_shifted(layout, preds, shifts)
    assert predictions_shifted(layout, shift_predictions(preds, shifts), shifts)
