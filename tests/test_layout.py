"""One run-folder layout: RunLayout names every file of a run, writer and reader share it,
and no other module spells an artefact's file name."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from radfusion.bundle import load_bundle
from radfusion.cli import app
from radfusion.config import StudyConfig
from radfusion.evaluation.figures import journal_paths
from radfusion.evaluation.runfolder import RunArtifacts
from radfusion.families import DEEP_ARMS, MERGED_ARMS, SELECTION_FAMILIES, ModelId
from radfusion.layout import ArmLayout, RunLayout
from radfusion.pipeline.run import RunFolder, RunFolderBusyError
from radfusion.pipeline.study import STAGES

SRC = Path(__file__).resolve().parents[1] / "src" / "radfusion"

#: File names of run-folder artefacts: outside radfusion/layout.py they must come from
#: RunLayout, never from a string literal.
ARTEFACT_NAMES = (
    "config.yaml",
    "versions.json",
    "fingerprint.json",
    "validation.json",
    "dropped.json",
    "data_files.json",
    "cases.csv",
    "augmentation.csv",
    "features.parquet",
    "features_reader2.parquet",
    "predictions.parquet",
    "cv_results.csv",
    "importance.csv",
    "source.json",
    "coefficients.csv",
    "oof_scores.parquet",
    "network.json",
    "network.safetensors",
    "checkpoint.pt",
    "history.csv",
    "stage_key.txt",
    "scores.parquet",
    "fold.json",
    "fold_key.txt",
    "metrics.csv",
    "thresholds.json",
    "table1.csv",
    "table2.csv",
    "calibration.csv",
    "decision_curve.csv",
    "subgroups.csv",
    "external_validation.csv",
    "evaluation.json",
    "report.html",
    "cv_predictions.parquet",
    "cv_repeats.csv",
    "cv_summary.csv",
    # the bundle's own files (BundleLayout)
    "bundle.json",
    "bundle.json.sha256",
    "bundle.json.sig",
    "radiomics_params.yaml",
)

#: (module, literal) -> why the name may be spelt there: the same file name in a folder
#: that is neither a run folder nor a bundle.
ALLOWED: dict[tuple[str, str], str] = {}

#: Path fragments of the bundle's folders ("networks/1ch", f"models/{family}/...").
BUNDLE_FOLDERS = re.compile(r"""(["'])(networks|models)/""")


def test_no_module_spells_an_artefact_file_name():
    names = "|".join(map(re.escape, ARTEFACT_NAMES))
    pattern = re.compile(rf"""(["'])({names})\1""")
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel == "layout.py":
            continue
        for no, line in enumerate(path.read_text().splitlines(), 1):
            for m in pattern.finditer(line):
                if (rel, m.group(2)) not in ALLOWED:
                    found.append(f"{rel}:{no}: {line.strip()}")
        for no, line in enumerate(path.read_text().splitlines(), 1):
            if BUNDLE_FOLDERS.search(line) or re.search(r"""/ (["'])networks\1""", line):
                found.append(f"{rel}:{no}: {line.strip()}")
    assert not found, "use radfusion.layout (RunLayout, BundleLayout) instead of:\n" + "\n".join(
        found
    )


def test_the_on_disk_names_are_those_of_earlier_runs():
    """Runs written before the layout existed must still resume and evaluate."""
    lay = RunLayout(Path("RUN"))
    expected = {
        lay.config: "config.yaml",
        lay.versions: "versions.json",
        lay.fingerprint: "fingerprint.json",
        lay.validation: "validation.json",
        lay.log_file: "logs/run.log",
        lay.stage_marker("radiomics"): "stages/radiomics.json",
        lay.data_files: "stages/data_files.json",
        lay.selection("merged2"): "stages/selection_merged2.json",
        lay.cases: "cases.csv",
        lay.augmentation: "augmentation.csv",
        lay.radiomics_features(): "radiomics/features.parquet",
        lay.radiomics_features(reader=2): "radiomics/features_reader2.parquet",
        lay.radiomics_cache: "radiomics/cache",
        lay.radiomics_ibsi: "radiomics/ibsi.csv",
        lay.radiomics_ibsi_summary: "radiomics/ibsi.json",
        lay.deep("2ch").features(): "deep/2ch/features.parquet",
        lay.deep_features("2ch", reader=2): "deep/2ch/features_reader2.parquet",
        lay.deep("1ch").weights: "deep/1ch/network.safetensors",
        lay.deep("1ch").spec: "deep/1ch/network.json",
        lay.deep("1ch").checkpoint: "deep/1ch/checkpoint.pt",
        lay.deep("1ch").training_key: "deep/1ch/stage_key.txt",
        lay.deep("1ch").gradcam_dir: "deep/1ch/gradcam",
        lay.deep("1ch").cache: "deep/1ch/cache",
        lay.family_predictions("merged1"): "models/merged1/predictions.parquet",
        lay.model_file(ModelId("radiomics", "XGBoost")): "models/radiomics/XGBoost.skops",
        lay.model_file(ModelId.single("stacked")): "models/stacked/LR.skops",
        lay.model_file(ModelId.single("clinical")): "models/clinical/ClinicalLR.skops",
        lay.cv_results("radiomics"): "models/radiomics/cv_results.csv",
        lay.importance("radiomics", "LR"): "models/radiomics/LR/importance.csv",
        lay.model_source("stacked"): "models/stacked/source.json",
        lay.clinical_coefficients: "clinical/coefficients.csv",
        lay.stacking_coefficients: "stacking/coefficients.csv",
        lay.stacking_oof_scores: "stacking/oof_scores.parquet",
        lay.stacking_arm("2ch").fold_scores(1): "stacking/2ch/fold_1/scores.parquet",
        lay.stacking_arm("2ch").fold_record(1): "stacking/2ch/fold_1/fold.json",
        lay.stacking_arm("2ch").fold_key(1): "stacking/2ch/fold_1/fold_key.txt",
        lay.stacking_arm("2ch").fold_checkpoint(1): "stacking/2ch/fold_1/checkpoint.pt",
        lay.predictions: "predictions.parquet",
        lay.thresholds: "evaluation/thresholds.json",
        lay.metrics: "evaluation/metrics.csv",
        lay.delong("test"): "evaluation/delong_test.csv",
        lay.delong("val", "radiomics"): "evaluation/delong_radiomics_val.csv",
        lay.figure("roc_test"): "evaluation/figures/roc_test.png",
        lay.evaluation_index: "evaluation/evaluation.json",
        lay.external_validation: "evaluation/external_validation.csv",
        lay.report: "report/report.html",
        lay.report_table("table2"): "report/tables/table2.csv",
        lay.bundle_dir: "bundle",
        lay.fold_dir("center=H 1"): "folds/center-H-1",
        lay.shared_radiomics_cache: "radiomics_cache",
        lay.cv_summary: "cv_summary.csv",
    }
    for path, rel in expected.items():
        assert path.relative_to("RUN").as_posix() == rel


def test_the_bundle_names_are_those_of_earlier_bundles():
    """Bundles exported before BundleLayout existed must still load."""
    b = RunLayout(Path("RUN")).bundle()
    expected = {
        b.meta: "bundle.json",
        b.digest: "bundle.json.sha256",
        b.signature: "bundle.json.sig",
        b.config: "config.yaml",
        b.radiomics_params: "radiomics_params.yaml",
        b.network("2ch").spec: "networks/2ch/network.json",
        b.network("2ch").weights: "networks/2ch/network.safetensors",
        b.file(b.model_rel(ModelId("merged1", "SVM"))): "models/merged1/SVM.skops",
        b.file(b.model_rel(ModelId.single("clinical"))): "models/clinical/ClinicalLR.skops",
    }
    for path, rel in expected.items():
        assert path.relative_to("RUN/bundle").as_posix() == rel
    assert b.network_arm(b.network_rel("1ch")) == "1ch"
    assert b.network_files(b.network_rel("1ch")) == (
        "networks/1ch/network.json",
        "networks/1ch/network.safetensors",
    )


def test_writer_and_reader_share_one_layout(tmp_path):
    run = RunFolder(tmp_path / "run", StudyConfig())
    run.write_provenance()
    art = RunArtifacts(run.path)
    assert run.layout == art.layout == RunLayout(tmp_path / "run")
    assert run.marker("fusion") == art.layout.stage_marker("fusion")
    assert run.layout.stages_dir.is_dir() and run.layout.logs_dir.is_dir()
    assert art.config.name == StudyConfig().name  # read back from layout.config
    assert art.versions["seed"] == StudyConfig().seed
    # bookkeeping is no stage's output
    assert run.snapshot() == {}


def _named_by_layout(run: Path) -> set[Path]:
    """Every file path a finished run may hold, as RunLayout names it."""
    lay = RunLayout(run)
    preds = pd.read_parquet(lay.predictions)
    names = {
        lay.config,
        lay.versions,
        lay.fingerprint,
        lay.validation,
        lay.dropped,
        lay.log_file,
        lay.data_files,
        lay.lock_file,
        lay.cases,
        lay.augmentation,
        lay.radiomics_ibsi,
        lay.radiomics_ibsi_summary,
        lay.predictions,
        lay.clinical_coefficients,
        lay.stacking_coefficients,
        lay.stacking_oof_scores,
        lay.metrics,
        lay.thresholds,
        lay.table1,
        lay.table2,
        lay.calibration,
        lay.decision_curve,
        lay.subgroups,
        lay.external_validation,
        lay.evaluation_index,
        lay.report,
    }
    names |= {lay.stage_marker(s) for s in STAGES}
    names |= {lay.selection(f) for f in SELECTION_FAMILIES}
    for reader in (1, 2):
        table = lay.radiomics_features(reader)
        stem = table.name.removesuffix(".parquet")
        # the feature table's sidecars (radfusion.radiomics.write_feature_table)
        names |= {
            table,
            table.with_name(f"{stem}.diagnostics.parquet"),
            table.with_name(f"{stem}.provenance.json"),
        }
    families = sorted(set(preds["family"]))
    for split in sorted(set(preds["split"])):
        names |= {lay.delong(split)} | {lay.delong(split, f) for f in families}
    for fam in lay.families():
        names |= {lay.family_predictions(fam), lay.cv_results(fam), lay.model_source(fam)}
        for clf in set(preds.loc[preds["family"] == fam, "classifier"]):
            names |= {lay.model_file(ModelId(fam, clf)), lay.importance(fam, clf)}
    for arm in lay.deep_arms():
        a = lay.deep(arm)
        names |= {a.weights, a.spec, a.checkpoint, a.history, a.history_plot}
        names |= {a.features(1), a.features(2), a.training_key}
        cf = lay.stacking_arm(arm)
        for k in range(10):
            names |= {cf.fold_scores(k), cf.fold_record(k), cf.fold_key(k)}
            names |= {cf.fold_checkpoint(k)}
    return names


def test_every_file_of_a_finished_run_is_named_by_the_layout(tiny_run):
    lay = RunLayout(tiny_run)
    named = _named_by_layout(tiny_run)
    gradcam_dirs = {lay.deep(a).gradcam_dir for a in lay.deep_arms()}
    unnamed = []
    for f in sorted(p for p in tiny_run.rglob("*") if p.is_file()):
        parts = f.relative_to(tiny_run).parts
        if any(RunLayout.is_cache(p) for p in parts[:-1]) or f.is_relative_to(lay.bundle_dir):
            continue  # content-keyed caches; the bundle has its own layout
        if f in named:
            continue
        if f.suffix == ".png" and (
            f == lay.figure(f.stem) or f.parent in gradcam_dirs
        ):  # figures: one name per key
            continue
        if f == lay.report_table(f.stem) or f == lay.report_checklist(f.stem, f.suffix):
            continue
        # a figure's SVG and 300-dpi copies beside it, and the report's journal figures
        if f in journal_paths(lay.figure(f.name.split(".")[0])).values():
            continue
        if f == lay.report_figure(f.stem, f.suffix):
            continue
        unnamed.append(str(f.relative_to(tiny_run)))
    assert not unnamed, f"files of a run that RunLayout does not name: {unnamed}"
    for required in (lay.config, lay.cases, lay.predictions, lay.thresholds, lay.report):
        assert required.is_file()
    assert ArmLayout(lay.deep_dir("2ch")).spec.is_file()
    art = RunArtifacts(tiny_run)
    assert (
        set(art.cv_results) == {f for f in lay.families() if lay.cv_results(f).is_file()}
        and art.cv_results
    )


_HOLD_LOCK = """
import sys, time
from radfusion.pipeline.run import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def _holder(lock_file: Path) -> subprocess.Popen:
    """Another process that takes the run folder's lock and keeps it."""
    env = {**os.environ, "PYTHONPATH": str(SRC.parent)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(lock_file)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_on_a_locked_run_folder_is_refused(tiny_cohort, tmp_path):
    run_dir = tmp_path / "run"
    RunFolder(run_dir, StudyConfig())  # an existing run folder, not yet locked
    cfg = tmp_path / "study.yaml"
    data = {"manifest": str(tiny_cohort), "clinical": {"numeric": ["age"], "categorical": []}}
    cfg.write_text(yaml.safe_dump({"preset": "demo", "data": data}))
    proc = _holder(RunLayout(run_dir).lock_file)
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    try:
        res = CliRunner().invoke(app, ["run", str(cfg), "--run-dir", str(run_dir)])
        assert res.exit_code == 2, res.output
        message = " ".join(res.output.split())
        assert f"PID {proc.pid}" in message and "in use by another radfusion process" in message
        assert "then run the same command again" in message
        # refused before anything was written
        assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before
        with pytest.raises(RunFolderBusyError):
            RunFolder(run_dir, StudyConfig()).lock()
    finally:
        proc.kill()
        proc.wait()


def test_the_stale_lock_of_a_killed_run_is_taken_over(tmp_path, caplog):
    run_dir = tmp_path / "run"
    lock_file = RunLayout(run_dir).lock_file
    RunFolder(run_dir, StudyConfig())
    proc = _holder(lock_file)
    pid = proc.pid
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert f'"pid": {pid}' in lock_file.read_text()  # the killed run's record stays
    run = RunFolder(run_dir, StudyConfig())
    with caplog.at_level(logging.WARNING, logger="radfusion"):
        run.lock()
    assert f"PID {pid}" in caplog.text and "did not finish" in caplog.text
    assert f'"pid": {os.getpid()}' in lock_file.read_text()
    run.unlock()
    assert lock_file.read_text() == ""  # released cleanly: nothing stale left
    run.lock()  # and taken again without a warning
    run.unlock()


def test_every_file_of_an_exported_bundle_is_named_by_the_bundle_layout(tiny_run):
    """The bundle holds exactly the files BundleLayout names for its models and networks."""
    bundle = load_bundle(RunLayout(tiny_run).bundle_dir)
    lay = bundle.layout
    preds = pd.read_parquet(RunLayout(tiny_run).predictions)
    ids = {
        ModelId.from_record(r.family, r.classifier, r.model)
        for r in preds[["family", "classifier", "model"]].drop_duplicates().itertuples()
    }
    expected = {lay.meta, lay.digest, lay.config, lay.radiomics_params}
    for model in ids:
        if model.family not in DEEP_ARMS:
            expected.add(lay.file(lay.model_rel(model)))
        arm = model.family if model.family in DEEP_ARMS else MERGED_ARMS.get(model.family)
        if arm:  # a deep arm's own model, or the Merged model built on it
            expected |= {lay.network(arm).spec, lay.network(arm).weights}
    assert {m.family for m in ids} >= {"radiomics", "1ch", "merged1", "stacked", "clinical"}
    on_disk = {p for p in lay.root.rglob("*") if p.is_file()}
    assert on_disk == expected
    # bundle.json lists every file but its own description, digest and signature
    listed = {lay.file(rel) for rel in bundle.meta["files"]}
    assert listed == expected - {lay.meta, lay.digest}
    assert {e["model"] for e in bundle.models} == {m.name for m in ids}
