"""What the clinician page calls things and which model's answer it heads the result with."""

from __future__ import annotations

import pytest

from radfusion.radiomics.names import readable_feature_name
from radfusion.serve.display import clinical_label, headline_model, model_flags


@pytest.mark.parametrize(
    ("name", "plain"),
    [
        ("log-sigma-5-0-mm-3D_glrlm_RunVariance", "LoG σ=5 · GLRLM · Run variance"),
        ("log-sigma-3-5-mm-3D_firstorder_Median", "LoG σ=3.5 · First order · Median"),
        ("original_firstorder_10Percentile", "First order · 10th percentile"),
        ("wavelet-LLH_glcm_Imc1", "Wavelet LLH · GLCM · IMC1"),
        ("original_shape2D_MaximumDiameter", "Shape 2D · Maximum diameter"),
        (
            "original_glszm_SmallAreaLowGrayLevelEmphasis",
            "GLSZM · Small area low gray level emphasis",
        ),
        ("squareroot_ngtdm_Busyness", "Square root · NGTDM · Busyness"),
        ("original_shape_Maximum2DDiameterSlice", "Shape · Maximum 2D diameter slice"),
        ("deep_12", "deep_12"),  # not PyRadiomics': unchanged
        ("odd_glrlm_RunVariance", "odd_glrlm_RunVariance"),
    ],
)
def test_readable_feature_name(name, plain):
    assert readable_feature_name(name) == plain


def test_clinical_labels_default_to_the_column_name():
    assert clinical_label("ipth") == {"label": "Intact PTH (iPTH)", "unit": "pmol/L"}
    assert clinical_label("tumour_grade") == {"label": "tumour_grade", "unit": None}


def _m(model, family, *, auc, selected=True, threshold=0.4, brier=0.1):
    entry = {"model": model, "family": family, "selected": selected, "threshold": threshold}
    flags = model_flags(entry, {"brier": brier})
    return {**entry, "flags": flags, "validation": {"auc": auc, "brier": brier}}


def test_flags_degenerate_thresholds_and_poor_calibration():
    assert _m("a", "radiomics", auc=0.8)["flags"] == []
    assert "degenerate" in _m("a", "1ch", auc=0.8, threshold=0.9996)["flags"][0]
    assert "degenerate" in _m("a", "1ch", auc=0.8, threshold=0.0012)["flags"][0]
    assert "calibrated" in _m("a", "1ch", auc=0.8, brier=0.75)["flags"][0]
    assert model_flags({"threshold": 0.5}, None) == []  # an old bundle: no metrics


def test_headline_is_the_best_unflagged_chosen_model_by_validation_auc():
    models = [
        _m("Radiomics-LR", "radiomics", auc=0.80),
        _m("1ch_ResNet18", "1ch", auc=0.99, brier=0.75),  # best AUC, but miscalibrated
        _m("Merged1-RF", "merged1", auc=0.95, selected=False),  # not chosen by the study
        _m("Stacked-LR", "stacked", auc=0.90),
    ]
    name, why = headline_model(models)
    assert name == "Stacked-LR"
    assert "0.900" in why and "1 flagged" in why
    # ties go to the family order
    name, _ = headline_model([_m("Stacked-LR", "stacked", auc=0.9), _m("R", "radiomics", auc=0.9)])
    assert name == "R"
    name, why = headline_model([_m("x", "1ch", auc=0.9, threshold=1.0)])
    assert name is None and "no single answer" in why
