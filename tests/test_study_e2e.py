"""The study end to end: run, resume after kill -9, export a bundle, predict with it."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from radfusion.bundle import BundleError, load_bundle, write_digest
from radfusion.cli import app
from radfusion.errors import RadfusionError
from radfusion.evaluation.subgroups import SUBGROUP_COLUMNS
from radfusion.models import routing, tuning
from radfusion.models.io import load_pipeline
from radfusion.predict import payload_records
from radfusion.synth import generate_cohort

from .conftest import TINY

runner = CliRunner()


def _config(tmp: Path, manifest: Path, run_dir: Path) -> Path:
    cfg = dict(TINY, data={"manifest": str(manifest)}, output_dir=str(run_dir))
    path = tmp / f"{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # A network trained with another number of threads sums in another order: one thread
    # here and in the killed subprocess, so a resumed run can be compared bit for bit.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    return generate_cohort(root, n=48, seed=3, prevalence=0.35, image_shape=(120, 160))


@pytest.fixture(scope="module")
def finished_run(cohort, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("run")
    run_dir = tmp / "run"
    res = runner.invoke(app, ["run", str(_config(tmp, cohort, run_dir))])
    assert res.exit_code == 0, res.output
    assert "Table 2" in res.output and "report.html" in res.output
    return run_dir


def _preds(run_dir: Path) -> pd.DataFrame:
    p = pd.read_parquet(run_dir / "predictions.parquet")
    return p.sort_values(["model", "case_id"]).reset_index(drop=True)


def test_run_folder_is_complete_and_traceable(finished_run):
    r = finished_run
    for rel in (
        "config.yaml",
        "fingerprint.json",
        "versions.json",
        "logs/run.log",
        "cases.csv",
        "radiomics/features.parquet",
        "deep/1ch/network.safetensors",
        "deep/2ch/network.safetensors",
        "predictions.parquet",
        "evaluation/table2.csv",
        "report/report.html",
        "bundle/bundle.json",
    ):
        assert (r / rel).is_file(), rel
    fp = json.loads((r / "fingerprint.json").read_text())
    assert fp["n_cases"] == 48 and set(fp["cases_per_split"]) == {"train", "val", "test"}
    versions = json.loads((r / "versions.json").read_text())
    assert versions["seed"] == 0 and "scikit-learn" in versions
    preds = _preds(r)
    fams = set(preds["family"])
    assert fams == {"radiomics", "1ch", "2ch", "merged1", "merged2", "stacked", "clinical"}
    # exactly one selected model per family, and every original case scored by every model
    sel = preds[preds["selected"]].groupby("family")["model"].nunique()
    assert (sel == 1).all()
    assert (preds.groupby("model")["case_id"].nunique() == 48).all()
    assert preds["probability"].between(0, 1).all()
    # augmented copies share their source's group, so every LASSO penalty search was
    # grouped: the radiomics chain and each block inside the Merged models alike
    records = {p.name: json.loads(p.read_text()) for p in (r / "stages").glob("selection_*.json")}
    assert set(records) == {f"selection_{f}.json" for f in ("radiomics", "merged1", "merged2")}
    for name, rec in records.items():
        assert rec["grouped"] is True, name
        for block, sub in rec.get("blocks", {}).items():
            assert sub["grouped"] is True, (name, block)
    notes = json.loads((r / "evaluation" / "evaluation.json").read_text())["notes"]
    assert not any("feature-selection record" in n for n in notes), notes
    # every file a stage wrote is one of the outputs its module declares
    from radfusion.layout import RunLayout
    from radfusion.pipeline import stages

    for stage in stages.STAGES:
        declared = [p.relative_to(r) for p in stage.outputs(RunLayout(r))]
        written = json.loads((r / "stages" / f"{stage.name}.json").read_text())["outputs"]
        assert written, stage.name
        for rel in map(Path, written):
            assert any(d == rel or d in rel.parents for d in declared), (stage.name, rel)


def test_rerun_skips_finished_stages_and_from_restarts(finished_run):
    cfg = finished_run.parent / "run.yaml"
    before = _preds(finished_run)
    res = runner.invoke(app, ["run", str(cfg)])
    assert res.exit_code == 0
    assert "stage radiomics: skipped" in res.output and "running" not in res.output
    res = runner.invoke(app, ["run", str(cfg), "--from", "evaluation"])
    assert res.exit_code == 0
    assert "stage evaluation: running" in res.output and "stage fusion: skipped" in res.output
    pd.testing.assert_frame_equal(before, _preds(finished_run))


def test_changed_setting_redoes_only_what_depends_on_it(finished_run, tmp_path):
    cfg = yaml.safe_load((finished_run.parent / "run.yaml").read_text())
    cfg["evaluation"]["threshold_source"] = "train"
    path = finished_run.parent / "run_thr.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = runner.invoke(app, ["run", str(path)])
    assert res.exit_code == 0, res.output
    assert "stage deep_2ch: skipped" in res.output
    assert "stage evaluation: running" in res.output
    thr = json.loads((finished_run / "evaluation" / "thresholds.json").read_text())
    assert thr["source_split"] == "train"
    # result-neutral settings (radfusion.neutral): nothing is redone, no network retrained
    runtime = {
        **cfg,
        "radiomics": {**cfg["radiomics"], "n_jobs": 2},
        "models": {**cfg["models"], "n_jobs": 2},
        "deep": {**cfg["deep"], "device": "cpu", "num_workers": 1},
    }
    path.write_text(yaml.safe_dump(runtime))
    mtime = (finished_run / "deep" / "2ch" / "network.safetensors").stat().st_mtime_ns
    res = runner.invoke(app, ["run", str(path)])
    assert res.exit_code == 0, res.output
    for stage in ("radiomics", "deep_1ch", "deep_2ch", "fusion", "evaluation"):
        assert f"stage {stage}: skipped" in res.output, stage
    assert (finished_run / "deep" / "2ch" / "network.safetensors").stat().st_mtime_ns == mtime
    # a changed training setting retrains that arm from scratch (no stale checkpoint resumed)
    cfg["deep"]["epochs"] = 3
    path.write_text(yaml.safe_dump(cfg))
    res = runner.invoke(app, ["run", str(path)])
    assert res.exit_code == 0, res.output
    assert "stage deep_1ch: running" in res.output and "stage radiomics: skipped" in res.output
    history = pd.read_csv(finished_run / "deep" / "1ch" / "history.csv")
    assert history["epoch"].max() == 3
    restored = runner.invoke(app, ["run", str(finished_run.parent / "run.yaml")])
    assert restored.exit_code == 0, restored.output


def test_stacked_fusion_is_fitted_on_out_of_fold_scores(finished_run, tmp_path):
    preds = _preds(finished_run)
    cases = pd.read_csv(finished_run / "cases.csv", dtype={"case_id": str}).set_index("case_id")
    train = cases.index[cases["split"] == "train"]
    source = json.loads((finished_run / "models" / "stacked" / "source.json").read_text())
    assert source["mode"] == "crossfit" and source["folds"] == 2
    assert [a["family"] for a in source["arms"]] == ["radiomics", "1ch", "2ch"]
    assert set(source["transfer"]) >= {"full_model_test_auc", "fold_mean_test_auc"}
    oof = pd.read_parquet(finished_run / "stacking" / "oof_scores.parquet")
    assert set(oof.index) == set(train) and oof["fold"].isin([0, 1]).all()
    # the training rows carry out-of-fold scores, not the arms' in-sample scores
    full = preds[preds["selected"] & (preds["family"] == "2ch")].set_index("case_id")
    assert not np.allclose(oof.loc[train, "score_2ch"], full.loc[train, "probability"])
    for arm in ("1ch", "2ch"):
        for k in (0, 1):
            rec = json.loads(
                (finished_run / "stacking" / arm / f"fold_{k}" / "fold.json").read_text()
            )
            assert not set(rec["trained_on"]) & set(rec["scored_out_of_fold"])
            assert set(rec["scored_out_of_fold"]) == set(oof.index[oof["fold"] == k])
    # the report says how the stacked model was fitted
    html = (finished_run / "report" / "report.html").read_text()
    assert "Stacked fusion" in html and "out-of-fold" in html
    # switching to blend refits only the stacked model (no network retrained)
    cfg = yaml.safe_load((finished_run.parent / "run.yaml").read_text())
    cfg["fusion"]["stacking"] = "blend"
    path = finished_run.parent / "run_blend.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = runner.invoke(app, ["run", str(path)])
    assert res.exit_code == 0, res.output
    assert "stage stacking: running" in res.output and "stage deep_2ch: skipped" in res.output
    assert "stage fusion: skipped" in res.output
    blend = json.loads((finished_run / "models" / "stacked" / "source.json").read_text())
    assert blend["mode"] == "blend" and blend["fitted_on"] == "validation"
    html = (finished_run / "report" / "report.html").read_text()
    assert "no longer an unbiased" in html
    restored = runner.invoke(app, ["run", str(finished_run.parent / "run.yaml")])
    assert restored.exit_code == 0, restored.output


# ``radfusion`` with its training held (asleep) right after the 1ch network's first epoch
# checkpoint, so the test's kill -9 lands mid-training however fast an epoch runs.
_HOLD_AFTER_FIRST_EPOCH = """
import sys, time
import torch
torch.set_num_threads(1)  # the same kernels as the uninterrupted run in the test process
import radfusion.deep.train as train
_save = train._save_checkpoint
def _hold(path, **state):
    _save(path, **state)
    if state["epoch"] == 1 and path.parent.name == "1ch":
        time.sleep(600)
train._save_checkpoint = _hold
sys.argv[0] = "radfusion"
from radfusion.cli import main
main()
"""


def test_killed_run_resumes_to_identical_predictions(cohort, finished_run, tmp_path):
    run_dir = tmp_path / "killed"
    cfg = _config(tmp_path, cohort, run_dir)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_AFTER_FIRST_EPOCH, "run", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    marker = run_dir / "stages" / "radiomics.json"
    # kill once the 1ch network has checkpointed its first epoch (of 2)
    checkpoint = run_dir / "deep" / "1ch" / "checkpoint.pt"
    deadline = time.time() + 600
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert marker.exists(), "the run did not reach the deep stage"
    assert checkpoint.exists(), "the run was not killed during training"
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert 1 <= state["epoch"] < TINY["deep"]["epochs"], "the kill was not mid-training"
    assert not (run_dir / "deep" / "1ch" / "network.safetensors").exists()
    assert not (run_dir / "stages" / "deep_1ch.json").exists()
    assert not (run_dir / "stages" / "bundle.json").exists()
    res = runner.invoke(app, ["run", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "stage radiomics: skipped" in res.output
    log = (run_dir / "logs" / "run.log").read_text()
    assert "1ch_ResNet18: resuming after epoch 1 of 2" in log
    # bit for bit: the resumed network and everything fitted after it
    a, b = _preds(finished_run), _preds(run_dir)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    for rel in ("deep/1ch/network.safetensors", "evaluation/metrics.csv"):
        assert (finished_run / rel).read_bytes() == (run_dir / rel).read_bytes(), rel


def test_bundle_predict_reproduces_the_runs_test_probabilities(finished_run, tmp_path):
    cases = pd.read_csv(finished_run / "cases.csv")
    test = cases[cases["split"] == "test"]
    clinical = ["age", "sex", "calcium", "phosphate", "ipth"]
    manifest = tmp_path / "new.csv"
    test[["case_id", "image", "mask", *clinical]].to_csv(manifest, index=False)  # no labels
    res = runner.invoke(
        app, ["predict", str(finished_run / "bundle"), "--manifest", str(manifest), "--json"]
    )
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    rows = [{"case_id": c["case_id"], **p} for c in payload["cases"] for p in c["predictions"]]
    got = pd.DataFrame(rows).set_index(["model", "case_id"])["probability"]
    run = _preds(finished_run)
    run = run[run["split"] == "test"].set_index(["model", "case_id"])["probability"]
    assert set(got.index) == set(run.index)
    pd.testing.assert_series_equal(
        got.sort_index(), run.sort_index(), check_exact=False, rtol=1e-5, atol=1e-6
    )
    # one case on the command line, with clinical values, as a clinician would
    row = test.iloc[0]
    args = [
        "predict",
        str(finished_run / "bundle"),
        "--image",
        row["image"],
        "--mask",
        row["mask"],
    ] + [x for c in clinical for x in ("--clinical", f"{c}={row[c]}")]
    one = runner.invoke(app, args)
    assert one.exit_code == 0, one.output
    assert "Clinical+imaging" in one.output and "APT/PC" in one.output


def test_predict_reports_bad_input_like_validate(finished_run, tmp_path):
    bad = tmp_path / "blank.png"
    from PIL import Image

    Image.new("L", (50, 40)).save(bad)
    cases = pd.read_csv(finished_run / "cases.csv")
    res = runner.invoke(
        app,
        ["predict", str(finished_run / "bundle"), "--image", cases["image"][0], "--mask", str(bad)],
    )
    assert res.exit_code == 2
    assert "mask_size_mismatch" in res.output or "empty" in res.output


class _Payload:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _swap_file(bundle: Path, rel: str, data: bytes) -> None:
    """Replace a bundle file and forge bundle.json's hash, as an attacker would."""
    import hashlib

    (bundle / rel).write_bytes(data)
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["files"][rel] = hashlib.sha256(data).hexdigest()
    (bundle / "bundle.json").write_text(json.dumps(meta))
    write_digest(bundle)  # and bundle.json's own digest: only a signature stops that


def test_malicious_pickle_in_bundle_is_refused_without_running(finished_run, tmp_path):
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(finished_run / "bundle", bundle)
    rel = next(
        m["file"]
        for m in json.loads((bundle / "bundle.json").read_text())["models"]
        if m.get("file")
    )
    pwned = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(pwned))

    # 1. the payload dropped in without touching bundle.json: the hash check refuses it
    (bundle / rel).write_bytes(payload)
    with pytest.raises(BundleError, match="SHA-256"):
        load_bundle(bundle)
    # 2. an attacker who also forges the hash: skops refuses a non-skops file (at load)
    _swap_file(bundle, rel, payload)
    with pytest.raises(BundleError, match="not a valid skops"):
        load_bundle(bundle)  # hashes now agree
    with pytest.raises(RadfusionError, match="not a valid skops"):
        load_pipeline(bundle / rel)
    # 3. a real skops file that asks for an untrusted type is refused too
    import argparse

    import skops.io as sio

    _swap_file(bundle, rel, sio.dumps(argparse.Namespace(a=1)))
    with pytest.raises(RadfusionError, match="does not trust"):
        load_pipeline(bundle / rel)
    # and the command line says so with a non-zero exit
    _swap_file(bundle, rel, payload)
    case = pd.read_csv(finished_run / "cases.csv").iloc[0]
    res = runner.invoke(
        app, ["predict", str(bundle), "--image", case["image"], "--mask", case["mask"]]
    )
    assert res.exit_code == 2 and "skops" in res.output
    assert not pwned.exists(), "the payload ran"


def test_kfold_study_runs_folds_and_pools_test_predictions(cohort, tmp_path):
    cfg = dict(
        TINY,
        data={"manifest": str(cohort)},
        output_dir=str(tmp_path / "cv"),
        split={"method": "kfold", "n_splits": 2, "n_repeats": 1},
        deep={"arms": []},
        models={"classifiers": ["LR"], "cv": 2, "n_iter": 1},
    )
    path = tmp_path / "cv.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = runner.invoke(app, ["run", str(path)])
    assert res.exit_code == 0, res.output
    assert "Cross-validated test AUC" in res.output
    run = tmp_path / "cv"
    folds = sorted(p.name for p in (run / "folds").iterdir())
    assert folds == ["r0f0", "r0f1"]
    for f in folds:
        assert (run / "folds" / f / "report" / "report.html").is_file()
        assert (run / "folds" / f / "bundle" / "bundle.json").is_file()
    pooled = pd.read_parquet(run / "cv_predictions.parquet")
    rad = pooled[pooled["family"] == "radiomics"]
    # every case is tested exactly once across the folds
    assert rad["case_id"].is_unique and len(rad) == 48
    summary = pd.read_csv(run / "cv_summary.csv").set_index("family")
    row = summary.loc["radiomics"]
    assert row["n_folds"] == 2 and row["n_repeats"] == 1
    assert 0.5 < row["pooled_auc"] <= 1.0
    # the pooled AUC and its DeLong CI are those of all test predictions, each case once
    from sklearn.metrics import roc_auc_score

    from radfusion.stats import delong_auc_ci

    ci = delong_auc_ci(rad["label"].to_numpy(), rad["probability"].to_numpy())
    assert row["pooled_auc"] == pytest.approx(ci.auc)
    assert (row["pooled_ci_low"], row["pooled_ci_high"]) == pytest.approx((ci.low, ci.high))
    assert row["pooled_ci_low"] < row["pooled_auc"] < row["pooled_ci_high"]
    assert "DeLong" in row["method"]
    # each fold's AUC is that of its own test cases, which are the sub-run's test split
    for fold, part in rad.groupby("fold"):
        cases = pd.read_csv(run / "folds" / fold / "cases.csv", dtype={"case_id": str})
        assert set(part["case_id"]) == set(cases.loc[cases["split"] == "test", "case_id"])
    fold_aucs = [roc_auc_score(p["label"], p["probability"]) for _, p in rad.groupby("fold")]
    assert row["fold_aucs"] == " ".join(f"{v:.3f}" for v in fold_aucs)
    assert row["mean_auc"] == pytest.approx(sum(fold_aucs) / 2)
    assert "pooled AUC: pooled AUC of the test predictions of all folds" in res.output
    # all folds share one feature cache: a re-run extracts nothing again
    again = runner.invoke(app, ["run", str(path)])
    assert again.exit_code == 0 and "r0f1: radiomics: skipped" in again.output


@pytest.mark.slow
def test_leave_centre_out_study_with_combat_end_to_end(tmp_path):
    """ComBat + leave-each-centre-out: subgroups, external validation, bundle = run."""
    from radfusion.harmonization import ComBatHarmonizer, iter_harmonizers

    manifest = generate_cohort(
        tmp_path / "mc",
        n=40,
        seed=5,
        prevalence=0.4,
        n_centers=2,
        image_shape=(96, 128),
        scanner_effect=1.0,
    )
    cfg = dict(
        TINY,
        data={"manifest": str(manifest)},
        output_dir=str(tmp_path / "loco"),
        split={"method": "center", "train": 0.6, "val": 0.25, "test": 0.15},
        deep={"arms": []},
        models={"classifiers": ["LR"], "cv": 2, "n_iter": 1},
        harmonization={"method": "combat", "covariates": ["age"]},
        evaluation={
            "n_bootstrap": 100,
            "example_cases": 1,
            "subgroups": ["sex"],
            "subgroup_bins": {"age": [55]},
            "min_subgroup_events": 2,
        },
    )
    path = tmp_path / "loco.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = runner.invoke(app, ["run", str(path)])
    assert res.exit_code == 0, res.output
    run = tmp_path / "loco"
    # leave-centre-out summary: one row per held-out centre + the pooled estimate
    ext = pd.read_csv(run / "evaluation" / "external_validation.csv")
    rad = ext[ext["family"] == "radiomics"]
    assert sorted(rad.loc[rad["row"] == "centre", "centre"]) == ["H1", "H2"]
    pooled = rad[rad["row"] == "pooled"].iloc[0]
    assert pooled["k"] == 2 and 0.0 <= pooled["i2"] <= 1.0
    html = (run / "report" / "report.html").read_text()
    assert "External validation (leave-centre-out)" in html and "I²" in html
    assert "Per-centre and subgroup performance" in html
    fold = run / "folds" / "center-H2"
    sg = pd.read_csv(fold / "evaluation" / "subgroups.csv")
    assert tuple(sg.columns) == SUBGROUP_COLUMNS
    assert {"center", "sex", "age"} <= set(sg["subgroup_column"])
    assert (sg.loc[sg["subgroup_column"] == "center", "subgroup"].isin(["H1", "H2"])).all()
    fold_html = (fold / "report" / "report.html").read_text()
    assert "External validation (held-out centre)" in fold_html
    assert "Per-centre and subgroup performance" in fold_html
    # the saved model carries ComBat fitted on the training centre only, without case data
    model = load_pipeline(fold / "models" / "radiomics" / "LR.skops")
    (h,) = iter_harmonizers(model)
    assert isinstance(h, ComBatHarmonizer) and "case_meta" not in h.get_params()
    assert not any(isinstance(v, pd.DataFrame) for v in vars(h).values())  # no patient data
    assert h.batches_.tolist() == ["H1"]
    # the bundle harmonises new cases as the run did: validation cases (seen centre,
    # adjusted) and test cases (held-out centre, passed through) score identically
    cases = pd.read_csv(fold / "cases.csv")
    new = cases[cases["split"].isin(["val", "test"])]
    cols = ["case_id", "image", "mask", "center", "age", "sex", "calcium", "phosphate", "ipth"]
    new[cols].to_csv(tmp_path / "new.csv", index=False)
    out = runner.invoke(
        app, ["predict", str(fold / "bundle"), "--manifest", str(tmp_path / "new.csv"), "--json"]
    )
    assert out.exit_code == 0, out.output
    payload = json.loads(out.stdout)
    got = pd.DataFrame(payload_records(payload))
    got = got.set_index(["model", "case_id"])["probability"]
    ran = _preds(fold)
    ran = ran[ran["split"].isin(["val", "test"])].set_index(["model", "case_id"])["probability"]
    pd.testing.assert_series_equal(
        got.sort_index(), ran.loc[got.index].sort_index(), rtol=1e-6, atol=1e-7
    )
    assert set(got.index) == set(ran.index)
    _check_centre_warnings(fold / "bundle", new, payload, tmp_path)


def _check_centre_warnings(bundle: Path, new: pd.DataFrame, payload: dict, tmp_path: Path):
    """Issue 26: a case ComBat cannot adjust (centre unseen or missing) carries a structured
    warning in the JSON, --strict refuses it, and the web app takes the centre."""
    from starlette.testclient import TestClient

    from radfusion.serve import create_app

    centre = dict(zip(new["case_id"].astype(str), new["center"], strict=True))
    for case in payload["cases"]:
        codes = [w["code"] for w in case["warnings"]]
        assert ("unharmonised_center" in codes) == (centre[case["case_id"]] != "H1"), case
    h1 = new[new["center"] == "H1"].iloc[0]
    one = ["predict", str(bundle), "--image", h1["image"], "--mask", h1["mask"]]
    res = runner.invoke(app, [*one, "--center", "H1", "--strict"])
    assert "unharmonised_center" not in res.output
    for extra in (["--center", "ZZZ"], []):
        res = runner.invoke(app, [*one, *extra, "--strict"])
        assert res.exit_code == 2 and "[unharmonised_center]" in res.output, res.output
        assert "nothing scored" in res.output
    res = runner.invoke(app, [*one, "--center", "ZZZ", "--json"])
    warned = json.loads(res.stdout)["cases"][0]["warnings"]
    assert any(w["code"] == "unharmonised_center" and "'ZZZ'" in w["message"] for w in warned)
    # the web app: the form offers the trained centres, and the field is used
    client = TestClient(create_app(load_bundle(bundle)))
    fields = {f["name"]: f for f in client.get("/api/bundle").json()["clinical"]}
    assert fields["center"]["categories"] == ["H1"]
    files = {
        "image": ("x.png", Path(h1["image"]).read_bytes()),
        "mask": ("m.png", Path(h1["mask"]).read_bytes()),
    }
    probs = {}
    for given in ("H1", "ZZZ"):
        r = client.post("/api/predict", files=files, data={"center": given, "age": "60"})
        assert r.status_code == 200, r.text
        case = r.json()["cases"][0]
        assert ("unharmonised_center" in [w["code"] for w in case["warnings"]]) == (given != "H1")
        probs[given] = {p["model"]: p["probability"] for p in case["predictions"]}
    assert probs["H1"] != probs["ZZZ"]  # harmonised with H1's estimates vs passed through
    # the radiomics explanation reads the centre too: its values are harmonised ones
    r = client.post("/api/explain", files=files, data={"center": "H1", "age": "60"})
    assert r.status_code == 200, r.text
    rad = r.json()["radiomics"]
    assert rad["harmonized"] is True and rad["features"], rad


def test_clinical_models_out_of_fold_refit_keeps_the_fitted_models_selection(
    finished_run, tmp_path, monkeypatch
):
    """The out-of-fold imaging score refits the chosen model's recipe, ICC filter included."""
    import shutil

    import sklearn.model_selection
    from sklearn.compose import ColumnTransformer

    from radfusion.config import StudyConfig
    from radfusion.pipeline.context import StudyContext
    from radfusion.pipeline.run import RunFolder
    from radfusion.pipeline.stages.fusion import clinical_model
    from radfusion.selection import ICCFilter

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    cfg = StudyConfig.from_yaml(run_dir / "config.yaml")
    calls = []
    real = tuning.out_of_fold_probability

    def recorder(estimator, X, y, groups, cv, **kw):
        calls.append((estimator, X, y, groups, kw))
        return real(estimator, X, y, groups, cv, **kw)

    monkeypatch.setattr(tuning, "out_of_fold_probability", recorder)
    clinical_model(StudyContext(RunFolder(run_dir, cfg), cfg, progress=False))
    source = json.loads((run_dir / "models" / "clinical" / "source.json").read_text())
    assert source["imaging_family"] == "merged2" and len(calls) == 1
    nested, X, y, groups, kw = calls[0]
    recipe = nested.estimator  # re-tuned in each fold (TunedModel)
    record = json.loads((run_dir / "stages" / "selection_merged2.json").read_text())
    select = recipe.named_steps["select"]
    assert isinstance(select, ColumnTransformer)
    data = routing.case_data(X, reader2=kw["reader2"])  # routed to every fold's fit
    for block, pipe, cols in select.transformers:
        assert isinstance(pipe.named_steps["icc"], ICCFilter)
        # the fitted model's ICC ran with reader 2 exactly where its refit gets reader 2
        read = "reader2" in data and bool(set(cols) & set(data["reader2"].columns))
        assert read == (record["blocks"][block]["icc_skipped"] is None), block
    # refit on the same rows, the recipe keeps exactly the fitted model's features per step
    from radfusion.fusion.merge import block_pipelines
    from radfusion.models.routing import group_routing
    from radfusion.selection import selection_report

    with group_routing():
        fitted = sklearn.base.clone(recipe).fit(X, y, groups=np.asarray(groups), **data)
    for block, pipe in block_pipelines(fitted).items():
        rep = selection_report(pipe)
        assert rep["n_features"] == record["blocks"][block]["counts"], block
        assert rep["kept"] == record["blocks"][block]["kept"], block


def test_allow_failures_leaves_a_failed_training_case_out_of_every_model(
    cohort, tmp_path, monkeypatch
):
    """--allow-failures: a training case whose radiomics extraction fails is left out of
    every family (deep arms and their cross-fitting included), and the report says so."""
    import radfusion.radiomics.extract as extract_mod
    from radfusion.config import StudyConfig
    from radfusion.pipeline import run_study

    raw = dict(TINY, models={**TINY["models"], "classifiers": ["LR"]})
    raw["deep"] = {**TINY["deep"], "epochs": 1, "gradcam_cases": 0}
    cfg = StudyConfig.from_dict({**raw, "data": {"manifest": str(cohort)}})
    run_dir = tmp_path / "run"
    run_study(cfg, run_dir, until="split", progress=False)
    cases = pd.read_csv(run_dir / "cases.csv", dtype={"case_id": str})
    victim = cases.loc[cases["split"] == "train", "case_id"].iloc[0]
    real = extract_mod._run_task

    def failing(task):  # PyRadiomics raising for one case (its copies keep working)
        if Path(task.image).stem == victim and not task.ops:
            return {"key": task.key, "error": "ValueError: no usable ROI voxels"}
        return real(task)

    monkeypatch.setattr(extract_mod, "_run_task", failing)
    cfg_path = tmp_path / "study.yaml"
    cfg_path.write_text(yaml.safe_dump({**raw, "data": {"manifest": str(cohort)}}))
    res = runner.invoke(app, ["run", str(cfg_path), "--run-dir", str(run_dir), "--allow-failures"])
    assert res.exit_code == 0, res.output

    preds = pd.read_parquet(run_dir / "predictions.parquet")
    others = set(cases["case_id"]) - {victim}
    for family, p in preds.groupby("family"):
        assert set(p["case_id"]) == others, family  # every family scores the same cases
    for arm in ("1ch", "2ch"):
        # the network neither learnt from the case or its copies nor scored them
        samples = pd.read_parquet(run_dir / "deep" / arm / "features.parquet")
        assert victim not in set(samples["source_case_id"]), arm
    oof = pd.read_parquet(run_dir / "stacking" / "oof_scores.parquet")
    assert victim not in oof.index and oof.notna().all().all()
    report = (run_dir / "report" / "report.html").read_text()
    assert "1 case(s) excluded from the analysis because radiomics feature extraction" in report
    assert f"{victim} (ValueError: no usable ROI voxels)" in report
    log = (run_dir / "logs" / "run.log").read_text()
    assert "left out of every model (radiomics, deep, fusion) and of the evaluation" in log


def _spy_tuning(monkeypatch) -> list[set[str]]:
    """Record the training rows of every hyperparameter search."""
    from radfusion.models import tuning

    seen: list[set[str]] = []
    real = tuning.tune_model

    def spy(pipeline, X, y, groups=None, **kw):
        seen.append(set(X.index))
        return real(pipeline, X, y, groups, **kw)

    monkeypatch.setattr(tuning, "tune_model", spy)
    return seen


def test_out_of_fold_scores_of_clinical_and_stacked_are_tuned_without_their_fold(
    finished_run, tmp_path, monkeypatch
):
    """Nested: the hyperparameters behind each out-of-fold score never saw that fold."""
    import shutil

    from radfusion.config import StudyConfig
    from radfusion.fusion.crossfit import crossfit_folds
    from radfusion.models import inner_cv
    from radfusion.pipeline.context import StudyContext, case_inputs, train_rows
    from radfusion.pipeline.run import RunFolder
    from radfusion.pipeline.stages.fusion import clinical_model
    from radfusion.pipeline.stages.stacking import radiomics_crossfit

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    cfg = StudyConfig.from_yaml(run_dir / "config.yaml")
    ctx = StudyContext(RunFolder(run_dir, cfg), cfg, progress=False)

    seen = _spy_tuning(monkeypatch)
    clinical_model(ctx)
    X, y, groups = train_rows(ctx, case_inputs(ctx, "merged2").features("merged2"))
    folds = list(inner_cv(y, groups, cfg.models.cv, cfg.seed).split(X, y, groups))
    assert seen == [set(X.index[tr]) for tr, _ in folds]  # one search per fold, on its rest

    seen.clear()
    cases = ctx.cases_table().set_index("case_id")
    train = cases.index[cases["split"] == "train"]
    fold = crossfit_folds(
        train,
        cases.loc[train, "label"],
        cases.loc[train, "group"],
        n_splits=cfg.fusion.stacking_folds,
        seed=cfg.seed,
    )
    clf = pd.read_parquet(run_dir / "models" / "radiomics" / "predictions.parquet")
    clf = str(clf.loc[clf["selected"], "classifier"].iloc[0])
    oof, _ = radiomics_crossfit(ctx, clf, fold, [])
    assert len(seen) == fold.nunique() and oof.notna().all()
    for k, rows in zip(sorted(set(fold)), seen, strict=True):
        held = set(fold.index[fold == k])
        assert not rows & held and set(fold.index[fold != k]) <= rows, k
