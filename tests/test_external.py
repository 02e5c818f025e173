"""External validation of a saved bundle (`radfusion evaluate`): calibration statistics,
frozen thresholds, recalibrated bundle versions, bad input."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit
from typer.testing import CliRunner

from radfusion.bundle import BundleError, load_bundle, predict_bundle, write_digest
from radfusion.cli import app
from radfusion.data import load_cohort
from radfusion.stats import logistic_calibration, recalibrate, youden_threshold
from radfusion.utils import file_sha256

runner = CliRunner()


def _evaluate(*args: object):
    """``radfusion evaluate ARGS`` (each argument as text)."""
    return runner.invoke(app, ["evaluate", *map(str, args)])


# ------------------------------------------------------------------------- statistics
def _reference_fits(y: np.ndarray, p: np.ndarray):
    """statsmodels' logistic GLMs: offset-only intercept (CITL) and intercept + slope
    (converged tightly: its default tolerance leaves the intervals ~1e-6 off)."""
    import statsmodels.api as sm

    lp = logit(np.clip(p, 1e-6, 1 - 1e-6))
    citl = sm.GLM(y, np.ones((y.size, 1)), family=sm.families.Binomial(), offset=lp).fit(tol=1e-12)
    slope = sm.GLM(y, sm.add_constant(lp), family=sm.families.Binomial()).fit(tol=1e-12)
    return citl, slope


@pytest.mark.parametrize(
    ("seed", "n", "a", "b"), [(0, 80, 0.0, 1.0), (1, 150, 0.7, 0.5), (2, 400, -1.0, 1.6)]
)
def test_calibration_intercept_and_slope_match_statsmodels(seed, n, a, b):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.98, n)
    y = (rng.random(n) < expit(a + b * logit(p))).astype(int)
    cal = logistic_calibration(y, p)
    ref_citl, ref_slope = _reference_fits(y, p)
    assert cal.citl.value == pytest.approx(ref_citl.params[0], abs=1e-7)
    assert (cal.citl.low, cal.citl.high) == pytest.approx(tuple(ref_citl.conf_int()[0]), abs=1e-6)
    assert cal.slope_intercept == pytest.approx(ref_slope.params[0], abs=1e-7)
    assert cal.slope.value == pytest.approx(ref_slope.params[1], abs=1e-7)
    assert (cal.slope.low, cal.slope.high) == pytest.approx(
        tuple(ref_slope.conf_int()[1]), abs=1e-6
    )
    # the two updating maps are the fits' parameters
    assert cal.parameters("intercept") == (cal.citl.value, 1.0)
    assert cal.parameters("logistic") == (cal.slope_intercept, cal.slope.value)


def test_calibration_separated_or_one_class_is_nan_with_a_note():
    sep = logistic_calibration([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert math.isnan(sep.slope.value) and "separate" in sep.note
    one = logistic_calibration([1, 1, 1], [0.2, 0.5, 0.9])
    assert math.isnan(one.citl.value) and math.isnan(one.slope.value) and one.note


def test_recalibrate_is_the_logistic_map_and_refuses_a_non_positive_slope():
    p = np.array([0.0, 0.1, 0.5, 0.93, 1.0])
    q = recalibrate(p, 0.4, 0.7)
    lp = logit(np.clip(p, 1e-6, 1 - 1e-6))
    assert q == pytest.approx(expit(0.4 + 0.7 * lp), abs=1e-15)
    assert np.all(np.diff(q) > 0)  # rank kept
    with pytest.raises(ValueError, match="positive slope"):
        recalibrate(p, 0.0, -0.5)
    with pytest.raises(ValueError, match="finite"):
        recalibrate(p, math.nan, 1.0)


# ------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def external_cohort(tmp_path_factory) -> Path:
    """Labelled cases of two centres the tiny study never saw, on different scanners."""
    from radfusion.synth import generate_cohort

    root = tmp_path_factory.mktemp("external")
    manifest = generate_cohort(
        root / "cohort",
        n=60,
        seed=11,
        prevalence=0.4,
        image_shape=(120, 160),
        n_centers=4,
        scanner_effect=1.0,
    )
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    external = root / "cohort" / "external.csv"
    df[df["center"].isin(["H3", "H4"])].to_csv(external, index=False)
    return external


def _tree_hashes(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): file_sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def evaluated(tiny_run, external_cohort, tmp_path_factory):
    """`radfusion evaluate --recalibrate logistic` of the tiny study's bundle, once."""
    bundle = tiny_run / "bundle"
    before = _tree_hashes(bundle)
    out = tmp_path_factory.mktemp("evaluate") / "out"
    res = _evaluate(bundle, external_cohort, "--out", out, "--recalibrate", "logistic")
    assert res.exit_code == 0, res.output
    return {"bundle": bundle, "out": out, "before": before, "output": res.output}


def test_evaluate_writes_report_tables_and_figures(evaluated):
    out = evaluated["out"]
    html = (out / "report" / "report.html").read_text()
    for heading in (
        "External validation",
        "Frozen models on the external cohort",
        "Development versus external performance",
        "Per-centre performance",
        "Updating: recalibration",
        "TRIPOD+AI",
    ):
        assert heading in html
    assert "http://" not in html and "https://" not in html  # self-contained
    for rel in (
        "predictions.csv",
        "evaluation/metrics.csv",
        "evaluation/internal_external.csv",
        "evaluation/delong.csv",
        "evaluation/calibration.csv",
        "evaluation/decision_curve.csv",
        "evaluation/centres.csv",
        "evaluation/centres_pooled.csv",
        "evaluation/recalibration.csv",
        "evaluation/figures/roc_external.png",
        "evaluation/figures/calibration_external.png",
        "evaluation/figures/forest_centres.png",
    ):
        assert (out / rel).is_file(), rel
    index = json.loads((out / "external_validation.json").read_text())
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert sorted(index["files"]) == written
    centres = pd.read_csv(out / "evaluation" / "centres.csv", dtype={"subgroup": str})
    assert set(centres["subgroup"]) == {"H3", "H4"}
    assert "report:" in evaluated["output"]


def test_thresholds_are_the_bundles_never_refitted(evaluated):
    out = evaluated["out"]
    frozen = {e["model"]: e["threshold"] for e in load_bundle(evaluated["bundle"]).models}
    metrics = pd.read_csv(out / "evaluation" / "metrics.csv")
    preds = pd.read_csv(out / "predictions.csv")
    assert set(metrics["model"]) == set(frozen)
    refitted_differs = False
    for r in metrics.itertuples():
        assert r.threshold == frozen[r.model]
        sub = preds[preds["model"] == r.model]
        pos = sub["probability"] >= frozen[r.model]
        assert r.tp == int((pos & (sub["label"] == 1)).sum())
        assert r.fp == int((pos & (sub["label"] == 0)).sum())
        refitted = youden_threshold(sub["label"], sub["probability"])
        refitted_differs |= not math.isclose(refitted, frozen[r.model])
    assert refitted_differs  # the test would notice a threshold chosen on these cases


def test_external_auc_cis_and_delong_match_an_independent_implementation(evaluated):
    from MLstatkit import Delong_test

    out = evaluated["out"]
    preds = pd.read_csv(out / "predictions.csv")
    metrics = pd.read_csv(out / "evaluation" / "metrics.csv").set_index("model")
    delong = pd.read_csv(out / "evaluation" / "delong.csv", index_col=0)
    wide = preds.pivot(index="case_id", columns="model", values="probability")
    y = preds.drop_duplicates("case_id").set_index("case_id")["label"].reindex(wide.index)
    mains = list(delong.index)
    assert len(mains) >= 2
    for a, b in itertools.pairwise(mains):
        _z, p, ci_a, ci_b, auc_a, _auc_b, info = Delong_test(y, wide[a], wide[b])
        assert info["method"] == "delong"
        assert metrics.loc[a, "auc"] == pytest.approx(auc_a, abs=1e-12)
        assert (metrics.loc[a, "auc_low"], metrics.loc[a, "auc_high"]) == pytest.approx(
            tuple(ci_a), abs=1e-9
        )
        assert (metrics.loc[b, "auc_low"], metrics.loc[b, "auc_high"]) == pytest.approx(
            tuple(ci_b), abs=1e-9
        )
        assert delong.loc[a, b] == pytest.approx(p, rel=1e-9)


def test_calibration_columns_match_statsmodels_on_the_external_predictions(evaluated):
    out = evaluated["out"]
    preds = pd.read_csv(out / "predictions.csv")
    metrics = pd.read_csv(out / "evaluation" / "metrics.csv").set_index("model")
    checked = 0
    for model, sub in preds.groupby("model"):
        m = metrics.loc[model]
        if not math.isfinite(m["slope"]):
            continue
        ref_citl, ref_slope = _reference_fits(
            sub["label"].to_numpy(), sub["probability"].to_numpy()
        )
        assert m["citl"] == pytest.approx(ref_citl.params[0], abs=1e-6)
        assert m["slope"] == pytest.approx(ref_slope.params[1], abs=1e-6)
        assert (m["slope_low"], m["slope_high"]) == pytest.approx(
            tuple(ref_slope.conf_int()[1]), abs=1e-5
        )
        checked += 1
    assert checked >= 3


def test_recalibrate_leaves_the_parent_byte_identical(evaluated):
    assert _tree_hashes(evaluated["bundle"]) == evaluated["before"]


def test_recalibrated_bundle_follows_the_fitted_map_and_records_provenance(
    evaluated, external_cohort
):
    out, parent = evaluated["out"], load_bundle(evaluated["bundle"])
    child = load_bundle(out / "bundle_recalibrated")
    update = child.meta["updates"][-1]
    assert update["method"] == "logistic"
    assert update["parent_bundle_sha256"] == file_sha256(evaluated["bundle"] / "bundle.json")
    index = json.loads((out / "external_validation.json").read_text())
    assert update["external_cohort_sha256"] == index["cohort_sha256"]
    maps = pd.read_csv(out / "evaluation" / "recalibration.csv", keep_default_na=False)
    maps = maps[maps["method"] == "logistic"].set_index("model")

    cases = load_cohort(external_cohort, parent.config.data).cases()[:6]
    before = predict_bundle(parent, cases).set_index(["case_id", "model"])
    after = predict_bundle(child, cases).set_index(["case_id", "model"])
    recalibrated = 0
    for (cid, model), r in after.iterrows():
        raw = before.loc[(cid, model)]
        entry = next(e for e in child.models if e["model"] == model)
        if maps.loc[model, "note"]:
            assert "recalibration" not in entry
            assert r["probability"] == raw["probability"]
            continue
        a, b = float(maps.loc[model, "intercept"]), float(maps.loc[model, "slope"])
        assert r["probability"] == pytest.approx(
            float(recalibrate([raw["probability"]], a, b)[0]), rel=1e-9
        )
        assert r["threshold"] == pytest.approx(float(recalibrate([raw["threshold"]], a, b)[0]))
        assert r["predicted_class"] == raw["predicted_class"]  # decisions unchanged
        recalibrated += 1
    assert recalibrated > 0

    # predict says the bundle is recalibrated
    res = runner.invoke(
        app,
        [
            "predict",
            str(out / "bundle_recalibrated"),
            "--image",
            str(cases[0].image),
            "--mask",
            str(cases[0].mask),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "recalibrated bundle (logistic" in json.loads(res.output)["recalibration"]


def test_rerun_replaces_its_own_output(evaluated, external_cohort, tiny_run):
    # an earlier evaluate's folder is radfusion's: replaced without a recalibrated bundle
    import shutil

    out = evaluated["out"].parent / "again"
    shutil.copytree(evaluated["out"], out)
    res = _evaluate(tiny_run / "bundle", external_cohort, "--out", out)
    assert res.exit_code == 0, res.output
    assert not (out / "bundle_recalibrated").exists()


# ------------------------------------------------------------------------- bad input
def _one_line_error(res) -> str:
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error"), res.output
    assert "Traceback" not in res.output
    return lines[0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda df: df.drop(columns="label"), "label"),
        (lambda df: df.assign(label="0"), "both classes"),
        (lambda df: df.assign(label=["1", "", *df["label"][2:]]), "needs every label"),
    ],
)
def test_labels_are_required(tiny_run, external_cohort, tmp_path, change, message):
    df = pd.read_csv(external_cohort, dtype=str, keep_default_na=False)
    manifest = external_cohort.parent / f"bad_{tmp_path.name}.csv"
    change(df).to_csv(manifest, index=False)
    out = tmp_path / "out"
    assert message in _one_line_error(_evaluate(tiny_run / "bundle", manifest, "--out", out))
    assert not out.exists()


def test_a_case_failing_the_checks_stops_before_anything_is_written(
    tiny_run, external_cohort, tmp_path
):
    df = pd.read_csv(external_cohort, dtype=str, keep_default_na=False)
    df.loc[0, "image"] = "images/not_there.png"
    manifest = external_cohort.parent / f"missing_{tmp_path.name}.csv"
    df.to_csv(manifest, index=False)
    res = _evaluate(tiny_run / "bundle", manifest, "--out", tmp_path / "o")
    assert res.exit_code == 2, res.output
    assert f"case {df.loc[0, 'case_id']}" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".external-")]


def test_a_folder_with_foreign_files_is_refused_untouched(tiny_run, external_cohort, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    res = _evaluate(tiny_run / "bundle", external_cohort, "--out", out)
    assert "did not write" in _one_line_error(res)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "my notes"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".external-")]


def test_export_bundle_replaces_its_own_bundle_and_refuses_any_other_folder(tiny_run, tmp_path):
    from radfusion.bundle import export_bundle

    out = tmp_path / "bundle"
    export_bundle(tiny_run, out)
    (out / "stale.txt").write_text("from an earlier export")
    export_bundle(tiny_run, out)  # an earlier bundle is replaced as a whole
    assert not (out / "stale.txt").exists()
    load_bundle(out)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("my notes")
    with pytest.raises(FileExistsError, match="radfusion did not write it"):
        export_bundle(tiny_run, theirs)
    assert [p.name for p in theirs.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "theirs"]  # no temporary


def test_bundle_problems_and_unknown_method_exit_2(tiny_run, external_cohort, tmp_path):
    res = _evaluate(tmp_path, external_cohort, "--out", tmp_path / "o")
    assert "bundle.json missing" in _one_line_error(res)
    res = _evaluate(
        tiny_run / "bundle", external_cohort, "--out", tmp_path / "o", "--recalibrate", "isotonic"
    )
    assert "isotonic" in _one_line_error(res)
    assert not (tmp_path / "o").exists()


def test_a_bundle_with_a_bad_recalibration_is_refused(tiny_run, tmp_path):
    import shutil

    b = tmp_path / "b"
    shutil.copytree(tiny_run / "bundle", b)
    meta = json.loads((b / "bundle.json").read_text())
    meta["models"][0]["recalibration"] = {"intercept": 0.1, "slope": -2.0, "frozen_threshold": 0.5}
    (b / "bundle.json").write_text(json.dumps(meta))
    write_digest(b)  # as its author would: the digest alone does not make it sound
    with pytest.raises(BundleError, match="slope > 0"):
        load_bundle(b)


# ------------------------------------------------------------------------- a new centre
@pytest.fixture(scope="module")
def combat_run(tmp_path_factory) -> Path:
    """A radiomics-only tiny study harmonised with ComBat across H1 and H2 (about a minute)."""
    import copy

    import yaml

    from radfusion.synth import generate_cohort
    from tests.conftest import TINY

    root = tmp_path_factory.mktemp("combat_study")
    manifest = generate_cohort(
        root / "cohort", n=48, seed=3, prevalence=0.35, image_shape=(120, 160), scanner_effect=1.0
    )
    cfg = copy.deepcopy(TINY)
    cfg["deep"]["arms"] = []
    cfg["fusion"] = {"enabled": False}
    cfg["harmonization"] = {"method": "combat"}
    cfg.update(data={"manifest": str(manifest)}, output_dir=str(root / "run"))
    (root / "study.yaml").write_text(yaml.safe_dump(cfg))
    res = runner.invoke(app, ["run", str(root / "study.yaml")])
    assert res.exit_code == 0, res.output
    return root / "run"


def _aucs(preds: pd.DataFrame, labels: dict[str, int]) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    return {
        m: roc_auc_score(sub["case_id"].map(labels), sub["probability"])
        for m, sub in preds.groupby("model")
    }


def test_combat_bundle_harmonises_unseen_centres_and_saves_a_new_version(
    combat_run, external_cohort, tmp_path
):
    bundle = combat_run / "bundle"
    before = _tree_hashes(bundle)
    out = tmp_path / "out"
    res = _evaluate(
        bundle, external_cohort, "--out", out, "--save-harmonised", "--min-centre-cases", "5"
    )
    assert res.exit_code == 0, res.output
    assert _tree_hashes(bundle) == before
    manifest = pd.read_csv(external_cohort, dtype=str)
    index = json.loads((out / "external_validation.json").read_text())
    assert index["harmonised_centres"] == manifest["center"].value_counts().to_dict()
    assert "Harmonising the new centre" in (out / "report" / "report.html").read_text()
    comp = pd.read_csv(out / "evaluation" / "frozen_vs_harmonised.csv")
    harmonised = pd.read_csv(out / "evaluation" / "harmonised_metrics.csv").set_index("model")
    assert set(comp["model"]) == {e["model"] for e in load_bundle(bundle).models}

    labels = dict(zip(manifest["case_id"], manifest["label"].astype(int), strict=True))
    parent, child = load_bundle(bundle), load_bundle(out / "bundle_harmonised")
    assert child.meta["updates"][-1]["kind"] == "harmonisation"
    assert child.meta["updates"][-1]["parent_bundle_sha256"] == file_sha256(bundle / "bundle.json")
    cases = load_cohort(external_cohort, parent.config.data).cases()
    frozen = _aucs(predict_bundle(parent, cases), labels)
    adjusted = _aucs(predict_bundle(child, cases), labels)
    for model, auc in adjusted.items():  # the saved version scores as the evaluation did
        assert auc == pytest.approx(harmonised.loc[model, "auc"], abs=1e-12)
    assert frozen != adjusted  # harmonising the new centres changed the radiomics scores
    metrics = pd.read_csv(out / "evaluation" / "metrics.csv").set_index("model")
    for model, auc in frozen.items():
        assert auc == pytest.approx(metrics.loc[model, "auc"], abs=1e-12)


def test_save_harmonised_needs_a_combat_bundle(tiny_run, external_cohort, tmp_path):
    res = _evaluate(
        tiny_run / "bundle", external_cohort, "--out", tmp_path / "o", "--save-harmonised"
    )
    assert "ComBat" in _one_line_error(res)
    assert not (tmp_path / "o").exists()
