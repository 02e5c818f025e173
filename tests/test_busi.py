"""Opt-in integration tests on the real BUSI data (skipped when ../shared/data/busi is absent)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from radfusion.cli import app
from radfusion.config import load_preset
from radfusion.data import load_cohort

from .conftest import BUSI

pytestmark = [
    pytest.mark.busi,
    pytest.mark.skipif(not (BUSI / "manifest.csv").is_file(), reason="BUSI data not present"),
]


def test_validate_busi_reports_duplicates_and_groups():
    res = CliRunner().invoke(
        app, ["validate", str(BUSI / "manifest.csv"), "--group-column", "group_id", "--json"]
    )
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    s = rep["summary"]
    assert s["cases"] == 647 and s["cases_per_label"] == {"0": 437, "1": 210}
    assert s["groups"] == 534
    # the README's caveat: benign_433 and malignant_145 are pixel-identical
    assert ["benign_433", "malignant_145"] in s["exact_duplicates"]
    assert any(w["code"] == "duplicate_conflicting_labels" for w in rep["warnings"])
    assert len(s["near_duplicate_clusters"]) > 50
    # malignant ROIs are larger (README: median ~34k vs ~10k px)
    areas = s["roi_area_per_label"]
    assert areas["1"]["median"] > 2 * areas["0"]["median"]


def test_busi_radiomics_features_on_a_few_cases(tmp_path):
    from radfusion.radiomics import extract_radiomics

    cfg = load_preset("paper")
    cfg.data.clinical.numeric, cfg.data.clinical.categorical = [], []
    cfg.preprocess.size = 128
    cohort = load_cohort(BUSI / "manifest.csv", cfg.data)
    cases = [c for c in cohort.cases() if c.case_id in {"benign_001", "malignant_001"}]
    res = extract_radiomics(cases, cfg, tmp_path / "cache", n_jobs=1, progress=False)
    assert res.features.shape == (2, 567)
    assert res.features.notna().all().all()
