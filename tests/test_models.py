"""The classifier zoo: tuning inside the training data, grouped CV, and no leakage."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import make_classification
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, StratifiedGroupKFold

from radfusion.config import CLASSIFIERS, ModelsConfig, SelectionConfig
from radfusion.models import (
    build_model,
    case_data,
    classifier_name,
    fit_zoo,
    group_routing,
    inner_cv,
    make_classifier,
    tune_model,
    tuning_outcome,
)
from radfusion.selection import ICCFilter, LassoSelector, selection_report

SEL = SelectionConfig(lasso_cs=6, lasso_cv=3)
MODELS = ModelsConfig(cv=3, n_iter=2)


def _cohort(n: int = 200, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Reader-1 features indexed by case id, labels, and reader-2 features."""
    X, y = make_classification(
        n, 16, n_informative=4, n_redundant=2, class_sep=1.5, weights=[0.65], random_state=seed
    )
    ids = [f"case{i:03d}" for i in range(n)]
    X = pd.DataFrame(X, index=ids, columns=[f"f{j:02d}" for j in range(16)])
    rng = np.random.default_rng(seed)
    r2 = X + 0.1 * rng.normal(size=X.shape)
    r2["f15"] = rng.normal(size=n)  # one irreproducible feature
    return X, y, r2


@pytest.fixture(scope="module")
def data():
    X, y, r2 = _cohort()
    train = np.arange(len(y)) % 4 != 0  # 150 training, 50 held-out rows
    return X, y, r2, train


@pytest.fixture(scope="module")
def zoo(data):
    X, y, r2, train = data
    return fit_zoo(X[train], y[train], selection_cfg=SEL, models_cfg=MODELS, reader2=r2, seed=0)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_each_classifier_tunes_and_predicts(zoo, data, name):
    X, y, _, train = data
    model = zoo[name]
    assert model.name == name and classifier_name(model.pipeline) == name
    proba = model.positive_proba(X[~train])
    assert proba.shape == (int((~train).sum()),)
    assert np.all((proba >= 0) & (proba <= 1))
    assert roc_auc_score(y[~train], proba) > 0.8
    assert 0.7 < model.cv_auc <= 1.0 and model.n_splits == 3
    _, space = make_classifier(name, MODELS, 0)
    assert set(model.best_params) == {f"clf__{k}" for k in space}
    assert model.pipeline.memory is None  # no pointer to a deleted cache folder
    report = selection_report(model)
    assert report["icc"]["n_cases"] == int(train.sum())
    assert "f15" in report["dropped"]["icc"]


def test_zoo_is_reproducible_with_a_seed(data, zoo):
    X, y, r2, train = data
    names = ["XGBoost", "MLP"]
    again = fit_zoo(
        X[train], y[train], names=names, selection_cfg=SEL, models_cfg=MODELS, reader2=r2, seed=0
    )
    for name in names:
        assert again[name].best_params == zoo[name].best_params
        np.testing.assert_array_equal(
            again[name].positive_proba(X[~train]), zoo[name].positive_proba(X[~train])
        )


def test_grouped_cv_keeps_groups_within_folds(caplog):
    y = np.array([0] * 30 + [1] * 12)
    groups = np.concatenate([np.arange(30) // 3, 100 + np.arange(12) // 3])  # 4 positive groups
    with caplog.at_level(logging.WARNING, logger="radfusion.models.tuning"):
        cv = inner_cv(y, groups, n_splits=5, seed=0)
    assert isinstance(cv, StratifiedGroupKFold) and cv.n_splits == 4
    assert "4-fold instead of 5-fold" in caplog.text
    for tr, te in cv.split(np.zeros(len(y)), y, groups):
        assert not set(groups[tr]) & set(groups[te])
        assert y[te].sum() > 0
    with pytest.raises(ValueError, match="at least 2 cases"):
        inner_cv(y, np.where(y == 1, 999, groups))  # all positives in one group


def test_tune_model_with_groups_uses_grouped_folds_everywhere(data):
    X, y, _, train = data
    Xt, yt = X[train], y[train]
    # Augmentation-like groups: pairs of negatives share a group; positives in 3 groups.
    groups = np.where(yt == 1, np.arange(yt.size) % 3, 10 + np.arange(yt.size) // 2)
    sel = SelectionConfig(lasso_cs=6, lasso_cv=5)
    search = tune_model(
        build_model("LR", selection_cfg=sel, models_cfg=MODELS), Xt, yt, groups, cfg=MODELS, seed=0
    )
    assert isinstance(search.cv, StratifiedGroupKFold) and search.n_splits_ == 3
    for tr, te in search.cv.split(Xt, yt, groups):
        assert not set(groups[tr]) & set(groups[te])
    # The groups also reached the LASSO inner CV: 3 positive groups -> 3 folds, not 5.
    lasso = search.best_estimator_.named_steps["lasso"]
    assert lasso.grouped_ and lasso.n_splits_ == 3
    assert (
        tune_model(build_model("LR", selection_cfg=sel, models_cfg=MODELS), Xt, yt, cfg=MODELS)
        .best_estimator_["lasso"]
        .n_splits_
        == 5
    )


def test_xgboost_scale_pos_weight_is_the_training_class_ratio(data):
    X, y, _, train = data
    search = tune_model(
        build_model("XGBoost", selection_cfg=SEL, models_cfg=MODELS), X[train], y[train], cfg=MODELS
    )
    ratio = (y[train] == 0).sum() / (y[train] == 1).sum()
    assert search.best_estimator_.named_steps["clf"].scale_pos_weight == pytest.approx(ratio)
    est, _ = make_classifier("XGBoost", ModelsConfig(class_weight="none"), 0, class_ratio=3.0)
    assert est.scale_pos_weight is None


def test_small_spaces_use_grid_search(data):
    X, y, _, train = data
    grid = tune_model(
        build_model("KNN", selection_cfg=SEL, models_cfg=MODELS),
        X[train],
        y[train],
        cfg=ModelsConfig(cv=3, n_iter=50),
    )
    assert isinstance(grid, GridSearchCV) and len(grid.cv_results_["params"]) == 28
    rand = tune_model(
        build_model("KNN", selection_cfg=SEL, models_cfg=MODELS), X[train], y[train], cfg=MODELS
    )
    assert isinstance(rand, RandomizedSearchCV) and len(rand.cv_results_["params"]) == 2


def test_calibration_wraps_and_prefixes_the_space():
    cfg = ModelsConfig(calibrate=True)
    est, space = make_classifier("RF", cfg, 0)
    assert isinstance(est, CalibratedClassifierCV) and est.method == "sigmoid"
    assert all(k.startswith("estimator__") for k in space)
    svm, svm_space = make_classifier("SVM", ModelsConfig(), 0)
    assert isinstance(svm, CalibratedClassifierCV) and set(svm_space) == {
        "estimator__C",
        "estimator__gamma",
    }
    with pytest.raises(ValueError, match="unknown classifier"):
        make_classifier("NaiveBayes", cfg, 0)


# --- no leakage ---------------------------------------------------------------------


def _fitted_state(search) -> dict:
    pipe = search.best_estimator_
    return {
        "params": search.best_params_,
        "cv_auc": tuning_outcome(search).cv_auc,
        "icc": pipe.named_steps["icc"].icc_,
        "support": [s.get_support() for _, s in pipe.steps[:-1] if hasattr(s, "get_support")],
        "lasso_coef": pipe.named_steps["lasso"].coef_,
    }


def _assert_same_state(a: dict, b: dict) -> None:
    assert a["params"] == b["params"] and a["cv_auc"] == b["cv_auc"]
    np.testing.assert_array_equal(a["icc"], b["icc"])
    for sa, sb in zip(a["support"], b["support"], strict=True):
        np.testing.assert_array_equal(sa, sb)
    np.testing.assert_array_equal(a["lasso_coef"], b["lasso_coef"])


def test_no_leakage_from_validation_or_test_rows(data):
    X, y, r2, train = data
    held_out = X.index[~train]

    def tuned(features: pd.DataFrame, reader2: pd.DataFrame):
        model = build_model("LR", selection_cfg=SEL, models_cfg=MODELS, seed=0)
        rows = features.index.isin(X.index[train])
        return tune_model(model, features[rows], y[train], cfg=MODELS, seed=0, reader2=reader2)

    # A: the full table (train + held-out) sliced before fit; reader 2 read every case.
    a = tuned(X, r2)
    # B: tables built only from the training rows.
    train_only = pd.DataFrame(X.loc[train].to_numpy(), X.index[train], X.columns)
    b = tuned(train_only, r2.loc[X.index[train]].copy())
    # C: held-out rows altered in both readers' tables, plus extra cases in reader 2.
    rng = np.random.default_rng(1)
    X_mod, r2_mod = X.copy(), r2.copy()
    X_mod.loc[held_out] = rng.normal(size=(len(held_out), X.shape[1])) * 100
    r2_mod.loc[held_out] = rng.normal(size=(len(held_out), X.shape[1]))
    extra = pd.DataFrame(rng.normal(size=(20, X.shape[1])), columns=X.columns)
    r2_mod = pd.concat([r2_mod, extra.set_axis([f"extra{i}" for i in range(20)])])
    c = tuned(X_mod, r2_mod)

    state = _fitted_state(a)
    _assert_same_state(state, _fitted_state(b))
    _assert_same_state(state, _fitted_state(c))
    pa = a.predict_proba(X.loc[held_out])
    np.testing.assert_array_equal(pa, b.predict_proba(X.loc[held_out]))
    np.testing.assert_array_equal(pa, c.predict_proba(X.loc[held_out]))
    assert a.best_estimator_.named_steps["icc"].case_ids_ == X.index[train].tolist()


def test_icc_inside_cv_folds_uses_only_the_fold_training_cases(data):
    from sklearn.model_selection import cross_validate

    X, y, r2, train = data
    model = build_model("LR", selection_cfg=SEL, models_cfg=MODELS, seed=0)
    cv = inner_cv(y[train], None, 3, 0)
    with group_routing():  # reader 2 row-aligned: each fold's fit gets its own rows' part
        out = cross_validate(
            model,
            X[train],
            y[train],
            cv=cv,
            scoring="roc_auc",
            return_estimator=True,
            return_indices=True,
            params=case_data(X[train], reader2=r2),
        )
    for est, tr in zip(out["estimator"], out["indices"]["train"], strict=True):
        icc = est.named_steps["icc"]
        assert isinstance(icc, ICCFilter)
        assert icc.case_ids_ == X[train].index[tr].tolist()
        assert isinstance(est.named_steps["lasso"], LassoSelector)


def test_save_pipeline_never_changes_the_saved_object(data, tmp_path):
    from radfusion.models.io import load_pipeline, save_pipeline

    X, y, r2, train = data
    model = build_model("LR", selection_cfg=SEL, models_cfg=MODELS, seed=0)
    # reader 2's features are a routed fit argument, not a parameter: clone and
    # get_params never carry them, and there is nothing to strip when saving
    assert "icc__reader2" not in model.get_params()
    with group_routing():
        model.fit(X[train], y[train], reader2=r2)
    before = selection_report(model)
    assert before["n_features"]["icc"] < before["n_features"]["input"]  # f15 dropped
    proba = model.predict_proba(X)
    save_pipeline(model, tmp_path / "m.skops")
    assert selection_report(model) == before  # saving changed nothing
    np.testing.assert_array_equal(model.predict_proba(X), proba)
    loaded = load_pipeline(tmp_path / "m.skops")
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    # the loaded model is its own recipe: refit with reader 2, the same selection
    with group_routing():
        recipe = clone(loaded).fit(X[train], y[train], reader2=r2)
    assert selection_report(recipe)["n_features"] == before["n_features"]
    # without reader 2 the ICC filter is skipped (and says so)
    assert selection_report(clone(loaded).fit(X[train], y[train]))["notes"]["icc"] == (
        "skipped: no second delineation"
    )


# --- failed inner-CV fits -----------------------------------------------------------


def _reader2_in_folds(X, y, r2, per_fold: list[int]) -> pd.DataFrame:
    """Reader 2 for ``per_fold[k]`` cases of inner fold k's held-out part, none elsewhere."""
    cv = inner_cv(y, None, MODELS.cv, 0)
    ids = [X.index[te[:n]] for (_, te), n in zip(cv.split(X, y), per_fold, strict=True)]
    return r2.loc[np.concatenate(ids)]


def test_a_failed_inner_fold_is_scored_on_the_others_and_reported(data, caplog):
    X, y, r2, train = data
    Xt, yt = X[train], y[train]
    # fold 0 holds out 2 of the 4 second delineations: its ICC filter sees only 2 (< 3)
    sparse_r2 = _reader2_in_folds(Xt, yt, r2, [2, 1, 1])
    with caplog.at_level(logging.WARNING, logger="radfusion"):
        fitted = fit_zoo(
            Xt, yt, names=["LR"], selection_cfg=SEL, models_cfg=MODELS, reader2=sparse_r2, seed=0
        )["LR"]
    search = tune_model(
        build_model("LR", selection_cfg=SEL, models_cfg=MODELS, seed=0),
        Xt,
        yt,
        cfg=MODELS,
        seed=0,
        reader2=sparse_r2,
    )
    folds = np.column_stack([search.cv_results_[f"split{k}_test_score"] for k in range(3)])
    assert np.isnan(folds[:, 0]).all() and np.isfinite(folds[:, 1:]).all()
    best = int(np.argmax(folds[:, 1:].mean(axis=1)))
    assert search.best_index_ == best
    assert fitted.cv_auc == pytest.approx(folds[best, 1:].mean())  # not NaN
    assert fitted.n_splits == 2 and fitted.failed_fits == len(folds)
    assert "ICCFilter needs at least 3 cases" in fitted.tuning_note
    assert "scored on 2 of 3 folds" in fitted.tuning_note
    assert any("LR: " in r.message and "fits failed" in r.message for r in caplog.records)


def test_every_inner_fit_failing_is_a_clear_error(data):
    from radfusion.errors import ConfigError

    X, y, r2, train = data
    Xt, yt = X[train], y[train]
    sparse_r2 = _reader2_in_folds(Xt, yt, r2, [1, 1, 1])  # 2 delineations in every fold
    with pytest.raises(ConfigError, match=r"LR: every inner-CV fit .*ICCFilter needs at least 3"):
        fit_zoo(
            Xt, yt, names=["LR"], selection_cfg=SEL, models_cfg=MODELS, reader2=sparse_r2, seed=0
        )


def test_routed_auc_scores_exactly_as_scikit_learns_roc_auc(data):
    from radfusion.models.routing import RoutedAUC

    X, y, _, train = data
    for name in ("LR", "RF"):  # decision_function, and predict_proba
        model = make_classifier(name, MODELS, 0)[0]
        space = {"C": [0.1, 1.0]} if name == "LR" else {"max_depth": [2, 3]}
        runs = [
            GridSearchCV(model, space, scoring=scoring, cv=3).fit(X[train], y[train])
            for scoring in ("roc_auc", RoutedAUC())
        ]
        for key in ("split0_test_score", "split1_test_score", "split2_test_score"):
            np.testing.assert_array_equal(runs[0].cv_results_[key], runs[1].cv_results_[key])
