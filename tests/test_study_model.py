"""The study object: one definition of every model's inputs, for training and prediction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from radfusion.bundle import _model_spec
from radfusion.families import ModelId
from radfusion.fusion import ClinicalImagingModel
from radfusion.fusion.clinical import SCORE_COLUMN
from radfusion.fusion.stacking import StackedFusionModel
from radfusion.fusion.study_model import (
    _PREFIX_KEYS,
    CaseInputs,
    ModelSpec,
    ScoreInputs,
    StudyModel,
)


class CountingScaler(StandardScaler):
    """A scaler counting its transforms (module level: fingerprints pickle the class)."""

    calls = 0

    def transform(self, X, copy=None):
        type(self).calls += 1
        return super().transform(X, copy=copy)


IDS = [f"c{i:02d}" for i in range(40)]


@pytest.fixture
def tables() -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.tile([0, 1], 20)
    rad = pd.DataFrame(
        {"r1": rng.normal(size=40) + y, "r2": rng.normal(size=40)}, index=pd.Index(IDS)
    )
    # the network scored one case fewer (e.g. an unreadable image): the Merged input skips it
    deep = pd.DataFrame({"d1": rng.normal(size=39) + y[:39]}, index=pd.Index(IDS[:39])).iloc[::-1]
    return rad, deep, y


def test_merged_input_is_the_inner_join_in_blocks(tables):
    rad, deep, _ = tables
    inputs = CaseInputs(radiomics=rad, deep={"2ch": deep})
    X = inputs.features("merged2")
    assert list(X.index) == IDS[:39]  # radiomics order, cases with both only
    assert list(X.columns) == ["r1", "r2", "d1"]
    np.testing.assert_array_equal(X["d1"], deep["d1"].reindex(IDS[:39]))
    assert inputs.blocks("merged2") == {"radiomics": ["r1", "r2"], "2ch": ["d1"]}
    assert inputs.features("radiomics") is rad
    with pytest.raises(ValueError, match="1ch network"):
        inputs.features("merged1")
    with pytest.raises(ValueError, match="not a feature-level"):
        inputs.features("2ch")


def test_score_inputs_align_scores_by_case_and_add_missing_clinical_columns():
    spec = ScoreInputs.for_clinical(
        ModelId("merged2", "SVM"), numeric=["age", "pth"], categorical=["sex"]
    )
    score = pd.Series([0.2, 0.9, 0.4], index=["b", "c", "a"])
    clinical = pd.DataFrame({"age": [50, 61], "sex": ["F", "M"]}, index=["a", "b"])
    X = spec.frame(["a", "b", "c"], {ModelId("merged2", "SVM"): score}, clinical)
    assert list(X.columns) == [SCORE_COLUMN, "age", "pth", "sex"]
    np.testing.assert_array_equal(X[SCORE_COLUMN], [0.4, 0.2, 0.9])
    assert X["pth"].isna().all()  # never given: imputed by the model
    assert X.loc["c", ["age", "sex"]].isna().all()  # a case without clinical values
    with pytest.raises(KeyError):
        spec.frame(["a"], {}, clinical)  # the imaging score is required


def test_bundle_entries_give_the_specs_the_training_stages_use():
    """bundle.json describes the score-level models exactly as the stages built them."""
    clinical = {
        "family": "clinical",
        "model": "Clinical+imaging",
        "classifier": "LR",
        "selected": True,
        "threshold": 0.3,
        "source": {"imaging_family": "merged2", "imaging_classifier": "SVM"},
        "clinical": {"numeric": ["age"], "categorical": ["sex"], "categories": {"sex": ["F"]}},
    }
    stacked = {
        "family": "stacked",
        "model": "Stacked",
        "classifier": "LR",
        "selected": True,
        "threshold": 0.5,
        "inputs": [
            {"family": "radiomics", "classifier": "LR"},
            {"family": "2ch", "classifier": "ResNet"},
        ],
        "clinical": {"numeric": [], "categorical": []},
    }
    assert _model_spec(clinical).inputs == ScoreInputs.for_clinical(
        ModelId("merged2", "SVM"), ["age"], ["sex"]
    )
    assert _model_spec(stacked).inputs == ScoreInputs.for_stacked(
        {"radiomics": "LR", "2ch": "ResNet"}
    )
    assert _model_spec(stacked).id == ModelId.single("stacked")
    radiomics = {**stacked, "family": "radiomics", "model": "Radiomics-LR"}
    assert _model_spec(radiomics).inputs is None
    with pytest.raises(ValueError, match="not the name"):
        _model_spec({**stacked, "model": "Clinical+imaging"})


def test_study_model_scores_score_level_models_after_their_inputs(tables):
    rad, deep, y = tables
    ids = IDS[:39]
    y = y[:39]
    deep_prob = pd.Series(np.linspace(0.05, 0.95, 39), index=ids)
    rad_model = LogisticRegression().fit(rad.loc[ids], y)
    merged_model = LogisticRegression().fit(rad.loc[ids].join(deep), y)
    stack_spec = ScoreInputs.for_stacked({"radiomics": "LR", "2ch": "ResNet"})
    rad_p = pd.Series(rad_model.predict_proba(rad.loc[ids])[:, 1], index=ids)
    stack_X = stack_spec.frame(
        ids, {ModelId("radiomics", "LR"): rad_p, ModelId.network("2ch", 18): deep_prob}
    )
    stacked = StackedFusionModel(arms=["radiomics", "2ch"]).fit(stack_X, y)
    clin_spec = ScoreInputs.for_clinical(ModelId.single("stacked"), numeric=["age"])
    age = pd.DataFrame({"age": np.arange(39.0)}, index=ids)
    stack_p = pd.Series(stacked.predict_proba(stack_X)[:, 1], index=ids)
    clin = ClinicalImagingModel(numeric=["age"]).fit(
        clin_spec.frame(ids, {ModelId.single("stacked"): stack_p}, age), y
    )
    specs = [  # score-level models first: the study orders them itself
        ModelSpec(ModelId.single("clinical"), True, 0.5, clin_spec),
        ModelSpec(ModelId.single("stacked"), True, 0.4, stack_spec),
        ModelSpec(ModelId("radiomics", "LR"), True, 0.5),
        ModelSpec(ModelId("merged2", "LR"), False, 0.5),
        ModelSpec(ModelId.network("2ch", 18), True, 0.6),
    ]
    fitted = {"radiomics": rad_model, "merged2": merged_model, "stacked": stacked, "clinical": clin}
    study = StudyModel(specs, lambda spec: fitted[spec.family])
    assert [m.family for m in study.ordered()][-2:] == ["stacked", "clinical"]
    out = study.score(
        CaseInputs(radiomics=rad, deep={"2ch": deep}),
        {"2ch": deep_prob},
        ids[::-1],
        clinical=age,
    ).set_index(["family", "case_id"])
    got = out["probability"]
    np.testing.assert_allclose(got["radiomics"].reindex(ids), rad_p, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["2ch"].reindex(ids), deep_prob, rtol=0, atol=0)
    np.testing.assert_allclose(got["stacked"].reindex(ids), stack_p, rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        got["merged2"].reindex(ids),
        merged_model.predict_proba(rad.loc[ids].join(deep))[:, 1],
        rtol=0,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        got["clinical"].reindex(ids),
        clin.predict_proba(clin_spec.frame(ids, {ModelId.single("stacked"): stack_p}, age))[:, 1],
        rtol=0,
        atol=1e-12,
    )
    with pytest.raises(ValueError, match="Stacked"):
        StudyModel(specs[1:2], fitted.get).ordered()  # its arms are not in the study
    calls = out.loc["stacked"]
    np.testing.assert_array_equal(calls["predicted_class"], calls["probability"] >= 0.4)
    assert out.loc["merged2", "selected"].eq(False).all()


def test_classifiers_sharing_a_fitted_selection_chain_transform_once_and_score_exactly(tables):
    from sklearn.base import clone
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline

    rad, _, y = tables

    def fitted(clf, *, shift: float = 0.0) -> Pipeline:
        return Pipeline([("scaler", CountingScaler()), ("clf", clf)]).fit(rad + shift, y)

    # two classifiers on equal fitted chains, one on a chain fitted to other rows
    lr, knn = fitted(LogisticRegression()), fitted(KNeighborsClassifier(5))
    other = fitted(LogisticRegression(), shift=1.0)
    models = {"LR": lr, "KNN": knn, "SVM": other}
    specs = [ModelSpec(ModelId("radiomics", c), True, 0.5) for c in models]
    study = StudyModel(specs, lambda spec: models[spec.classifier])
    study.prepare()  # a server fingerprints the chains while loading
    assert all(m in _PREFIX_KEYS for m in models.values())
    assert _PREFIX_KEYS[lr] == _PREFIX_KEYS[knn] != _PREFIX_KEYS[other]
    CountingScaler.calls = 0
    out = study.score(CaseInputs(radiomics=rad), {}, IDS).set_index("classifier")
    assert CountingScaler.calls == 2  # once per distinct fitted chain, not per classifier
    for name, pipe in models.items():
        want = clone(pipe).fit(rad + (name == "SVM"), y).predict_proba(rad)[:, 1]
        np.testing.assert_array_equal(out.loc[name, "probability"], want)


def test_a_chain_that_cannot_be_fingerprinted_is_scored_on_its_own(tables):
    from sklearn.pipeline import Pipeline

    rad, _, y = tables

    class LocalScaler(StandardScaler):  # defined in a function: cannot be pickled
        pass

    pipe = Pipeline([("scaler", LocalScaler()), ("clf", LogisticRegression())]).fit(rad, y)
    study = StudyModel([ModelSpec(ModelId("radiomics", "LR"), True, 0.5)], lambda spec: pipe)
    out = study.score(CaseInputs(radiomics=rad), {}, IDS)
    np.testing.assert_array_equal(out["probability"], pipe.predict_proba(rad)[:, 1])
