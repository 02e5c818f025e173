"""What makes a stage rerun: data file contents (not the manifest alone) and, for the deep
arms, only what invalidates training."""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from radfusion.config import StudyConfig
from radfusion.pipeline import study as study_mod
from radfusion.pipeline.run import RunFolder
from radfusion.pipeline.study import StudyContext, run_study
from radfusion.synth import generate_cohort

from .conftest import tiny_config

TINY = tiny_config(
    name="keys",
    models={"classifiers": ["LR"]},
    deep={"epochs": 1, "patience": 1, "gradcam_cases": 0},
    fusion=None,
    evaluation=None,
    reproducibility=None,
)


@pytest.fixture(scope="module")
def source_cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    return generate_cohort(root, n=36, seed=5, prevalence=0.35, image_shape=(96, 128))


def _cfg(manifest: Path, out: Path, **deep) -> StudyConfig:
    raw = copy.deepcopy(TINY)
    raw["deep"].update(deep)
    return StudyConfig.from_dict(
        {**raw, "data": {"manifest": str(manifest)}, "output_dir": str(out)}
    )


def _run(cfg: StudyConfig, until: str) -> dict[str, str]:
    states: dict[str, str] = {}

    def record(stage: str, state: str) -> None:
        if state != "done":
            states[stage] = state

    run_study(cfg, until=until, progress=False, on_stage=record)
    return states


def test_a_changed_data_file_reruns_exactly_the_stages_that_read_it(
    source_cohort, tmp_path, caplog, monkeypatch
):
    # The keys decide what reruns; the heavy stages' work (extraction, training) is not
    # what is tested here, so they record their call instead of doing it.
    monkeypatch.setattr(study_mod, "stage_radiomics", lambda ctx: None)
    monkeypatch.setattr(study_mod, "stage_deep", lambda ctx, arm: None)
    root = tmp_path / "cohort"
    shutil.copytree(source_cohort.parent, root)
    manifest = root / source_cohort.name
    table = pd.read_csv(manifest, dtype=str)
    cfg = _cfg(manifest, tmp_path / "run")
    first = _run(cfg, "deep_2ch")
    assert set(first.values()) == {"running"}

    # touched, same content: nothing reruns
    img = root / table["image"].iloc[0]
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 10**9))
    assert set(_run(cfg, "deep_2ch").values()) == {"skipped"}

    # a second reader's mask redrawn: read by validate, radiomics (ICC) and the 2ch arm only
    r2 = root / table["mask_reader2"].iloc[1]
    mask = np.asarray(Image.open(r2)) > 0
    Image.fromarray((np.roll(mask, 3, axis=1) * 255).astype(np.uint8)).save(r2)
    caplog.set_level(logging.WARNING, logger="radfusion")
    states = _run(cfg, "deep_2ch")
    assert states == {
        "validate": "running",
        "split": "skipped",
        "radiomics": "running",
        "deep_1ch": "skipped",
        "deep_2ch": "running",
    }
    assert f"data file changed since the last run: {r2}" in caplog.text

    # an image replaced by another (same manifest): every stage that reads images reruns;
    # a mirrored image, since an exact copy of another patient's image would be a duplicate
    # that the split keeps with it (split.join_duplicates), which reruns the split too
    caplog.clear()
    Image.fromarray(np.asarray(Image.open(root / table["image"].iloc[2]))[:, ::-1]).save(img)
    states = _run(cfg, "deep_2ch")
    assert states == {
        "validate": "running",
        "split": "skipped",
        "radiomics": "running",
        "deep_1ch": "running",
        "deep_2ch": "running",
    }
    assert f"data file changed since the last run: {img}" in caplog.text


def _deep_keys(manifest: Path, out: Path, arm: str, **deep) -> tuple[str, str]:
    """(stage key, training key) of a deep arm under these deep settings."""
    cfg = _cfg(manifest, out, **deep)
    run = RunFolder(out, cfg)
    ctx = StudyContext(run, cfg, progress=False)
    ctx.keys.update({"_data": "manifest", "split": "split-key"})
    stage = run.stage_key(f"deep_{arm}", study_mod._stage_parts(ctx, f"deep_{arm}"))
    training = getattr(study_mod, "_deep_training", None)
    return stage, (study_mod.json_sha256(training(ctx, arm)) if training else stage)


def test_runtime_only_deep_settings_neither_rerun_nor_retrain(source_cohort, tmp_path):
    base = _deep_keys(source_cohort, tmp_path, "2ch")
    for runtime in (
        {"device": "cpu"},
        {"num_workers": 3},
        {"amp": False},
        {"arms": ["2ch"]},  # dropping the other arm
    ):
        assert _deep_keys(source_cohort, tmp_path, "2ch", **runtime) == base, runtime
    # output-only: the stage reruns (new Grad-CAMs) but the training is kept
    stage, training = _deep_keys(source_cohort, tmp_path, "2ch", gradcam_cases=3)
    assert stage != base[0] and training == base[1]
    # what is learnt changes: both change
    for learnt in ({"epochs": 2}, {"lr": 0.0123}, {"image_size": 48}):
        stage, training = _deep_keys(source_cohort, tmp_path, "2ch", **learnt)
        assert stage != base[0] and training != base[1], learnt


def test_a_run_leaves_the_radfusion_logger_level_as_it_was(source_cohort, tmp_path):
    logger = logging.getLogger("radfusion")
    before = logger.level
    logger.setLevel(logging.ERROR)
    try:
        _run(_cfg(source_cohort, tmp_path / "run"), until="split")
        assert logger.level == logging.ERROR
        assert "stage split: done" in (tmp_path / "run" / "logs" / "run.log").read_text()
    finally:
        logger.setLevel(before)


def test_near_duplicates_of_different_patients_share_a_split_and_a_group(
    source_cohort, tmp_path, caplog
):
    cohort = tmp_path / "cohort"
    shutil.copytree(source_cohort.parent, cohort)
    manifest = cohort / source_cohort.name
    _run(_cfg(manifest, tmp_path / "before"), until="split")
    cases = pd.read_csv(tmp_path / "before" / "cases.csv", dtype=str).set_index("case_id")
    a = cases.index[cases["split"] == "train"][0]
    other_patient = cases["patient_id"] != cases.loc[a, "patient_id"]
    b = cases.index[(cases["split"] == "test") & other_patient][0]
    table = pd.read_csv(manifest, dtype=str).set_index("case_id")
    # b's image becomes a re-saved copy of a's (a little noise: not pixel-identical)
    img = np.asarray(Image.open(cohort / table.loc[a, "image"]), dtype=float)
    noisy = img + np.random.default_rng(0).normal(0, 1.5, img.shape)
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(cohort / table.loc[b, "image"])

    with caplog.at_level(logging.WARNING, logger="radfusion"):
        _run(_cfg(manifest, tmp_path / "after"), until="split")
    after = pd.read_csv(tmp_path / "after" / "cases.csv", dtype=str).set_index("case_id")
    assert after.loc[a, "split"] == after.loc[b, "split"]
    val = json.loads((tmp_path / "after" / "validation.json").read_text())
    assert [a, b] in val["summary"]["duplicate_clusters_across_groups"]
    assert after.loc[a, "group"] == after.loc[b, "group"]  # inner-CV folds keep them too
    assert after.loc[a, "patient_id"] != after.loc[b, "patient_id"]
    said = "kept in one split group (split.join_duplicates)"
    assert any(said in r.message for r in caplog.records)
