"""Paper preprocessing: ROI bounding box -> crop -> resize -> normalise; minority augmentation."""

from radfusion.preprocessing.augment import (
    AugmentedCopy,
    apply_augmentation,
    plan_augmentation,
)
from radfusion.preprocessing.crop import (
    BoundingBox,
    PreprocessedCase,
    crop_to_roi,
    normalize_intensity,
    preprocess_case,
    resize_image,
    resize_mask,
    roi_bounding_box,
)

__all__ = [
    "AugmentedCopy",
    "BoundingBox",
    "PreprocessedCase",
    "apply_augmentation",
    "crop_to_roi",
    "normalize_intensity",
    "plan_augmentation",
    "preprocess_case",
    "resize_image",
    "resize_mask",
    "roi_bounding_box",
]
