"""Sigmoid calibration folds keep every patient (and its augmented copies) on one side."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sklearn.calibration
from sklearn.calibration import CalibratedClassifierCV
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC

from radfusion.config import ModelsConfig
from radfusion.models import (
    CALIBRATION_CV,
    classifier_name,
    fit_zoo,
    group_routing,
    make_classifier,
    tune_model,
)
from radfusion.models.io import load_pipeline, save_pipeline

CFG = ModelsConfig(cv=3, n_iter=2, calibrate=True)


def _copies(n_groups: int = 36, n_copies: int = 4, seed: int = 0):
    """Patients with near-identical copies (augmentations): a memorising model's trap.

    Rows are indexed by case id, so a spy can map any slice back to its patients.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_groups, 5))
    labels = np.arange(n_groups) % 2
    centres[:, 0] += labels  # some signal, so the calibration has something to fit
    rows = np.repeat(centres, n_copies, axis=0)
    rows += rng.normal(scale=1e-3, size=rows.shape)
    groups = np.repeat([f"p{g:02d}" for g in range(n_groups)], n_copies)
    ids = [f"{g}_c{k}" for g in groups[::n_copies] for k in range(n_copies)]
    X = pd.DataFrame(rows, index=ids, columns=[f"f{j}" for j in range(5)])
    # augmented copies are appended, not next to their source: shuffle the rows
    order = rng.permutation(len(X))
    return (
        X.iloc[order],
        np.repeat(labels, n_copies)[order],
        pd.Series(groups, index=ids).iloc[order],
    )


class _SpyFolds:
    """Stands in for the calibration's splitter and records every (train, test) split."""

    def __init__(self, cv, record: list) -> None:
        self.cv, self.record = cv, record

    def get_n_splits(self, *args, **kwargs) -> int:
        return self.cv.get_n_splits(*args, **kwargs)

    def split(self, X, y=None, groups=None, **kwargs):
        for train, test in self.cv.split(X, y, groups, **kwargs):
            self.record.append((X.index[train], X.index[test]))
            yield train, test


@pytest.fixture
def calibration_folds(monkeypatch):
    """Every split CalibratedClassifierCV makes (either ensemble path), as case-id pairs."""
    record: list = []
    real = sklearn.calibration.check_cv

    def spy(cv, y=None, *, classifier=False):
        return _SpyFolds(real(cv, y, classifier=classifier), record)

    monkeypatch.setattr(sklearn.calibration, "check_cv", spy)
    return record


@pytest.mark.parametrize(
    ("name", "ensemble"),
    [("SVM", False), ("LR", True)],
)
def test_calibration_folds_never_split_a_patient(calibration_folds, name, ensemble):
    X, y, groups = _copies()
    clf, _ = make_classifier(name, CFG, 0)
    assert clf.ensemble is ensemble

    fitted = fit_zoo(
        X,
        y,
        groups.to_numpy(),
        names=[name],
        selection_cfg=None,
        models_cfg=CFG,
        builder=lambda n, ratio: Pipeline([("clf", make_classifier(n, CFG, 0)[0])]),
    )
    assert classifier_name(fitted[name].pipeline) == name
    # inner-CV fits (3 folds x 2 candidates) and the refit, each calibrated on 3 folds
    assert len(calibration_folds) == 7 * CALIBRATION_CV
    for train, test in calibration_folds:
        shared = set(groups[train]) & set(groups[test])
        assert not shared, f"patients in both the classifier's and the sigmoid's rows: {shared}"
    # the fitted model keeps its parameters: no fold indices in what gets saved
    assert fitted[name].pipeline.named_steps["clf"].cv == CALIBRATION_CV


def test_tune_model_routes_groups_to_the_svm_calibration(calibration_folds):
    X, y, groups = _copies(seed=1)
    clf, _ = make_classifier("SVM", ModelsConfig(cv=3), 0)
    search = tune_model(
        Pipeline([("clf", clf)]),
        X,
        y,
        groups.to_numpy(),
        cfg=ModelsConfig(cv=3),
        search_space={"clf__estimator__C": [1.0]},
    )
    assert search.best_estimator_.predict_proba(X).shape == (len(X), 2)
    assert len(calibration_folds) == 4 * CALIBRATION_CV
    for train, test in calibration_folds:
        assert not set(groups[train]) & set(groups[test])


def test_svm_without_groups_is_unchanged():
    """Without groups the SVM is exactly scikit-learn's Platt scaling on 3 stratified folds."""
    X, y, _ = _copies(seed=2)
    X = X + np.random.default_rng(2).normal(scale=0.5, size=X.shape)
    ours, _ = make_classifier("SVM", ModelsConfig(), 0)
    plain = CalibratedClassifierCV(
        SVC(kernel="rbf", class_weight="balanced", random_state=0),
        method="sigmoid",
        cv=3,
        ensemble=False,
    )
    ours.fit(X, y)
    plain.fit(X, y)
    np.testing.assert_array_equal(ours.predict_proba(X), plain.predict_proba(X))
    # and under metadata routing without groups
    with group_routing():
        again = make_classifier("SVM", ModelsConfig(), 0)[0].fit(X, y)
    np.testing.assert_array_equal(again.predict_proba(X), plain.predict_proba(X))


@pytest.mark.parametrize("name", ["SVM", "LR"])
def test_grouped_calibration_differs_from_ungrouped_and_round_trips(name, tmp_path):
    X, y, groups = _copies(seed=3)
    clf, _ = make_classifier(name, CFG, 0)
    pipe = Pipeline([("clf", clf)])
    with group_routing():
        pipe.fit(X, y, groups=groups.to_numpy())
    ungrouped = Pipeline([("clf", make_classifier(name, CFG, 0)[0])]).fit(X, y)
    assert not np.allclose(pipe.predict_proba(X), ungrouped.predict_proba(X))

    loaded = load_pipeline(save_pipeline(pipe, tmp_path / "model.skops"))
    np.testing.assert_array_equal(loaded.predict_proba(X), pipe.predict_proba(X))
    assert classifier_name(loaded) == name


def test_few_groups_reduce_the_calibration_folds(caplog):
    X, y, groups = _copies(n_groups=4)  # 2 patients per class
    clf, _ = make_classifier("SVM", ModelsConfig(), 0)
    clf.fit(X, y, groups=groups.to_numpy())
    assert "calibrating on 2 grouped folds instead of 3" in caplog.text
    assert clf.cv == CALIBRATION_CV
    # one patient per class (a tiny cross-fitting fold): no grouped split exists; the
    # stage goes on with ungrouped folds and says so, like a model fitted without groups
    X, y, groups = _copies(n_groups=2)
    caplog.clear()
    tiny = make_classifier("SVM", ModelsConfig(), 0)[0].fit(X, y, groups=groups.to_numpy())
    assert "calibration folds not grouped" in caplog.text
    plain = make_classifier("SVM", ModelsConfig(), 0)[0].fit(X, y)
    np.testing.assert_array_equal(tiny.predict_proba(X), plain.predict_proba(X))
