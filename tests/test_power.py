"""The all-features-at-once Yeo-Johnson fit equals scikit-learn's PowerTransformer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import PowerTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from radfusion.models.io import load_pipeline, save_pipeline
from radfusion.selection import YeoJohnsonTransformer


def _tables() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    radiomics_like = np.exp(rng.normal(0, 1.5, (420, 60))) * rng.uniform(1e-3, 1e6, 60)
    radiomics_like[:, :20] -= radiomics_like[:, :20].mean(axis=0)  # some of each sign
    with_nan = rng.normal(size=(90, 5))
    with_nan[::6, 2] = np.nan
    return {
        "radiomics-like": radiomics_like,
        "standardised, Fortran order": np.asfortranarray(
            (radiomics_like - radiomics_like.mean(0)) / radiomics_like.std(0)
        ),
        "all negative": -np.exp(rng.normal(0, 1, (40, 6))),
        "heavy tails, many rows": rng.standard_t(2, (9000, 3)),
        "constant and zero columns": np.c_[np.full(25, 3.5), np.zeros(25), rng.normal(size=25)],
        "NaN cells": with_nan,
        "one case per class extreme": np.r_[rng.normal(size=(30, 2)), [[1e8, -1e8]]],
        # a constant feature with a missing value becomes zeros + NaN after a z-score
        "zeros and NaN": np.c_[[0.0, 0.0, np.nan, 0.0], [1.0, 2.0, 3.0, 5.0]],
    }


@pytest.mark.parametrize("name", list(_tables()))
def test_equals_power_transformer_bit_for_bit(name):
    X = _tables()[name]
    ref = PowerTransformer(method="yeo-johnson")
    ours = YeoJohnsonTransformer()
    np.testing.assert_array_equal(ours.fit_transform(X), ref.fit_transform(X))
    np.testing.assert_array_equal(ours.lambdas_, ref.lambdas_)
    new = np.flipud(X[: min(len(X), 50)]) * 1.5
    np.testing.assert_array_equal(ours.transform(new), ref.transform(new))
    np.testing.assert_array_equal(
        YeoJohnsonTransformer(standardize=False).fit_transform(X),
        PowerTransformer(standardize=False).fit_transform(X),
    )
    back = ours.inverse_transform(ours.transform(new))
    np.testing.assert_array_equal(back, ref.inverse_transform(ref.transform(new)))


def test_values_too_close_to_zero_for_a_bounded_search_are_refused():
    X = np.c_[[1e-310, 2e-310, 3e-310, np.nan], [1.0, 2.0, 3.0, 4.0]]
    with pytest.raises(ValueError, match="too close to 0"):
        YeoJohnsonTransformer().fit(X)
    with pytest.raises(ValueError):  # scikit-learn refuses it too
        PowerTransformer().fit(X)


def test_served_feature_contributions_work_with_the_yeo_johnson_scaler():
    # the web app's per-feature contributions need the scaler's inverse (the training centre)
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from radfusion.selection.pipeline import make_scaler
    from radfusion.serve.explain import feature_contributions

    rng = np.random.default_rng(3)
    X = pd.DataFrame(np.exp(rng.normal(size=(120, 4))), columns=["a", "b", "c", "d"])
    y = (X["a"] + rng.normal(scale=0.5, size=120) > 1.5).astype(int).to_numpy()
    model = Pipeline([("scaler", make_scaler("yeo-johnson")), ("clf", LogisticRegression())])
    model.set_output(transform="pandas").fit(X, y)
    rows = feature_contributions(model, X.iloc[[0]])
    assert {r["feature"] for r in rows} == {"a", "b", "c", "d"}
    assert all(np.isfinite(r["contribution"]) for r in rows)


def test_float32_features_are_transformed_in_float64():
    # the networks' deep features are float32: computed as if converted to float64 first
    X32 = np.exp(np.random.default_rng(2).normal(size=(80, 5))).astype(np.float32)
    out = YeoJohnsonTransformer().fit_transform(X32)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, PowerTransformer().fit_transform(X32.astype(np.float64)))


def test_keeps_feature_names_and_pandas_output():
    X = pd.DataFrame(np.exp(np.random.default_rng(0).normal(size=(50, 3))), columns=["a", "b", "c"])
    out = YeoJohnsonTransformer().set_output(transform="pandas").fit_transform(X)
    assert out.columns.tolist() == ["a", "b", "c"] and out.index.equals(X.index)
    with pytest.raises(ValueError, match="feature names"):
        YeoJohnsonTransformer().fit(X).transform(X.iloc[:, :2])


def test_saved_and_loaded_as_a_trusted_type(tmp_path):
    X = np.exp(np.random.default_rng(1).normal(size=(60, 4)))
    model = YeoJohnsonTransformer().fit(X)
    back = load_pipeline(save_pipeline(model, tmp_path / "yj.skops"))
    np.testing.assert_array_equal(back.transform(X), model.transform(X))


@parametrize_with_checks([YeoJohnsonTransformer()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
