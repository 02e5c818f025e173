"""When a deep arm's training may resume and when it starts afresh.

A checkpoint, an arm folder or a cross-fitting fold is resumed only by a run training the
same thing: the same settings (:func:`training_settings`, which the study's ``deep_<arm>``
stage key uses too), data and initial weights (:func:`training_fingerprint`). Folders
left by a run with another identity are emptied first, so a stale checkpoint is never
resumed. The input caches are content-keyed and kept.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from radfusion.config import StudyConfig
from radfusion.deep.inputs import InputRow, InputSpec
from radfusion.layout import ArmLayout, CrossfitLayout
from radfusion.neutral import neutral_names

log = logging.getLogger(__name__)

# Which arms the study trains: not this arm's business (dropping the other arm keeps it).
_OTHER_ARMS = {"arms"}
# Settings that change what an arm writes after training, not the training.
_OUTPUT_ONLY = {"gradcam_cases"}


def training_settings(cfg: StudyConfig, arm: str) -> dict[str, Any]:
    """The settings whose change invalidates an arm's training (and nothing else).

    The one place that decides: the checkpoint fingerprint
    (:func:`radfusion.deep.arm.run_deep_arm`) and the study's ``deep_<arm>`` stage key
    both use it. Left out: the result-neutral settings (:mod:`radfusion.neutral`: a
    checkpoint resumes under other values of ``device``, ``num_workers``...), which arms
    the study trains, output-only settings (``gradcam_cases``, see
    :func:`output_settings`) and the path of the pretrained weights (their content
    counts; the caller adds its hash). ``amp`` and ``compile`` count: they change a
    GPU's numerics.
    The data (cases, assignment, file contents) is the caller's to add too.

    Parameters
    ----------
    cfg : StudyConfig
    arm : {"1ch", "2ch"}

    Returns
    -------
    dict
        JSON-ready: arm, input spec (crop margin included for the 2ch ROI crop), deep
        training settings, seed and augmentation noise.
    """
    spec = InputSpec.from_config(arm, cfg.deep, cfg.preprocess)  # type: ignore[arg-type]
    left_out = neutral_names("deep") | _OTHER_ARMS | _OUTPUT_ONLY | {"pretrained_weights"}
    deep = {k: v for k, v in cfg.deep.model_dump(mode="json").items() if k not in left_out}
    settings = {
        "arm": arm,
        "spec": spec.to_dict(),
        "deep": deep,
        "seed": cfg.seed,
        "noise_std": cfg.augment.noise_std,
    }
    if cfg.reproducibility.mode != "fast":  # other kernels: keys of fast runs unchanged
        settings["reproducibility"] = cfg.reproducibility.model_dump(mode="json")
    return settings


def output_settings(cfg: StudyConfig) -> dict[str, Any]:
    """Deep settings that change an arm's outputs (Grad-CAMs) but not its training."""
    return {k: v for k, v in cfg.deep.model_dump(mode="json").items() if k in _OUTPUT_ONLY}


def training_fingerprint(
    arm: str,
    cfg: StudyConfig,
    keys: dict[str, str],
    train_rows: Sequence[InputRow],
    val_rows: Sequence[InputRow],
    pretrained_sha: str | None,
) -> dict[str, Any]:
    """The identity of one training: settings, initial weights and every sample (by content)."""

    def rows(rs: Sequence[InputRow]) -> list[tuple[str, str, int, str, int]]:
        return [(r.case_id, keys[r.source_case_id], r.label, r.ops, r.noise_seed) for r in rs]

    return {
        **training_settings(cfg, arm),
        "pretrained_sha256": pretrained_sha,
        "train": rows(train_rows),
        "val": rows(val_rows),
    }


def discard_stale_training(out: Path, key: str) -> None:
    """Start an arm afresh when its training inputs changed; resume it when they did not.

    The arm folder records the training key it is training for (the study's: see
    :mod:`radfusion.pipeline.stages.deep`). A checkpoint left by a run with other
    training settings or data is removed, with its results; one left by an interrupted
    run with the same key is resumed. The input cache is content-keyed and kept.
    """
    arm = ArmLayout(out)
    marker = arm.training_key
    previous = marker.read_text().strip() if marker.is_file() else None
    if previous != key and arm.checkpoint.exists():
        log.info("%s: settings or data changed since the last training; starting afresh", out)
        for item in out.iterdir():
            if item == arm.cache:
                continue
            if item.is_dir():
                shutil.rmtree(item)
            else:
                item.unlink()
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(key + "\n")


def finished_fold_scores(files: CrossfitLayout, k: int, key: str) -> pd.DataFrame | None:
    """The scores of a fold finished earlier with the same identity ``key``, else None."""
    record_path = files.fold_record(k)
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    if record.get("key") == key and files.fold_scores(k).is_file():
        return pd.read_parquet(files.fold_scores(k))
    return None


def claim_fold_dir(files: CrossfitLayout, k: int, key: str) -> None:
    """Make fold ``k``'s folder the folder of the fold with identity ``key``.

    A folder left by a fold trained on other data or settings is emptied first, so its
    checkpoint is not resumed; one of the same fold keeps its checkpoint.
    """
    marker = files.fold_key(k)
    fdir = files.fold_dir(k)
    if fdir.exists() and (not marker.is_file() or marker.read_text().strip() != key):
        shutil.rmtree(fdir)  # trained on other data or settings: start this fold afresh
    fdir.mkdir(parents=True, exist_ok=True)
    marker.write_text(key + "\n")
