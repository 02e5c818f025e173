"""Network inputs of the 1ch / 2ch arms: geometry, intensities, cache, augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import radfusion.deep.inputs as inputs_mod
from radfusion.data import Case
from radfusion.deep.inputs import (
    IMAGE_MEAN,
    IMAGE_STD,
    DeepDataset,
    InputCache,
    InputRow,
    InputSpec,
    build_inputs,
    network_input,
    random_transforms,
)
from radfusion.errors import InputError
from tests.conftest import ellipse_mask, write_png


def gradient_image(h: int, w: int) -> np.ndarray:
    return np.add.outer(np.arange(h), np.arange(w)).astype(np.float32) + 10.0


def test_letterbox_keeps_aspect_ratio_and_pads_with_zeros() -> None:
    img = gradient_image(40, 80)
    mask = np.zeros((40, 80), bool)
    mask[10:30, 20:60] = True
    x = network_input(img, mask, InputSpec("2ch", 64))
    assert x.shape == (2, 64, 64) and x.dtype == np.float32
    # 40 x 80 -> 32 x 64 content, centred: 16 padding rows above and below.
    assert np.all(x[:, :16] == 0) and np.all(x[:, 48:] == 0)
    assert x[0, 16:48].min() >= 0 and x[0, 16:48].max() == pytest.approx(1.0, abs=1e-6)
    assert set(np.unique(x[1])) == {0.0, 1.0}
    rows, cols = np.nonzero(x[1])
    # Scale 0.8 and 16 rows of padding: rows 10..29 -> 24..39, cols 20..59 -> 16..47.
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (24, 39, 16, 47)


def test_stretch_fills_the_square_and_1ch_has_one_channel() -> None:
    img = gradient_image(40, 80)
    x = network_input(img, None, InputSpec("1ch", 32, resize_mode="stretch"))
    assert x.shape == (1, 32, 32)
    assert x[0, 0].max() > 0 and x[0, -1].max() > 0  # no padding rows


def test_roi_crop_uses_the_bounding_box() -> None:
    img = gradient_image(100, 120)
    mask = ellipse_mask((100, 120), 50, 60, 15, 25)
    x = network_input(img, mask, InputSpec("2ch", 32, roi_crop=True))
    # An ellipse fills pi/4 of its bounding box.
    assert x[1].mean() == pytest.approx(np.pi / 4, abs=0.06)
    assert x[0].min() == 0.0 and x[0].max() == pytest.approx(1.0)


def test_a_tiny_roi_survives_downscaling() -> None:
    img = gradient_image(300, 300)
    mask = np.zeros((300, 300), bool)
    mask[150, 200] = True
    x = network_input(img, mask, InputSpec("2ch", 32))
    assert x[1].sum() == 1
    y, xx = np.argwhere(x[1])[0]
    assert abs(y - 16) <= 1 and abs(xx - 21) <= 1


def test_2ch_input_rejects_empty_or_misaligned_masks() -> None:
    img = gradient_image(20, 20)
    with pytest.raises(InputError, match="empty"):
        network_input(img, np.zeros((20, 20), bool), InputSpec("2ch", 32))
    with pytest.raises(InputError, match="differs from image shape"):
        network_input(img, np.ones((20, 21), bool), InputSpec("2ch", 32))
    with pytest.raises(ValueError, match="2ch arm only"):
        InputSpec("1ch", 32, roi_crop=True)


def write_case(root: Path, cid: str, empty_mask: bool = False) -> Case:
    rng = np.random.default_rng(abs(hash(cid)) % 2**32)
    img = rng.integers(0, 255, (48, 60)).astype(np.uint8)
    mask = np.zeros((48, 60), np.uint8) if empty_mask else ellipse_mask((48, 60), 24, 30, 8, 12)
    write_png(root / f"{cid}.png", img)
    write_png(root / f"{cid}_m.png", (mask * 255).astype(np.uint8))
    return Case(cid, root / f"{cid}.png", root / f"{cid}_m.png", 0, cid)


def test_cache_decodes_each_case_once_and_follows_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = write_case(tmp_path / "data", "a")
    calls = []
    real = inputs_mod.read_image
    monkeypatch.setattr(inputs_mod, "read_image", lambda *a, **k: calls.append(a) or real(*a, **k))
    spec = InputSpec("2ch", 32)
    first = build_inputs([case], spec, InputCache(tmp_path / "cache"))["a"]
    again = InputCache(tmp_path / "cache")  # a new session: served from disk
    second = build_inputs([case], spec, again)["a"]
    assert len(calls) == 1 and again.hits == 1
    assert second.dtype == np.float16 and np.array_equal(first, second)
    # Another size, or a changed image file, is another key.
    build_inputs([case], InputSpec("2ch", 48), again)
    write_png(case.image, np.zeros((48, 60), np.uint8) + 7)
    third = build_inputs([case], spec, InputCache(tmp_path / "cache"))["a"]
    assert len(calls) == 3 and not np.array_equal(first, third)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3


def test_uncached_inputs_equal_cached_ones(tmp_path: Path) -> None:
    case = write_case(tmp_path, "b")
    spec = InputSpec("2ch", 32)
    on_disk = build_inputs([case], spec, InputCache(tmp_path / "cache"))["b"]
    in_memory = build_inputs([case], spec, InputCache(None))["b"]
    assert np.array_equal(on_disk, in_memory)


def test_every_bad_case_is_named(tmp_path: Path) -> None:
    good = write_case(tmp_path, "good")
    empty = write_case(tmp_path, "empty", empty_mask=True)
    gone = Case("gone", tmp_path / "nope.png", tmp_path / "nope_m.png", 1, "gone")
    with pytest.raises(InputError) as err:
        build_inputs([good, empty, gone], InputSpec("2ch", 32), InputCache(None))
    msg = str(err.value)
    assert "2 case(s)" in msg and "case empty: the ROI mask is empty" in msg
    assert "case gone: file not found" in msg
    # The 1ch arm never reads the mask, so an empty ROI does not matter there.
    assert set(build_inputs([good, empty], InputSpec("1ch", 32), InputCache(None))) == {
        "good",
        "empty",
    }


def test_planned_copies_flip_image_and_mask_together() -> None:
    rng = np.random.default_rng(0)
    base = np.stack([rng.random((32, 32)), (rng.random((32, 32)) > 0.7)]).astype(np.float16)
    rows = [
        InputRow("a", "a", 1, "train"),
        InputRow("a#aug1", "a", 1, "train", "hflip"),
        InputRow("a#aug2", "a", 1, "train", "vflip+noise", 123),
    ]
    ds = DeepDataset({"a": base}, rows, noise_std=0.05)
    src = base.astype(np.float32)
    assert np.array_equal(ds.raw(1), src[:, :, ::-1])
    noisy = ds.raw(2)
    assert np.array_equal(noisy[1], src[1, ::-1, :])  # the mask is never noised
    assert not np.array_equal(noisy[0], src[0, ::-1, :])
    assert np.array_equal(noisy, ds.raw(2))  # seeded noise
    x, y = ds[0]
    assert y.item() == 1.0
    assert np.allclose(x[0].numpy(), (src[0] - IMAGE_MEAN) / IMAGE_STD, atol=1e-6)
    assert np.array_equal(x[1].numpy(), src[1])


def test_random_transforms_are_seeded_and_keep_the_mask_binary() -> None:
    yy, xx = np.mgrid[:48, :48]
    img = ((yy + xx) / 94.0).astype(np.float32)
    mask = (((yy - 24) / 10.0) ** 2 + ((xx - 24) / 14.0) ** 2 <= 1).astype(np.float32)
    x = np.stack([img, mask])
    tf = random_transforms(2, 48)
    outs = [tf(x, s) for s in range(12)]
    assert np.array_equal(tf(x, 5), outs[5])
    assert any(not np.array_equal(o, x) for o in outs)
    for o in outs:
        assert o.shape == x.shape
        assert set(np.unique(o[1])) <= {0.0, 1.0}
        assert o[0].min() >= 0.0 and o[0].max() <= 1.0


def test_dataset_draws_new_random_transforms_each_epoch() -> None:
    yy, xx = np.mgrid[:32, :32]
    base = np.stack([(yy + xx) / 62.0, ((yy - 16) ** 2 + (xx - 16) ** 2 < 64)]).astype(np.float16)
    rows = [InputRow(f"c{i}", "a", 0, "train") for i in range(6)]
    ds = DeepDataset({"a": base}, rows, transform=random_transforms(2, 32), seed=9)
    e0 = [ds[i][0] for i in range(6)]
    assert all(np.array_equal(e0[i], ds[i][0]) for i in range(6))  # reproducible
    ds.set_epoch(1)
    e1 = [ds[i][0] for i in range(6)]
    assert any(not np.array_equal(a, b) for a, b in zip(e0, e1, strict=True))
