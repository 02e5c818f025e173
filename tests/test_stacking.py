"""Stacked fusion: cross-fitting folds, out-of-fold scores that never saw their case, the
meta-learner, and family selection by inner cross-validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from radfusion.config import DataConfig, DeepConfig, StudyConfig
from radfusion.data import load_cohort
from radfusion.fusion.crossfit import crossfit_deep_arm, crossfit_folds, crossfit_scores
from radfusion.fusion.stacking import StackedFusionModel, score_column
from radfusion.models import group_fit_params
from radfusion.models.choose import select_best
from radfusion.models.io import load_pipeline, save_pipeline
from radfusion.preprocessing import plan_augmentation
from tests.conftest import make_cohort


def _cohort_table(n_patients: int = 30, seed: int = 0) -> pd.DataFrame:
    """Patients with one to three images each, label per patient."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = int(p % 3 == 0)
        for j in range(int(rng.integers(1, 4))):
            rows.append({"case_id": f"p{p:02d}_{j}", "group": f"p{p:02d}", "label": label})
    return pd.DataFrame(rows)


def test_crossfit_folds_keep_patients_together_and_stratify():
    t = _cohort_table()
    folds = crossfit_folds(t["case_id"], t["label"], t["group"], n_splits=4, seed=1)
    assert list(folds.index) == t["case_id"].tolist()
    assert sorted(set(folds)) == [0, 1, 2, 3]
    per_group = t.assign(fold=folds.to_numpy()).groupby("group")["fold"].nunique()
    assert (per_group == 1).all(), "a patient straddles two folds"
    by_fold = t.assign(fold=folds.to_numpy()).groupby("fold")["label"].agg(["min", "max"])
    assert (by_fold["min"] == 0).all() and (by_fold["max"] == 1).all()
    again = crossfit_folds(t["case_id"], t["label"], t["group"], n_splits=4, seed=1)
    pd.testing.assert_series_equal(folds, again)


class GroupMemory(ClassifierMixin, BaseEstimator):
    """Says 1.0 for any row whose group it was fitted on, else 0.5: a leakage detector.

    Column ``g`` holds the row's group code (patients, and augmented copies share their
    source's code).
    """

    def fit(self, X, y):
        self.classes_ = np.array([0, 1])
        self.seen_ = set(np.asarray(X["g"]).tolist())
        return self

    def predict_proba(self, X):
        p = np.array([1.0 if g in self.seen_ else 0.5 for g in np.asarray(X["g"])])
        return np.column_stack([1 - p, p])


def test_out_of_fold_scores_never_come_from_a_model_that_saw_the_case_copy_or_patient():
    t = _cohort_table()
    codes = {g: i for i, g in enumerate(sorted(t["group"].unique()))}
    originals = t.set_index("case_id")
    # two augmented copies of every positive case, in the training rows like the study's
    copies = originals[originals["label"] == 1].copy()
    copies = pd.concat(
        [copies.rename(index=lambda c, k=k: f"{c}_aug{k}") for k in range(2)]
    ).sort_index()
    rows = pd.concat([originals, copies])
    X = pd.DataFrame({"g": rows["group"].map(codes)}, index=rows.index)
    folds = crossfit_folds(
        originals.index, originals["label"], originals["group"], n_splits=5, seed=0
    )
    oof, other = crossfit_scores(
        GroupMemory(),
        X,
        rows["label"].to_numpy(),
        rows["group"].to_numpy(),
        folds,
        X_other=X.iloc[:3],
    )
    assert list(oof.index) == list(originals.index)
    assert (oof == 0.5).all(), "a fold model had seen the case, a copy or its patient"
    assert other is not None and (other > 0.5).all()  # the fold models did learn


def test_crossfit_scores_route_groups_to_the_grouped_lasso():
    from radfusion.config import ModelsConfig, SelectionConfig
    from radfusion.models import build_model

    rng = np.random.default_rng(0)
    t = _cohort_table(40)
    X = pd.DataFrame(rng.normal(size=(len(t), 6)), index=t["case_id"], columns=list("abcdef"))
    X["a"] += 1.5 * t["label"].to_numpy()
    pipe = build_model(
        "LR",
        selection_cfg=SelectionConfig(lasso_cv=2, lasso_cs=4),
        models_cfg=ModelsConfig(),
        seed=0,
    )
    seen: list[bool] = []

    def params(est, groups):
        out = group_fit_params(est, groups)
        seen.append(bool(out) and len(next(iter(out.values()))) == len(groups))
        return out

    folds = crossfit_folds(t["case_id"], t["label"], t["group"], n_splits=3, seed=0)
    oof, _ = crossfit_scores(pipe, X, t["label"], t["group"], folds, fit_params=params)
    assert seen == [True, True, True]
    assert oof.notna().all()
    assert "lasso" in pipe.named_steps and not hasattr(pipe.named_steps["lasso"], "coef_")


def test_stacked_model_weights_the_informative_arm_and_survives_saving(tmp_path):
    rng = np.random.default_rng(1)
    n = 300
    y = rng.integers(0, 2, n)
    good = 1 / (1 + np.exp(-(2.5 * (y - 0.5) + rng.normal(0, 1, n))))
    noise = rng.uniform(0.01, 0.99, n)
    X = pd.DataFrame({score_column("radiomics"): good, score_column("2ch"): noise})
    model = StackedFusionModel(arms=["radiomics", "2ch"]).fit(X, y)
    coef = model.coefficients_.set_index("term")["coef"]
    assert coef["score_radiomics"] > 1.0 > abs(coef["score_2ch"])
    before = model.predict_proba(X)
    path = save_pipeline(model, tmp_path / "LR.skops")
    np.testing.assert_allclose(load_pipeline(path).predict_proba(X), before, rtol=0, atol=0)
    with pytest.raises(ValueError, match="score_1ch"):
        StackedFusionModel(arms=["1ch"]).fit(X, y)


def test_select_best_by_inner_cv_and_the_one_standard_error_rule():
    def fam(clf: str, val_auc_flip: bool, cv: float, se: float) -> pd.DataFrame:
        y = np.array([0, 1, 0, 1])
        p = np.array([0.9, 0.1, 0.8, 0.2]) if val_auc_flip else np.array([0.1, 0.9, 0.2, 0.8])
        return pd.DataFrame(
            {
                "family": "radiomics",
                "model": f"Radiomics-{clf}",
                "classifier": clf,
                "split": "val",
                "label": y,
                "probability": p,
                "cv_auc": cv,
                "cv_auc_se": se,
            }
        )

    preds = pd.concat(
        [fam("LightGBM", False, 0.90, 0.02), fam("LR", True, 0.89, 0.02)], ignore_index=True
    )

    def chosen(split: str, rule: str = "best") -> str:
        out = select_best(preds, split, rule)
        return str(out.loc[out["selected"], "model"].iloc[0])

    assert chosen("val") == "Radiomics-LightGBM"  # perfect on validation
    assert chosen("cv") == "Radiomics-LightGBM"  # best inner-CV AUC
    assert chosen("cv", "1se") == "Radiomics-LR"  # simpler, within one SE
    preds.loc[preds["classifier"] == "LR", "cv_auc"] = 0.85
    assert chosen("cv", "1se") == "Radiomics-LightGBM"  # LR is more than one SE worse


def test_crossfit_networks_never_see_their_fold_and_resume(tmp_path: Path):
    n = 24
    root = tmp_path / "cohort"
    patients = [f"p{i // 2}" for i in range(n)]  # two images per patient
    make_cohort(root, n=n, shape=(48, 56), reader2=False, extra={"patient_id": patients})
    cohort = load_cohort(root / "manifest.csv", DataConfig())
    ids = list(cohort.case_ids)
    split = pd.Series(["train"] * 16 + ["val"] * 4 + ["test"] * 4, index=ids)
    labels = pd.Series(cohort.labels, index=ids)
    groups = pd.Series(patients, index=ids)
    train = ids[:16]
    cfg = StudyConfig(
        seed=2,
        deep=DeepConfig(depth=18, image_size=32, epochs=1, batch_size=8, device="cpu"),
    )
    table = pd.DataFrame(
        {"case_id": ids, "label": labels.to_numpy(), "split": split.to_numpy(), "group": patients}
    )
    plan = plan_augmentation(table[:16], cfg.augment.model_copy(update={"factor": 2}), seed=2)
    folds = crossfit_folds(train, labels[train], groups[train], n_splits=2, seed=2)
    out = tmp_path / "crossfit"
    scores = crossfit_deep_arm(cohort, split, cfg, "2ch", out, folds, plan, progress=False)

    oof = scores[scores["out_of_fold"]]
    assert sorted(oof["case_id"]) == sorted(train)  # each training case scored once
    assert set(scores.loc[~scores["out_of_fold"], "split"]) == {"val", "test"}
    for k in (0, 1):
        rec = json.loads((out / f"fold_{k}" / "fold.json").read_text())
        held = set(rec["scored_out_of_fold"])
        trained = set(rec["trained_on"])  # sources of every sample, copies included
        assert held == set(folds.index[folds == k])
        assert not held & trained
        assert not {groups[c] for c in held} & {groups[c] for c in trained}
        assert not (out / f"fold_{k}" / "checkpoint.pt").exists()
    # a finished fold is read back, not retrained
    stamp = (out / "fold_0" / "scores.parquet").stat().st_mtime_ns
    again = crossfit_deep_arm(cohort, split, cfg, "2ch", out, folds, plan, progress=False)
    pd.testing.assert_frame_equal(scores, again)
    assert (out / "fold_0" / "scores.parquet").stat().st_mtime_ns == stamp
