"""Inference: predicted probabilities and deep features (global-average-pool output).

After training, the paper extracted "2,048 features from the second-to-last
average-pooling layers" of each ResNet101 for every case; these then go through
z-score -> Spearman -> ICC -> LASSO (:mod:`radfusion.selection`). Here the
features are the flattened global-average-pool output (2048-d for ResNet-50 /
101 / 152, 512-d for 18 / 34), taken in evaluation mode (batch-norm running
statistics, no augmentation), in the same forward pass as the probability.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from radfusion.deep.networks import forward_with_features


@dataclass(frozen=True)
class InferenceOutput:
    """Network outputs for the samples of a dataset, in dataset order.

    Attributes
    ----------
    probabilities : (N,) float array
        ``sigmoid(logit)``, the probability of label 1 (APT/PC, malignant).
    features : (N, D) float32 array or None
        Global-average-pool features, when asked for.
    loss : float or None
        Mean loss over the samples, when a criterion was given.
    """

    probabilities: np.ndarray
    features: np.ndarray | None
    loss: float | None


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from radfusion.errors import ConfigError

        raise ConfigError("deep.device is 'cuda' but no CUDA GPU is available to torch")
    return torch.device(name)


def amp_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where the GPU supports it (no loss scaling needed), else float16."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    """Mixed precision on CUDA when enabled; a no-op on the CPU."""
    if enabled and device.type == "cuda":
        with torch.autocast("cuda", dtype=amp_dtype(device)):
            yield
    else:
        yield


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a batch to ``device``; channels-last on CUDA (faster convolutions on tensor cores)."""
    if device.type == "cuda":
        return x.to(device, non_blocking=True, memory_format=torch.channels_last)
    return x.to(device)


@torch.no_grad()
def infer(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    *,
    device: torch.device,
    batch_size: int = 16,
    amp: bool = False,
    num_workers: int = 0,
    criterion: nn.Module | None = None,
    features: bool = False,
    progress: bool = False,
    desc: str = "inference",
) -> InferenceOutput:
    """Probabilities (and features, and loss) of every sample of ``dataset``.

    Parameters
    ----------
    model : torch.nn.Module
        A radfusion ResNet with one output logit; set to evaluation mode here (its mode is
        restored afterwards).
    dataset : Dataset
        Yields ``(x, y)``, e.g. :class:`radfusion.deep.inputs.DeepDataset`.
    device : torch.device
    batch_size, num_workers : int
    amp : bool
        Mixed precision on CUDA.
    criterion : nn.Module, optional
        Loss on ``(logits, y)``; its sample mean is returned.
    features : bool
        Also return the global-average-pool features.
    progress : bool
        Show a progress bar.

    Returns
    -------
    InferenceOutput
    """
    was_training = model.training
    model.eval()
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    probs: list[np.ndarray] = []
    feats: list[np.ndarray] = []
    loss_sum, n = 0.0, 0
    try:
        for x, y in tqdm(loader, desc=desc, disable=not progress, leave=False):
            x = to_device(x, device)
            with autocast(device, amp):
                logits, pooled = forward_with_features(model, x)
            logits = logits.float()[:, 0]
            probs.append(torch.sigmoid(logits).cpu().numpy())
            if features:
                feats.append(pooled.float().cpu().numpy())
            if criterion is not None:
                loss_sum += float(criterion(logits, y.to(device))) * len(y)
            n += len(y)
    finally:
        model.train(was_training)
    return InferenceOutput(
        probabilities=np.concatenate(probs) if probs else np.zeros(0),
        features=(np.concatenate(feats).astype(np.float32) if feats else None)
        if features
        else None,
        loss=(loss_sum / n if n else None) if criterion is not None else None,
    )


def feature_names(arm: str, dim: int) -> list[str]:
    """Column names of an arm's deep features: ``dl1ch_0000`` ... / ``dl2ch_0000`` ..."""
    return [f"dl{arm}_{i:04d}" for i in range(dim)]


def features_frame(case_ids: list[str], features: np.ndarray, arm: str) -> pd.DataFrame:
    """Deep features as a DataFrame indexed by ``case_id``, one column per pooled channel."""
    return pd.DataFrame(
        features,
        index=pd.Index(case_ids, name="case_id"),
        columns=feature_names(arm, features.shape[1]),
    )
