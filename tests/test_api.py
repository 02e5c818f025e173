"""The notebook API: ``import radfusion as rf`` and the one-call radiomics extraction."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import radfusion as rf
from radfusion.config import ClinicalColumns
from radfusion.data import load_cohort
from radfusion.radiomics import extract_radiomics
from tests.conftest import make_cohort


def test_every_public_name_resolves_and_import_stays_light():
    for name in rf.__all__:
        assert getattr(rf, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        rf.nope  # noqa: B018
    # `import radfusion` must not pull in the heavy stack (torch, scikit-learn, PyRadiomics)
    code = (
        "import sys, radfusion; "
        "print(sorted(m for m in ('torch', 'sklearn', 'radiomics') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_extract_features_equals_a_studys_extraction(tmp_path):
    manifest = make_cohort(tmp_path / "cohort", n=4, reader2=False)
    cfg = rf.load_preset("demo")
    cfg.data.clinical = ClinicalColumns()  # the tiny cohort has no clinical sheet
    table = pd.read_csv(manifest)
    got = rf.extract_features(
        table.drop(columns=["label"]), config=cfg, case_id="case_id", root=manifest.parent
    )
    cohort = load_cohort(manifest, cfg.data)
    want = extract_radiomics(cohort.cases(), cfg, tmp_path / "cache", n_jobs=1, progress=False)
    assert list(got.index) == list(table["case_id"])
    pd.testing.assert_frame_equal(got, want.features)
    assert np.isfinite(got.to_numpy()).all() and got.shape[1] > 50


def test_extract_features_names_a_missing_column():
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['mask'\]"):
        rf.extract_features(pd.DataFrame({"image": ["a.png"]}))
