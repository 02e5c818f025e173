"""The training input paths: the DataLoader path keeps today's CPU results bit for bit, and the
device-resident path (forced on the CPU here) trains sanely from the same samples.

Everything is ResNet-18 at 32 px on 12 synthetic cases and 4 planned copies: seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import AdjustContrast

from radfusion.config import DeepConfig
from radfusion.deep import build_resnet
from radfusion.deep.batches import DeviceInputs, LoaderInputs, choose_input_path
from radfusion.deep.inputs import (
    DeepDataset,
    InputRow,
    RandomTransforms,
    random_transforms,
    standardize,
)
from radfusion.deep.train import EpochRecord, TrainResult, train_network
from radfusion.errors import ConfigError
from radfusion.reproducibility import strict_environment

from .conftest import cpu_has_avx2

#: sha256 of the trained weights and the two epochs' training losses (the history is a
#: result too) of :func:`train_tiny`, pinned under ``reproducibility.mode: strict`` with one
#: thread and torch 2.13.0+cpu, where they are the same on every x86-64 CPU with AVX2 (the
#: values of the default mode depend on the CPU's vector extensions and are only ever
#: compared on the machine running the test). The DataLoader path must keep producing them.
PINNED_STRICT = {
    "False": [
        "06d2ec435982d98470a781310cfd6a99e282c07e165b536d1c1cf63ab776591f",
        [0.4023517370223999, 0.4524683381120364],
    ],
    "True": [
        "7650b1d32e1db12d2e3b3676525dbb20dce88ee2bf52de0547fe111276f140d9",
        [0.42463018000125885, 0.2658495021363099],
    ],
}
PINNED_TORCH = "2.13.0+cpu"
#: Trains both tiny networks in a process started under the strict environment.
_STRICT_TRAINING = """
import json, sys, tempfile
from pathlib import Path
from radfusion.config import ReproducibilityConfig
from radfusion.reproducibility import reproducible_numerics
from tests.test_deep_input_path import train_tiny, weights_sha256
out = {}
with reproducible_numerics(ReproducibilityConfig(mode="strict", threads=1)):
    for random in (False, True):
        with tempfile.TemporaryDirectory() as d:
            r = train_tiny(Path(d), random=random)
            assert r.input_path == "loader"  # auto keeps the DataLoader path on the CPU
            out[str(random)] = [weights_sha256(r.model), r.history["train_loss"].tolist()]
print(json.dumps(out))
"""


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
    tmp_path: Path,
    *,
    random: bool,
    epochs: int = 2,
    lr: float = 1e-3,
    on_epoch_end: object = None,
    **deep: object,
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
        checkpoint_path=tmp_path / f"ck_{random}_{epochs}.pt",
        progress=False,
        on_epoch_end=on_epoch_end,  # type: ignore[arg-type]
    )


def weights_sha256(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.mark.skipif(
    torch.__version__ != PINNED_TORCH or not cpu_has_avx2(),
    reason=f"weights pinned with torch {PINNED_TORCH} under strict mode (x86-64 with AVX2)",
)
def test_cpu_loader_path_gives_the_weights_pinned_under_strict_mode() -> None:
    env = {**os.environ, **strict_environment(1)}
    proc = subprocess.run(
        [sys.executable, "-c", _STRICT_TRAINING],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == PINNED_STRICT


def test_same_seed_same_weights_in_one_process(tmp_path: Path) -> None:
    # the default mode's promise, checked on this machine's own kernels
    a = train_tiny(tmp_path / "a", random=True)
    b = train_tiny(tmp_path / "b", random=True)
    assert weights_sha256(a.model) == weights_sha256(b.model)
    assert a.history["train_loss"].tolist() == b.history["train_loss"].tolist()


def datasets(random: bool) -> tuple[DeepDataset, DeepDataset]:
    arrays, train_rows, val_rows = tiny_data()
    transform = random_transforms(2, 32) if random else None
    return (
        DeepDataset(arrays, train_rows, 0.05, transform, 7),
        DeepDataset(arrays, val_rows, 0.05),
    )


def test_device_inputs_hold_the_loader_samples_in_uint8() -> None:
    train_set, _ = datasets(random=False)
    inputs = DeviceInputs(train_set, torch.device("cpu"), workers=2)
    assert len(inputs) == len(train_set) == 13 and inputs.x.dtype == torch.uint8
    for i in range(len(train_set)):
        # Planned copies (flips, noise) are the DataLoader path's pixels, in 256 levels.
        want = torch.from_numpy(np.rint(train_set.raw(i) * 255).astype(np.uint8))
        assert torch.equal(inputs.x[i], want), train_set.rows[i].case_id
    index = torch.tensor([12, 0, 4])
    want = torch.stack([train_set[i][0] for i in (12, 0, 4)])
    # Standardised like the loader path, up to the uint8 rounding (0.5 / 255 / IMAGE_STD).
    for out in (None, torch.full((4, 2, 32, 32), float("nan"))):
        x, y = inputs.batch(index, out=out)
        assert x.dtype == torch.float32 and x.shape == (3, 2, 32, 32)
        torch.testing.assert_close(x, want, atol=0.5 / 255 / 0.226 + 1e-6, rtol=0)
        assert torch.equal(x[:, 1], want[:, 1])  # the mask stays exactly 0 / 1
        assert y.tolist() == [1.0, 0.0, 0.0]
    # the CPU's sample-by-sample conversion gives the GPU's whole-batch values
    whole = torch.empty(3, 2, 32, 32)
    inputs._standardize(index, whole, per_sample=False)
    assert torch.equal(inputs.batch(index)[0], whole)


def test_device_batches_follow_the_epoch_order_and_redraw_transforms_per_epoch() -> None:
    train_set, _ = datasets(random=True)
    inputs = DeviceInputs(train_set, torch.device("cpu"))
    order = [3, 1, 12, 7, 0]
    batches = list(inputs.epoch(order, epoch=0, batch_size=2))
    assert [len(y) for _, y in batches] == [2, 2, 1]
    assert torch.cat([y for _, y in batches]).tolist() == [
        float(train_set.labels[i]) for i in order
    ]
    again = next(inputs.epoch(list(reversed(order)), epoch=0, batch_size=5))[0]
    # A sample's transform depends on (seed, epoch, sample), not on its place in the order.
    torch.testing.assert_close(again.flip(0), torch.cat([x for x, _ in batches]))
    other = torch.cat([x for x, _ in inputs.epoch(order, epoch=1, batch_size=5)])
    assert not torch.equal(other, torch.cat([x for x, _ in batches]))


def test_batched_random_transforms_identity_shift_and_monai_gamma() -> None:
    rt = RandomTransforms(2, 32)
    x = torch.zeros((2, 2, 32, 32))
    x[:, 0] = torch.linspace(0.1, 0.9, 32)[None, :, None]
    x[:, 1, 12:20, 8:16] = 1
    off = torch.ones((2, RandomTransforms.n_params))  # no affine, no contrast
    assert torch.equal(rt.apply_batch(x, off), x)

    shift = off.clone()
    shift[0, 0] = 0.0  # affine on sample 0 only ...
    shift[0, 1:4] = 0.5  # ... no rotation, no scaling ...
    shift[0, 4], shift[0, 5] = 1.0, 0.5  # ... shifted by the largest x shift, none in y
    out = rt.apply_batch(x, shift)
    assert torch.equal(out[1], x[1])
    mask = out[0, 1]
    assert set(mask.unique().tolist()) <= {0.0, 1.0}  # nearest neighbour keeps it binary
    cols = mask.sum(0).nonzero().flatten().float()
    rows = mask.sum(1).nonzero().flatten().float()
    moved = RandomTransforms.shift * 32  # pixels
    assert cols.mean().item() == pytest.approx(11.5 - moved, abs=0.6)
    assert rows.mean().item() == pytest.approx(15.5, abs=0.01)

    gamma = off.clone()
    gamma[:, 6], gamma[:, 7] = 0.0, torch.tensor([0.0, 1.0])  # contrast with gamma 0.8 / 1.25
    out = rt.apply_batch(x, gamma)
    for b, g in enumerate(RandomTransforms.gamma):
        want = torch.as_tensor(AdjustContrast(gamma=g)(x[b, :1])).float()
        torch.testing.assert_close(out[b, :1], want)
        assert torch.equal(out[b, 1], x[b, 1])  # the mask is never contrast-adjusted


@pytest.mark.slow
def test_forced_device_path_trains_sanely_and_resumes_to_the_same_weights(
    tmp_path: Path,
) -> None:
    full = train_tiny(tmp_path / "full", random=True, epochs=3, input_path="device")
    assert full.input_path == "device"
    h = full.history
    # The easy task (brighter lesion = label 1) is learnt as on the DataLoader path, whose
    # same run gives train AUC 0.80-0.94 and validation AUC 1 in every epoch.
    assert np.isfinite(h[["train_loss", "val_loss"]].to_numpy()).all()
    assert (h["train_loss"] < np.log(2)).all() and (h["train_auc"] > 0.75).all()
    assert h["val_auc"].max() == 1.0

    class KilledError(Exception):
        pass

    def kill_after_first(record: EpochRecord) -> None:
        if record.epoch == 1:
            raise KilledError

    with pytest.raises(KilledError):
        train_tiny(
            tmp_path / "cut",
            random=True,
            epochs=3,
            input_path="device",
            on_epoch_end=kill_after_first,
        )
    resumed = train_tiny(tmp_path / "cut", random=True, epochs=3, input_path="device")
    # Same seed, same weights: epoch 1 of the killed run plus epochs 2-3 after the resume
    # reproduce the uninterrupted run bit for bit (transforms are drawn per seed and epoch).
    assert resumed.resumed_from == 1
    assert weights_sha256(resumed.model) == weights_sha256(full.model)
    assert h.drop(columns=["seconds", "images_per_s"]).equals(
        resumed.history.drop(columns=["seconds", "images_per_s"])
    )


def test_persistent_loader_workers_give_the_in_process_batches() -> None:
    train_set, _ = datasets(random=True)
    cpu = torch.device("cpu")
    inline, workers = LoaderInputs(train_set, cpu, 0), LoaderInputs(train_set, cpu, 2)
    for epoch, order in enumerate([[0, 5, 12, 3], [12, 1, 2, 9, 4]]):
        a = [x for x, _ in inline.epoch(order, epoch, 2)]
        b = [x for x, _ in workers.epoch(order, epoch, 2)]  # same workers, next epoch
        assert len(a) == len(b) and all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_input_path_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    import radfusion.deep.batches as batches

    train_set, val_set = datasets(random=True)
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert choose_input_path("auto", train_set, val_set, cpu) == "loader"
    assert choose_input_path("device", train_set, val_set, cpu) == "device"
    need = batches.device_bytes([train_set, val_set])
    assert need == 16 * 2 * 32 * 32  # every sample, two channels, uint8
    monkeypatch.setattr(batches, "free_memory", lambda device: 4 * need)
    assert choose_input_path("auto", train_set, val_set, gpu) == "device"
    monkeypatch.setattr(batches, "free_memory", lambda device: 4 * need - 1)
    assert choose_input_path("auto", train_set, val_set, gpu) == "loader"
    assert choose_input_path("loader", train_set, val_set, gpu) == "loader"
    custom = DeepDataset(train_set.arrays, train_set.rows, transform=lambda x, seed: x)
    monkeypatch.setattr(batches, "free_memory", lambda device: 100 * need)
    assert choose_input_path("auto", custom, None, gpu) == "loader"
    with pytest.raises(ValueError, match="custom transform"):
        choose_input_path("device", custom, None, cpu)


def test_forcing_the_device_path_with_a_custom_transform_is_a_config_error(
    tmp_path: Path,
) -> None:
    arrays, train_rows, _ = tiny_data()
    cfg = DeepConfig(depth=18, image_size=32, epochs=1, device="cpu", input_path="device")
    with pytest.raises(ConfigError, match="custom transform"):
        train_network(
            build_resnet(18, 2, num_classes=1),
            DeepDataset(arrays, train_rows, transform=lambda x, seed: standardize(x)),
            None,
            cfg,
            seed=0,
            device=torch.device("cpu"),
            checkpoint_path=tmp_path / "ck.pt",
            progress=False,
        )


@pytest.mark.slow
def test_compile_trains_the_same_weights_and_checkpoints_plain_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Inductor needs minutes to compile even ResNet-18 on a small CPU; the eager backend
    # exercises the same wiring (TorchDynamo capture, shared parameters, mode switches for
    # the validation pass) in seconds and runs the same kernels, so the weights must match.
    real_compile = torch.compile
    compiled: list[torch.nn.Module] = []

    def eager_compile(model: torch.nn.Module, **kwargs: object) -> torch.nn.Module:
        compiled.append(model)
        return real_compile(model, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train_tiny(tmp_path, random=False, compile=True)
    # the validation pass's feature hook traces without breaking the graph
    assert not [w for w in caught if "Dynamo does not know" in str(w.message)]
    assert len(compiled) == 1 and compiled[0] is result.model
    assert not any(k.startswith("_orig_mod") for k in result.model.state_dict())
    checkpoint = torch.load(next(tmp_path.glob("ck_*.pt")), weights_only=True)
    assert set(checkpoint["model"]) == set(result.model.state_dict())
    monkeypatch.undo()  # the same training, eager
    eager = train_tiny(tmp_path / "eager", random=False)
    assert weights_sha256(result.model) == weights_sha256(eager.model)
    assert result.history["train_loss"].tolist() == eager.history["train_loss"].tolist()
