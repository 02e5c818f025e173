"""Early fusion (Merged models) and the clinical + imaging model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize

from radfusion.config import ModelsConfig, SelectionConfig
from radfusion.fusion import ClinicalImagingModel, build_merged_model, fit_merged_zoo
from radfusion.fusion.merge import block_pipelines
from radfusion.models import case_data, group_routing
from radfusion.selection import selection_report


def _blocks(n=160, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    rad = pd.DataFrame(rng.normal(size=(n, 12)), columns=[f"original_f{i}" for i in range(12)])
    rad["original_f0"] += 1.5 * y  # informative radiomics feature
    dl = pd.DataFrame(rng.normal(size=(n, 20)), columns=[f"dl2ch_{i:04d}" for i in range(20)])
    dl["dl2ch_0003"] += 1.5 * y  # informative deep feature
    X = pd.concat([rad, dl], axis=1)
    X.index = [f"c{i}" for i in range(n)]
    return X, y, {"radiomics": list(rad.columns), "2ch": list(dl.columns)}


def test_merged_model_selects_per_block_and_keeps_both_signals():
    X, y, blocks = _blocks()
    sel = SelectionConfig(lasso_cv=3, lasso_cs=8)
    model = build_merged_model(
        "LR", blocks, selection_cfg=sel, models_cfg=ModelsConfig(), seed=0
    ).fit(X, y)
    pipes = block_pipelines(model)
    assert set(pipes) == {"radiomics", "2ch"}
    kept = list(model.named_steps["select"].get_feature_names_out())
    assert "original_f0" in kept and "dl2ch_0003" in kept
    # every kept feature comes from its own block's selection
    assert set(kept) == {
        *pipes["radiomics"].get_feature_names_out(),
        *pipes["2ch"].get_feature_names_out(),
    }
    assert model.predict_proba(X)[:, 1].shape == (len(X),)


def test_merged_model_is_leakage_safe():
    X, y, blocks = _blocks(n=200, seed=1)
    train, held = X.index[:140], X.index[140:]
    sel = SelectionConfig(lasso_cv=3, lasso_cs=8)
    r2 = X[blocks["radiomics"]] + 0.05
    a = build_merged_model("LR", blocks, selection_cfg=sel, models_cfg=ModelsConfig(), seed=0)
    with group_routing():  # each block's ICC filter reads its columns of the routed table
        a.fit(X.loc[train], y[:140], **case_data(X.loc[train], reader2={"radiomics": r2}))
    iccs = {b: p.named_steps["icc"] for b, p in block_pipelines(a).items()}
    assert not iccs["radiomics"].skipped_ and iccs["radiomics"].case_ids_ == train.tolist()
    assert iccs["2ch"].skipped_  # no second reading of the deep block
    # held-out rows altered and reader-2 rows for them changed: nothing fitted may move
    X2 = X.copy()
    X2.loc[held] = 99.0
    r2b = r2.copy()
    r2b.loc[held] = -5.0
    b = build_merged_model("LR", blocks, selection_cfg=sel, models_cfg=ModelsConfig(), seed=0)
    with group_routing():
        b.fit(X2.loc[train], y[:140], **case_data(X2.loc[train], reader2={"radiomics": r2b}))
    np.testing.assert_array_equal(
        a.predict_proba(X.loc[held])[:, 1], b.predict_proba(X.loc[held])[:, 1]
    )


def test_fit_merged_zoo_tunes_with_groups():
    X, y, blocks = _blocks(n=120, seed=2)
    groups = np.repeat(np.arange(60), 2)
    zoo = fit_merged_zoo(
        X,
        y,
        groups,
        blocks,
        names=["LR", "RF"],
        selection_cfg=SelectionConfig(lasso_cv=3, lasso_cs=6),
        models_cfg=ModelsConfig(cv=3, n_iter=2),
        seed=0,
    )
    assert set(zoo) == {"LR", "RF"}
    for fm in zoo.values():
        assert fm.cv_auc > 0.75
        assert fm.pipeline.steps[0][0] == "select"
        # the groups reach the LASSO inside every block of the ColumnTransformer
        for block, pipe in block_pipelines(fm.pipeline).items():
            assert pipe.named_steps["lasso"].grouped_, block
            assert selection_report(pipe)["lasso"]["grouped"] is True


def test_groups_reach_the_lasso_inside_every_tuning_fold_of_a_merged_model(monkeypatch):
    """Inside the search's CV folds too: each block's LASSO sees the groups of its fold rows."""
    from radfusion.selection.lasso import LassoSelector

    seen: list[tuple[int, object]] = []
    fit = LassoSelector.fit

    def spy(self, X, y, groups=None):
        seen.append((len(y), None if groups is None else np.asarray(groups).copy()))
        return fit(self, X, y, groups=groups)

    monkeypatch.setattr(LassoSelector, "fit", spy)
    X, y, blocks = _blocks(n=120, seed=2)
    groups = np.repeat(np.arange(60), 2)
    fit_merged_zoo(
        X,
        y,
        groups,
        blocks,
        names=["LR"],
        selection_cfg=SelectionConfig(lasso_cv=3, lasso_cs=4),
        models_cfg=ModelsConfig(cv=3, n_iter=1, n_jobs=1),
        seed=0,
    )
    # 3 tuning folds + the refit, for each of the 2 blocks
    assert len(seen) == 8
    for n_rows, g in seen:
        assert g is not None and len(g) == n_rows
        assert set(np.bincount(g)[np.unique(g)]) == {2}  # both copies of each group, together


def _nll(beta, Z, y):
    eta = Z @ beta
    return np.sum(np.logaddexp(0, eta) - y * eta)


def test_clinical_imaging_model_matches_maximum_likelihood():
    rng = np.random.default_rng(0)
    n = 600
    age = rng.normal(55, 13, n)
    sex = rng.choice(["F", "M"], n)
    score = rng.uniform(0.02, 0.98, n)
    logit = np.log(score / (1 - score))
    eta = -0.5 + 1.2 * logit + 0.4 * (age - 55) / 13 + 0.6 * (sex == "M")
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int)
    X = pd.DataFrame({"age": age, "sex": sex, "imaging_score": score})
    m = ClinicalImagingModel(numeric=["age"], categorical=["sex"], C=1e6).fit(X, y)
    tab = m.coefficients_.set_index("term")
    assert list(tab.index) == ["intercept", "imaging_score", "age", "sex_M"]
    # an independent maximum-likelihood fit of the same design
    z_age = (age - age.mean()) / age.std()
    Z = np.column_stack([np.ones(n), logit, z_age, (sex == "M").astype(float)])
    opt = optimize.minimize(_nll, np.zeros(4), args=(Z, y), method="BFGS", tol=1e-10)
    np.testing.assert_allclose(tab["coef"].to_numpy(), opt.x, atol=2e-3)
    # Wald SE from the observed information
    p = 1 / (1 + np.exp(-(Z @ opt.x)))
    cov = np.linalg.inv((Z * (p * (1 - p))[:, None]).T @ Z)
    np.testing.assert_allclose(tab["se"].to_numpy(), np.sqrt(np.diag(cov)), rtol=1e-2)
    assert tab.loc["imaging_score", "p_value"] < 1e-6
    assert (
        tab.loc["imaging_score", "ci_low"] < np.exp(opt.x[1]) < tab.loc["imaging_score", "ci_high"]
    )
    prob = m.predict_proba(X)[:, 1]
    assert prob.shape == (n,) and prob.min() > 0 and prob.max() < 1


def test_clinical_model_stays_finite_under_separation():
    # a perfect imaging score separates the classes: the default ridge keeps the fit sane
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 50)
    score = np.where(y == 1, rng.uniform(0.8, 1.0, 100), rng.uniform(0.0, 0.2, 100))
    X = pd.DataFrame({"age": rng.normal(55, 10, 100), "imaging_score": score})
    m = ClinicalImagingModel(numeric=["age"]).fit(X, y)
    tab = m.coefficients_.set_index("term")
    assert np.isfinite(tab[["coef", "se", "ci_low", "ci_high"]].to_numpy()).all()
    assert 0 < tab.loc["imaging_score", "coef"] < 10 and tab.loc["imaging_score", "se"] < 5
    prob = m.predict_proba(X)[:, 1]
    assert prob.min() > 1e-6 and prob.max() < 1 - 1e-6  # a diverged fit gives 0 / 1
    assert np.mean((prob >= 0.5) == y) > 0.95


def test_clinical_model_missing_values_and_columns():
    X = pd.DataFrame(
        {
            "age": [50, np.nan, 60, 70],
            "sex": ["F", None, "M", "F"],
            "imaging_score": [0.1, 0.9, 0.2, 0.8],
        }
    )
    m = ClinicalImagingModel(numeric=["age"], categorical=["sex"]).fit(X, [0, 1, 0, 1])
    assert np.isfinite(m.predict_proba(X)).all()
    with pytest.raises(ValueError, match="calcium"):
        ClinicalImagingModel(numeric=["calcium"]).fit(X, [0, 1, 0, 1])


def test_model_names_written_into_predictions_are_stable():
    # bundles and reports key on these names: changing them breaks saved studies
    from radfusion.families import FAMILIES, ModelId

    assert FAMILIES == ("radiomics", "1ch", "2ch", "merged1", "merged2", "stacked", "clinical")
    assert ModelId.single("stacked").name == "Stacked"
    assert ModelId("radiomics", "LR").name == "Radiomics-LR"
    assert ModelId("merged1", "XGBoost").name == "Merged1-XGBoost"
    assert ModelId("merged2", "LightGBM").name == "Merged2-LightGBM"
    assert ModelId.single("clinical").name == "Clinical+imaging"
