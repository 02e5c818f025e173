"""The training input paths: the DataLoader path keeps today's CPU results bit for bit, and the
device-resident path (forced on the CPU here) trains sanely from the same samples.

Everything is ResNet-18 at 32 px on 12 synthetic cases and 4 planned copies: seconds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from radfusion.config import DeepConfig
from radfusion.deep import build_resnet
from radfusion.deep.inputs import DeepDataset, InputRow, random_transforms
from radfusion.deep.train import TrainResult, train_network

#: sha256 of the trained weights, computed with the training loop as it was before the
#: device-resident input path existed (commit 067d6b7, torch 2.13.0+cpu, one thread). The
#: DataLoader path must keep producing exactly these weights on the CPU.
PINNED_CPU_WEIGHTS = {
    False: "08d00e604aafa7f57d90aa44e4e65c8f843eea152db45c4ee88f0509aa746182",
    True: "e19cd32f3d87a171d2b63c8e1c3117b6e25c10189aa7cb7fa576f9513b1b3993",
}
PINNED_TORCH = "2.13.0+cpu"


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_data() -> tuple[dict[str, np.ndarray], list[InputRow], list[InputRow]]:
    """12 cases (label 1: brighter lesion), 9 train / 3 val, and 4 planned training copies."""
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}
    rows = []
    for i in range(12):
        label = i % 2
        x = rng.random((2, 32, 32)).astype(np.float32) * 0.5
        x[1] = 0
        x[1, 10:20, 10:22] = 1
        x[0, 10:20, 10:22] += 0.4 * label
        arrays[f"c{i}"] = x.astype(np.float16)
        rows.append(InputRow(f"c{i}", f"c{i}", label, "train" if i < 9 else "val"))
    for j, ops in enumerate(["hflip", "vflip+noise", "noise", "hflip+vflip"]):
        src = f"c{2 * j + 1}"
        rows.append(InputRow(f"{src}#aug{j}", src, 1, "train", ops, 100 + j))
    return (
        arrays,
        [r for r in rows if r.split == "train"],
        [r for r in rows if r.split == "val"],
    )


def train_tiny(
    tmp_path: Path, *, random: bool, epochs: int = 2, lr: float = 1e-3, **deep: object
) -> TrainResult:
    arrays, train_rows, val_rows = tiny_data()
    cfg = DeepConfig(
        depth=18,
        image_size=32,
        epochs=epochs,
        batch_size=4,
        lr=lr,
        device="cpu",
        random_transforms=random,
        **deep,  # type: ignore[arg-type]
    )
    transform = random_transforms(2, 32) if random else None
    torch.manual_seed(5)
    model = build_resnet(18, 2, num_classes=1)
    return train_network(
        model,
        DeepDataset(arrays, train_rows, 0.05, transform, 7),
        DeepDataset(arrays, val_rows, 0.05),
        cfg,
        seed=7,
        device=torch.device("cpu"),
        checkpoint_path=tmp_path / f"ck_{random}_{sorted(deep.items())}.pt",
        progress=False,
    )


def weights_sha256(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.mark.skipif(
    torch.__version__ != PINNED_TORCH, reason=f"weights pinned with torch {PINNED_TORCH}"
)
@pytest.mark.parametrize("random", [False, True], ids=["planned_copies", "random_transforms"])
def test_cpu_loader_path_gives_the_weights_pinned_before_the_device_path(
    tmp_path: Path, random: bool
) -> None:
    result = train_tiny(tmp_path, random=random)
    assert weights_sha256(result.model) == PINNED_CPU_WEIGHTS[random]
