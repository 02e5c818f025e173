"""One deep-learning arm (1ch or 2ch ResNet) from cohort to features: a run is a folder.

:func:`run_deep_arm` builds the inputs, trains (resuming when the folder holds a
checkpoint), and writes under ``out_dir`` (the names are :class:`radfusion.layout.ArmLayout`'s):

``network.safetensors``
    The selected (best-validation) weights; safetensors, so loading never runs code.
``network.json``
    Architecture, input geometry and normalisation, training settings and outcome,
    pretrained-weight provenance, library versions, weights SHA-256.
``checkpoint.pt``
    The resumable training state (see :mod:`radfusion.deep.train`).
``history.csv`` / ``history.png``
    Per-epoch loss and train / validation AUC (the paper's Figure S2).
``features.parquet``
    Index ``case_id``; columns ``split``, ``label``, ``source_case_id`` then the
    global-average-pool features ``dl<arm>_0000`` ... for every case and every
    planned augmented copy (``source_case_id`` differs from ``case_id`` for copies).
    :func:`read_deep_features` splits it back into features and metadata.
``features_reader2.parquet``
    2ch only, when cases have ``mask_reader2``: the same features with the second
    reader's ROI as mask channel (original cases only), for the ICC filter. The 1ch
    input contains no ROI, so its features do not depend on the reader (ICC = 1).
``predictions.parquet``
    ``case_id``, ``split``, ``label``, ``model``, ``probability`` (original cases).
``gradcam/*.png``
    Grad-CAM overlays for a few test cases (the most and least confident correct call
    per class).
``cache/``
    Cached network inputs (unless ``cache_dir`` points elsewhere).

:func:`load_trained_network` and :func:`predict_cases` score new images later.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

import radfusion
from radfusion.config import DeepConfig, StudyConfig
from radfusion.data import Case, Cohort
from radfusion.deep.features import (
    InferenceOutput,
    features_frame,
    infer,
    resolve_device,
)
from radfusion.deep.gradcam import gradcam_map, save_gradcam_overlay
from radfusion.deep.inputs import (
    DeepDataset,
    InputCache,
    InputRow,
    InputSpec,
    build_inputs,
    input_rows,
    random_transforms,
    standardize,
)
from radfusion.deep.networks import build_resnet, feature_dim
from radfusion.deep.train import EpochRecord, TrainResult, train_network
from radfusion.deep.weights import load_imagenet_weights
from radfusion.errors import ConfigError, RadfusionError
from radfusion.families import ModelId
from radfusion.layout import ArmLayout, CrossfitLayout
from radfusion.stats import auc_or_nan
from radfusion.utils import (
    atomic_path,
    atomic_write_json,
    file_sha256,
    json_sha256,
    safe_filename,
)

log = logging.getLogger(__name__)

WEIGHTS_FILE = ArmLayout.WEIGHTS
SPEC_FILE = ArmLayout.SPEC
SPEC_FORMAT = "radfusion-deep-network/1"
META_COLUMNS = ("split", "label", "source_case_id")
# Settings that do not change what is learnt: a run may resume with other values.
_RUNTIME_ONLY = {"arms", "device", "amp", "num_workers", "eval_batch_size", "compile"}
# Settings that change what an arm writes after training, not the training.
_OUTPUT_ONLY = {"gradcam_cases"}


@dataclass(frozen=True)
class NetworkSpec:
    """What is needed to rebuild and feed a trained network.

    Attributes
    ----------
    arm : {"1ch", "2ch"}
    depth : int
    input : InputSpec
        Input geometry and normalisation.
    """

    arm: str
    depth: int
    input: InputSpec

    @property
    def in_channels(self) -> int:
        return self.input.in_channels

    @property
    def feature_dim(self) -> int:
        return feature_dim(self.depth)

    @property
    def model_name(self) -> str:
        return ModelId.network(self.arm, self.depth).name

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm,
            "depth": self.depth,
            "model_name": self.model_name,
            "in_channels": self.in_channels,
            "num_classes": 1,
            "output": "sigmoid(logit) = probability of label 1 (APT/PC, malignant)",
            "feature_dim": self.feature_dim,
            "feature_layer": "global average pool (flattened), before fc",
            "architecture": "MONAI ResNet, 2D, canonical He et al. 2016 (conv1 7x7/2, "
            "max-pool, projection shortcuts without bias)",
            "input": self.input.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetworkSpec:
        return cls(arm=d["arm"], depth=int(d["depth"]), input=InputSpec.from_dict(d["input"]))


@dataclass
class DeepArmResult:
    """Everything one arm produced (also on disk under ``out_dir``).

    Attributes
    ----------
    arm, model_name : str
    out_dir : Path
    features : DataFrame
        Index case_id (cases and augmented copies); only the ``dl<arm>_*`` columns.
    meta : DataFrame
        Same index: ``split``, ``label``, ``source_case_id``.
    features_reader2 : DataFrame or None
        2ch features with the reader-2 ROI (original cases that have one).
    predictions : DataFrame
        ``case_id``, ``split``, ``label``, ``model``, ``probability``.
    history : DataFrame
        Per-epoch training history.
    best_epoch : int
    selection : str
        ``val_auc``, ``val_loss`` or ``last_epoch``.
    best_score : float
    spec : NetworkSpec
    weights_path : Path
    gradcam_paths : list of Path
    """

    arm: str
    model_name: str
    out_dir: Path
    features: pd.DataFrame
    meta: pd.DataFrame
    features_reader2: pd.DataFrame | None
    predictions: pd.DataFrame
    history: pd.DataFrame
    best_epoch: int
    selection: str
    best_score: float
    spec: NetworkSpec
    weights_path: Path
    gradcam_paths: list[Path] = field(default_factory=list)


# --- helpers -------------------------------------------------------------------
def _check_arm(arm: str) -> None:
    if arm not in ("1ch", "2ch"):
        raise ConfigError(f"unknown deep arm {arm!r}; use '1ch' or '2ch'")


def _check_assignment(cohort: Cohort, assignment: pd.Series) -> pd.Series:
    assignment = assignment.astype(str)
    ids = list(cohort.case_ids)
    missing = [c for c in ids if c not in assignment.index]
    if missing:
        raise ConfigError(
            f"{len(missing)} case(s) have no train/val/test assignment: {missing[:10]}"
        )
    bad = sorted(set(assignment.reindex(ids)) - {"train", "val", "test"})
    if bad:
        raise ConfigError(f"unknown split value(s) {bad}; use train / val / test")
    return assignment.reindex(ids)


def training_settings(cfg: StudyConfig, arm: str) -> dict[str, Any]:
    """The settings whose change invalidates an arm's training (and nothing else).

    The one place that decides: the checkpoint fingerprint (:func:`run_deep_arm`) and the
    study's ``deep_<arm>`` stage key both use it. Left out: runtime-only settings
    (``arms``, ``device``, ``amp``, ``num_workers``: a checkpoint resumes under other
    values), output-only ones (``gradcam_cases``, see :func:`output_settings`) and the
    path of the pretrained weights (their content counts; the caller adds its hash).
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
    deep = {
        k: v
        for k, v in cfg.deep.model_dump(mode="json").items()
        if k not in _RUNTIME_ONLY | _OUTPUT_ONLY | {"pretrained_weights"}
    }
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


def _fingerprint(
    arm: str,
    cfg: StudyConfig,
    keys: dict[str, str],
    train_rows: Sequence[InputRow],
    val_rows: Sequence[InputRow],
    pretrained_sha: str | None,
) -> dict[str, Any]:
    def rows(rs: Sequence[InputRow]) -> list[tuple[str, str, int, str, int]]:
        return [(r.case_id, keys[r.source_case_id], r.label, r.ops, r.noise_seed) for r in rs]

    return {
        **training_settings(cfg, arm),
        "pretrained_sha256": pretrained_sha,
        "train": rows(train_rows),
        "val": rows(val_rows),
    }


def _save_weights(model: nn.Module, path: Path, name: str) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        # One metadata entry: safetensors writes its metadata map in hash order, which
        # changes from process to process, so two entries would make identical weights
        # differ in their bytes.
        save_file(state, str(tmp), metadata={"format": f"{SPEC_FORMAT}; {name}"})


def plot_history(history: pd.DataFrame, path: Path, title: str, best_epoch: int = 0) -> Path:
    """Epoch-AUC and epoch-loss curves, train vs validation (the paper's Figure S2).

    Parameters
    ----------
    history : DataFrame
        Columns ``epoch``, ``train_auc``, ``val_auc``, ``train_loss``, ``val_loss``.
    path : Path
        Output PNG (written atomically).
    title : str
    best_epoch : int
        Marked with a dashed line when > 0.

    Returns
    -------
    Path
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8.0, 3.4), dpi=110)
    ax_auc, ax_loss = fig.subplots(1, 2)
    for ax, metric, label in ((ax_auc, "auc", "AUC"), (ax_loss, "loss", "loss")):
        for split, style in (("train", "-o"), ("val", "-s")):
            col = f"{split}_{metric}"
            if col in history and history[col].notna().any():
                name = "training" if split == "train" else "validation"
                ax.plot(history["epoch"], history[col], style, ms=3, label=name)
        if best_epoch:
            ax.axvline(best_epoch, color="grey", ls="--", lw=0.8, label=f"selected ({best_epoch})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_auc.set_ylim(0.0, 1.02)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def read_deep_features(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a ``features.parquet`` into ``(features, meta)`` (see the module docstring)."""
    table = pd.read_parquet(path, engine="pyarrow")
    meta_cols = [c for c in META_COLUMNS if c in table.columns]
    return table.drop(columns=meta_cols), table[meta_cols]


def _gradcam_cases(pred: pd.DataFrame, n: int) -> list[str]:
    """Up to ``n`` test cases (else val, else train): most and least confident correct calls."""
    for split in ("test", "val", "train"):
        sub = pred[pred["split"] == split]
        if len(sub):
            break
    else:
        return []
    picks: list[str] = []
    p_true = np.where(sub["label"] == 1, sub["probability"], 1 - sub["probability"])
    sub = sub.assign(p_true=p_true).sort_values(["p_true", "case_id"], ascending=[False, True])
    per_class = [sub[sub["label"] == k]["case_id"].tolist() for k in (1, 0)]
    rank = 0
    while len(picks) < n and any(rank < len(c) for c in per_class):
        for ids in per_class:  # best first, then worst, alternating classes
            for cid in (ids[rank] if rank < len(ids) else None, ids[-1 - rank] if ids else None):
                if cid is not None and cid not in picks and len(picks) < n:
                    picks.append(cid)
        rank += 1
    return picks


@dataclass
class _ArmInputs:
    """An arm's network inputs for every case and planned copy (built once, cached)."""

    arm: str
    spec: InputSpec
    net_spec: NetworkSpec
    cases: list[Case]
    split: pd.Series
    arrays: dict[str, np.ndarray]
    rows: list[InputRow]
    keys: dict[str, str]
    cache: InputCache


def _prepare_arm(
    cohort: Cohort,
    assignment: pd.Series,
    cfg: StudyConfig,
    arm: str,
    cache_dir: Path,
    augmentations: pd.DataFrame | None,
    progress: bool,
) -> _ArmInputs:
    split = _check_assignment(cohort, assignment)
    cases = cohort.cases()
    spec = InputSpec.from_config(arm, cfg.deep, cfg.preprocess)  # type: ignore[arg-type]
    cache = InputCache(cache_dir, cfg.data.dicom_frame, cfg.data.mask_label)
    arrays = build_inputs(cases, spec, cache, progress=progress)
    return _ArmInputs(
        arm=arm,
        spec=spec,
        net_spec=NetworkSpec(arm, cfg.deep.depth, spec),
        cases=cases,
        split=split,
        arrays=arrays,
        rows=input_rows(cases, split, augmentations),
        keys={c.case_id: cache.case_key(c, spec) for c in cases},
        cache=cache,
    )


def _init_network(cfg: StudyConfig, spec: InputSpec) -> tuple[nn.Module, dict[str, Any] | None]:
    """A freshly initialised network (seeded), ImageNet weights loaded when configured."""
    deep = cfg.deep
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_resnet(deep.depth, spec.in_channels, num_classes=1)
    pretrained: dict[str, Any] | None = None
    if deep.pretrained_weights is not None:
        report = load_imagenet_weights(model, deep.pretrained_weights)
        pretrained = {
            "path": str(deep.pretrained_weights),
            "sha256": file_sha256(deep.pretrained_weights),
            "tensors_loaded": report.loaded,
            "first_conv": report.first_conv_rule,
            "head": "new (not loaded)",
        }
    return model, pretrained


def _network_and_fingerprint(
    prep: _ArmInputs,
    cfg: StudyConfig,
    train_rows: Sequence[InputRow],
    val_rows: Sequence[InputRow],
) -> tuple[nn.Module, dict[str, Any] | None, dict[str, Any]]:
    """A fresh network, its pretrained-weight record and the identity of its training."""
    model, pretrained = _init_network(cfg, prep.spec)
    fingerprint = _fingerprint(
        prep.arm,
        cfg,
        prep.keys,
        train_rows,
        val_rows,
        pretrained["sha256"] if pretrained else None,
    )
    return model, pretrained, fingerprint


def _datasets(
    prep: _ArmInputs,
    cfg: StudyConfig,
    train_rows: Sequence[InputRow],
    val_rows: Sequence[InputRow],
) -> tuple[DeepDataset, DeepDataset | None]:
    spec = prep.spec
    transform = (
        random_transforms(spec.in_channels, spec.image_size) if cfg.deep.random_transforms else None
    )
    train_set = DeepDataset(prep.arrays, train_rows, cfg.augment.noise_std, transform, cfg.seed)
    val_set = DeepDataset(prep.arrays, val_rows, cfg.augment.noise_std) if val_rows else None
    return train_set, val_set


# --- steps of run_deep_arm -------------------------------------------------------
@dataclass
class _ArmTraining:
    """The outcome of training an arm's network, and what ``network.json`` records of it."""

    result: TrainResult
    pretrained: dict[str, Any] | None
    n_train_samples: int
    n_val_samples: int


def _train_arm(
    prep: _ArmInputs,
    cfg: StudyConfig,
    device: torch.device,
    out_dir: Path,
    progress: bool,
    on_epoch_end: Callable[[EpochRecord], None] | None,
) -> _ArmTraining:
    """Train (or resume) the arm's network on its training samples, selected on validation."""
    train_rows = [r for r in prep.rows if r.split == "train"]
    val_rows = [r for r in prep.rows if r.split == "val"]
    model, pretrained, fingerprint = _network_and_fingerprint(prep, cfg, train_rows, val_rows)
    train_set, val_set = _datasets(prep, cfg, train_rows, val_rows)
    result = train_network(
        model,
        train_set,
        val_set,
        cfg.deep,
        seed=cfg.seed,
        device=device,
        checkpoint_path=ArmLayout(out_dir).checkpoint,
        fingerprint=fingerprint,
        name=prep.net_spec.model_name,
        progress=progress,
        on_epoch_end=on_epoch_end,
    )
    return _ArmTraining(result, pretrained, len(train_rows), len(val_rows))


def _write_training_outputs(result: TrainResult, out_dir: Path, name: str) -> Path:
    """Write the selected weights, ``history.csv`` and ``history.png``; return the weights' path."""
    files = ArmLayout(out_dir)
    weights_path = files.weights
    _save_weights(result.model, weights_path, name)
    with atomic_path(files.history) as tmp:
        result.history.to_csv(tmp, index=False)
    plot_history(result.history, files.history_plot, f"{name}: epoch-AUC", result.best_epoch)
    return weights_path


def _infer_every_sample(
    model: nn.Module,
    prep: _ArmInputs,
    cfg: StudyConfig,
    device: torch.device,
    use_amp: bool,
    progress: bool,
) -> InferenceOutput:
    """Features and probabilities of every case and copy (evaluation mode, no random transform).

    Leaves ``model`` on ``device`` (channels-last on CUDA).
    """
    deep = cfg.deep
    all_set = DeepDataset(prep.arrays, prep.rows, cfg.augment.noise_std)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return infer(
        model,
        all_set,
        device=device,
        batch_size=deep.batch_size,
        amp=use_amp,
        num_workers=deep.num_workers,
        features=True,
        progress=progress,
        desc=f"{prep.net_spec.model_name} features",
    )


def _write_features(
    out: InferenceOutput, prep: _ArmInputs, out_dir: Path
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``features.parquet`` of every sample; returns ``(features, meta)`` indexed by case_id."""
    assert out.features is not None
    rows = prep.rows
    features = features_frame([r.case_id for r in rows], out.features, prep.arm)
    meta = pd.DataFrame(
        {
            "split": [r.split for r in rows],
            "label": [r.label for r in rows],
            "source_case_id": [r.source_case_id for r in rows],
        },
        index=features.index,
    )
    with atomic_path(ArmLayout(out_dir).features()) as tmp:
        pd.concat([meta, features], axis=1).to_parquet(tmp, engine="pyarrow")
    return features, meta


def _write_predictions(
    out: InferenceOutput, prep: _ArmInputs, meta: pd.DataFrame, out_dir: Path
) -> pd.DataFrame:
    """``predictions.parquet``: the network's probability for each original case (no copies)."""
    n_orig = len(prep.cases)
    predictions = pd.DataFrame(
        {
            "case_id": [r.case_id for r in prep.rows][:n_orig],
            "split": meta["split"].to_numpy()[:n_orig],
            "label": meta["label"].to_numpy()[:n_orig],
            "model": prep.net_spec.model_name,
            "probability": out.probabilities[:n_orig],
        }
    )
    with atomic_path(ArmLayout(out_dir).predictions) as tmp:
        predictions.to_parquet(tmp, engine="pyarrow", index=False)
    return predictions


def _write_reader2_features(
    model: nn.Module,
    prep: _ArmInputs,
    cfg: StudyConfig,
    meta: pd.DataFrame,
    device: torch.device,
    use_amp: bool,
    progress: bool,
    out_dir: Path,
) -> pd.DataFrame:
    """``features_reader2.parquet``: 2ch features with the second reader's ROI (for the ICC).

    Original cases that have a reader-2 ROI only; ``model`` is on ``device``.
    """
    deep = cfg.deep
    cases = prep.cases
    arrays2 = build_inputs(
        cases, prep.spec, prep.cache, mask_source="mask_reader2", progress=progress
    )
    rows2 = [InputRow(c.case_id, c.case_id, c.label, prep.split[c.case_id]) for c in cases]
    rows2 = [r for r in rows2 if r.case_id in arrays2]
    out2 = infer(
        model,
        DeepDataset(arrays2, rows2),
        device=device,
        batch_size=deep.batch_size,
        amp=use_amp,
        num_workers=deep.num_workers,
        features=True,
    )
    assert out2.features is not None
    features_r2 = features_frame([r.case_id for r in rows2], out2.features, prep.arm)
    meta2 = meta.loc[features_r2.index]
    with atomic_path(ArmLayout(out_dir).features(reader=2)) as tmp:
        pd.concat([meta2, features_r2], axis=1).to_parquet(tmp, engine="pyarrow")
    return features_r2


def _auc_by_split(predictions: pd.DataFrame) -> dict[str, float]:
    """AUC of the network's probabilities on each split (NaN where a split has one class)."""
    return {
        s: auc_or_nan(g["label"].to_numpy(), g["probability"].to_numpy())
        for s, g in predictions.groupby("split")
    }


def _write_network_record(
    out_dir: Path,
    net_spec: NetworkSpec,
    weights_path: Path,
    cfg: StudyConfig,
    device: torch.device,
    use_amp: bool,
    training: _ArmTraining,
    aucs: dict[str, float],
) -> None:
    """``network.json``: architecture, input, training settings and outcome, provenance."""
    result = training.result
    atomic_write_json(
        ArmLayout(out_dir).spec,
        {
            "format": SPEC_FORMAT,
            **net_spec.to_dict(),
            "weights": WEIGHTS_FILE,
            "weights_sha256": file_sha256(weights_path),
            "training": {
                "settings": cfg.deep.model_dump(mode="json"),
                "seed": cfg.seed,
                "device": str(device),
                "amp": use_amp,
                "loss": "BCEWithLogitsLoss"
                + (f" (pos_weight {result.pos_weight:.4g})" if result.pos_weight else ""),
                "n_train_samples": training.n_train_samples,
                "n_val_samples": training.n_val_samples,
                "epochs_run": len(result.history),
                "best_epoch": result.best_epoch,
                "selection": result.selection,
                "best_score": result.best_score,
                "stopped_early": result.stopped_early,
                "resumed_from_epoch": result.resumed_from,
                "auc_by_split": aucs,
            },
            "pretrained": training.pretrained,
            "versions": {
                "radfusion": radfusion.__version__,
                "torch": torch.__version__,
                "monai": _monai_version(),
                "python": platform.python_version(),
            },
        },
    )


# --- entry points ----------------------------------------------------------------
def run_deep_arm(
    cohort: Cohort,
    assignment: pd.Series,
    cfg: StudyConfig,
    arm: Literal["1ch", "2ch"] | str,
    out_dir: Path,
    augmentations: pd.DataFrame | None = None,
    progress: bool = True,
    *,
    cache_dir: Path | None = None,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
) -> DeepArmResult:
    """Train one arm end to end and extract its deep features (see the module docstring).

    Parameters
    ----------
    cohort : Cohort
        The validated cohort.
    assignment : Series
        case_id -> ``train`` / ``val`` / ``test`` for every case of the cohort.
    cfg : StudyConfig
        ``deep`` settings, plus ``seed``, ``augment.noise_std``, ``preprocess.margin`` (ROI
        crop) and ``data`` reader settings.
    arm : {"1ch", "2ch"}
    out_dir : Path
        The arm's run folder; a checkpoint there is resumed.
    augmentations : DataFrame, optional
        Planned minority copies (:func:`radfusion.preprocessing.plan_augmentation`); those of
        the training split are trained on, those of validation (``augment_validation``)
        validated on; all get features.
    progress : bool
        Progress bars.
    cache_dir : Path, optional
        Input cache (default ``out_dir / "cache"``); share it between runs to decode once.
    on_epoch_end : callable, optional
        Called with every :class:`~radfusion.deep.train.EpochRecord`.

    Returns
    -------
    DeepArmResult

    Raises
    ------
    ConfigError
        Unknown arm, missing assignments, ``cuda`` without a GPU.
    InputError
        Cases whose image or ROI cannot be turned into a network input (all listed).
    RadfusionError
        A checkpoint from another run, or an unusable pretrained weight file.
    """
    _check_arm(arm)
    out_dir = Path(out_dir)
    files = ArmLayout(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.deep.device)
    use_amp = bool(cfg.deep.amp and device.type == "cuda")
    prep = _prepare_arm(
        cohort, assignment, cfg, arm, cache_dir or files.cache, augmentations, progress
    )
    name = prep.net_spec.model_name
    training = _train_arm(prep, cfg, device, out_dir, progress, on_epoch_end)
    result = training.result
    model = result.model
    weights_path = _write_training_outputs(result, out_dir, name)
    out = _infer_every_sample(model, prep, cfg, device, use_amp, progress)
    features, meta = _write_features(out, prep, out_dir)
    predictions = _write_predictions(out, prep, meta, out_dir)
    features_r2 = None
    if arm == "2ch" and cohort.has("mask_reader2"):
        features_r2 = _write_reader2_features(
            model, prep, cfg, meta, device, use_amp, progress, out_dir
        )
    model.to("cpu", memory_format=torch.contiguous_format)
    gradcams = _write_gradcams(model, prep.arrays, predictions, cfg.deep, files.gradcam_dir, name)
    aucs = _auc_by_split(predictions)
    _write_network_record(
        out_dir, prep.net_spec, weights_path, cfg, device, use_amp, training, aucs
    )
    log.info(
        "%s: best epoch %d (%s), AUC by split %s", name, result.best_epoch, result.selection, aucs
    )
    return DeepArmResult(
        arm=arm,
        model_name=name,
        out_dir=out_dir,
        features=features,
        meta=meta,
        features_reader2=features_r2,
        predictions=predictions,
        history=result.history,
        best_epoch=result.best_epoch,
        selection=result.selection,
        best_score=result.best_score,
        spec=prep.net_spec,
        weights_path=weights_path,
        gradcam_paths=gradcams,
    )


# --- steps of crossfit_deep_arm --------------------------------------------------
def _check_folds(originals: Sequence[InputRow], fold_of: pd.Series) -> None:
    """Refuse training cases without a fold."""
    unassigned = [r.case_id for r in originals if r.split == "train" and r.case_id not in fold_of]
    if unassigned:
        raise ConfigError(f"{len(unassigned)} training case(s) have no fold: {unassigned[:10]}")


def _finished_fold_scores(files: CrossfitLayout, k: int, key: str) -> pd.DataFrame | None:
    """The scores of a fold finished earlier with the same identity ``key``, else None."""
    record_path = files.fold_record(k)
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    if record.get("key") == key and files.fold_scores(k).is_file():
        return pd.read_parquet(files.fold_scores(k))
    return None


def _claim_fold_dir(files: CrossfitLayout, k: int, key: str) -> None:
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


def _score_fold(
    model: nn.Module,
    prep: _ArmInputs,
    score_rows: Sequence[InputRow],
    cfg: StudyConfig,
    device: torch.device,
    use_amp: bool,
    k: int,
) -> pd.DataFrame:
    """Fold ``k``'s network's probabilities for its scored rows (``case_id`` ... ``probability``).

    Training rows are the fold's own held-out cases (``out_of_fold`` True); the rest are
    validation and test cases. Leaves ``model`` on the CPU.
    """
    net = model.to(device)
    out = infer(
        net,
        DeepDataset(prep.arrays, score_rows),
        device=device,
        batch_size=cfg.deep.batch_size,
        amp=use_amp,
        num_workers=cfg.deep.num_workers,
    )
    net.to("cpu")
    return pd.DataFrame(
        {
            "case_id": [r.case_id for r in score_rows],
            "split": [r.split for r in score_rows],
            "fold": int(k),
            "out_of_fold": [r.split == "train" for r in score_rows],
            "probability": out.probabilities.astype(float),
        }
    )


def _crossfit_fold(
    prep: _ArmInputs,
    cfg: StudyConfig,
    k: int,
    held: set[str],
    out_dir: Path,
    device: torch.device,
    use_amp: bool,
    progress: bool,
) -> pd.DataFrame:
    """Scores of fold ``k``: its network trained without the ``held`` cases (and their copies).

    A fold finished earlier with the same identity is read back; otherwise the network is
    trained (resuming its checkpoint), scores the held-out, validation and test cases, and
    ``scores.parquet`` and ``fold.json`` are written under ``out_dir / fold_<k>``.
    """
    originals = prep.rows[: len(prep.cases)]
    train_rows = [r for r in prep.rows if r.split == "train" and r.source_case_id not in held]
    val_rows = [r for r in prep.rows if r.split == "val"]
    score_rows = [r for r in originals if r.case_id in held or r.split in ("val", "test")]
    model, _, fingerprint = _network_and_fingerprint(prep, cfg, train_rows, val_rows)
    fingerprint["crossfit_fold"] = int(k)
    key = json_sha256(fingerprint)
    files = CrossfitLayout(out_dir)
    finished = _finished_fold_scores(files, k, key)
    if finished is not None:
        log.info("%s fold %d: finished earlier, reused", prep.net_spec.model_name, k)
        return finished
    _claim_fold_dir(files, k, key)
    train_set, val_set = _datasets(prep, cfg, train_rows, val_rows)
    result = train_network(
        model,
        train_set,
        val_set,
        cfg.deep,
        seed=cfg.seed,
        device=device,
        checkpoint_path=files.fold_checkpoint(k),
        fingerprint=fingerprint,
        name=f"{prep.net_spec.model_name} fold {k}",
        progress=progress,
    )
    scores = _score_fold(result.model, prep, score_rows, cfg, device, use_amp, k)
    with atomic_path(files.fold_scores(k)) as tmp:
        scores.to_parquet(tmp, index=False)
    atomic_write_json(
        files.fold_record(k),
        {
            "key": key,
            "fold": int(k),
            "best_epoch": result.best_epoch,
            "selection": result.selection,
            "n_train_samples": len(train_rows),
            # what this network learnt from, so anyone can check it never saw its fold
            "trained_on": sorted({r.source_case_id for r in train_rows}),
            "scored_out_of_fold": sorted(held),
        },
    )
    files.fold_checkpoint(k).unlink(missing_ok=True)  # the scores are what is kept
    return scores


def crossfit_deep_arm(
    cohort: Cohort,
    assignment: pd.Series,
    cfg: StudyConfig,
    arm: Literal["1ch", "2ch"] | str,
    out_dir: Path,
    folds: pd.Series,
    augmentations: pd.DataFrame | None = None,
    progress: bool = True,
    *,
    cache_dir: Path | None = None,
) -> pd.DataFrame:
    """Cross-fitted scores of one arm: one network per fold, each blind to its fold.

    Fold ``k``'s network is trained exactly like the arm's main network (same settings,
    seed and initialisation, early-stopped on the same validation set) but only on the
    training cases of the other folds and their augmented copies. It then scores the
    training cases of fold ``k``, which it never saw (their out-of-fold score), and the
    validation and test cases (for comparing the fold models' mean with the main network).
    Every fold is resumable: a finished fold is read back, an interrupted one resumes
    from its checkpoint, one trained on other data or settings starts afresh.

    Parameters
    ----------
    cohort, assignment, cfg, arm, augmentations, progress, cache_dir
        As :func:`run_deep_arm`.
    out_dir : Path
        Folder of the folds (``fold_<k>/`` each with ``scores.parquet`` and ``fold.json``,
        which lists the training cases the fold's network learnt from).
    folds : Series
        Training case id -> fold number, for every original training case; augmented
        copies follow their source case. Groups (patients) must not straddle folds.

    Returns
    -------
    DataFrame
        ``case_id``, ``split``, ``fold``, ``out_of_fold`` (True for training cases scored by
        the network of their own fold), ``probability``.
    """
    _check_arm(arm)
    out_dir = Path(out_dir)
    files = CrossfitLayout(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.deep.device)
    prep = _prepare_arm(
        cohort, assignment, cfg, arm, cache_dir or files.cache, augmentations, progress
    )
    fold_of = folds.astype(int)
    _check_folds(prep.rows[: len(prep.cases)], fold_of)
    use_amp = bool(cfg.deep.amp and device.type == "cuda")
    parts = [
        _crossfit_fold(
            prep, cfg, k, set(fold_of.index[fold_of == k]), out_dir, device, use_amp, progress
        )
        for k in sorted(set(fold_of))
    ]
    return pd.concat(parts, ignore_index=True)


def _monai_version() -> str:
    import monai

    return str(monai.__version__)


def _write_gradcams(
    model: nn.Module,
    arrays: dict[str, np.ndarray],
    predictions: pd.DataFrame,
    deep: DeepConfig,
    folder: Path,
    name: str,
) -> list[Path]:
    picks = _gradcam_cases(predictions, deep.gradcam_cases)
    if not picks:
        return []
    by_id = predictions.set_index("case_id")
    x = torch.from_numpy(np.stack([standardize(arrays[c]) for c in picks]))
    maps = gradcam_map(model, x)
    paths = []
    for cid, heat in zip(picks, maps, strict=True):
        raw = np.asarray(arrays[cid], dtype=np.float32)
        rec = by_id.loc[cid]
        title = (
            f"{name} | {cid} ({rec['split']}) | label {int(rec['label'])} | "
            f"P(label 1) = {float(rec['probability']):.3f}"
        )
        paths.append(
            save_gradcam_overlay(
                raw[0],
                heat,
                folder / f"{safe_filename(cid, max_length=120)}.png",
                mask=raw[1] if raw.shape[0] > 1 else None,
                title=title,
            )
        )
    return paths


def load_network_spec(model_dir: str | Path) -> NetworkSpec:
    """The :class:`NetworkSpec` of a trained arm folder (its ``network.json``)."""
    path = ArmLayout(Path(model_dir)).spec
    if not path.is_file():
        raise RadfusionError(f"{model_dir} holds no trained network ({SPEC_FILE} missing)")
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RadfusionError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(d, dict) or d.get("format") != SPEC_FORMAT:
        raise RadfusionError(f"{path} is not a radfusion network description ({SPEC_FORMAT})")
    try:
        return NetworkSpec.from_dict(d)
    except (KeyError, TypeError, ValueError) as exc:
        raise RadfusionError(f"{path} is not a valid network description: {exc}") from None


def load_trained_network(model_dir: str | Path) -> nn.Module:
    """Rebuild a trained network from its folder (safetensors weights, no pickle).

    Parameters
    ----------
    model_dir : str or Path
        A folder written by :func:`run_deep_arm` (``network.json`` + ``network.safetensors``).

    Returns
    -------
    torch.nn.Module
        The network in evaluation mode on the CPU; the input it expects is described by
        :func:`load_network_spec`.

    Raises
    ------
    RadfusionError
        Missing files, or weights that do not fit the described architecture.
    """
    from safetensors.torch import load_file

    spec = load_network_spec(model_dir)
    path = ArmLayout(Path(model_dir)).weights
    if not path.is_file():
        raise RadfusionError(f"{model_dir} has no {WEIGHTS_FILE}")
    model = build_resnet(spec.depth, spec.in_channels, num_classes=1)
    try:
        weights = load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError and OSError: not a safetensors file
        raise RadfusionError(f"{path} is not a readable safetensors file: {exc}") from None
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise RadfusionError(f"{path} does not fit {spec.model_name}: {exc}") from None
    return model.eval()


def predict_cases(
    model_dir: str | Path,
    cases: Sequence[Case] | Cohort,
    *,
    mask_source: Literal["mask", "mask_reader2"] = "mask",
    device: str = "auto",
    batch_size: int = 16,
    dicom_frame: int = 0,
    mask_label: int | None = None,
    cache_dir: Path | None = None,
    model: nn.Module | None = None,
) -> pd.DataFrame:
    """Score images with a trained arm: probability of label 1 and the deep features.

    Parameters
    ----------
    model_dir : str or Path
        A trained arm folder.
    cases : sequence of Case, or Cohort
        Images (and ROIs for 2ch) to score; ``label`` is not used.
    mask_source : {"mask", "mask_reader2"}
        ROI used as the 2ch mask channel.
    device : {"auto", "cpu", "cuda"}
    batch_size : int
    dicom_frame, mask_label
        Reader settings (as ``DataConfig``).
    cache_dir : Path, optional
        Reuse / store network inputs there (default: in memory only).
    model : torch.nn.Module, optional
        An already loaded network from ``model_dir`` (saves reloading it).

    Returns
    -------
    DataFrame
        Index ``case_id``; column ``probability`` then the ``dl<arm>_*`` features.

    Raises
    ------
    InputError
        Images or ROIs that cannot be read (all listed).
    """
    spec = load_network_spec(model_dir)
    net = model if model is not None else load_trained_network(model_dir)
    dev = resolve_device(device)
    case_list = cases.cases() if isinstance(cases, Cohort) else list(cases)
    cache = InputCache(cache_dir, dicom_frame, mask_label)
    arrays = build_inputs(case_list, spec.input, cache, mask_source=mask_source)
    rows = [InputRow(c.case_id, c.case_id, 0, "") for c in case_list if c.case_id in arrays]
    net.to(dev)
    try:
        out = infer(
            net, DeepDataset(arrays, rows), device=dev, batch_size=batch_size, features=True
        )
    finally:
        net.to("cpu")
    assert out.features is not None
    feats = features_frame([r.case_id for r in rows], out.features, spec.arm)
    feats.insert(0, "probability", out.probabilities)
    return feats
