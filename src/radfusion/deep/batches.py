"""Batches for training and per-epoch evaluation: device-resident inputs or a DataLoader.

Two input paths feed :func:`radfusion.deep.train.train_network` (``deep.input_path``):

``device``
    Every sample of a dataset is materialised once, planned copies included (flips and
    noise of :func:`radfusion.preprocessing.apply_augmentation`, exactly the DataLoader
    path's pixels, computed once in a thread pool instead of every epoch), and held on
    the training device as one ``uint8`` tensor (0.5 MB per 2-channel 500 px sample). A
    batch is then an index gather, the random transforms of
    :class:`radfusion.deep.inputs.RandomTransforms` applied to the whole batch with
    torch, and the standardisation: no Python work per image, no host-to-device copy,
    no synchronisation. Per-epoch evaluation gathers from the same
    tensor under ``torch.inference_mode`` (and AMP on a GPU) with large batches.
``loader``
    A ``torch.utils.data.DataLoader`` built once per training run: per-image NumPy /
    MONAI work in ``num_workers`` persistent worker processes (capped at the usable
    cores), pinned memory on a GPU. With ``num_workers: 0`` it yields exactly the batches
    the training loop always had, so CPU results are unchanged.

``auto`` takes ``device`` on a GPU when the materialised inputs fit within a quarter
(:data:`DEVICE_MEMORY_FRACTION`) of its free memory and the training transform has a
batched twin, else ``loader``; on the CPU it keeps ``loader`` (bitwise-stable results).
Forcing ``device`` on the CPU is supported (it is how the path is tested here).

The device path stores the [0, 1] inputs as ``uint8`` (256 levels, the depth of the
ultrasound images themselves: a rounding error of at most 1/510 of the range, 0.009 in
standardised units), and its random transforms draw from torch generators rather than
MONAI's, so the two paths give equally distributed but not identical samples.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
import torch
from torch import nn

from radfusion.deep.features import autocast, to_device
from radfusion.deep.inputs import IMAGE_MEAN, IMAGE_STD, DeepDataset, RandomTransforms
from radfusion.utils import usable_cores

log = logging.getLogger(__name__)

#: The device path is chosen automatically when its inputs take at most this share of the
#: device's free memory (the rest is for the network's activations and the allocator).
DEVICE_MEMORY_FRACTION = 0.25

InputPath = Literal["device", "loader"]


def device_bytes(datasets: Sequence[DeepDataset | None]) -> int:
    """Bytes the device path holds for ``datasets`` (``uint8``, every sample)."""
    total = 0
    for ds in datasets:
        if ds is None or len(ds) == 0:
            continue
        first = ds.arrays[ds.rows[0].source_case_id]
        total += len(ds) * int(np.prod(first.shape))
    return total


def free_memory(device: torch.device) -> int:
    """Free memory of ``device`` in bytes (available RAM for the CPU)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 0


def choose_input_path(
    requested: str,
    train_set: DeepDataset,
    val_set: DeepDataset | None,
    device: torch.device,
) -> InputPath:
    """Resolve ``deep.input_path`` (``auto`` / ``device`` / ``loader``) for one training run.

    Raises
    ------
    ValueError
        ``device`` asked for with a training transform that has no batched twin.
    """
    batchable = train_set.transform is None or isinstance(train_set.transform, RandomTransforms)
    if requested == "device":
        if not batchable:
            raise ValueError(
                "deep.input_path 'device' needs the built-in random transforms (or none); "
                "use 'loader' for a custom transform"
            )
        return "device"
    if requested == "loader" or device.type != "cuda" or not batchable:
        return "loader"
    need = device_bytes([train_set, val_set])
    free = free_memory(device)
    if need <= DEVICE_MEMORY_FRACTION * free:
        return "device"
    log.info(
        "inputs need %.1f GB, more than %.0f%% of the %.1f GB free on %s: DataLoader path",
        need / 1e9,
        100 * DEVICE_MEMORY_FRACTION,
        free / 1e9,
        device,
    )
    return "loader"


def _sample_params_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, 104729, epoch]).generate_state(1)[0])


class DeviceInputs:
    """Every sample of a dataset held once on ``device``; batches assembled with torch.

    Parameters
    ----------
    dataset : DeepDataset
        Its planned copies are materialised here; its ``transform`` (a
        :class:`~radfusion.deep.inputs.RandomTransforms` or None) is applied per batch.
    device : torch.device
    workers : int, optional
        Threads that materialise the samples (default: the usable cores).
    """

    def __init__(
        self, dataset: DeepDataset, device: torch.device, workers: int | None = None
    ) -> None:
        self.device = device
        self.seed = dataset.seed
        self.transform = dataset.transform
        if self.transform is not None and not isinstance(self.transform, RandomTransforms):
            raise ValueError("the device input path batches RandomTransforms only")
        n = len(dataset)
        first = dataset.raw(0) if n else np.zeros((1, 1, 1), np.float32)
        self.x = torch.empty((n, *first.shape), dtype=torch.uint8, device=device)
        self.y = torch.as_tensor(dataset.labels, dtype=torch.float32).to(device)
        chunk = 64
        # NumPy releases the GIL in the array work of raw(): threads scale over the cores.
        with ThreadPoolExecutor(max_workers=workers or usable_cores()) as pool:
            for start in range(0, n, chunk):
                idx = range(start, min(start + chunk, n))
                block = np.rint(np.stack(list(pool.map(dataset.raw, idx))) * 255)
                block = block.astype(np.uint8)
                self.x[start : start + len(block)] = torch.from_numpy(block).to(device)

        # Per-channel uint8 -> network scale: (v / 255 - mean) / std for the image, v / 255
        # for the mask (see radfusion.deep.inputs.standardize).
        self._scale = torch.tensor([1 / (255 * IMAGE_STD), 1 / 255], device=device).view(1, 2, 1, 1)
        self._bias = torch.tensor([-IMAGE_MEAN / IMAGE_STD, 0.0], device=device).view(1, 2, 1, 1)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def nbytes(self) -> int:
        return self.x.numel() * self.x.element_size()

    def _params(self, epoch: int) -> torch.Tensor | None:
        # One draw per sample index and epoch: a sample's transform does not depend on the
        # order or the batch it comes in, and a resumed run redraws the same parameters.
        if self.transform is None:
            return None
        g = torch.Generator().manual_seed(_sample_params_seed(self.seed, epoch))
        u = torch.rand((len(self), RandomTransforms.n_params), generator=g)
        return u.to(self.device)

    def _empty(self, n: int) -> torch.Tensor:
        # Channels-last on CUDA (tensor-core convolutions), so no conversion copy per batch.
        fmt = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        return torch.empty((n, *self.x.shape[1:]), device=self.device, memory_format=fmt)

    def batch(
        self,
        index: torch.Tensor,
        params: torch.Tensor | None = None,
        out: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised ``float32`` inputs and labels of the samples ``index`` (a device tensor).

        ``params`` are the epoch's random-transform draws (None: no random transform);
        ``out`` an optional buffer of at least ``len(index)`` samples that receives the
        batch (saves an allocation per batch; the caller must be done with its content).
        """
        if params is not None and self.transform is not None:
            x = self.x.index_select(0, index).float().mul_(1 / 255)
            x = self.transform.apply_batch(x, params.index_select(0, index))
            x[:, 0].sub_(IMAGE_MEAN).div_(IMAGE_STD)
        else:
            x = out[: len(index)] if out is not None else self._empty(len(index))
            self._standardize(index, x, per_sample=self.device.type == "cpu")
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.y.index_select(0, index)

    def _standardize(self, index: torch.Tensor, out: torch.Tensor, *, per_sample: bool) -> None:
        """uint8 samples ``index`` -> ``out``: (v * scale) + bias per channel, i.e. the
        standardised image and the 0 / 1 mask.

        ``per_sample`` converts one sample at a time straight from the store, while it
        sits in the core's cache (on a CPU ~1.4x the whole-batch ops); otherwise the batch
        is gathered and converted at once (a GPU). Both give the same values.
        """
        c = self.x.shape[1]
        scale, bias = self._scale[:, :c], self._bias[:, :c]
        if per_sample:
            for j, i in enumerate(index.tolist()):
                torch.mul(self.x[i], scale[0], out=out[j]).add_(bias[0])
        else:
            torch.mul(self.x.index_select(0, index), scale, out=out).add_(bias)

    def epoch(
        self, order: Sequence[int], epoch: int, batch_size: int, *, reuse: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Training batches of one epoch in ``order`` (random transforms of ``epoch``).

        ``reuse`` writes every batch into one buffer: a batch is then valid only until the
        next one is drawn, which is how the training loop consumes them.
        """
        params = self._params(epoch)
        order_t = torch.as_tensor(list(order), dtype=torch.long).to(self.device)
        buffer = None
        if reuse and params is None and len(order_t):
            buffer = self._empty(min(batch_size, len(order_t)))
        for start in range(0, len(order_t), batch_size):
            yield self.batch(order_t[start : start + batch_size], params, buffer)

    def evaluate(
        self,
        model: nn.Module,
        *,
        batch_size: int,
        amp: bool,
        criterion: nn.Module | None = None,
    ) -> tuple[np.ndarray, float | None]:
        """Probabilities of every sample in order (evaluation mode, no random transform),
        and the mean loss when ``criterion`` is given."""
        was_training = model.training
        model.eval()
        probs, loss_sum = [], torch.zeros((), dtype=torch.float64, device=self.device)
        try:
            with torch.inference_mode():
                for start in range(0, len(self), batch_size):
                    index = torch.arange(
                        start, min(start + batch_size, len(self)), device=self.device
                    )
                    x, y = self.batch(index)
                    with autocast(self.device, amp):
                        logits = model(x)
                    logits = logits.float()[:, 0]
                    probs.append(torch.sigmoid(logits))
                    if criterion is not None:
                        loss_sum += criterion(logits, y).double() * len(y)
        finally:
            model.train(was_training)
        p = torch.cat(probs).cpu().numpy() if probs else np.zeros(0)
        loss = float(loss_sum) / len(self) if (criterion is not None and len(self)) else None
        return p, loss


class _EpochItems(torch.utils.data.Dataset):
    """``dataset`` indexed by ``(epoch, i)``: persistent workers need no epoch broadcast."""

    def __init__(self, dataset: DeepDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = key
        return self.dataset.item(i, epoch)


class _EpochBatches(torch.utils.data.Sampler):
    """Batches of ``(epoch, index)`` keys in the order set for the current epoch."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.order: list[int] = []
        self.epoch = 0

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for start in range(0, len(self.order), self.batch_size):
            yield [(self.epoch, i) for i in self.order[start : start + self.batch_size]]

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)


class LoaderInputs:
    """Training batches from a DataLoader built once (persistent workers, pinned memory).

    With ``num_workers = 0`` the batches are exactly those of
    ``DataLoader(dataset, batch_size, sampler=order)``.
    """

    def __init__(self, dataset: DeepDataset, device: torch.device, num_workers: int) -> None:
        self.device = device
        self.sampler = _EpochBatches(1)
        workers = min(num_workers, usable_cores())
        self.loader = torch.utils.data.DataLoader(
            _EpochItems(dataset),
            batch_sampler=self.sampler,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
        )

    def epoch(
        self, order: Sequence[int], epoch: int, batch_size: int, *, reuse: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Training batches of one epoch, moved to the device (``reuse`` has no effect)."""
        self.sampler.order, self.sampler.epoch = list(order), epoch
        self.sampler.batch_size = batch_size
        for x, y in self.loader:
            yield to_device(x, self.device), y.to(self.device, non_blocking=True)
