"""Train-fitted ComBat: agrees with neuroCombat, learns nothing from test rows, unseen centres."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import pytest

from radfusion.harmonization import ComBatHarmonizer, UnadjustedCaseWarning, set_case_meta


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
        case_meta=meta,
        continuous=["age"] if covariates else (),
        categorical=["sex"] if covariates else (),
    )
    got = h.fit(X).transform(X).to_numpy()
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)
    # the batch effects were real and ComBat removed them: centre means now agree
    raw_gap = X.groupby(meta["center"]).mean().std().mean()
    new_gap = pd.DataFrame(got, index=X.index).groupby(meta["center"]).mean().std().mean()
    assert new_gap < raw_gap / 3


def test_fitted_on_training_rows_only():
    X, meta = _cohort()
    train = X.index[::2].append(X.index[1::4])
    test = X.index.difference(train)
    h1 = ComBatHarmonizer(case_meta=meta, continuous=["age"]).fit(X.loc[train])
    # change every test row's features and metadata: nothing fitted may move
    meta2 = meta.copy()
    meta2.loc[test, "age"] = 99.0
    meta2.loc[test, "center"] = "A"
    h2 = ComBatHarmonizer(case_meta=meta2, continuous=["age"]).fit(X.loc[train])
    for attr in ("grand_mean_", "var_pooled_", "beta_", "gamma_star_", "delta_star_"):
        np.testing.assert_array_equal(getattr(h1, attr), getattr(h2, attr))
    # fitting on the training rows alone equals the reference fitted on them alone
    ref = _neurocombat(X.loc[train], meta.loc[train], continuous_cols=["age"])
    np.testing.assert_allclose(h1.transform(X.loc[train]).to_numpy(), ref, atol=1e-6)
    # a test row's harmonised value does not depend on which other rows come with it
    alone = h1.transform(X.loc[test[:1]])
    together = h1.transform(X.loc[test]).loc[test[:1]]
    pd.testing.assert_frame_equal(alone, together)
    # and differs from a fit that saw the test rows
    leaky = ComBatHarmonizer(case_meta=meta, continuous=["age"]).fit(X)
    assert not np.allclose(leaky.gamma_star_, h1.gamma_star_)


def test_unseen_centre_passes_through_with_a_warning():
    X, meta = _cohort()
    h = ComBatHarmonizer(case_meta=meta).fit(X)
    new = X.iloc[:4].copy()
    new.index = ["new1", "new2", "new3", "new4"]
    set_case_meta(h, pd.DataFrame({"center": ["A", "Z", None, "B"]}, index=new.index))
    with pytest.warns(UnadjustedCaseWarning, match=r"Z.*new2|new2.*Z"):
        out = h.transform(new)
    pd.testing.assert_series_equal(out.loc["new2"], new.loc["new2"])  # unchanged
    pd.testing.assert_series_equal(out.loc["new3"], new.loc["new3"])  # no centre
    assert not np.allclose(out.loc["new1"], new.loc["new1"])  # a known centre is adjusted
    assert np.isfinite(out.to_numpy()).all()


def test_columns_limits_harmonisation_and_label_is_never_used():
    X, meta = _cohort()
    h = ComBatHarmonizer(case_meta=meta, columns=["f0", "f1"]).fit(X, y=np.zeros(len(X)))
    out = h.transform(X)
    pd.testing.assert_frame_equal(out.drop(columns=["f0", "f1"]), X.drop(columns=["f0", "f1"]))
    assert not np.allclose(out["f0"], X["f0"])
    y1 = ComBatHarmonizer(case_meta=meta).fit(X, y=np.ones(len(X))).gamma_star_
    y0 = ComBatHarmonizer(case_meta=meta).fit(X, y=np.zeros(len(X))).gamma_star_
    np.testing.assert_array_equal(y0, y1)


def test_training_case_without_centre_is_an_error():
    X, meta = _cohort()
    meta.loc[X.index[0], "center"] = ""
    with pytest.raises(ValueError, match=r"case000.*center"):
        ComBatHarmonizer(case_meta=meta).fit(X)


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


def test_saved_model_drops_case_metadata_and_predicts_the_same_once_given_it(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from radfusion.harmonization import iter_harmonizers
    from radfusion.models.io import load_pipeline, save_pipeline

    X, meta = _cohort()
    y = (X["f0"] > X["f0"].median()).astype(int).to_numpy()
    pipe = Pipeline(
        [("harmonize", ComBatHarmonizer(case_meta=meta)), ("clf", LogisticRegression())]
    ).fit(X, y)
    before = pipe.predict_proba(X)[:, 1]
    save_pipeline(pipe, tmp_path / "m.skops")
    assert pipe.named_steps["harmonize"].case_meta is meta  # saving changed nothing
    loaded = load_pipeline(tmp_path / "m.skops")  # only trusted types
    (h,) = iter_harmonizers(loaded)
    assert h.case_meta is None  # no patient metadata in the file
    set_case_meta(loaded, meta[["center"]])
    np.testing.assert_allclose(loaded.predict_proba(X)[:, 1], before, rtol=0, atol=1e-12)


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
    h = ComBatHarmonizer(case_meta=meta, empirical_bayes=eb).fit(X.iloc[:n_train])
    assert h.add_batches(X.iloc[n_train:], min_cases=10) == {"NEW": n_new}
    ours = h.transform(X.iloc[n_train:]).to_numpy()
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
    h = ComBatHarmonizer(case_meta=meta, continuous=["age"], categorical=["sex"])
    h.fit(X.loc[train])
    ref = {k: getattr(h, k).copy() for k in ("grand_mean_", "var_pooled_", "beta_")}
    gamma_a = h.gamma_star_[list(h.batches_).index("A")].copy()
    new = X.index[meta["center"] == "C"]
    assert h.add_batches(X.loc[new], min_cases=len(new) + 1) == {}  # too few: unchanged
    with pytest.warns(UnadjustedCaseWarning):
        np.testing.assert_array_equal(h.transform(X.loc[new]), X.loc[new])
    assert h.add_batches(X.loc[new], min_cases=len(new)) == {"C": len(new)}
    assert list(h.batches_) == ["A", "B", "C"]
    for k, v in ref.items():  # the training reference is kept
        np.testing.assert_array_equal(getattr(h, k), v)
    np.testing.assert_array_equal(h.gamma_star_[0], gamma_a)
    adjusted = h.transform(X.loc[new])
    # centre C was scaled x2.5: harmonised, its spread comes back to the others'
    assert adjusted.std().mean() < 0.6 * X.loc[new].std().mean()
