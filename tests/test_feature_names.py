"""Readable radiomics feature names in the report's figures and tables (one mapping,
radfusion.radiomics.names, shared with the clinician page)."""

from __future__ import annotations

import pandas as pd

from radfusion.evaluation.figures import plot_importance, plot_lasso
from radfusion.radiomics.names import readable_feature_name

RAW = ["log-sigma-5-0-mm-3D_glrlm_RunVariance", "original_firstorder_10Percentile", "age"]
PLAIN = ["LoG σ=5 · GLRLM · Run variance", "First order · 10th percentile", "age"]


def test_mapping_leaves_other_names_alone():
    assert [readable_feature_name(n) for n in RAW] == PLAIN


def test_importance_plot_labels_are_readable():
    fig = plot_importance(pd.DataFrame({"feature": RAW, "importance": [0.3, -0.2, 0.1]}))
    labels = {t.get_text() for t in fig.axes[0].get_yticklabels()}
    assert labels == set(PLAIN)


def test_lasso_plot_labels_are_readable():
    fig = plot_lasso({"coefficients": dict(zip(RAW, [0.5, -0.4, 0.1], strict=True))})
    labels = {t.get_text() for ax in fig.axes for t in ax.get_yticklabels()}
    assert set(PLAIN) <= labels


def test_report_coefficient_table_uses_readable_terms():
    from radfusion.report.tables import coef_display

    coefs = pd.DataFrame({"term": RAW, "coef": [1.0, 2.0, 3.0], "p_value": [0.01, 0.2, 0.5]})
    assert list(coef_display(coefs)["Term"]) == PLAIN
