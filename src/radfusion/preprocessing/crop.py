"""ROI bounding-box crop, resize and intensity normalisation (paper Methods).

"Based on the ROI of each lesion, the top, bottom, left, and right boundary
points were automatically generated to create a bounding box. The rectangular
bounding box was then cropped from the original image, resized to 500x500
pixels, and normalized." radfusion does exactly this, deterministically:

1. bounding box = rows / columns of the ROI's extreme points (inclusive), optionally
   widened by ``margin`` x its size on each side (clipped to the image);
2. crop image and mask;
3. resize the image with bilinear interpolation (anti-aliased when shrinking) and
   the mask with nearest neighbour, to ``size`` x ``size`` (aspect ratio is not
   kept, as in the paper);
4. normalise intensities (``minmax``: the crop's 0.5th / 99.5th percentiles map to
   0 / 255 and values are clipped, robust to a few saturated speckle pixels;
   ``zscore``: zero mean, unit SD over the crop; ``none``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.transform import resize

from radfusion.config import PreprocessConfig
from radfusion.errors import InputError


@dataclass(frozen=True)
class BoundingBox:
    """Inclusive pixel bounds of an ROI: rows top..bottom, columns left..right."""

    top: int
    bottom: int
    left: int
    right: int

    @property
    def height(self) -> int:
        return self.bottom - self.top + 1

    @property
    def width(self) -> int:
        return self.right - self.left + 1


@dataclass(frozen=True)
class PreprocessedCase:
    """A lesion crop ready for radiomics: ``image`` float32 and ``mask`` bool, both square."""

    image: np.ndarray
    mask: np.ndarray
    bbox: BoundingBox


def roi_bounding_box(mask: np.ndarray) -> BoundingBox:
    """The box through the ROI's top, bottom, left and right extreme points."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise InputError("the ROI mask is empty: no bounding box")
    return BoundingBox(int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1]))


def crop_to_roi(
    image: np.ndarray, mask: np.ndarray, margin: float = 0.0
) -> tuple[np.ndarray, np.ndarray, BoundingBox]:
    """Crop image and mask to the ROI's bounding box (widened by ``margin``)."""
    if image.shape != mask.shape:
        raise InputError(f"mask shape {mask.shape} differs from image shape {image.shape}")
    box = roi_bounding_box(mask)
    if margin > 0:
        dy = round(margin * box.height)
        dx = round(margin * box.width)
        box = BoundingBox(
            max(box.top - dy, 0),
            min(box.bottom + dy, image.shape[0] - 1),
            max(box.left - dx, 0),
            min(box.right + dx, image.shape[1] - 1),
        )
    sl = (slice(box.top, box.bottom + 1), slice(box.left, box.right + 1))
    return image[sl], mask[sl], box


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize, anti-aliased when shrinking; float32 out."""
    shrinking = shape[0] < image.shape[0] or shape[1] < image.shape[1]
    out = resize(
        image.astype(np.float32, copy=False),
        shape,
        order=1,
        mode="edge",
        anti_aliasing=shrinking,
        preserve_range=True,
    )
    return out.astype(np.float32)


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a boolean mask (labels never blend)."""
    out = resize(
        mask.astype(np.uint8),
        shape,
        order=0,
        mode="edge",
        anti_aliasing=False,
        preserve_range=True,
    )
    return out.astype(bool)


def normalize_intensity(image: np.ndarray, method: str = "minmax") -> np.ndarray:
    """Normalise a crop's intensities (see module docstring)."""
    img = image.astype(np.float32, copy=False)
    if method == "none":
        return img.copy()
    if method == "minmax":
        lo, hi = np.percentile(img, [0.5, 99.5])
        if hi - lo < 1e-6:  # a flat crop: map it to mid-grey rather than divide by zero
            return np.full_like(img, 127.5)
        return (np.clip((img - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.float32)
    if method == "zscore":
        sd = float(img.std())
        return ((img - img.mean()) / (sd if sd > 1e-6 else 1.0)).astype(np.float32)
    raise ValueError(f"unknown normalization {method!r}; use minmax, zscore or none")


def preprocess_case(
    image: np.ndarray, mask: np.ndarray, cfg: PreprocessConfig | None = None
) -> PreprocessedCase:
    """Crop -> resize -> normalise one case.

    Parameters
    ----------
    image : (H, W) array
        The grayscale ultrasound image.
    mask : (H, W) bool array
        The lesion ROI on the image grid.
    cfg : PreprocessConfig
        Output size, margin and normalisation.

    Returns
    -------
    PreprocessedCase
        ``size`` x ``size`` float32 image and bool mask, plus the bounding box.
    """
    cfg = cfg or PreprocessConfig()
    crop, mcrop, box = crop_to_roi(image, mask.astype(bool), cfg.margin)
    shape = (cfg.size, cfg.size)
    img = normalize_intensity(resize_image(crop, shape), cfg.normalization)
    m = resize_mask(mcrop, shape)
    if not m.any():  # an ROI thinner than one output pixel cannot vanish: keep its centre
        m[cfg.size // 2, cfg.size // 2] = True
    return PreprocessedCase(img, m, box)
