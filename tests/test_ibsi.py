"""IBSI 1 digital phantom: radfusion's PyRadiomics extraction against the consensus values."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from radfusion.card import model_card
from radfusion.cli import app
from radfusion.errors import ConfigError, RadfusionError
from radfusion.layout import RunLayout
from radfusion.radiomics import ibsi_check
from radfusion.radiomics._worker import pyradiomics_execute, split_output
from radfusion.radiomics.ibsi import (
    PARAMS_FILE,
    STATUSES,
    TABLE_COLUMNS,
    _data_file,
    _read_phantom,
    load_mapping,
    load_references,
    within_tolerance,
    write_ibsi,
)
from radfusion.radiomics.params import load_params
from radfusion.utils import json_sha256

runner = CliRunner()
COMPUTED_RELATIONS = ("equal", "plus_3", "axis_population_covariance")


@pytest.fixture(scope="module")
def check():
    return ibsi_check()


def _base(tag: str) -> str:
    for suffix in ("_2_5D_comb", "_2_5D_avg", "_2D_comb", "_2D_avg", "_3D_comb", "_3D_avg"):
        if tag.endswith(suffix):
            return tag[: -len(suffix)]
    for suffix in ("_2_5D", "_2D", "_3D"):
        if tag.endswith(suffix):
            return tag[: -len(suffix)]
    return tag


def test_every_mapped_feature_is_within_tolerance(check):
    t = check.table
    assert check.ok, check.failures()[["ibsi_tag", "reference", "ibsi_equivalent"]]
    assert set(t["status"]) <= set(STATUSES)
    assert list(t.columns) == list(TABLE_COLUMNS)
    # one row per reference value, none lost
    assert sorted(t["ibsi_tag"]) == sorted(load_references()["tag"])
    c = check.counts
    assert c["mapped"] == c["within"] > 0 and c["failed"] == 0
    assert c["mapped"] + c["not_computed"] + c["no_reference"] == len(t)
    # Ultrasound is 2D: every 2D reference of a feature PyRadiomics has is computed and passes.
    mapping = load_mapping().set_index("ibsi_tag")
    two_d = t[t["ibsi_tag"].str.endswith(("_2D", "_2D_avg"))]
    has_feature = two_d["ibsi_tag"].map(lambda tag: mapping.loc[_base(tag), "relation"])
    assert len(two_d[has_feature.isin(COMPUTED_RELATIONS)]) > 50
    assert (two_d[has_feature.isin(COMPUTED_RELATIONS)]["status"] == "pass").all()


def test_documented_deviations_are_checked_not_skipped(check):
    t = check.table
    mapping = load_mapping()
    deviating = set(mapping.loc[~mapping["relation"].isin(["equal", "not_computed"]), "ibsi_tag"])
    deviating.discard("")
    dev = t[t["status"] == "documented deviation"]
    assert {_base(tag) for tag in dev["ibsi_tag"]} == deviating
    assert check.counts["deviations"] == len(dev)
    kurt = t.set_index("ibsi_tag").loc["stat_kurt"]
    # PyRadiomics' kurtosis is IBSI's excess kurtosis + 3, within the reference's rounding
    assert kurt["radfusion"] == pytest.approx(kurt["reference"] + 3, abs=6e-4)
    assert kurt["ibsi_equivalent"] == pytest.approx(kurt["radfusion"] - 3)
    # PCA axes: PyRadiomics = IBSI x sqrt((N - 1) / N) with the phantom's 74 voxels
    major = t.set_index("ibsi_tag").loc["morph_pca_maj_axis"]
    n = int(_read_phantom()[1].sum())
    assert n == 74
    assert major["radfusion"] == pytest.approx(major["ibsi_equivalent"] * math.sqrt((n - 1) / n))


def test_a_deviation_that_changes_fails():
    # Were PyRadiomics to report excess kurtosis (or the mapping to forget the +3), the
    # kurtosis row must fail, not pass silently.
    mapping = load_mapping()
    mapping.loc[mapping["ibsi_tag"] == "stat_kurt", "relation"] = "equal"
    check = ibsi_check(mapping=mapping)
    assert not check.ok
    assert list(check.failures()["ibsi_tag"]) == ["stat_kurt"]


def test_a_reference_out_of_tolerance_fails():
    refs = load_references()
    row = refs["tag"] == "cm_joint_max_2D_avg"
    refs.loc[row, "reference"] += 0.01  # 0.519 -> 0.529: radfusion's 0.5188 now lies outside
    check = ibsi_check(references=refs)
    assert not check.ok
    assert check.counts["failed"] == 1
    failed = check.failures().iloc[0]
    assert failed["ibsi_tag"] == "cm_joint_max_2D_avg"
    assert failed["difference"] == pytest.approx(0.5188 - 0.529, abs=1e-3)


def test_tolerance_allows_the_rounding_of_the_published_value_only():
    assert within_tolerance(-0.3546, -0.355, 0.0)
    assert not within_tolerance(-0.3556, -0.355, 0.0)
    assert within_tolerance(556.33, 556.0, 4.0)
    assert within_tolerance(560.4, 556.0, 4.0)
    assert not within_tolerance(560.6, 556.0, 4.0)
    assert within_tolerance(1.0, 1.0, 0.0) and not within_tolerance(1.006, 1.0, 0.0)
    assert not within_tolerance(float("nan"), 1.0, 0.0)


def test_the_mapping_covers_pyradiomics_and_ibsi(check):
    assert check.unmapped == []
    mapping = load_mapping()
    # every IBSI feature of the references has a row, saying which PyRadiomics feature or none
    assert {_base(tag) for tag in load_references()["tag"]} <= set(mapping["ibsi_tag"])
    # every feature of the classes radfusion's paper file extracts is listed (IBSI or not)
    import radiomics

    _, _, params = load_params("paper")
    classes = radiomics.getFeatureClasses()
    for cls in params["featureClass"]:
        for name, deprecated in classes[cls].getFeatureNames().items():
            if not deprecated:
                assert f"{cls}_{name}" in set(mapping["pyradiomics_feature"]), (cls, name)


def test_a_mapping_without_a_reference_feature_is_an_error():
    mapping = load_mapping()
    with pytest.raises(RadfusionError, match="no row for cm_joint_max"):
        ibsi_check(mapping=mapping[mapping["ibsi_tag"] != "cm_joint_max"])
    bad = mapping.copy()
    bad.loc[bad["ibsi_tag"] == "stat_mean", "pyradiomics_feature"] = "firstorder_Nonsense"
    with pytest.raises(RadfusionError, match="firstorder_Nonsense"):
        ibsi_check(mapping=bad)


def test_force2d_on_a_2d_crop_fails_the_2d_references_and_is_refused(tmp_path):
    """PyRadiomics 3.1 applies force2D to a 2D image by dropping one of its axes: the
    texture of radfusion's 2D crops would be one-directional. The IBSI 2D references show
    it, and load_params refuses such a file."""
    image, mask, _ = _read_phantom()
    _, _, params = load_params(str(_data_file(PARAMS_FILE)))

    def joint_max_2d(setting: dict) -> float:
        p = {**params, "setting": {**params["setting"], **setting}, "featureClass": {"glcm": None}}
        per_slice = [
            split_output(
                pyradiomics_execute(image[z], mask[z], params_sha256=json_sha256(p), params=p)
            )[0]["original_glcm_MaximumProbability"]
            for z in range(image.shape[0])
        ]
        return float(np.mean(per_slice))

    ref = load_references().set_index("tag").loc["cm_joint_max_2D_avg"]
    assert within_tolerance(joint_max_2d({}), ref["reference"], ref["tolerance"])
    assert not within_tolerance(
        joint_max_2d({"force2D": True, "force2Ddimension": 0}), ref["reference"], ref["tolerance"]
    )
    path = tmp_path / "params.yaml"
    path.write_text("setting: {label: 1, binWidth: 5, force2D: true}\nfeatureClass: {glcm: }\n")
    with pytest.raises(ConfigError, match="force2D"):
        load_params(str(path))


def test_the_phantom_values_are_cached_per_version(tmp_path, monkeypatch):
    first = ibsi_check(cache_dir=tmp_path)
    assert not first.from_cache
    (cached,) = tmp_path.glob("ibsi-*.json")
    assert json.loads(cached.read_text())["versions"]["pyradiomics"]

    import radfusion.radiomics.ibsi as ibsi_mod

    def no_extraction(params):
        raise AssertionError("extracted again despite the cache")

    monkeypatch.setattr(ibsi_mod, "_extract_phantom", no_extraction)
    second = ibsi_check(cache_dir=tmp_path)
    assert second.from_cache
    pd.testing.assert_frame_equal(first.table, second.table)
    # the comparison is redone: an altered reference fails even with cached values
    refs = load_references()
    refs.loc[refs["tag"] == "stat_mean", "reference"] = 2.5
    assert not ibsi_check(cache_dir=tmp_path, references=refs).ok


def test_cli_prints_and_writes_the_table(tmp_path, check):
    out = tmp_path / "ibsi.csv"
    res = runner.invoke(app, ["ibsi", "--out", str(out)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "stat_kurt" in res.output and "documented deviation" in res.output
    assert " ".join(check.summary_line().split()) in " ".join(res.output.split())
    table = pd.read_csv(out)
    assert len(table) == len(check.table)
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["line"] == check.summary_line() and summary["ok"] is True
    # again onto its own table: fine; onto a file radfusion did not write: refused
    assert runner.invoke(app, ["ibsi", "--out", str(out)]).exit_code == 0
    foreign = tmp_path / "notes.csv"
    foreign.write_text("my notes\n")
    res = runner.invoke(app, ["ibsi", "--out", str(foreign)])
    assert res.exit_code == 2 and "not a radfusion IBSI table" in res.output
    assert foreign.read_text() == "my notes\n"
    # nor the summary's place beside a new table
    (tmp_path / "fresh.json").write_text('{"mine": 1}')
    res = runner.invoke(app, ["ibsi", "--out", str(tmp_path / "fresh.csv")])
    assert res.exit_code == 2 and not (tmp_path / "fresh.csv").exists()
    assert (tmp_path / "fresh.json").read_text() == '{"mine": 1}'


def test_model_card_carries_the_line(tmp_path, check):
    from tests.test_evaluation import make_fake_run

    run = make_fake_run(tmp_path / "run")
    assert "feature_standardisation" not in model_card(run)  # a run from before the check
    layout = RunLayout(run)
    layout.radiomics_ibsi.parent.mkdir(parents=True, exist_ok=True)
    write_ibsi(check, layout.radiomics_ibsi, layout.radiomics_ibsi_summary)
    assert model_card(run)["feature_standardisation"] == check.summary_line()
