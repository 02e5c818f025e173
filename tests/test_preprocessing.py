"""Preprocessing geometry and augmentation bookkeeping."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from radfusion.config import AugmentConfig, PreprocessConfig
from radfusion.errors import InputError
from radfusion.preprocessing import (
    apply_augmentation,
    crop_to_roi,
    normalize_intensity,
    plan_augmentation,
    preprocess_case,
    roi_bounding_box,
)

from .conftest import ellipse_mask


def test_bounding_box_from_extreme_points():
    m = np.zeros((50, 60), bool)
    m[10, 30] = m[40, 31] = m[20, 5] = m[25, 55] = True  # top, bottom, left, right points
    box = roi_bounding_box(m)
    assert (box.top, box.bottom, box.left, box.right) == (10, 40, 5, 55)
    assert (box.height, box.width) == (31, 51)
    with pytest.raises(InputError, match="empty"):
        roi_bounding_box(np.zeros((5, 5), bool))


def test_crop_and_margin_clipped_to_image():
    img = np.arange(100 * 120, dtype=np.float32).reshape(100, 120)
    m = ellipse_mask((100, 120), 50, 60, 20, 30)
    crop, mcrop, box = crop_to_roi(img, m)
    assert crop.shape == (41, 61) and mcrop.shape == crop.shape
    assert crop[0, 0] == img[box.top, box.left]
    # touching the box on all four sides: the crop is tight
    assert mcrop[0].any() and mcrop[-1].any() and mcrop[:, 0].any() and mcrop[:, -1].any()
    _, _, wide = crop_to_roi(img, m, margin=0.5)
    assert (wide.top, wide.bottom, wide.left, wide.right) == (10, 90, 0, 119)  # clipped at x
    with pytest.raises(InputError, match="differs from image shape"):
        crop_to_roi(img, m[:50])


def test_preprocess_case_geometry_and_mask_nearest():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 1000, (200, 300)).astype(np.float32)
    m = ellipse_mask((200, 300), 100, 150, 30, 60)
    out = preprocess_case(img, m, PreprocessConfig(size=64))
    assert out.image.shape == (64, 64) and out.mask.shape == (64, 64)
    assert out.image.dtype == np.float32 and out.mask.dtype == bool
    assert out.image.min() >= 0 and out.image.max() <= 255
    # the ellipse fills its box: fraction pi/4 survives nearest-neighbour resizing
    assert abs(out.mask.mean() - np.pi / 4) < 0.03
    # deterministic
    again = preprocess_case(img, m, PreprocessConfig(size=64))
    np.testing.assert_array_equal(out.image, again.image)
    np.testing.assert_array_equal(out.mask, again.mask)


def test_resize_up_keeps_binary_mask_and_intensity_order():
    img = np.zeros((40, 40), np.float32)
    img[:, 20:] = 100  # a vertical edge
    m = np.zeros((40, 40), bool)
    m[10:30, 10:30] = True
    out = preprocess_case(img, m, PreprocessConfig(size=500, normalization="none"))
    assert set(np.unique(out.mask)) == {True}  # the square ROI fills its own box
    assert out.image[:, :200].mean() < out.image[:, 300:].mean()


def test_normalisations():
    x = np.linspace(-5, 5, 1000, dtype=np.float32).reshape(20, 50)
    mm = normalize_intensity(x, "minmax")
    assert mm.min() == 0 and mm.max() == 255
    z = normalize_intensity(x, "zscore")
    assert abs(z.mean()) < 1e-5 and abs(z.std() - 1) < 1e-4
    assert np.all(normalize_intensity(np.ones((4, 4)), "minmax") == 127.5)
    with pytest.raises(ValueError, match="unknown normalization"):
        normalize_intensity(x, "histeq")


def _cases():
    return pd.DataFrame(
        {
            "case_id": [f"c{i}" for i in range(10)],
            "label": [1, 0, 0, 0, 1, 0, 0, 0, 1, 1],
            "split": ["train"] * 6 + ["val", "val", "val", "test"],
            "group": [f"g{i // 2}" for i in range(10)],
        }
    )


def test_plan_augmentation_training_only_by_default():
    plan = plan_augmentation(_cases(), AugmentConfig(factor=10), seed=1)
    # minority (label 1) training cases c0 and c4 -> 9 copies each
    assert len(plan) == 18
    assert set(plan.source_case_id) == {"c0", "c4"}
    assert set(plan.split) == {"train"}
    assert plan.case_id.is_unique
    assert all(
        c.startswith(f"{s}#aug") for c, s in zip(plan.case_id, plan.source_case_id, strict=True)
    )
    # copies keep their source's group, so they cannot land in another fold
    assert plan.groupby("source_case_id").group.agg(set).to_dict() == {"c0": {"g0"}, "c4": {"g2"}}
    # the first seven copies are the seven distinct flip/noise combinations
    assert plan[plan.source_case_id == "c0"].ops.head(7).nunique() == 7
    assert plan_augmentation(_cases(), AugmentConfig(enabled=False)).empty


def test_plan_augmentation_validation_opt_in_warns(caplog):
    plan = plan_augmentation(_cases(), AugmentConfig(factor=3, augment_validation=True))
    assert set(plan.split) == {"train", "val"}
    assert set(plan[plan.split == "val"].source_case_id) == {"c8"}  # test (c9) never augmented
    assert "optimistic" in caplog.text


def test_apply_augmentation_ops_and_determinism():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (8, 10)).astype(np.float32)
    m = np.zeros((8, 10), bool)
    m[1:3, 1:4] = True
    a, am = apply_augmentation(img, m, "hflip")
    np.testing.assert_array_equal(a, img[:, ::-1])
    np.testing.assert_array_equal(am, m[:, ::-1])
    b, _ = apply_augmentation(img, m, "hflip+vflip")
    np.testing.assert_array_equal(b, img[::-1, ::-1])
    n1, nm = apply_augmentation(img, m, "noise", noise_seed=7, noise_std=0.05)
    n2, _ = apply_augmentation(img, m, "noise", noise_seed=7, noise_std=0.05)
    n3, _ = apply_augmentation(img, m, "noise", noise_seed=8, noise_std=0.05)
    np.testing.assert_array_equal(n1, n2)
    assert not np.array_equal(n1, n3) and not np.array_equal(n1, img)
    np.testing.assert_array_equal(nm, m)  # noise never touches the ROI
    assert img.min() <= n1.min() and n1.max() <= img.max()
    with pytest.raises(ValueError, match="rotate"):
        apply_augmentation(img, m, "rotate")
