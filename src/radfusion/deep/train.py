"""End-to-end training of a 1ch / 2ch ResNet for PA vs APT/PC (label 0 vs 1).

Choices, and why:

* **Loss**: one output logit with ``BCEWithLogitsLoss``; its sigmoid is the
  probability of label 1, which is what every later stage (ROC, DeLong,
  thresholds) consumes. Binary cross-entropy on one logit is the two-class
  softmax cross-entropy with one redundant output removed.
* **Class imbalance** (``deep.imbalance``): ``weighted_loss`` sets
  ``pos_weight = n_negative / n_positive`` of the training samples (planned
  augmented copies included); ``balanced_sampler`` draws each epoch's samples with
  replacement, each class with equal total probability; ``none``.
* **Optimiser** adamw / adam / sgd (momentum 0.9, Nesterov), **schedule** per epoch:
  cosine annealing to 0 over ``epochs``, step (x0.1 every ``epochs // 3``), none.
* **Checkpoint selection and early stopping** on the validation AUC, never on the
  test set; equal AUCs (frequent on small validation sets) go to the lower
  validation loss. A validation set with one class only has no AUC: the validation loss
  is used instead; without validation samples no early stopping happens and the
  last epoch is kept (``selection`` in the result says which rule applied).
* **Train AUC** in the history is computed from the training forward passes of
  the epoch (train-mode batch norm, augmented samples): the usual running
  estimate, free of an extra pass. The validation AUC uses evaluation mode.
* **Reproducibility**: weights are initialised from the study seed; each epoch's
  sample order comes from a generator seeded with (seed, epoch); random
  transforms are seeded per (seed, epoch, sample); deterministic kernels
  (``deep.deterministic``). Two CPU runs with the same seed give bitwise-identical
  weights.
* **Resume**: after every epoch one checkpoint file is written atomically
  (model, optimiser, scheduler, loss scaler, best weights, early-stopping state,
  history, RNG state). A run killed at any moment restarts from the last
  completed epoch and, on the CPU, ends with the same weights as an uninterrupted
  run. The checkpoint carries a fingerprint of the data and settings; resuming
  with different ones is refused. It is loaded with ``weights_only=True``.
* **Inputs** (``deep.input_path``, :mod:`radfusion.deep.batches`): on a GPU the samples
  are held on the device once and batches (random transforms included) are made there
  in whole-batch torch operations; otherwise a DataLoader built once per run
  (persistent workers). The CPU default is the DataLoader path, whose results are
  bitwise those of earlier releases.
* **Per-epoch evaluation**: the validation pass goes through the same input path; on the
  device path under ``torch.inference_mode`` with batches of ``eval_batch_size``. The
  loop does not synchronise with the GPU per batch (losses and probabilities stay on
  the device until the epoch ends).
* **GPU**: automatic mixed precision (bfloat16 where supported, else float16 with
  a gradient scaler), channels-last memory format, optional ``torch.compile``
  (``deep.compile``). ``deep.deterministic: false`` lets cuDNN autotune
  (``cudnn.benchmark``); seeds stay fixed either way.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from radfusion.config import DeepConfig
from radfusion.deep.batches import DeviceInputs, LoaderInputs, choose_input_path
from radfusion.deep.features import amp_dtype, autocast, infer
from radfusion.deep.inputs import DeepDataset
from radfusion.errors import ConfigError, RadfusionError
from radfusion.stats import auc_or_nan
from radfusion.utils import atomic_path, json_sha256, usable_cores

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class EpochRecord:
    """One row of the training history (the paper's Figure S2 plots the AUCs)."""

    epoch: int
    train_loss: float
    train_auc: float
    val_loss: float
    val_auc: float
    lr: float
    seconds: float
    images_per_s: float
    best: bool


@dataclass
class TrainResult:
    """Outcome of :func:`train_network`.

    Attributes
    ----------
    model : torch.nn.Module
        The network with the selected (best) weights loaded, in evaluation mode, on the CPU.
    history : DataFrame
        One row per completed epoch (:class:`EpochRecord` fields).
    best_epoch : int
        1-based epoch of the selected weights.
    selection : str
        ``val_auc``, ``val_loss`` or ``last_epoch`` (see the module docstring).
    best_score : float
        The selection score at ``best_epoch`` (AUC, or loss; NaN for ``last_epoch``).
    stopped_early : bool
    resumed_from : int
        Completed epochs found in the checkpoint (0 for a fresh run).
    pos_weight : float or None
        Positive-class weight of the loss (``weighted_loss``).
    input_path : str
        ``device`` or ``loader``: how the batches were made (see :mod:`radfusion.deep.batches`).
    """

    model: nn.Module
    history: pd.DataFrame
    best_epoch: int
    selection: str
    best_score: float
    stopped_early: bool
    resumed_from: int
    pos_weight: float | None
    input_path: str = "loader"


@contextlib.contextmanager
def reproducible(enabled: bool, device: torch.device) -> Iterator[None]:
    """Deterministic kernels inside the block (restoring the caller's settings after)."""
    prev = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    added_cublas = False
    if enabled:
        if device.type == "cuda" and "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
            # cuBLAS needs a fixed workspace for deterministic matmuls (read at CUDA init);
            # a value the caller set is kept, and one set here is removed again after.
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
            added_cublas = True
        # warn_only: a GPU op without a deterministic kernel warns instead of failing.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = device.type == "cuda"
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.deterministic = prev[2]
        torch.backends.cudnn.benchmark = prev[3]
        if added_cublas:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, 7919, epoch]).generate_state(1)[0])


def epoch_order(
    labels: np.ndarray, epoch: int, seed: int, balanced: bool, batch_size: int
) -> list[int]:
    """Sample indices of one training epoch (a pure function of seed and epoch).

    ``balanced`` draws ``len(labels)`` indices with replacement so that each class is
    drawn with equal total probability. A trailing batch of one sample is dropped:
    batch norm cannot learn from it (and fails on 1 x 1 feature maps).
    """
    g = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
    n = len(labels)
    if balanced:
        counts = np.bincount(labels, minlength=2).astype(float)
        w = 1.0 / counts[labels]
        idx = torch.multinomial(torch.as_tensor(w, dtype=torch.float64), n, True, generator=g)
    else:
        idx = torch.randperm(n, generator=g)
    order = idx.tolist()
    if len(order) > 1 and len(order) % batch_size == 1:
        order = order[:-1]
    return order


def make_optimizer(model: nn.Module, cfg: DeepConfig) -> torch.optim.Optimizer:
    """The configured optimiser over all parameters."""
    params = model.parameters()
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay
    )


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: DeepConfig
) -> torch.optim.lr_scheduler.LRScheduler:
    """The configured learning-rate schedule, stepped once per epoch."""
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=max(1, cfg.epochs // 3), gamma=0.1
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _e: 1.0)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _read_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``; None when there is none or it is unreadable.

    A truncated or corrupt checkpoint (a full disk, a copy cut short) cannot be resumed
    from: it is removed with a warning and the arm trains from the start.
    """
    if not path.is_file():
        return None
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ck, dict):
            raise ValueError(f"holds a {type(ck).__name__}, not a checkpoint")
        return ck
    except Exception as exc:  # torch raises many types for damaged zip / pickle data
        log.warning("%s is damaged (%s); training this arm from the start", path, exc)
        path.unlink(missing_ok=True)
        return None


def _selection_rule(val_set: DeepDataset | None) -> str:
    if val_set is None or len(val_set) == 0:
        return "last_epoch"
    return "val_auc" if len(np.unique(val_set.labels)) == 2 else "val_loss"


def _improved(rule: str, score: float, loss: float, best: float, best_loss: float) -> bool:
    """Whether an epoch beats the best so far (a validation-AUC tie goes to the lower loss)."""
    if rule == "last_epoch":
        return True
    if math.isnan(score):
        return False
    if math.isnan(best):
        return True
    if rule == "val_loss":
        return score < best
    # AUC saturates on small validation sets; among equal AUCs prefer better-calibrated weights.
    return score > best or (score == best and not math.isnan(loss) and loss < best_loss)


def train_network(
    model: nn.Module,
    train_set: DeepDataset,
    val_set: DeepDataset | None,
    cfg: DeepConfig,
    *,
    seed: int,
    device: torch.device,
    checkpoint_path: Path,
    fingerprint: dict[str, Any] | None = None,
    name: str = "ResNet",
    progress: bool = True,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
) -> TrainResult:
    """Train end to end, select the best epoch on validation, checkpoint every epoch.

    Parameters
    ----------
    model : torch.nn.Module
        A freshly initialised (or ImageNet-initialised) network with one output logit.
        When ``checkpoint_path`` exists its state replaces the model's.
    train_set, val_set : DeepDataset
        Training samples (augmented copies included) and validation samples (or None).
    cfg : DeepConfig
        Epochs, batch size, optimiser, schedule, patience, imbalance, AMP, determinism,
        input path (``input_path``, ``num_workers``, ``eval_batch_size``), ``compile``.
    seed : int
        Study seed (sample order and random transforms).
    device : torch.device
    checkpoint_path : Path
        The resumable state, rewritten atomically after every epoch.
    fingerprint : dict, optional
        Data and settings identity; a checkpoint with another fingerprint is refused.
    name : str
        Shown in the progress bar (e.g. ``2ch_ResNet101``).
    progress : bool
        Progress bar per epoch (loss, images/s) and a summary line per epoch.
    on_epoch_end : callable, optional
        Called with each :class:`EpochRecord` after its checkpoint is on disk.

    Returns
    -------
    TrainResult

    Raises
    ------
    RadfusionError
        The checkpoint belongs to another run (different fingerprint or format), or the
        training set is empty.
    """
    if len(train_set) == 0:
        raise RadfusionError("the deep-learning training set is empty")
    checkpoint_path = Path(checkpoint_path)
    fp_hash = json_sha256(fingerprint or {})
    use_amp = bool(cfg.amp and device.type == "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype(device) == torch.float16)
    labels = train_set.labels
    n_pos, n_neg = int((labels == 1).sum()), int((labels == 0).sum())
    pos_weight = None
    if cfg.imbalance == "weighted_loss" and n_pos > 0 and n_neg > 0:
        pos_weight = n_neg / n_pos
    criterion = nn.BCEWithLogitsLoss(
        pos_weight=torch.tensor(pos_weight, device=device) if pos_weight is not None else None
    )
    rule = _selection_rule(val_set)

    try:
        path = choose_input_path(cfg.input_path, train_set, val_set, device)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None

    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg)

    start, history = 0, []
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch, best_score, best_loss, bad_epochs = 0, float("nan"), float("nan"), 0
    finished = stopped_early = False
    resume_rng: torch.Tensor | None = None
    ck = _read_checkpoint(checkpoint_path)
    if ck is not None:
        if ck.get("format") != CHECKPOINT_FORMAT or ck.get("fingerprint") != fp_hash:
            raise RadfusionError(
                f"{checkpoint_path} belongs to a run with other data or settings; resume needs "
                "the same cohort, split and deep settings. Use another output folder, or "
                "delete the checkpoint to train from scratch."
            )
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        if ck["scaler"]:  # empty when the run started without float16 loss scaling
            scaler.load_state_dict(ck["scaler"])
        resume_rng = ck["torch_rng"]
        start, history = int(ck["epoch"]), list(ck["history"])
        best_state = ck["best_state"]
        best_epoch, best_score = int(ck["best_epoch"]), float(ck["best_score"])
        best_loss = float(ck["best_loss"])
        bad_epochs = int(ck["bad_epochs"])
        finished, stopped_early = bool(ck["finished"]), bool(ck["stopped_early"])
        if best_state is None and best_epoch == start:
            best_state = _cpu_state(model)
        log.info("%s: resuming after epoch %d of %d", name, start, cfg.epochs)
    resumed_from = start

    # fork_rng: the RNG state a resumed run continues from (and what training draws) stays
    # inside; the caller's torch RNG is as it was once training returns.
    with reproducible(cfg.deterministic, device), torch.random.fork_rng(devices=[]):
        if resume_rng is not None:
            torch.set_rng_state(resume_rng)
        epoch = start
        inputs: DeviceInputs | LoaderInputs | None = None
        val_inputs: DeviceInputs | None = None
        if not finished and epoch < cfg.epochs:
            t0 = time.perf_counter()
            if path == "device":
                inputs = DeviceInputs(train_set, device)
                if val_set is not None and len(val_set):
                    val_inputs = DeviceInputs(val_set, device)
                log.info(
                    "%s: %d samples held on %s (%.2f GB) in %.1f s",
                    name,
                    len(train_set) + (len(val_set) if val_set is not None else 0),
                    device,
                    (inputs.nbytes + (val_inputs.nbytes if val_inputs else 0)) / 1e9,
                    time.perf_counter() - t0,
                )
            else:
                inputs = LoaderInputs(train_set, device, cfg.num_workers)
        # The compiled module shares the parameters; checkpoints keep the plain names.
        net = torch.compile(model) if cfg.compile else model
        while not finished and epoch < cfg.epochs:
            assert inputs is not None
            record = _train_one_epoch(
                net,
                train_set,
                val_set,
                cfg,
                inputs=inputs,
                val_inputs=val_inputs,
                epoch=epoch,
                seed=seed,
                device=device,
                optimizer=optimizer,
                scheduler=scheduler,
                scaler=scaler,
                criterion=criterion,
                use_amp=use_amp,
                name=name,
                progress=progress,
            )
            score = {"val_auc": record.val_auc, "val_loss": record.val_loss}.get(rule, math.nan)
            improved = (
                _improved(rule, score, record.val_loss, best_score, best_loss) or best_epoch == 0
            )
            if improved:
                best_epoch, best_score, best_loss, bad_epochs = epoch + 1, score, record.val_loss, 0
                best_state = None  # the current weights; materialised below
            else:
                bad_epochs += 1
            record = EpochRecord(**{**asdict(record), "best": improved})
            history.append(asdict(record))
            epoch += 1
            if rule != "last_epoch" and bad_epochs >= cfg.patience:
                stopped_early = True
            finished = stopped_early or epoch >= cfg.epochs
            _save_checkpoint(
                checkpoint_path,
                fp_hash=fp_hash,
                epoch=epoch,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                scaler=scaler,
                best_state=None if best_epoch == epoch else best_state,
                best_epoch=best_epoch,
                best_score=best_score,
                best_loss=best_loss,
                bad_epochs=bad_epochs,
                finished=finished,
                stopped_early=stopped_early,
                history=history,
            )
            if best_epoch == epoch:
                best_state = _cpu_state(model)
            _report_epoch(name, record, cfg.epochs, progress)
            if on_epoch_end is not None:
                on_epoch_end(record)
            if stopped_early:
                log.info(
                    "%s: early stop after epoch %d (no %s improvement for %d epochs)",
                    name,
                    epoch,
                    rule,
                    bad_epochs,
                )

    if best_state is None:  # resumed a finished run whose best epoch was the last one
        best_state = _cpu_state(model)
    model.load_state_dict(best_state)
    model.to("cpu", memory_format=torch.contiguous_format).eval()
    return TrainResult(
        model=model,
        history=pd.DataFrame(history, columns=list(EpochRecord.__dataclass_fields__)),
        best_epoch=best_epoch,
        selection=rule,
        best_score=best_score,
        stopped_early=stopped_early,
        resumed_from=resumed_from,
        pos_weight=pos_weight,
        input_path=path,
    )


def _train_one_epoch(
    model: nn.Module,
    train_set: DeepDataset,
    val_set: DeepDataset | None,
    cfg: DeepConfig,
    *,
    inputs: DeviceInputs | LoaderInputs,
    val_inputs: DeviceInputs | None,
    epoch: int,
    seed: int,
    device: torch.device,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    criterion: nn.Module,
    use_amp: bool,
    name: str,
    progress: bool,
) -> EpochRecord:
    t0 = time.perf_counter()
    model.train()
    train_set.set_epoch(epoch)
    order = epoch_order(
        train_set.labels, epoch, seed, cfg.imbalance == "balanced_sampler", cfg.batch_size
    )
    lr = float(optimizer.param_groups[0]["lr"])
    probs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    # Accumulated on the device in float64 (float(loss) * n summed in Python before: the same
    # IEEE operations, so the same history) without a synchronisation per batch.
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    seen = 0
    n_batches = -(-len(order) // cfg.batch_size)
    bar = tqdm(
        total=n_batches,
        desc=f"{name} epoch {epoch + 1}/{cfg.epochs}",
        disable=not progress,
        leave=False,
        unit="batch",
    )
    shown = t0
    # Each batch is consumed before the next is drawn: the device path may reuse its buffer.
    for x, y in inputs.epoch(order, epoch, cfg.batch_size, reuse=True):
        with autocast(device, use_amp):
            logits = model(x)
        logits = logits.float()[:, 0]
        loss = criterion(logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        loss_sum += loss.detach().double() * len(y)
        seen += len(y)
        probs.append(torch.sigmoid(logits.detach()))
        ys.append(y)
        bar.update()
        now = time.perf_counter()
        if progress and now - shown > 1.0:  # reading the loss waits for the GPU: once a second
            shown = now
            bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}", img_s=f"{seen / (now - t0):.1f}")
    bar.close()
    train_loss = float(loss_sum) / max(seen, 1)  # waits for the epoch's last step
    train_seconds = time.perf_counter() - t0
    scheduler.step()
    train_auc = auc_or_nan(torch.cat(ys).cpu().numpy(), torch.cat(probs).cpu().numpy())
    val_loss = val_auc = float("nan")
    if val_inputs is not None:
        eval_bs = cfg.eval_batch_size or 4 * cfg.batch_size
        p, loss_v = val_inputs.evaluate(model, batch_size=eval_bs, amp=use_amp, criterion=criterion)
        val_loss = float(loss_v) if loss_v is not None else float("nan")
        val_auc = auc_or_nan(val_inputs.y.cpu().numpy().astype(np.int64), p)
    elif val_set is not None and len(val_set):
        out = infer(
            model,
            val_set,
            device=device,
            batch_size=cfg.batch_size,
            amp=use_amp,
            num_workers=min(cfg.num_workers, usable_cores()),
            criterion=criterion,
        )
        val_loss = float(out.loss) if out.loss is not None else float("nan")
        val_auc = auc_or_nan(val_set.labels, out.probabilities)
    return EpochRecord(
        epoch=epoch + 1,
        train_loss=train_loss,
        train_auc=train_auc,
        val_loss=val_loss,
        val_auc=val_auc,
        lr=lr,
        seconds=time.perf_counter() - t0,
        images_per_s=seen / max(train_seconds, 1e-9),
        best=False,
    )


def _save_checkpoint(path: Path, **state: Any) -> None:
    model = state.pop("model")
    optimizer = state.pop("optimizer")
    scheduler = state.pop("scheduler")
    scaler = state.pop("scaler")
    obj = {
        "format": CHECKPOINT_FORMAT,
        "fingerprint": state.pop("fp_hash"),
        "model": _cpu_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        **state,
    }
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _report_epoch(name: str, r: EpochRecord, epochs: int, progress: bool) -> None:
    line = (
        f"{name} epoch {r.epoch}/{epochs}: loss {r.train_loss:.4f}, train AUC {r.train_auc:.3f}, "
        f"val loss {r.val_loss:.4f}, val AUC {r.val_auc:.3f}, {r.images_per_s:.1f} img/s"
        + (" *" if r.best else "")
    )
    if progress:
        tqdm.write(line)
    else:
        log.info(line)
