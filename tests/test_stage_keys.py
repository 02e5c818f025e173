"""What makes a stage rerun: data file contents (not the manifest alone) and, for the deep
arms, only what invalidates training."""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Literal, get_args, get_origin

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydantic import BaseModel
from pydantic.fields import FieldInfo

import radfusion
from radfusion.config import StudyConfig
from radfusion.pipeline import stages
from radfusion.pipeline.context import StudyContext
from radfusion.pipeline.run import RunFolder
from radfusion.pipeline.stages.deep import deep_training
from radfusion.pipeline.study import run_study, stage_key
from radfusion.synth import generate_cohort
from radfusion.utils import json_sha256

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
    heavy = {"radiomics", "deep_1ch", "deep_2ch"}
    monkeypatch.setattr(
        stages,
        "STAGES",
        tuple(replace(s, run=lambda ctx: None) if s.name in heavy else s for s in stages.STAGES),
    )
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
    (deep,) = [s for s in stages.STAGES if s.name == f"deep_{arm}"]
    stage = run.stage_key(deep.name, deep.inputs(ctx, ["split-key"]))
    return stage, json_sha256(deep_training(ctx, arm, "split-key"))


def test_result_neutral_deep_settings_neither_rerun_nor_retrain(source_cohort, tmp_path):
    base = _deep_keys(source_cohort, tmp_path, "2ch")
    for runtime in (
        {"device": "cpu"},
        {"num_workers": 3},
        {"eval_batch_size": 4},
        {"arms": ["2ch"]},  # dropping the other arm
    ):
        assert _deep_keys(source_cohort, tmp_path, "2ch", **runtime) == base, runtime
    # output-only: the stage reruns (new Grad-CAMs) but the training is kept
    stage, training = _deep_keys(source_cohort, tmp_path, "2ch", gradcam_cases=3)
    assert stage != base[0] and training == base[1]
    # what is learnt changes: both change
    # amp and compile too: mixed precision and compiled kernels change a GPU's numerics
    for learnt in (
        {"epochs": 2},
        {"lr": 0.0123},
        {"image_size": 48},
        {"amp": False},
        {"compile": True},
    ):
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


# --- result-neutral settings ---------------------------------------------------------
#: Every setting is read by some stage here: ComBat on, strict numerics, clinical columns.
SETTINGS_BASE = {
    **copy.deepcopy(TINY),
    "harmonization": {"method": "combat", "covariates": ["age"]},
    "reproducibility": {"mode": "strict"},
}

#: The first stage whose key a changed setting must change (by section, then by field).
READER = {
    "name": "report",
    "seed": "split",
    "output_dir": "report",
    "data": "validate",
    "preprocess": "radiomics",
    "augment": "split",
    "split": "split",
    "radiomics": "radiomics",
    "selection": "radiomics",
    "models": "radiomics",
    "deep": "deep_1ch",
    "deep.roi_crop_2ch": "deep_2ch",  # the 1ch input holds no ROI
    "deep.arms": "fusion",
    "fusion": "fusion",
    "fusion.stacking": "stacking",
    "fusion.stacking_folds": "stacking",
    "fusion.stacking_arms": "stacking",
    "fusion.stacking_clinical": "stacking",
    "fusion.stacking_c": "stacking",
    "harmonization": "radiomics",
    "evaluation": "evaluation",
    "evaluation.selection_split": "radiomics",
    "reproducibility": "radiomics",
}

#: The split fractions change in pairs, so that they still sum to one.
FRACTIONS = {
    "split.train": {"train": 0.6, "test": 0.25},
    "split.val": {"train": 0.65, "val": 0.2},
    "split.test": {"train": 0.65, "test": 0.2},
}

#: Changed values where "the next valid value" cannot be guessed from the type.
CHANGED: dict[str, object] = {
    "name": "other",
    "output_dir": "elsewhere",
    "data.clinical": {"numeric": ["age"]},
    "data.group_column": "center",
    "data.mask_label": 255,
    "split.test_center": "H1",
    "radiomics.params": "{params}",  # the shipped file 'paper' names, by its path
    "radiomics.dask_scheduler": "tcp://127.0.0.1:8786",
    "radiomics.cache_dir": "{tmp}/cache",
    "selection.max_features": 5,
    "models.classifiers": ["LR", "RF"],
    "deep.arms": ["1ch"],
    "deep.pretrained_weights": "{tmp}/weights.pt",
    "deep.eval_batch_size": 8,
    "fusion.stacking_arms": ["radiomics", "1ch"],
    "harmonization.batch_column": "sex",
    "harmonization.covariates": ["age", "sex"],
    "evaluation.outcome_name": "other outcome",
    "evaluation.class_names": ["a", "b"],
    "evaluation.subgroups": ["center"],
    "evaluation.subgroup_bins": {"age": [40.0]},
    "evaluation.sample_size_r2": 0.1,
}


def _fields() -> list[str]:
    from radfusion.config import StudyConfig

    out = []
    for name, field in StudyConfig.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out += [f"{name}.{f}" for f in sub.model_fields]
        else:
            out.append(name)
    return out


def _changed(path: str, current: object, tmp: Path) -> object:
    """Another valid value of a setting."""
    if path in CHANGED:
        value = CHANGED[path]
        if isinstance(value, str):
            params = Path(radfusion.__file__).parent / "presets" / "radiomics_paper.yaml"
            value = value.format(tmp=tmp, params=params)
        return value
    field = _field(path)
    if isinstance(current, bool):
        return not current
    if get_origin(field.annotation) is Literal:
        return next(v for v in get_args(field.annotation) if v != current)
    if isinstance(current, int):
        return current + 1
    if isinstance(current, float):
        return current * 0.9 if current else 0.05
    raise AssertionError(f"give {path} a changed value in CHANGED")


def _field(path: str) -> FieldInfo:
    from radfusion.config import StudyConfig

    section, _, name = path.partition(".")
    field = StudyConfig.model_fields[section]
    return field.annotation.model_fields[name] if name else field  # type: ignore[union-attr]


def _all_keys(raw: dict, manifest: Path, out: Path) -> dict[str, str]:
    """Every enabled stage's key under these settings (nothing is run)."""
    raw = {**raw, "data": {**raw.get("data", {}), "manifest": str(manifest)}}
    cfg = StudyConfig.from_dict({"output_dir": str(out), **raw})
    ctx = StudyContext(RunFolder(out, cfg), cfg, progress=False)
    ctx.keys["_data"] = "manifest"
    if cfg.deep.pretrained_weights:  # its content counts, not its path
        ctx.file_hashes[str(cfg.deep.pretrained_weights)] = "weights-sha256"
    for stage in stages.STAGES:
        if stage.enabled(cfg):
            ctx.keys[stage.name] = stage_key(ctx, stage)
    return {k: v for k, v in ctx.keys.items() if k != "_data"}


@pytest.mark.parametrize("path", _fields())
def test_result_neutral_settings_keep_every_stage_and_others_rerun_their_readers(
    path, source_cohort, tmp_path
):
    from radfusion.neutral import RESULT_NEUTRAL

    neutral = {f"{s.section}.{s.name}" for s in RESULT_NEUTRAL}
    base = copy.deepcopy(SETTINGS_BASE)
    base["data"] = {"clinical": {"numeric": ["age", "calcium"], "categorical": ["sex"]}}
    out = tmp_path / "run"
    before = _all_keys(base, source_cohort, out)
    section, _, name = path.partition(".")
    changed = copy.deepcopy(base)
    manifest = source_cohort
    if path == "data.manifest":  # the same cohort under another name
        manifest = source_cohort.with_name("manifest_copy.csv")
        shutil.copy(source_cohort, manifest)
    elif path in FRACTIONS:
        changed["split"] = {**changed.get("split", {}), **FRACTIONS[path]}
    else:
        config = StudyConfig.from_dict(base)
        current = getattr(getattr(config, section), name) if name else getattr(config, section)
        value = _changed(path, current, tmp_path)
        assert value != current, path  # a real change
        if name:
            changed.setdefault(section, {})[name] = value
        else:
            changed[section] = value
    after = _all_keys(changed, manifest, out)
    rerun = {s for s in before.keys() | after.keys() if before.get(s) != after.get(s)}
    if path in neutral:
        assert rerun == set(), path
    else:
        reader = READER.get(path, READER[section])
        assert reader in rerun, (path, sorted(rerun))
