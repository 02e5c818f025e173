"""Train-fitted ComBat: agrees with neuroCombat, learns nothing from test rows, unseen centres."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import pytest

from radfusion.harmonization import ComBatHarmonizer, UnadjustedCaseWarning


def _cohort(n: int = 60, p: int = 12, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features with additive and multiplicative centre effects and an age effect."""
    rng = np.random.default_rng(seed)
    batch = np.repeat(["A", "B", "C"], n // 3)
    age = rng.integers(20, 80, n).astype(float)  # integers: exact in neuroCombat's float32
    sex = rng.choice(["F", "M"], n)
    X = rng.normal(size=(n, p)) * rng.uniform(0.5, 3, p) + 0.03 * age[:, None]
    X += np.where(batch[:, None] == "B", 2.0, 0.0) + (sex[:, None] == "M") * 0.5
    X[batch == "C"] *= 2.5
    ids = [f"case{i:03d}" for i in range(n)]
    meta = pd.DataFrame({"center": batch, "age": age, "sex": sex}, index=ids)
    return pd.DataFrame(X, index=ids, columns=[f"f{j}" for j in range(p)]), meta


def _neurocombat(X: pd.DataFrame, meta: pd.DataFrame, **kw) -> np.ndarray:
    from neuroCombat import neuroCombat

    with contextlib.redirect_stdout(io.StringIO()):  # it prints progress
        out = neuroCombat(
            dat=X.to_numpy().T.copy(), covars=meta.reset_index(drop=True), batch_col="center", **kw
        )
    return out["data"].T


@pytest.mark.parametrize("covariates", [False, True])
def test_agrees_with_neurocombat_to_1e6(covariates):
    X, meta = _cohort()
    kw = {"continuous_cols": ["age"], "categorical_cols": ["sex"]} if covariates else {}
    ref = _neurocombat(X, meta if covariates else meta[["center"]], **kw)
    h = ComBatHarmonizer(
        continuous=["age"] if covariates else (),
        categorical=["sex"] if covariates else (),
    )
    got = h.fit(X, case_meta=meta).transform(X, case_meta=meta).to_numpy()
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)
    # the batch effects were real and ComBat removed them: centre means now agree
    raw_gap = X.groupby(meta["center"]).mean().std().mean()
    new_gap = pd.DataFrame(got, index=X.index).groupby(meta["center"]).mean().std().mean()
    assert new_gap < raw_gap / 3


def test_fitted_on_training_rows_only():
    X, meta = _cohort()
    train = X.index[::2].append(X.index[1::4])
    test = X.index.difference(train)
    h1 = ComBatHarmonizer(continuous=["age"]).fit(X.loc[train], case_meta=meta)
    # change every test row's features and metadata: nothing fitted may move
    meta2 = meta.copy()
    meta2.loc[test, "age"] = 99.0
    meta2.loc[test, "center"] = "A"
    h2 = ComBatHarmonizer(continuous=["age"]).fit(X.loc[train], case_meta=meta2)
    for attr in ("grand_mean_", "var_pooled_", "beta_", "gamma_star_", "delta_star_"):
        np.testing.assert_array_equal(getattr(h1, attr), getattr(h2, attr))
    # fitting on the training rows alone equals the reference fitted on them alone
    ref = _neurocombat(X.loc[train], meta.loc[train], continuous_cols=["age"])
    got = h1.transform(X.loc[train], case_meta=meta).to_numpy()
    np.testing.assert_allclose(got, ref, atol=1e-6)
    # a test row's harmonised value does not depend on which other rows come with it
    alone = h1.transform(X.loc[test[:1]], case_meta=meta)
    together = h1.transform(X.loc[test], case_meta=meta).loc[test[:1]]
    pd.testing.assert_frame_equal(alone, together)
    # and differs from a fit that saw the test rows
    leaky = ComBatHarmonizer(continuous=["age"]).fit(X, case_meta=meta)
    assert not np.allclose(leaky.gamma_star_, h1.gamma_star_)


def test_unseen_centre_passes_through_with_a_warning():
    X, meta = _cohort()
    h = ComBatHarmonizer().fit(X, case_meta=meta)
    new = X.iloc[:4].copy()
    new.index = ["new1", "new2", "new3", "new4"]
    new_meta = pd.DataFrame({"center": ["A", "Z", None, "B"]}, index=new.index)
    with pytest.warns(UnadjustedCaseWarning, match=r"Z.*new2|new2.*Z"):
        out = h.transform(new, case_meta=new_meta)
    pd.testing.assert_series_equal(out.loc["new2"], new.loc["new2"])  # unchanged
    pd.testing.assert_series_equal(out.loc["new3"], new.loc["new3"])  # no centre
    assert not np.allclose(out.loc["new1"], new.loc["new1"])  # a known centre is adjusted
    assert np.isfinite(out.to_numpy()).all()


def test_columns_limits_harmonisation_and_label_is_never_used():
    X, meta = _cohort()
    h = ComBatHarmonizer(columns=["f0", "f1"]).fit(X, y=np.zeros(len(X)), case_meta=meta)
    out = h.transform(X, case_meta=meta)
    pd.testing.assert_frame_equal(out.drop(columns=["f0", "f1"]), X.drop(columns=["f0", "f1"]))
    assert not np.allclose(out["f0"], X["f0"])
    y1 = ComBatHarmonizer().fit(X, y=np.ones(len(X)), case_meta=meta).gamma_star_
    y0 = ComBatHarmonizer().fit(X, y=np.zeros(len(X)), case_meta=meta).gamma_star_
    np.testing.assert_array_equal(y0, y1)


def test_training_case_without_centre_is_an_error():
    X, meta = _cohort()
    meta.loc[X.index[0], "center"] = ""
    with pytest.raises(ValueError, match=r"case000.*center"):
        ComBatHarmonizer().fit(X, case_meta=meta)


def test_study_metadata_copies_inherit_and_covariate_types():
    from radfusion.config import StudyConfig
    from radfusion.harmonization.pipeline import add_harmonizer, make_harmonizer, study_case_meta
    from radfusion.models import build_model

    cfg = StudyConfig.from_dict(
        {"harmonization": {"method": "combat", "covariates": ["age", "sex"]}}
    )
    table = pd.DataFrame(
        {"case_id": ["a", "b"], "center": ["H1", "H2"], "age": ["40", "61"], "sex": ["F", "M"]}
    )
    cases = pd.DataFrame({"case_id": ["a", "b"], "label": [0, 1]})
    aug = pd.DataFrame({"case_id": ["a_aug1"], "source_case_id": ["a"]})
    meta = study_case_meta(cfg, table, cases, aug)
    assert meta.loc["a_aug1"].tolist() == meta.loc["a"].tolist()
    h = make_harmonizer(cfg, meta)
    assert list(h.continuous) == ["age"] and list(h.categorical) == ["sex"]
    model = add_harmonizer(build_model("LR", selection_cfg=cfg.selection, models_cfg=cfg.models), h)
    assert [n for n, _ in model.steps][:3] == ["icc", "harmonize", "scaler"]
    assert model.named_steps["harmonize"] is not h  # each model gets its own copy


def test_centres_are_routed_metadata_so_a_saved_model_holds_none(tmp_path):
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from radfusion.models import group_routing
    from radfusion.models.io import load_pipeline, save_pipeline
    from radfusion.models.routing import positive_proba

    X, meta = _cohort()
    y = (X["f0"] > X["f0"].median()).astype(int).to_numpy()
    pipe = Pipeline([("harmonize", ComBatHarmonizer()), ("clf", LogisticRegression())])
    assert "case_meta" not in pipe.get_params(deep=True)  # not a setting: clone never copies it
    with group_routing():  # the centres reach ComBat's fit and transform by metadata routing
        pipe.fit(X, y, case_meta=meta)
        before = pipe.predict_proba(X, case_meta=meta)[:, 1]
    h = pipe.named_steps["harmonize"]
    direct = LogisticRegression().fit(h.transform(X, case_meta=meta), y)
    np.testing.assert_array_equal(
        before, direct.predict_proba(h.transform(X, case_meta=meta))[:, 1]
    )
    save_pipeline(pipe, tmp_path / "m.skops")
    loaded = load_pipeline(tmp_path / "m.skops")  # only trusted types, no patient data
    assert not any(
        isinstance(v, pd.DataFrame) for v in vars(loaded.named_steps["harmonize"]).values()
    )
    with pytest.raises(ValueError, match="needs case_meta"):
        loaded.predict_proba(X)
    # a saved model scores new patients given their centres (predict, serve)
    np.testing.assert_array_equal(positive_proba(loaded, X, case_meta=meta[["center"]]), before)
    # clone copies no patient data: a clone refit with the same centres is the same model
    with group_routing():
        again = clone(pipe).fit(X, y, case_meta=meta)
    np.testing.assert_array_equal(positive_proba(again, X, case_meta=meta), before)


@pytest.mark.parametrize("eb", [True, False])
def test_new_centre_matches_neurocombat_reference_batch(monkeypatch, eb):
    # One training centre and no covariates: the training reference is that centre, so
    # add_batches must give neuroCombat's ref_batch adjustment of the new centre.
    from neuroCombat import neuroCombat

    monkeypatch.setattr(np, "int", int, raising=False)  # neuroCombat's ref_batch uses np.int
    rng = np.random.default_rng(0)
    n_train, n_new, p = 40, 15, 8
    X = np.vstack(
        [
            rng.normal(size=(n_train, p)) * rng.uniform(0.5, 3, p),
            rng.normal(size=(n_new, p)) * 2.0 + 1.5,
        ]
    )
    ids = [f"case{i:03d}" for i in range(n_train + n_new)]
    X = pd.DataFrame(X, index=ids, columns=[f"f{j}" for j in range(p)])
    meta = pd.DataFrame({"center": ["A"] * n_train + ["NEW"] * n_new}, index=ids)
    h = ComBatHarmonizer(empirical_bayes=eb).fit(X.iloc[:n_train], case_meta=meta)
    assert h.add_batches(X.iloc[n_train:], meta, min_cases=10) == {"NEW": n_new}
    ours = h.transform(X.iloc[n_train:], case_meta=meta).to_numpy()
    with contextlib.redirect_stdout(io.StringIO()), np.errstate(divide="ignore"):
        ref = neuroCombat(
            dat=X.to_numpy().T.copy(),
            covars=meta.reset_index(drop=True),
            batch_col="center",
            ref_batch="A",
            eb=eb,
        )["data"].T[n_train:]
    np.testing.assert_allclose(ours, ref, atol=1e-9)


def test_new_centre_needs_min_cases_and_keeps_the_training_reference():
    X, meta = _cohort(n=60)
    train = X.index[meta["center"] != "C"]
    h = ComBatHarmonizer(continuous=["age"], categorical=["sex"])
    h.fit(X.loc[train], case_meta=meta)
    ref = {k: getattr(h, k).copy() for k in ("grand_mean_", "var_pooled_", "beta_")}
    gamma_a = h.gamma_star_[list(h.batches_).index("A")].copy()
    new = X.index[meta["center"] == "C"]
    assert h.add_batches(X.loc[new], meta, min_cases=len(new) + 1) == {}  # too few: unchanged
    with pytest.warns(UnadjustedCaseWarning):
        np.testing.assert_array_equal(h.transform(X.loc[new], case_meta=meta), X.loc[new])
    assert h.add_batches(X.loc[new], meta, min_cases=len(new)) == {"C": len(new)}
    assert list(h.batches_) == ["A", "B", "C"]
    for k, v in ref.items():  # the training reference is kept
        np.testing.assert_array_equal(getattr(h, k), v)
    np.testing.assert_array_equal(h.gamma_star_[0], gamma_a)
    adjusted = h.transform(X.loc[new], case_meta=meta)
    # centre C was scaled x2.5: harmonised, its spread comes back to the others'
    assert adjusted.std().mean() < 0.6 * X.loc[new].std().mean()


def test_tuning_routes_the_centres_to_every_fit_and_held_out_fold():
    from radfusion.config import ModelsConfig, SelectionConfig
    from radfusion.harmonization.pipeline import add_harmonizer
    from radfusion.models import build_model, positive_proba, tune_model

    X, meta = _cohort(n=90)
    y = (X["f0"] - X.groupby(meta["center"])["f0"].transform("mean") > 0).astype(int).to_numpy()
    cfg = ModelsConfig(cv=3, n_iter=2)
    model = add_harmonizer(
        build_model("LR", selection_cfg=SelectionConfig(lasso_cv=3, lasso_cs=4), models_cfg=cfg),
        ComBatHarmonizer(continuous=["age"]),
    )
    search = tune_model(model, X, y, cfg=cfg, case_meta=meta)
    folds = [search.cv_results_[f"split{k}_test_score"] for k in range(3)]
    assert np.isfinite(folds).all()  # every held-out fold was scored with its centres
    h = search.best_estimator_.named_steps["harmonize"]
    assert sorted(h.batches_) == sorted(meta["center"].unique())
    prob = positive_proba(search.best_estimator_, X, case_meta=meta)
    assert prob.shape == (len(X),) and np.isfinite(prob).all()


def test_feature_contributions_of_a_harmonised_model_are_made_on_harmonised_values():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from radfusion.models import group_routing
    from radfusion.serve.explain import feature_contributions

    X, meta = _cohort()
    y = (X["f0"] > X["f0"].median()).astype(int).to_numpy()
    pipe = Pipeline(
        [
            ("harmonize", ComBatHarmonizer()),
            ("scaler", StandardScaler()),
            ("clf", LogisticRegression()),
        ]
    ).set_output(transform="pandas")
    with group_routing():
        pipe.fit(X, y, case_meta=meta)
    case = X.iloc[[40]]  # centre C, whose features ComBat rescales
    rows = {r["feature"]: r for r in feature_contributions(pipe, case, top=99, case_meta=meta)}
    harmonised = pipe.named_steps["harmonize"].transform(case, case_meta=meta)
    assert rows["f0"]["value"] == pytest.approx(harmonised["f0"].iloc[0])
    assert rows["f0"]["value"] != pytest.approx(case["f0"].iloc[0])
    # the contribution: the served probability minus the one with f0 at the training mean
    centred = harmonised.copy()
    centred["f0"] = pipe.named_steps["scaler"].mean_[0]
    tail = pipe[1:]
    p = tail.predict_proba(pd.concat([harmonised, centred]))[:, 1]
    assert rows["f0"]["contribution"] == pytest.approx(p[0] - p[1])
    with group_routing():
        served = pipe.predict_proba(case, case_meta=meta)[0, 1]
    assert p[0] == pytest.approx(served)
