"""Feature selectors: Spearman redundancy, ICC reproducibility, Mann-Whitney, LASSO."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
from scipy.stats import mannwhitneyu, spearmanr
from sklearn.datasets import make_classification
from sklearn.utils.estimator_checks import parametrize_with_checks

from radfusion.config import SelectionConfig
from radfusion.models import group_routing
from radfusion.selection import (
    ICCFilter,
    LassoSelector,
    MannWhitneyFilter,
    SpearmanFilter,
    build_selector,
    intraclass_correlation,
    selection_report,
)


@parametrize_with_checks(
    [SpearmanFilter(threshold=0.9), LassoSelector(Cs=4, cv=3), MannWhitneyFilter()]
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# --- Spearman -----------------------------------------------------------------------


def _redundant_table(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a, b, c = rng.normal(size=(3, 80))
    return pd.DataFrame(
        {
            "a": a,
            "b": b,
            "exp_a": np.exp(a),  # increasing transform of a: rho = 1
            "c": c,
            "neg_cube_a": -(a**3),  # decreasing transform of a: rho = -1
        }
    )


def test_spearman_drops_exactly_the_monotone_transforms():
    X = _redundant_table()
    sel = SpearmanFilter(threshold=0.9).fit(X)
    assert sel.get_feature_names_out().tolist() == ["a", "b", "c"]
    # Each dropped feature points at the kept feature it duplicates.
    assert sel.redundant_with_.tolist() == [-1, -1, 0, -1, 0]
    np.testing.assert_allclose(sel.max_abs_rho_[[2, 4]], 1.0)
    # Deterministic across runs and input types.
    again = SpearmanFilter(threshold=0.9).fit(X.to_numpy())
    assert np.array_equal(again.get_support(), sel.get_support())


def test_spearman_tie_keeps_the_earlier_column():
    X = _redundant_table()[["exp_a", "a", "b"]]
    assert SpearmanFilter(0.9).fit(X).get_feature_names_out().tolist() == ["exp_a", "b"]


def test_spearman_no_kept_pair_above_threshold_and_every_dropped_is_represented():
    rng = np.random.default_rng(1)
    latent = rng.normal(size=(120, 6))
    X = latent @ rng.normal(size=(6, 40)) + 0.3 * rng.normal(size=(120, 40))
    X[:, 7] = 3.0  # a constant feature
    sel = SpearmanFilter(threshold=0.8).fit(X)
    rho = np.abs(spearmanr(np.delete(X, 7, axis=1)).statistic)
    rho = np.insert(np.insert(rho, 7, 0.0, axis=0), 7, 0.0, axis=1)
    kept = sel.get_support()
    assert not kept[7] and sel.constant_[7]
    assert 0 < kept.sum() < 39
    block = rho[np.ix_(kept, kept)]
    assert (block[~np.eye(kept.sum(), dtype=bool)] <= 0.8).all()
    for i in np.flatnonzero(~kept & ~sel.constant_):
        assert kept[sel.redundant_with_[i]]
        assert rho[i, sel.redundant_with_[i]] > 0.8


def test_spearman_is_fast_on_2048_deep_features():
    X = np.random.default_rng(2).normal(size=(200, 2048))
    start = time.perf_counter()
    SpearmanFilter(0.9).fit(X)
    assert time.perf_counter() - start < 5.0


def test_spearman_rejects_all_constant_and_bad_threshold():
    with pytest.raises(ValueError, match="constant"):
        SpearmanFilter().fit(np.ones((5, 3)))
    with pytest.raises(ValueError, match="threshold"):
        SpearmanFilter(threshold=1.5).fit(np.random.default_rng(0).normal(size=(5, 3)))


# --- ICC ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "pingouin_type"), [("ICC(3,1)", "ICC(C,1)"), ("ICC(2,1)", "ICC(A,1)")]
)
def test_icc_matches_pingouin(form, pingouin_type):
    rng = np.random.default_rng(3)
    n, p = 17, 6
    r1 = rng.normal(size=(n, p)) * rng.uniform(0.5, 3, size=p)
    r2 = 0.8 * r1 + rng.normal(size=(n, p)) + rng.normal(size=p)  # bias: ICC2 < ICC3
    ours = intraclass_correlation(np.stack([r1, r2], axis=1), form)
    for j in range(p):
        long = pd.DataFrame(
            {
                "case": np.repeat(np.arange(n), 2),
                "reader": np.tile([1, 2], n),
                "value": np.column_stack([r1[:, j], r2[:, j]]).ravel(),
            }
        )
        table = pg.intraclass_corr(long, targets="case", raters="reader", ratings="value")
        expected = table.set_index("Type").loc[pingouin_type, "ICC"]
        assert abs(ours[j] - expected) < 1e-10


def test_icc_constant_feature_is_nan():
    ratings = np.stack([np.ones((6, 1)), np.ones((6, 1))], axis=1)
    assert np.isnan(intraclass_correlation(ratings)).all()


def _two_readers(n: int = 60, seed: int = 4) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = [f"case{i:03d}" for i in range(n)]
    r1 = pd.DataFrame(rng.normal(size=(n, 4)), index=ids, columns=["s1", "n1", "s2", "n2"])
    r2 = r1.copy()
    r2[["s1", "s2"]] += 0.1 * rng.normal(size=(n, 2))  # reliable: ICC ~ 0.99
    r2[["n1", "n2"]] = rng.normal(size=(n, 2))  # unrelated re-delineation: ICC ~ 0
    return r1, r2


def test_icc_filter_keeps_reliable_and_drops_noisy_features():
    r1, r2 = _two_readers()
    sel = ICCFilter(threshold=0.8).fit(r1, reader2=r2)
    assert sel.get_feature_names_out().tolist() == ["s1", "s2"]
    assert not sel.skipped_ and sel.n_cases_ == 60
    assert (sel.icc_[[0, 2]] > 0.95).all() and (np.abs(sel.icc_[[1, 3]]) < 0.5).all()


def test_icc_filter_aligns_dataframes_by_case_id():
    r1, r2 = _two_readers()
    train = r1.index[:40]
    aligned = ICCFilter().fit(r1.loc[train], reader2=r2.loc[train].to_numpy())
    # reader2 shuffled, with columns in another order and extra (held-out) cases.
    shuffled = r2.sample(frac=1.0, random_state=0)[["n2", "s1", "s2", "n1"]]
    matched = ICCFilter().fit(r1.loc[train], reader2=shuffled)
    np.testing.assert_array_equal(matched.icc_, aligned.icc_)
    assert matched.n_cases_ == 40 and matched.case_ids_ == train.tolist()
    # Reader 2 delineated only some cases: only those count.
    partial = ICCFilter().fit(r1.loc[train], reader2=r2.iloc[::3])
    assert partial.n_cases_ == len(range(0, 40, 3))


def test_icc_filter_array_reader2_with_missing_rows():
    r1, r2 = _two_readers()
    r2a = r2.to_numpy().copy()
    r2a[::2] = np.nan  # every other case not re-delineated
    sel = ICCFilter().fit(r1.to_numpy(), reader2=r2a)
    ref = ICCFilter().fit(r1, reader2=r2.iloc[1::2])
    assert sel.n_cases_ == 30
    np.testing.assert_allclose(sel.icc_, ref.icc_, rtol=0, atol=1e-12)


def test_icc_filter_skips_without_reader2():
    r1, _ = _two_readers()
    sel = ICCFilter().fit(r1)
    assert sel.skipped_ and "second delineation" in sel.skip_reason_
    assert sel.get_support().all() and np.isnan(sel.icc_).all()


def test_icc_filter_errors_are_clear():
    r1, r2 = _two_readers()
    with pytest.raises(ValueError, match="at least 3 cases"):
        ICCFilter().fit(r1, reader2=r2.iloc[:2])
    with pytest.raises(ValueError, match="lacks 1 feature"):
        ICCFilter().fit(r1, reader2=r2.drop(columns="n2"))
    with pytest.raises(ValueError, match="row-aligned"):
        ICCFilter().fit(r1.iloc[:30], reader2=r2.to_numpy())
    with pytest.raises(ValueError, match="No feature has ICC"):
        ICCFilter(threshold=0.999).fit(r1, reader2=r2)
    with pytest.raises(ValueError, match="unknown ICC form"):
        ICCFilter(form="ICC(1,1)").fit(r1, reader2=r2)


# --- Mann-Whitney -------------------------------------------------------------------


def test_mann_whitney_filter_matches_scipy_and_keeps_one_when_none_pass():
    rng = np.random.default_rng(5)
    y = np.repeat([0, 1], 40)
    X = rng.normal(size=(80, 6))
    X[:, 2] += 1.5 * y
    sel = MannWhitneyFilter(alpha=0.05).fit(X, y)
    for j in range(6):
        expected = mannwhitneyu(X[y == 1, j], X[y == 0, j], alternative="two-sided").pvalue
        assert sel.pvalues_[j] == pytest.approx(expected, rel=1e-12)
    assert sel.get_support()[2] and not sel.fallback_
    strict = MannWhitneyFilter(alpha=1e-30).fit(X, y)
    assert strict.fallback_ and strict.get_support().tolist() == [j == 2 for j in range(6)]


# --- LASSO --------------------------------------------------------------------------


def test_lasso_keeps_informative_and_drops_noise():
    # shuffle=False: the 4 informative features are columns 0-3, the other 26 are noise.
    X, y = make_classification(
        300,
        30,
        n_informative=4,
        n_redundant=0,
        class_sep=1.5,
        flip_y=0,
        shuffle=False,
        random_state=0,
    )
    sel = LassoSelector(Cs=10, cv=5).fit(X, y)
    kept = np.flatnonzero(sel.get_support())
    assert set(range(4)) <= set(kept)
    assert len(kept) <= 10  # at least 20 of the 26 noise features dropped
    assert sel.path_coefs_.shape == (10, 30) and sel.cv_scores_.shape == (5, 10)
    assert sel.coef_.shape == (len(kept),) and (sel.coef_ != 0).all()
    assert sel.cv_scores_.mean(axis=0).max() > 0.8
    # The path: the strongest penalty keeps nothing, the weakest nearly everything.
    n_nonzero = (sel.path_coefs_ != 0).sum(axis=1)
    assert n_nonzero[0] <= 1 and n_nonzero[-1] >= 25
    # The 1-SE rule takes a penalty at least as strong.
    assert LassoSelector(Cs=10, cv=5, rule="1se").fit(X, y).C_ <= sel.C_
    top2 = LassoSelector(Cs=10, cv=5, max_features=2).fit(X, y)
    at_C = sel.path_coefs_[list(sel.path_Cs_).index(sel.C_)]
    assert set(np.flatnonzero(top2.get_support())) == set(np.argsort(-np.abs(at_C))[:2])
    np.testing.assert_array_equal(top2.coef_, at_C[top2.get_support()])


def test_lasso_falls_back_to_the_sparsest_nonempty_model():
    triggered = 0
    for seed in range(8):
        rng = np.random.default_rng(seed)
        X, y = rng.normal(size=(60, 10)), np.repeat([0, 1], 30)
        sel = LassoSelector(Cs=[1e-4, 0.05, 0.2, 1.0], cv=3, random_state=seed).fit(X, y)
        assert list(sel.path_Cs_) == [1e-4, 0.05, 0.2, 1.0]
        at_cv = sel.path_coefs_[list(sel.path_Cs_).index(sel.cv_C_)]
        nonempty = (sel.path_coefs_ != 0).any(axis=1)
        if (at_cv == 0).all():
            triggered += 1
            assert sel.fallback_ and sel.cv_C_ < sel.C_
            assert sel.path_Cs_[nonempty & (sel.path_Cs_ > sel.cv_C_)].min() == sel.C_
        else:
            assert not sel.fallback_ and sel.cv_C_ == sel.C_
        assert sel.get_support().sum() >= 1
    assert triggered > 0  # pure noise: CV often prefers the empty model


def test_lasso_grouped_inner_cv_uses_groups():
    X, y = make_classification(80, 10, n_informative=3, n_redundant=0, random_state=1)
    groups = np.where(y == 1, np.arange(80) % 2, 10 + np.arange(80) % 7)  # 2 positive groups
    grouped = LassoSelector(Cs=4, cv=5).fit(X, y, groups=groups)
    assert grouped.grouped_ and grouped.n_splits_ == 2
    plain = LassoSelector(Cs=4, cv=5).fit(X, y)
    assert not plain.grouped_ and plain.n_splits_ == 5
    with pytest.warns(UserWarning, match="not grouped"):
        one = LassoSelector(Cs=4, cv=5).fit(X, y, groups=np.where(y == 1, 0, groups))
    assert not one.grouped_ and one.n_splits_ == 5


# --- the chain ----------------------------------------------------------------------


def _cohort(seed: int = 6) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    X, y = make_classification(
        150, 24, n_informative=4, n_redundant=4, class_sep=1.5, shuffle=False, random_state=seed
    )
    ids = [f"c{i:03d}" for i in range(150)]
    X = pd.DataFrame(X, index=ids, columns=[f"feat{j}" for j in range(24)])
    rng = np.random.default_rng(seed)
    r2 = X + 0.05 * rng.normal(size=X.shape)
    r2[["feat20", "feat21"]] = rng.normal(size=(150, 2))  # irreproducible noise features
    return X, y, r2


def test_build_selector_and_report():
    X, y, r2 = _cohort()
    cfg = SelectionConfig(lasso_cs=6, lasso_cv=3, univariate=True)
    with group_routing():  # reader 2's features reach the ICC filter as routed metadata
        pipe = build_selector(cfg, seed=0).fit(X, y, reader2=r2)
    assert [n for n, _ in pipe.steps] == ["icc", "scaler", "spearman", "univariate", "lasso"]
    out = pipe.transform(X)
    assert isinstance(out, pd.DataFrame) and out.index.equals(X.index)
    rep = selection_report(pipe)
    n = rep["n_features"]
    assert list(n) == ["input", "icc", "spearman", "univariate", "lasso"]
    assert n["input"] == 24 >= n["icc"] >= n["spearman"] >= n["univariate"] >= n["lasso"] >= 1
    assert {"feat20", "feat21"} <= set(rep["dropped"]["icc"])
    assert rep["kept"] == out.columns.tolist() == pipe.get_feature_names_out().tolist()
    assert list(rep["lasso"]["coef"]) == rep["kept"]
    assert rep["icc"]["n_cases"] == 150 and rep["notes"] == {}
    for dropped, kept in rep["spearman_redundant_with"].items():
        assert dropped in rep["dropped"]["spearman"] and kept not in rep["dropped"]["spearman"]

    skipped = selection_report(build_selector(cfg).fit(X, y))
    assert skipped["n_features"]["icc"] == 24
    assert skipped["notes"]["icc"] == "skipped: no second delineation"


def test_build_selector_on_numpy_input():
    X, y, _ = _cohort()
    pipe = build_selector(SelectionConfig(lasso_cs=5, lasso_cv=3)).fit(X.to_numpy(), y)
    assert all(name.startswith("x") for name in selection_report(pipe)["kept"])


def test_yeo_johnson_scaler_tames_heavy_tails_and_fits_on_training_only():
    from scipy import stats as sps

    from radfusion.config import SelectionConfig
    from radfusion.selection import build_selector
    from radfusion.selection.pipeline import make_scaler

    rng = np.random.default_rng(0)
    heavy = np.exp(rng.normal(0, 1.5, (400, 1))) * 1e6  # log-normal at radiomics magnitudes
    z = make_scaler("zscore").fit_transform(heavy)
    yj = make_scaler("yeo-johnson").fit_transform(heavy)
    assert abs(sps.skew(yj.ravel())) < min(1.0, abs(sps.skew(z.ravel())) / 4)
    assert np.abs(yj).max() < np.abs(z).max()
    with pytest.raises(ValueError, match="unknown scaler"):
        make_scaler("minmax")
    # inside the selection chain: fitted on the training rows only
    X = pd.DataFrame(np.exp(rng.normal(0, 1, (120, 6))), columns=[f"f{i}" for i in range(6)])
    y = (X["f0"] > X["f0"].median()).astype(int).to_numpy()
    sel = build_selector(SelectionConfig(scaler="yeo-johnson", lasso_cv=3, lasso_cs=5))
    a = sel.fit(X.iloc[:80], y[:80]).transform(X.iloc[80:])
    X2 = X.copy()
    X2.iloc[80:] *= 50.0
    b = build_selector(SelectionConfig(scaler="yeo-johnson", lasso_cv=3, lasso_cs=5))
    b.fit(X2.iloc[:80], y[:80])
    pd.testing.assert_frame_equal(a, b.transform(X.iloc[80:]))
    assert "f0" in a.columns
