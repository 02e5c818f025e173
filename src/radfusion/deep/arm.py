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
``gradcam/*.png``
    Grad-CAM overlays for a few test cases (the most and least confident correct call
    per class).
``cache/``
    Cached network inputs (unless ``cache_dir`` points elsewhere).

:mod:`radfusion.deep.network` reads a trained arm back and scores new images with it;
:mod:`radfusion.deep.resume` decides when a training resumes.
"""

from __future__ import annotations

import logging
import platform
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
from radfusion.deep.network import (
    SPEC_FORMAT,
    WEIGHTS_FILE,
    NetworkSpec,
    monai_version,
    save_weights,
)
from radfusion.deep.networks import build_resnet
from radfusion.deep.resume import training_fingerprint
from radfusion.deep.train import EpochRecord, TrainResult, train_network
from radfusion.deep.weights import load_imagenet_weights
from radfusion.errors import ConfigError
from radfusion.layout import ArmLayout
from radfusion.stats import auc_or_nan
from radfusion.utils import (
    atomic_path,
    atomic_write_json,
    file_sha256,
    safe_filename,
)

log = logging.getLogger(__name__)

META_COLUMNS = ("split", "label", "source_case_id")


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
        ``case_id``, ``split``, ``label``, ``model``, ``probability`` (original cases).
        Not written here: the study writes them once, as the family's predictions
        (:meth:`radfusion.layout.RunLayout.family_predictions`).
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
def check_arm(arm: str) -> None:
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
class ArmInputs:
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


def prepare_arm(
    cohort: Cohort,
    assignment: pd.Series,
    cfg: StudyConfig,
    arm: str,
    cache_dir: Path,
    augmentations: pd.DataFrame | None,
    progress: bool,
) -> ArmInputs:
    split = _check_assignment(cohort, assignment)
    cases = cohort.cases()
    spec = InputSpec.from_config(arm, cfg.deep, cfg.preprocess)  # type: ignore[arg-type]
    cache = InputCache(cache_dir, cfg.data.dicom_frame, cfg.data.mask_label)
    arrays = build_inputs(cases, spec, cache, progress=progress)
    return ArmInputs(
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


def network_and_fingerprint(
    prep: ArmInputs,
    cfg: StudyConfig,
    train_rows: Sequence[InputRow],
    val_rows: Sequence[InputRow],
) -> tuple[nn.Module, dict[str, Any] | None, dict[str, Any]]:
    """A fresh network, its pretrained-weight record and the identity of its training."""
    model, pretrained = _init_network(cfg, prep.spec)
    fingerprint = training_fingerprint(
        prep.arm,
        cfg,
        prep.keys,
        train_rows,
        val_rows,
        pretrained["sha256"] if pretrained else None,
    )
    return model, pretrained, fingerprint


def arm_datasets(
    prep: ArmInputs,
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


def train_arm_network(
    prep: ArmInputs,
    cfg: StudyConfig,
    model: nn.Module,
    train_rows: Sequence[InputRow],
    val_rows: Sequence[InputRow],
    *,
    device: torch.device,
    checkpoint_path: Path,
    fingerprint: dict[str, Any],
    name: str,
    progress: bool,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
) -> TrainResult:
    """Train an arm's network on ``train_rows``, selecting its epoch on ``val_rows``.

    The arm's main network and each cross-fitting fold's network are trained alike: the
    datasets of :func:`arm_datasets` and :func:`~radfusion.deep.train.train_network` with the
    study's deep settings and seed (``fingerprint``: :func:`network_and_fingerprint`, so a
    checkpoint of other training is not resumed).

    Returns
    -------
    TrainResult
    """
    train_set, val_set = arm_datasets(prep, cfg, train_rows, val_rows)
    return train_network(
        model,
        train_set,
        val_set,
        cfg.deep,
        seed=cfg.seed,
        device=device,
        checkpoint_path=checkpoint_path,
        fingerprint=fingerprint,
        name=name,
        progress=progress,
        on_epoch_end=on_epoch_end,
    )


# --- steps of run_deep_arm -------------------------------------------------------
@dataclass
class _ArmTraining:
    """The outcome of training an arm's network, and what ``network.json`` records of it."""

    result: TrainResult
    pretrained: dict[str, Any] | None
    n_train_samples: int
    n_val_samples: int


def _train_arm(
    prep: ArmInputs,
    cfg: StudyConfig,
    device: torch.device,
    out_dir: Path,
    progress: bool,
    on_epoch_end: Callable[[EpochRecord], None] | None,
) -> _ArmTraining:
    """Train (or resume) the arm's network on its training samples, selected on validation."""
    train_rows = [r for r in prep.rows if r.split == "train"]
    val_rows = [r for r in prep.rows if r.split == "val"]
    model, pretrained, fingerprint = network_and_fingerprint(prep, cfg, train_rows, val_rows)
    result = train_arm_network(
        prep,
        cfg,
        model,
        train_rows,
        val_rows,
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
    save_weights(result.model, weights_path, name)
    with atomic_path(files.history) as tmp:
        result.history.to_csv(tmp, index=False)
    plot_history(result.history, files.history_plot, f"{name}: epoch-AUC", result.best_epoch)
    return weights_path


def _infer_every_sample(
    model: nn.Module,
    prep: ArmInputs,
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
    out: InferenceOutput, prep: ArmInputs, out_dir: Path
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


def _predictions(out: InferenceOutput, prep: ArmInputs, meta: pd.DataFrame) -> pd.DataFrame:
    """The network's probability for each original case (no copies)."""
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
    return predictions


def _write_reader2_features(
    model: nn.Module,
    prep: ArmInputs,
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
                "monai": monai_version(),
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
    check_arm(arm)
    out_dir = Path(out_dir)
    files = ArmLayout(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.deep.device)
    use_amp = bool(cfg.deep.amp and device.type == "cuda")
    prep = prepare_arm(
        cohort, assignment, cfg, arm, cache_dir or files.cache, augmentations, progress
    )
    name = prep.net_spec.model_name
    training = _train_arm(prep, cfg, device, out_dir, progress, on_epoch_end)
    result = training.result
    model = result.model
    weights_path = _write_training_outputs(result, out_dir, name)
    out = _infer_every_sample(model, prep, cfg, device, use_amp, progress)
    features, meta = _write_features(out, prep, out_dir)
    predictions = _predictions(out, prep, meta)
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
