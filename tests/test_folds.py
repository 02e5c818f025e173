"""Pooling the test predictions of cross-validation folds: valid intervals per repeat."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from radfusion.config import StudyConfig
from radfusion.pipeline.folds import pool_folds
from radfusion.pipeline.run import RunFolder
from radfusion.stats import delong_auc_ci


def _write_folds(root: Path, n_repeats: int, n_folds: int = 2, n: int = 60) -> list:
    """Folds of a repeated k-fold run; repeat r's scores are noisier, so AUCs differ."""
    rng = np.random.default_rng(0)
    y = np.tile([0, 0, 1], n // 3)
    folds = []
    for r in range(n_repeats):
        order = rng.permutation(n)
        score = y + rng.normal(scale=0.6 + 0.5 * r, size=n)
        for f in range(n_folds):
            test = order[f::n_folds]
            d = root / f"r{r}f{f}"
            d.mkdir(parents=True)
            pd.DataFrame(
                {
                    "case_id": [f"c{i:03d}" for i in test],
                    "split": "test",
                    "label": y[test],
                    "family": "radiomics",
                    "model": "Radiomics-LR",
                    "classifier": "LR",
                    "probability": 1 / (1 + np.exp(-score[test])),
                    "selected": True,
                }
            ).to_parquet(d / "predictions.parquet")
            folds.append((f"r{r}f{f}", d))
    return folds


@pytest.mark.parametrize("n_repeats", [1, 3])
def test_pooled_auc_has_a_delong_ci_per_repeat_and_a_range_across_repeats(tmp_path, n_repeats):
    run = RunFolder(tmp_path / "run", StudyConfig())
    folds = _write_folds(tmp_path / "folds", n_repeats)
    summary = pool_folds(run, folds).set_index("family").loc["radiomics"]
    pooled = pd.read_parquet(run.layout.cv_predictions)
    repeats = pd.read_csv(run.layout.cv_repeats)
    # per repeat: the DeLong CI of that repeat's pooled predictions (every case once)
    assert len(repeats) == n_repeats
    expected = []
    for r, part in pooled.groupby("repeat"):
        assert part["case_id"].is_unique and len(part) == 60
        ci = delong_auc_ci(part["label"].to_numpy(), part["probability"].to_numpy())
        row = repeats[repeats["repeat"] == int(r)].iloc[0]
        assert row["pooled_auc"] == pytest.approx(ci.auc)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high))
        assert row["ci_low"] < row["pooled_auc"] < row["ci_high"]
        expected.append(ci)
    aucs = [c.auc for c in expected]
    assert summary["n_repeats"] == n_repeats
    assert summary["pooled_auc"] == pytest.approx(np.mean(aucs))
    assert (summary["pooled_auc_min"], summary["pooled_auc_max"]) == pytest.approx(
        (min(aucs), max(aucs))
    )
    if n_repeats == 1:
        assert (summary["pooled_ci_low"], summary["pooled_ci_high"]) == pytest.approx(
            (expected[0].low, expected[0].high)
        )
        assert "DeLong" in summary["method"]
    else:
        # averaging the repeats' bounds is not a confidence interval: none is given
        assert np.isnan(summary["pooled_ci_low"]) and np.isnan(summary["pooled_ci_high"])
        assert min(aucs) < max(aucs)
        assert "range" in summary["method"] and "cv_repeats.csv" in summary["method"]
    # the fold AUCs are those of each fold's own test cases
    fold_aucs = [
        roc_auc_score(f["label"], f["probability"]) for _, f in pooled.groupby("fold", sort=False)
    ]
    assert summary["fold_aucs"] == " ".join(f"{v:.3f}" for v in fold_aucs)
    assert summary["mean_auc"] == pytest.approx(np.mean(fold_aucs))
