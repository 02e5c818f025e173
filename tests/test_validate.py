"""`radfusion validate`: every error names the case and the problem and exits 2."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from radfusion.cli import app
from radfusion.config import DataConfig
from radfusion.data import load_cohort
from radfusion.data.validate import validate_cohort
from radfusion.errors import ManifestError

from .conftest import ellipse_mask, make_cohort, write_png

runner = CliRunner()


def _edit(manifest, fn):
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    df = fn(df)
    df.to_csv(manifest, index=False)
    return manifest


def _run(*args):
    return runner.invoke(app, ["validate", *map(str, args)])


def test_valid_cohort_exits_zero_with_summary(tiny_cohort):
    res = _run(tiny_cohort, "--numeric", "age", "--categorical", "sex")
    assert res.exit_code == 0, res.output
    assert "OK: 0 error(s)" in res.output
    assert "cases per label" in res.output and "patients" in res.output
    rep = json.loads(_run(tiny_cohort, "--json").output)
    assert rep["ok"] is True
    assert rep["summary"]["cases_per_label"] == {"0": 6, "1": 6}
    assert rep["summary"]["patients"] == 10  # p0 and p1 have two images each
    assert rep["summary"]["cases_per_center"]["H1"] == {"0": 3, "1": 3}


def _break_file(col, what):
    def fn(manifest):
        df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
        p = manifest.parent / df.loc[3, col]
        if what == "missing":
            p.unlink()
        elif what == "corrupt":
            p.write_bytes(b"not an image at all")
        return "c003"

    return fn


ERROR_CASES = {
    "missing image file": (_break_file("image", "missing"), "missing_file", "image file not found"),
    "missing mask file": (_break_file("mask", "missing"), "missing_file", "mask file not found"),
    "corrupt image": (_break_file("image", "corrupt"), "corrupt_image", "not a readable image"),
    "unreadable mask": (_break_file("mask", "corrupt"), "unreadable_mask", "mask"),
}


@pytest.mark.parametrize("name", list(ERROR_CASES))
def test_file_errors(tmp_path, name):
    manifest = make_cohort(tmp_path / "c", n=8)
    breaker, code, text = ERROR_CASES[name]
    case = breaker(manifest)
    res = _run(manifest, "--json")
    assert res.exit_code == 2
    rep = json.loads(res.output)
    errs = [e for e in rep["errors"] if e["code"] == code]
    assert errs and errs[0]["case_id"] == case and text in errs[0]["message"]
    # the human-readable form names the case too
    human = _run(manifest)
    assert human.exit_code == 2 and f"case {case}" in human.output


def test_mask_size_mismatch_and_empty_mask(tmp_path):
    manifest = make_cohort(tmp_path / "c", n=8)
    write_png(tmp_path / "c" / "masks" / "c001.png", np.zeros((10, 10), np.uint8) + 255)
    write_png(tmp_path / "c" / "masks" / "c002.png", np.zeros((64, 80), np.uint8))
    rep = json.loads(_run(manifest, "--json").output)
    by = {(e["case_id"], e["code"]): e["message"] for e in rep["errors"]}
    assert "differs from image size 80x64" in by[("c001", "mask_size_mismatch")]
    assert "empty" in by[("c002", "empty_mask")]


@pytest.mark.parametrize(
    "mutate, code, needle",
    [
        (
            lambda d: d.assign(case_id=["c000", *d.case_id[1:-1], "c000"]),
            "duplicate_case_id",
            "2 times",
        ),
        (lambda d: d.assign(label=["2", *d.label[1:]]), "bad_label", "'2' is not 0"),
        (lambda d: d.assign(label=["yes", *d.label[1:]]), "bad_label", "'yes'"),
        (lambda d: d.assign(label=["0"] * len(d)), "one_class", "only one class"),
        (lambda d: d.assign(image=["", *d.image[1:]]), "missing_value", "'image' is empty"),
        (lambda d: d.assign(label=["", *d.label[1:]]), "missing_value", "'label' is empty"),
        (lambda d: d.assign(age=["54", "n/a", *["60"] * (len(d) - 2)]), "non_numeric", "'n/a'"),
        (
            lambda d: d.assign(split=["train", "trian", *["test"] * (len(d) - 2)]),
            "bad_split",
            "trian",
        ),
    ],
)
def test_table_errors(tmp_path, mutate, code, needle):
    manifest = make_cohort(tmp_path / "c", n=8)
    _edit(manifest, lambda d: d.assign(age=["50"] * len(d)))
    _edit(manifest, mutate)
    res = _run(manifest, "--json", "--numeric", "age")
    assert res.exit_code == 2, res.output
    rep = json.loads(res.output)
    hits = [e for e in rep["errors"] if e["code"] == code]
    assert hits and needle in hits[0]["message"], rep["errors"]


def test_missing_required_column_is_fatal(tmp_path):
    manifest = make_cohort(tmp_path / "c", n=4)
    _edit(manifest, lambda d: d.drop(columns=["label"]))
    res = _run(manifest)
    assert res.exit_code == 2
    with pytest.raises(ManifestError, match="lacks required column"):
        load_cohort(manifest)


def test_warnings_do_not_fail(tmp_path):
    manifest = make_cohort(tmp_path / "c", n=8)
    root = tmp_path / "c"
    # two components, a tiny ROI, and an exact duplicate image with a conflicting label
    two = ellipse_mask((64, 80), 20, 20, 6, 6) | ellipse_mask((64, 80), 45, 60, 6, 6)
    write_png(root / "masks" / "c000.png", (two * 255).astype(np.uint8))
    tiny = np.zeros((64, 80), np.uint8)
    tiny[30:33, 30:33] = 255
    write_png(root / "masks" / "c002.png", tiny)
    (root / "images" / "c005.png").write_bytes((root / "images" / "c004.png").read_bytes())
    res = _run(manifest, "--json")
    assert res.exit_code == 0, res.output
    codes = {(w["case_id"], w["code"]) for w in json.loads(res.output)["warnings"]}
    assert ("c000", "several_components") in codes
    assert ("c002", "tiny_roi") in codes
    assert ("c004", "duplicate_conflicting_labels") in codes


def test_near_duplicates_and_straddling_split(tmp_path):
    manifest = make_cohort(tmp_path / "c", n=8)
    root = tmp_path / "c"
    img = np.asarray(__import__("PIL.Image").Image.open(root / "images" / "c001.png"))
    write_png(root / "images" / "c003.png", np.clip(img.astype(int) + 3, 0, 255).astype(np.uint8))
    _edit(
        manifest,
        lambda d: d.assign(
            split=["train", "train", "train", "test", "val", "val", "test", "test"],
            patient_id=["p0", "p1", "p0", "p3", "p4", "p5", "p0", "p7"],
        ),
    )
    rep = json.loads(_run(manifest, "--json").output)
    s = rep["summary"]
    assert ["c001", "c003"] in s["near_duplicate_clusters"]
    assert s["groups_straddling_split"] == {"p0": ["test", "train"]}
    codes = {w["code"] for w in rep["warnings"]}
    assert {"near_duplicates", "group_straddles_split", "duplicate_straddles_split"} <= codes


def test_drop_invalid_writes_clean_manifest_and_lists_drops(tmp_path):
    manifest = make_cohort(tmp_path / "c", n=8)
    (tmp_path / "c" / "images" / "c006.png").unlink()
    _edit(manifest, lambda d: d.assign(label=[*d.label[:-1], "7"]))
    out = tmp_path / "clean.csv"
    res = _run(manifest, "--drop-invalid", "--out", out)
    assert res.exit_code == 0, res.output
    assert "dropped 2 row(s)" in res.output and "c006" in res.output and "c007" in res.output
    clean = pd.read_csv(out)
    assert sorted(clean.case_id) == [f"c00{i}" for i in range(6)]
    # the cleaned manifest is itself valid and stands on its own (absolute paths)
    assert validate_cohort(load_cohort(out, DataConfig())).ok


def test_drop_invalid_on_a_clean_cohort_writes_it_and_says_so(tmp_path):
    """Issue 26: nothing was written and nothing said; a script then read a missing file."""
    manifest = make_cohort(tmp_path / "c", n=8)
    out = tmp_path / "clean.csv"
    res = _run(manifest, "--drop-invalid", "--out", out)
    assert res.exit_code == 0, res.output
    assert "no invalid rows: nothing dropped" in res.output and str(out) in res.output
    assert sorted(pd.read_csv(out).case_id) == [f"c00{i}" for i in range(8)]
    assert validate_cohort(load_cohort(out, DataConfig())).ok


def test_validation_summary_roi_areas_per_label(tiny_cohort):
    rep = validate_cohort(load_cohort(tiny_cohort))
    areas = rep.summary["roi_area_per_label"]
    assert areas["1"]["median"] > areas["0"]["median"]  # label 1 lesions are drawn larger
