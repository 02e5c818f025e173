"""Subgroup performance, random-effects pooling and the leave-centre-out summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from radfusion.evaluation.subgroups import (
    SUBGROUP_COLUMNS,
    TOO_SMALL,
    band_labels,
    external_validation,
    plot_forest,
    random_effects,
    subgroup_columns,
    subgroup_table,
)
from radfusion.stats import delong_auc_ci


def _preds(n: int = 80, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = [f"c{i:03d}" for i in range(n)]
    y = rng.integers(0, 2, n)
    centre = np.where(np.arange(n) < 60, "H1", "H2")
    y[60:] = 0
    y[60:62] = 1  # H2: only two positives -> too small with min_events=3
    p = np.clip(0.5 * y + rng.normal(0.3, 0.2, n), 0, 1)
    cases = pd.DataFrame(
        {
            "case_id": ids,
            "center": centre,
            "sex": rng.choice(["F", "M"], n),
            "age": rng.integers(30, 80, n).astype(float),
        }
    )
    preds = pd.DataFrame(
        {"case_id": ids, "split": "test", "label": y, "model": "M", "probability": p}
    )
    return preds, cases


def test_subgroup_table_matches_direct_computation():
    preds, cases = _preds()
    groups, notes = subgroup_columns(cases, ["sex", "smoker"], {"age": [50]})
    assert list(groups.columns) == ["center", "sex", "age"]
    assert any("smoker" in n for n in notes)
    t = subgroup_table(preds, groups, {"M": 0.5}, ["M"], splits=("test",), min_events=3)
    assert list(t.columns) == list(SUBGROUP_COLUMNS)
    h1 = t[(t["subgroup_column"] == "center") & (t["subgroup"] == "H1")].iloc[0]
    sub = preds[cases["center"] == "H1"]
    ref = delong_auc_ci(sub["label"], sub["probability"])
    assert h1["n"] == 60 and h1["events"] == int(sub["label"].sum())
    assert h1["auc"] == pytest.approx(ref.auc) and h1["auc_low"] == pytest.approx(ref.low)
    assert h1["auc_high"] == pytest.approx(ref.high)
    pos = sub[sub["label"] == 1]
    assert h1["sen"] == pytest.approx((pos["probability"] >= 0.5).mean())
    h2 = t[(t["subgroup_column"] == "center") & (t["subgroup"] == "H2")].iloc[0]
    assert np.isnan(h2["auc"]) and h2["note"] == TOO_SMALL and h2["events"] == 2
    assert set(t.loc[t["subgroup_column"] == "age", "subgroup"]) == {"<50", ">=50"}
    fig = plot_forest(t.assign(lbl=t["subgroup"]), "lbl", title="x")
    assert fig is not None


def test_band_labels_edges_and_missing():
    s = pd.Series([10.0, 50.0, 64.9, 65.0, np.nan])
    got = band_labels(s, [50, 65]).tolist()
    assert got[:4] == ["<50", "50 to <65", "50 to <65", ">=65"] and pd.isna(got[4])


def test_random_effects_agrees_with_statsmodels():
    from statsmodels.stats.meta_analysis import combine_effects

    est = np.array([0.72, 0.85, 0.64, 0.9])
    se = np.array([0.05, 0.04, 0.07, 0.03])
    ref = combine_effects(est, se**2, method_re="dl")
    got = random_effects(est, se)
    row = ref.summary_frame().loc["random effect"]
    assert got["pooled"] == pytest.approx(row["eff"], abs=1e-10)
    assert got["low"] == pytest.approx(row["ci_low"], abs=1e-10)
    assert got["tau2"] == pytest.approx(ref.tau2, abs=1e-12)
    assert got["i2"] == pytest.approx(ref.i2, abs=1e-10)
    assert got["q"] == pytest.approx(ref.q, abs=1e-9)
    # homogeneous centres: no heterogeneity, the pooled estimate is their common value
    same = random_effects([0.8, 0.8, 0.8], [0.05, 0.04, 0.06])
    assert same["i2"] == 0.0 and same["tau2"] == 0.0 and same["pooled"] == pytest.approx(0.8)


def test_external_validation_rows_per_centre_and_pooled():
    preds, cases = _preds()
    rng = np.random.default_rng(1)
    preds = preds.assign(
        family="radiomics", fold="center=" + cases["center"], label=rng.integers(0, 2, 80)
    )
    ext = external_validation(preds, {"center=H1": "H1", "center=H2": "H2"})
    assert ext["centre"].tolist() == ["H1", "H2", "pooled (random effects)"]
    pooled = ext.iloc[-1]
    assert pooled["k"] == 2 and pooled["n"] == 80
    lo, hi = ext["auc"].iloc[:2].min(), ext["auc"].iloc[:2].max()
    assert lo - 1e-12 <= pooled["auc"] <= hi + 1e-12
