"""Tests of radfusion.stats against independent implementations and hand computations."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.metrics import brier_score_loss, roc_auc_score

from radfusion import stats as rs


# ---------------------------------------------------------------------------------------------
# Direct O(m*n) DeLong oracle, written from DeLong, DeLong & Clarke-Pearson (1988)
# ---------------------------------------------------------------------------------------------
def _psi(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mann-Whitney kernel psi(X_i, Y_j) for all positive i (rows), negative j (columns)."""
    d = x[:, None] - y[None, :]
    return np.where(d > 0, 1.0, np.where(d == 0, 0.5, 0.0))


def _delong_direct(y, a, b):
    y = np.asarray(y).astype(bool)
    comps = []
    for s in (np.asarray(a, float), np.asarray(b, float)):
        psi = _psi(s[y], s[~y])
        m, n = psi.shape
        theta = psi.sum() / (m * n)
        v10 = psi.sum(axis=1) / n  # V10(X_i), one per positive
        v01 = psi.sum(axis=0) / m  # V01(Y_j), one per negative
        comps.append((theta, v10, v01))
    m, n = comps[0][1].size, comps[0][2].size
    s10 = np.empty((2, 2))
    s01 = np.empty((2, 2))
    for r in range(2):
        for c in range(2):
            tr, v10r, v01r = comps[r]
            tc, v10c, v01c = comps[c]
            s10[r, c] = np.sum((v10r - tr) * (v10c - tc)) / (m - 1)
            s01[r, c] = np.sum((v01r - tr) * (v01c - tc)) / (n - 1)
    S = s10 / m + s01 / n
    diff = comps[0][0] - comps[1][0]
    var = S[0, 0] + S[1, 1] - 2 * S[0, 1]
    z = diff / math.sqrt(var)
    p = 2 * sps.norm.sf(abs(z))
    return {"auc_a": comps[0][0], "auc_b": comps[1][0], "S": S, "z": z, "p": p, "var": var}


def _random_case(seed: int, n: int, ties: bool):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2], y[2:4] = 1, 0  # both classes with >= 2 cases
    a = y * 0.8 + rng.normal(size=n)
    b = 0.6 * a + y * 0.3 + rng.normal(size=n)  # correlated with a, like two models
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)
    return y, a, b


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize(("seed", "n"), [(0, 12), (1, 57), (2, 200), (3, 601)])
def test_delong_matches_direct_definition(seed, n, ties):
    y, a, b = _random_case(seed, n, ties)
    ref = _delong_direct(y, a, b)
    r = rs.delong_test(y, a, b)
    assert r.auc_a == pytest.approx(ref["auc_a"], abs=1e-12)
    assert r.auc_b == pytest.approx(ref["auc_b"], abs=1e-12)
    assert r.var_a == pytest.approx(ref["S"][0, 0], abs=1e-12)
    assert r.var_b == pytest.approx(ref["S"][1, 1], abs=1e-12)
    assert r.covariance == pytest.approx(ref["S"][0, 1], abs=1e-12)
    assert abs(r.z - ref["z"]) < 1e-10
    assert abs(r.p_value - ref["p"]) < 1e-10
    half = sps.norm.isf(0.025) * math.sqrt(ref["var"])
    assert abs(r.ci_low - (r.auc_diff - half)) < 1e-10
    assert abs(r.ci_high - (r.auc_diff + half)) < 1e-10


def test_delong_heavy_ties_integer_scores():
    # Scores on a 3-point scale: most pairs tied, the kernel's 1/2 dominates.
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 150)
    a = np.clip(y + rng.integers(-1, 2, 150), 0, 2).astype(float)
    b = rng.integers(0, 3, 150).astype(float)
    ref = _delong_direct(y, a, b)
    r = rs.delong_test(y, a, b)
    assert abs(r.z - ref["z"]) < 1e-10
    assert abs(r.p_value - ref["p"]) < 1e-10


@pytest.mark.parametrize(("seed", "ties"), [(11, False), (12, True), (13, True)])
def test_delong_agrees_with_mlstatkit(seed, ties):
    from MLstatkit import Delong_test

    y, a, b = _random_case(seed, 120, ties)
    r = rs.delong_test(y, a, b)
    z, p, _ci_a, _ci_b, auc_a, auc_b, info = Delong_test(y, a, b)
    assert info["method"] == "delong"
    assert auc_a == pytest.approx(r.auc_a, abs=1e-12)
    assert auc_b == pytest.approx(r.auc_b, abs=1e-12)
    # MLstatkit signs z as (AUC_B - AUC_A) / SE; ours is (AUC_a - AUC_b) / SE.
    assert -z == pytest.approx(r.z, rel=1e-9)
    assert p == pytest.approx(r.p_value, rel=1e-9)


def test_delong_auc_equals_sklearn_and_symmetry():
    y, a, b = _random_case(5, 80, True)
    r = rs.delong_test(y, a, b)
    assert r.auc_a == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert r.auc_b == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    swapped = rs.delong_test(y, b, a)
    assert swapped.z == pytest.approx(-r.z)
    assert swapped.p_value == pytest.approx(r.p_value)
    # A strictly increasing transform of the scores changes nothing (rank statistic).
    t = rs.delong_test(y, np.exp(a), b**3)
    assert t.p_value == pytest.approx(r.p_value, rel=1e-12)


def test_delong_perfect_inverted_identical():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    perfect = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])
    with pytest.warns(RuntimeWarning):  # perfect vs inverted: zero variance, AUCs differ
        r = rs.delong_test(y, perfect, 1 - perfect)
    assert r.auc_a == 1.0 and r.auc_b == 0.0
    same = rs.delong_test(y, perfect + np.array([0, 0, 0, 0.05, 0, 0, 0, 0]), perfect)
    assert same.auc_a == same.auc_b == 1.0
    assert same.z == 0.0 and same.p_value == 1.0
    rng = np.random.default_rng(0)
    s = rng.random(8)
    ident = rs.delong_test(y, s, s)
    assert ident.z == 0.0 and ident.p_value == 1.0 and ident.ci_low == ident.ci_high == 0.0


def test_delong_degenerate_unequal_warns():
    y = np.array([0, 0, 0, 1, 1, 1])
    perfect = np.array([0, 0.1, 0.2, 0.7, 0.8, 0.9])
    constant = np.full(6, 0.5)
    with pytest.warns(RuntimeWarning, match="zero"):
        r = rs.delong_test(y, perfect, constant)
    assert r.auc_diff == 0.5 and r.z == math.inf and r.p_value == 0.0


def test_delong_validation_errors():
    y = np.array([0, 1, 0, 1])
    s = np.array([0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="only 0 and 1"):
        rs.delong_test([0, 1, 2, 1], s, s)
    with pytest.raises(ValueError, match="both classes"):
        rs.delong_test([1, 1, 1, 1], s, s)
    with pytest.raises(ValueError, match="lengths must match"):
        rs.delong_test(y, s, s[:3])
    with pytest.raises(ValueError, match="non-finite"):
        rs.delong_test(y, s, np.array([0.1, np.nan, 0.3, 0.4]))
    with pytest.raises(ValueError, match="at least 2 positive"):
        rs.delong_test([0, 0, 0, 1], s, s)
    with pytest.raises(ValueError, match="only 0 and 1"):
        rs.delong_test([0, 1, np.nan, 1], s, s)
    # booleans are fine
    assert rs.delong_test(y.astype(bool), s, s[::-1]).auc_a == pytest.approx(0.75)


def test_delong_auc_ci_and_logit():
    y, a, b = _random_case(21, 90, False)
    ref = _delong_direct(y, a, b)
    auc, low, high = rs.delong_auc_ci(y, a)
    half = sps.norm.isf(0.025) * math.sqrt(ref["S"][0, 0])
    assert auc == pytest.approx(roc_auc_score(y, a))
    assert low == pytest.approx(auc - half) and high == pytest.approx(auc + half)
    la, llow, lhigh = rs.delong_auc_ci(y, a, transform="logit")
    assert la == auc and 0 < llow < auc < lhigh < 1
    logit = math.log(auc / (1 - auc))
    # delta method: SE(logit AUC) = SE(AUC) / (AUC (1 - AUC))
    assert math.log(llow / (1 - llow)) == pytest.approx(logit - half / (auc * (1 - auc)))
    assert math.log(lhigh / (1 - lhigh)) == pytest.approx(logit + half / (auc * (1 - auc)))
    # clipping at 1: near-perfect separation on a small sample
    yy = np.array([0, 0, 0, 1, 1, 1])
    _, _, hi = rs.delong_auc_ci(yy, np.array([0.1, 0.2, 0.75, 0.7, 0.8, 0.9]))
    assert hi == 1.0


def test_bootstrap_auc_ci():
    y, a, _ = _random_case(31, 150, False)
    auc, low, high = rs.bootstrap_auc_ci(y, a, n_boot=400, seed=3)
    assert auc == pytest.approx(roc_auc_score(y, a))
    assert low < auc < high
    # Same seed -> same interval; reference loop with the same resampling scheme.
    assert rs.bootstrap_auc_ci(y, a, n_boot=400, seed=3) == (auc, low, high)
    rng = np.random.default_rng(3)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    ip = pos[rng.integers(0, pos.size, size=(400, pos.size))]
    ineg = neg[rng.integers(0, neg.size, size=(400, neg.size))]
    ref = [roc_auc_score(y[np.r_[p, q]], a[np.r_[p, q]]) for p, q in zip(ip, ineg, strict=True)]
    assert (low, high) == pytest.approx(tuple(np.quantile(ref, [0.025, 0.975])), abs=1e-12)
    # Close to the DeLong interval for a moderate sample.
    _, dlow, dhigh = rs.delong_auc_ci(y, a)
    assert abs(low - dlow) < 0.03 and abs(high - dhigh) < 0.03
    _, ulow, uhigh = rs.bootstrap_auc_ci(y, a, n_boot=300, seed=1, stratified=False)
    assert ulow < auc < uhigh


def test_wilson_interval_hand_value():
    # x=8, n=10, z=1.959964: centre=(0.8+z^2/20)/(1+z^2/10)=0.716738,
    # half=z*sqrt(0.016+z^2/400)/(1+z^2/10)=0.226577 -> (0.4902, 0.9433)
    low, high = rs.wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4)
    assert high == pytest.approx(0.9433, abs=1e-4)
    assert rs.wilson_interval(0, 10)[0] == 0.0
    assert all(math.isnan(v) for v in rs.wilson_interval(0, 0))
    with pytest.raises(ValueError):
        rs.wilson_interval(11, 10)


def test_youden_constructed_example_and_tie_rule():
    y = [0, 0, 0, 1, 1, 1]
    s = [0.1, 0.2, 0.6, 0.4, 0.7, 0.8]
    # t=0.7: SEN 2/3, SPE 1 -> J=2/3; t=0.4: SEN 1, SPE 2/3 -> J=2/3; every other t lower.
    # Tie rule picks the larger threshold.
    assert rs.youden_threshold(y, s) == 0.7
    # t=0.9 and t=0.2 both give J=1/2 -> 0.9.
    assert rs.youden_threshold([0, 0, 1, 1], [0.1, 0.3, 0.2, 0.9]) == 0.9
    # Unique optimum (perfect split at 0.35).
    assert rs.youden_threshold([0, 0, 1, 1, 1], [0.1, 0.3, 0.35, 0.5, 0.9]) == 0.35
    # Scores tied across classes: t=0.5 puts both 0.5 cases positive (SEN 1, SPE 1/2, J=1/2)
    # and beats t=0.9 (SEN 1/3, SPE 1, J=1/3).
    assert rs.youden_threshold([0, 1, 1, 0, 1], [0.2, 0.5, 0.5, 0.5, 0.9]) == 0.5


def test_binary_metrics_hand_example():
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.6, 0.2, 0.7, 0.3, 0.1, 0.5])
    m = rs.binary_metrics(y, s, threshold=0.55, n_boot=200, seed=0)
    # predicted positive: 0.9, 0.6 (TP), 0.7 (FP); TP=2 FN=1 FP=1 TN=3
    assert (m.tp, m.fn, m.fp, m.tn) == (2, 1, 1, 3)
    assert m.acc.value == pytest.approx(5 / 7)
    assert m.sen.value == pytest.approx(2 / 3)
    assert m.spe.value == pytest.approx(3 / 4)
    assert m.ppv.value == pytest.approx(2 / 3)
    assert m.npv.value == pytest.approx(3 / 4)
    assert m.f1.value == pytest.approx(4 / 6)
    assert (m.sen.low, m.sen.high) == pytest.approx(rs.wilson_interval(2, 3))
    assert m.auc.value == pytest.approx(roc_auc_score(y, s))
    assert m.f1.low <= m.f1.value <= m.f1.high
    d = m.as_dict()
    assert d["ppv"] == pytest.approx(2 / 3) and d["tp"] == 2
    # Threshold equal to a score counts as positive.
    assert rs.binary_metrics(y, s, threshold=0.6, n_boot=50).tp == 2


def test_binary_metrics_undefined_is_nan():
    y = np.array([1, 1, 0, 0, 0])
    s = np.array([0.4, 0.3, 0.2, 0.1, 0.35])
    m = rs.binary_metrics(y, s, threshold=0.9, n_boot=50, auc_method="bootstrap")
    assert m.tp == m.fp == 0
    assert math.isnan(m.ppv.value) and math.isnan(m.ppv.low)
    assert m.sen.value == 0.0 and m.spe.value == 1.0
    assert m.f1.value == 0.0
    assert m.ppv.format() == "NA"


def test_binary_metrics_f1_bootstrap_matches_case_resampling():
    # The F1 interval draws confusion-cell counts; compare with literal case resampling.
    y, a, _ = _random_case(41, 300, False)
    m = rs.binary_metrics(y, a, threshold=0.4, n_boot=4000, seed=1)
    rng = np.random.default_rng(99)
    pred = a >= 0.4
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    f1s = []
    for _ in range(4000):
        ip = rng.choice(pos, pos.size)
        ineg = rng.choice(neg, neg.size)
        tp, fn, fp = pred[ip].sum(), (~pred[ip]).sum(), pred[ineg].sum()
        f1s.append(2 * tp / (2 * tp + fp + fn))
    lo, hi = np.quantile(f1s, [0.025, 0.975])
    assert m.f1.low == pytest.approx(lo, abs=0.015)
    assert m.f1.high == pytest.approx(hi, abs=0.015)


def test_pairwise_delong_matrix():
    y, a, b = _random_case(51, 100, True)
    c = a + np.random.default_rng(0).normal(scale=0.5, size=a.size)
    mat = rs.pairwise_delong(y, {"LR": a, "SVM": b, "RF": c})
    assert list(mat.index) == list(mat.columns) == ["LR", "SVM", "RF"]
    assert np.allclose(np.diag(mat), 1.0)
    assert np.allclose(mat.to_numpy(), mat.to_numpy().T)
    assert mat.loc["LR", "RF"] == pytest.approx(rs.delong_test(y, a, c).p_value, abs=1e-14)
    assert mat.loc["SVM", "LR"] == pytest.approx(_delong_direct(y, a, b)["p"], abs=1e-10)


def test_chi_square_2x2_by_hand():
    # [[20, 30], [30, 20]]: N=100, every expected count 25,
    # chi2 = 4 * 5^2 / 25 = 4 with 1 df -> p = P(|Z| > 2) = 0.0455003.
    p, name = rs.compare_categorical([[20, 30], [30, 20]])
    assert name == "chi-square"
    assert p == pytest.approx(0.0455003, abs=1e-6)


def test_fisher_when_expected_small_by_hand():
    # [[0, 5], [5, 0]]: expected 2.5 < 5 -> Fisher. Margins 5/5/5/5; the observed table and its
    # mirror each have hypergeometric probability 1/C(10,5) = 1/252 -> p = 2/252.
    p, name = rs.compare_categorical([[0, 5], [5, 0]])
    assert name == "Fisher exact"
    assert p == pytest.approx(2 / 252, rel=1e-9)


def test_mann_whitney_known_u():
    # x=[1,2,3] all below y=[4,5]: U=0; exact two-sided p = 2 * 1/C(5,2) = 0.2.
    p, name = rs.compare_continuous([1, 2, 3], [4, 5])
    assert name == "Mann-Whitney U"
    assert p == pytest.approx(0.2, rel=1e-12)


def test_format_p_value():
    assert rs.format_p_value(0.0004) == "<0.001"
    assert rs.format_p_value(0.022) == "0.022"
    assert rs.format_p_value(0.0596) == "0.060"
    assert rs.format_p_value(float("nan")) == ""
    assert rs.format_p_value(1.0) == "1.000"


def _synthetic_cohort(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sizes = {"train": 140, "val": 60, "test": 60}
    frames = []
    for g, n in sizes.items():
        shift = 5.0 if g == "val" else 0.0
        frames.append(
            pd.DataFrame(
                {
                    "split": g,
                    "age": rng.normal(54 + shift, 13, n),
                    "ipth": rng.lognormal(3.0, 1.0, n),
                    "sex": rng.choice(["F", "M"], n, p=[0.76, 0.24]),
                    "rare": rng.choice(["common", "rare"], n, p=[0.97, 0.03]),
                }
            )
        )
    df = pd.concat(frames, ignore_index=True)
    df.loc[[3, 150], "ipth"] = np.nan
    return df


def test_baseline_table_tests_and_formats():
    df = _synthetic_cohort()
    # Sanity of the synthetic data itself (judged by scipy, not by the code under test).
    for g in ("train", "val", "test"):
        assert sps.shapiro(df.loc[df.split == g, "age"]).pvalue >= 0.05
        assert sps.shapiro(df.loc[df.split == g, "ipth"].dropna()).pvalue < 0.05
    t = rs.baseline_table(df, "split", ["age", "ipth"], ["sex", "rare"])
    cols = t.attrs["columns"]
    assert cols["train"] == "train (n=140)" and cols["Total"] == "Total (n=260)"
    pcol = t.attrs["p_columns"]["train vs val"]

    age = t[(t.variable == "age") & (t.level == "")].iloc[0]
    assert age["test"] == "Welch t-test"
    assert re.fullmatch(r"\d+\.\d ± \d+\.\d", age[cols["val"]])
    a = df.loc[df.split == "train", "age"]
    v = df.loc[df.split == "val", "age"]
    assert age[pcol] == pytest.approx(sps.ttest_ind(a, v, equal_var=False).pvalue)
    assert age[cols["train"]] == f"{a.mean():.1f} ± {a.std(ddof=1):.1f}"

    ipth = t[(t.variable == "ipth") & (t.level == "")].iloc[0]
    assert ipth["test"] == "Mann-Whitney U"
    assert re.fullmatch(r"\d+\.\d \(\d+\.\d, \d+\.\d\)", ipth[cols["test"]])
    x = df.loc[df.split == "train", "ipth"].dropna()
    y = df.loc[df.split == "val", "ipth"].dropna()
    assert ipth[pcol] == pytest.approx(sps.mannwhitneyu(x, y).pvalue)
    miss = t[(t.variable == "ipth") & (t.level == "Missing")].iloc[0]
    assert miss[cols["Total"]] == "2" and miss[cols["train"]] == "1"
    assert miss[cols["test"]] == "0"

    sex = t[t.variable == "sex"]
    assert list(sex.level) == ["", "F", "M"]
    assert sex.iloc[0]["test"] == "chi-square"
    n_f = int((df.split.eq("train") & df.sex.eq("F")).sum())
    assert sex.iloc[1][cols["train"]] == f"{n_f} ({100 * n_f / 140:.1f})"
    ct = pd.crosstab(df.sex, df.split)[["train", "val"]].to_numpy()
    assert sex.iloc[0][pcol] == pytest.approx(sps.chi2_contingency(ct, correction=False).pvalue)
    assert np.isnan(sex.iloc[1][pcol])

    rare = t[(t.variable == "rare") & (t.level == "")].iloc[0]
    assert "Fisher exact" in rare["test"]

    shown = rs.format_baseline_table(t)
    assert all(s == "" or re.fullmatch(r"<0\.001|[01]\.\d{3}", s) for s in shown[pcol].tolist())


def test_baseline_table_per_variable_and_student():
    df = _synthetic_cohort(1)
    t = rs.baseline_table(
        df, "split", ["age", "ipth"], [], test_choice="per_variable", equal_var=True
    )
    assert t.loc[t.variable == "age", "test"].iloc[0] == "Student t-test"
    assert t.loc[(t.variable == "ipth") & (t.level == ""), "test"].iloc[0] == "Mann-Whitney U"


def test_baseline_table_hand_mann_whitney_two_groups():
    df = pd.DataFrame({"g": ["a"] * 3 + ["b"] * 2, "x": [1.0, 2.0, 3.0, 4.0, 5.0]})
    t = rs.baseline_table(df, "g", ["x"], [], group_order=("a", "b"), comparisons=(("a", "b"),))
    row = t.iloc[0]
    # group b has 2 values -> Shapiro-Wilk undefined -> not normal -> Mann-Whitney, p = 0.2
    assert row["test"] == "Mann-Whitney U"
    assert row["p (a vs b)"] == pytest.approx(0.2)
    assert row["a (n=3)"] == "2.0 (1.5, 2.5)"


def test_baseline_table_errors():
    df = _synthetic_cohort()
    with pytest.raises(ValueError, match="not in the data frame"):
        rs.baseline_table(df, "split", ["nope"], [])
    with pytest.raises(ValueError, match="outside group_order"):
        rs.baseline_table(
            df, "split", ["age"], [], group_order=("train", "val"), comparisons=(("train", "val"),)
        )
    bad = df.assign(age=df.age.astype(object))
    bad.loc[0, "age"] = "old"
    with pytest.raises(ValueError, match="non-numeric"):
        rs.baseline_table(bad, "split", ["age"], [])


def test_brier_calibration_decision_curve():
    y = np.array([0, 0, 1, 1, 1, 0, 1, 0])
    p = np.array([0.1, 0.4, 0.35, 0.8, 0.9, 0.2, 0.6, 0.55])
    assert rs.brier_score(y, p) == pytest.approx(brier_score_loss(y, p))
    cal = rs.calibration_curve_data(y, p, n_bins=2)
    # bins [0, .5): p = .1 .4 .35 .2 -> outcomes 0 0 1 0; [.5, 1]: .8 .9 .6 .55 -> 1 1 1 0
    assert cal["n"].tolist() == [4, 4]
    assert cal["observed"].tolist() == [0.25, 0.75]
    assert cal["mean_predicted"].tolist() == pytest.approx([0.2625, 0.7125])
    dc = rs.decision_curve(y, p, [0.5])
    # pt=0.5 -> odds 1; treated: .8 .9 .6 .55 -> TP 3, FP 1 -> NB = 3/8 - 1/8 = 0.25
    assert dc["net_benefit_model"].iloc[0] == pytest.approx(0.25)
    assert dc["net_benefit_all"].iloc[0] == pytest.approx(0.5 - 0.5)
    assert dc["net_benefit_none"].iloc[0] == 0.0
    with pytest.raises(ValueError):
        rs.decision_curve(y, p, [0.0])


def test_no_warnings_on_normal_use():
    y, a, b = _random_case(61, 60, True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rs.delong_test(y, a, b)
        rs.binary_metrics(y, a, rs.youden_threshold(y, a), n_boot=100)
