"""Network inputs of the 1ch and 2ch arms, built once per case and cached.

Arms (paper, "DL workflow"):

``1ch``
    The whole original ultrasound image, no segmentation.
``2ch``
    The whole image and its ROI mask stacked as two channels on the same grid
    (the paper's "connection between the original image and the corresponding
    ROI"). With ``roi_crop_2ch`` both channels come from the ROI bounding-box crop
    of :func:`radfusion.preprocessing.preprocess_case` instead.

Geometry. ``resize_mode="letterbox"`` (default) scales the whole image so its
longer side equals ``image_size`` and pads the shorter side symmetrically with
zeros (black, the ultrasound background): lesion shape and the
taller-than-wide sign survive. ``"stretch"`` resizes directly to a square, as the
paper did for its crops; it distorts shape by the image's aspect ratio. Images
are resized bilinearly with anti-aliasing, masks with nearest neighbour (an ROI
thinner than one output pixel keeps its centre pixel).

Intensities. The image is scaled to [0, 1] with its 0.5th / 99.5th percentiles
(robust to a few saturated speckle or annotation pixels; the percentiles are
taken on the image before padding), then standardised with the ImageNet
statistics averaged over RGB, ``(x - 0.449) / 0.226``, so that a grayscale image
meets pretrained weights with the statistics they were trained on (the first
convolution's RGB kernels are summed, see :mod:`radfusion.deep.weights`). The
mask channel is 0 / 1.

Caching. The [0, 1] input of every case is stored once as ``float16`` ``.npy``
under a key made of the SHA-256 of the image (and mask) file and every setting
that shapes the input, so epochs, re-runs and the other arm never decode an image
twice, and a changed file or setting can never reuse a stale input. Cached
arrays are memory-mapped.

Augmentation. The planned minority copies (:func:`radfusion.preprocessing.plan_augmentation`)
are applied to the cached input with :func:`radfusion.preprocessing.apply_augmentation`
(flips on image and mask alike, Gaussian noise on the image) on the network-input
grid. ``random_transforms`` adds light on-the-fly MONAI augmentation in training
(random affine: +-10 degrees, +-10 % scale, +-5 % shift, p = 0.5; gamma contrast
0.8-1.25, p = 0.3), seeded per (seed, epoch, sample) so runs stay reproducible.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from radfusion.config import DeepConfig, PreprocessConfig
from radfusion.data import Case, read_image, read_mask
from radfusion.errors import InputError
from radfusion.preprocessing import (
    apply_augmentation,
    normalize_intensity,
    preprocess_case,
    resize_image,
    resize_mask,
)
from radfusion.utils import atomic_path, file_sha256, json_sha256, usable_cores

log = logging.getLogger(__name__)

#: ImageNet RGB means / SDs averaged over the three channels (grayscale equivalent).
IMAGE_MEAN = 0.449
IMAGE_STD = 0.226
#: Bump when the way inputs are computed changes, so old cache entries are not reused.
INPUT_FORMAT_VERSION = 1

Arm = Literal["1ch", "2ch"]


@dataclass(frozen=True)
class InputSpec:
    """Everything that determines a case's network input.

    Attributes
    ----------
    arm : {"1ch", "2ch"}
    image_size : int
        Side of the square input.
    resize_mode : {"letterbox", "stretch"}
        Whole-image geometry (ignored for the ROI crop, which is always stretched like the
        paper's 500 x 500 crops).
    roi_crop : bool
        2ch only: inputs from the ROI bounding-box crop instead of the whole image.
    crop_margin : float
        Context around the bounding box for ``roi_crop`` (as ``preprocess.margin``).
    """

    arm: Arm
    image_size: int
    resize_mode: Literal["letterbox", "stretch"] = "letterbox"
    roi_crop: bool = False
    crop_margin: float = 0.0

    def __post_init__(self) -> None:
        if self.arm not in ("1ch", "2ch"):
            raise ValueError(f"unknown arm {self.arm!r}; use '1ch' or '2ch'")
        if self.roi_crop and self.arm != "2ch":
            raise ValueError("roi_crop applies to the 2ch arm only")

    @classmethod
    def from_config(
        cls, arm: Arm, deep: DeepConfig, preprocess: PreprocessConfig | None = None
    ) -> InputSpec:
        """The spec of ``arm`` under a study's deep (and preprocess) settings."""
        roi = bool(deep.roi_crop_2ch and arm == "2ch")
        return cls(
            arm=arm,
            image_size=deep.image_size,
            resize_mode=deep.resize_mode,
            roi_crop=roi,
            crop_margin=float(preprocess.margin) if (roi and preprocess) else 0.0,
        )

    @property
    def in_channels(self) -> int:
        return 1 if self.arm == "1ch" else 2

    @property
    def uses_mask(self) -> bool:
        return self.arm == "2ch"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the intensity normalisation constants."""
        out: dict[str, Any] = asdict(self)
        out.update(image_mean=IMAGE_MEAN, image_std=IMAGE_STD, version=INPUT_FORMAT_VERSION)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        return cls(
            arm=d["arm"],
            image_size=int(d["image_size"]),
            resize_mode=d.get("resize_mode", "letterbox"),
            roi_crop=bool(d.get("roi_crop", False)),
            crop_margin=float(d.get("crop_margin", 0.0)),
        )


# --- one image -> one network input ------------------------------------------
def _keep_centre(mask_small: np.ndarray, mask: np.ndarray, scale_yx: tuple[float, float]) -> None:
    # An ROI thinner than one output pixel must not vanish from the 2ch input.
    if mask_small.any() or not mask.any():
        return
    ys, xs = np.nonzero(mask)
    y = min(int(ys.mean() * scale_yx[0]), mask_small.shape[0] - 1)
    x = min(int(xs.mean() * scale_yx[1]), mask_small.shape[1] - 1)
    mask_small[y, x] = True


def network_input(image: np.ndarray, mask: np.ndarray | None, spec: InputSpec) -> np.ndarray:
    """The [0, 1] network input of one image (before standardisation).

    Parameters
    ----------
    image : (H, W) array
        Grayscale image.
    mask : (H, W) bool array or None
        The ROI on the image grid; required for the 2ch arm, ignored for 1ch.
    spec : InputSpec

    Returns
    -------
    (C, S, S) float32 array
        Channel 0 the image in [0, 1]; channel 1 (2ch) the mask as 0 / 1.

    Raises
    ------
    InputError
        2ch without a mask, an empty mask, or a mask whose shape differs from the image.
    """
    size = spec.image_size
    image = np.asarray(image, dtype=np.float32)
    if spec.uses_mask:
        if mask is None:
            raise InputError("the 2ch arm needs the ROI mask")
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != image.shape:
            raise InputError(f"mask shape {mask.shape} differs from image shape {image.shape}")
        if not mask.any():
            raise InputError("the ROI mask is empty")
    if spec.roi_crop:
        assert mask is not None
        pre = preprocess_case(
            image,
            mask,
            PreprocessConfig(size=size, margin=spec.crop_margin, normalization="minmax"),
        )
        return np.stack([pre.image / 255.0, pre.mask.astype(np.float32)]).astype(np.float32)

    img01 = normalize_intensity(image, "minmax") / 255.0
    h, w = image.shape
    if spec.resize_mode == "stretch":
        new_h, new_w = size, size
    else:
        scale = size / max(h, w)
        new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out = np.zeros((spec.in_channels, size, size), dtype=np.float32)
    out[0, top : top + new_h, left : left + new_w] = resize_image(img01, (new_h, new_w))
    if spec.uses_mask:
        assert mask is not None
        small = resize_mask(mask, (new_h, new_w))
        _keep_centre(small, mask, (new_h / h, new_w / w))
        out[1, top : top + new_h, left : left + new_w] = small
    return np.clip(out, 0.0, 1.0, out=out)


# --- cache ---------------------------------------------------------------------
class InputCache:
    """Per-case network inputs stored as ``.npy`` files keyed by content and settings.

    Parameters
    ----------
    root : Path or None
        Cache folder (created on first write). ``None`` keeps inputs in memory only.
    dicom_frame : int
        Frame read from multi-frame DICOM images.
    mask_label : int or None
        Mask value marking the lesion (None: any non-zero pixel).
    """

    def __init__(
        self, root: Path | None, dicom_frame: int = 0, mask_label: int | None = None
    ) -> None:
        self.root = Path(root) if root is not None else None
        self.dicom_frame = dicom_frame
        self.mask_label = mask_label
        self.hits = 0
        self.misses = 0
        self._count_lock = threading.Lock()  # build_inputs loads from several threads
        self._hashes: dict[tuple[str, int, int], str] = {}
        self._memory: dict[str, np.ndarray] = {}

    def _count(self, *, hit: bool) -> None:
        with self._count_lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    def _file_hash(self, path: Path) -> str:
        # Hash each file once per session (keyed by path, size and modification time).
        st = Path(path).stat()
        k = (str(path), st.st_mtime_ns, st.st_size)
        if k not in self._hashes:
            self._hashes[k] = file_sha256(path)
        return self._hashes[k]

    def key(self, image: Path, mask: Path | None, spec: InputSpec) -> str:
        """Cache key: file hashes + input settings + reader settings."""
        return json_sha256(
            {
                "spec": spec.to_dict(),
                "image": self._file_hash(image),
                "mask": self._file_hash(mask) if (spec.uses_mask and mask is not None) else None,
                "dicom_frame": self.dicom_frame,
                "mask_label": self.mask_label if spec.uses_mask else None,
            }
        )[:40]

    def load(
        self, image: Path, mask: Path | None, spec: InputSpec, case_id: str | None = None
    ) -> np.ndarray:
        """The ``(C, S, S)`` [0, 1] ``float16`` input of one image (cached or computed).

        Raises
        ------
        InputError
            Unreadable files or an unusable ROI, naming ``case_id``.
        """
        try:
            for p in (image, mask if spec.uses_mask else None):
                if p is not None and not Path(p).is_file():
                    raise InputError(f"file not found: {p}")
            if spec.uses_mask and mask is None:
                raise InputError("the 2ch arm needs the ROI mask")
            key = self.key(image, mask, spec)
            if key in self._memory:
                self._count(hit=True)
                return self._memory[key]
            path = self.root / f"{key}.npy" if self.root is not None else None
            if path is not None and path.is_file():
                cached = _read_cached(path, spec)
                if cached is not None:
                    self._count(hit=True)
                    return cached
            self._count(hit=False)
            img = read_image(image, self.dicom_frame)
            m = (
                read_mask(mask, shape=img.shape, label=self.mask_label)
                if spec.uses_mask and mask is not None
                else None
            )
            # float16 in memory as on disk, so cached and fresh inputs give identical outputs.
            arr = network_input(img, m, spec).astype(np.float16)
        except InputError as exc:
            if exc.case_id is None and case_id is not None:
                raise InputError(exc.problem, case_id) from None
            raise
        if path is None:
            self._memory[key] = arr
            return arr
        with atomic_path(path) as tmp, tmp.open("wb") as fh:
            np.save(fh, arr)
        return np.load(path, mmap_mode="r")

    def case_key(
        self, case: Case, spec: InputSpec, mask_source: Literal["mask", "mask_reader2"] = "mask"
    ) -> str:
        """Cache key of a case's input (identifies its content for resume fingerprints)."""
        return self.key(case.image, _mask_of(case, mask_source), spec)


def _read_cached(path: Path, spec: InputSpec) -> np.ndarray | None:
    """A cached input, or None (and the file removed) when it is truncated or corrupt."""
    expected = (spec.in_channels, spec.image_size, spec.image_size)
    try:
        arr = np.load(path, mmap_mode="r")
        if arr.shape == expected and arr.dtype == np.float16:
            return arr
        problem = f"shape {arr.shape} {arr.dtype}, expected {expected} float16"
    except (OSError, ValueError, EOFError) as exc:
        problem = str(exc)
    log.warning("cached network input %s is damaged (%s); recomputing it", path, problem)
    path.unlink(missing_ok=True)
    return None


def _mask_of(case: Case, mask_source: Literal["mask", "mask_reader2"]) -> Path | None:
    return case.mask if mask_source == "mask" else case.mask_reader2


def build_inputs(
    cases: Sequence[Case],
    spec: InputSpec,
    cache: InputCache,
    mask_source: Literal["mask", "mask_reader2"] = "mask",
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Network inputs of many cases; every failing case is reported, then one error raised.

    Parameters
    ----------
    cases : sequence of Case
    spec : InputSpec
    cache : InputCache
    mask_source : {"mask", "mask_reader2"}
        Which delineation forms the 2ch mask channel (reader 2 feeds the ICC filter).
        Cases without ``mask_reader2`` are skipped when it is asked for.
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        case_id -> ``(C, S, S)`` array (memory-mapped when cached on disk).

    Raises
    ------
    InputError
        Listing every case that could not be prepared and why.
    """
    out: dict[str, np.ndarray] = {}
    problems: list[str] = []
    todo = [(c, _mask_of(c, mask_source)) for c in cases]
    if mask_source == "mask_reader2":  # only the cases a second reader outlined
        todo = [(c, m) for c, m in todo if m is not None]

    def load(item: tuple[Case, Path | None]) -> np.ndarray | InputError:
        case, mask = item
        try:
            return cache.load(case.image, mask, spec, case.case_id)
        except InputError as exc:
            return exc

    # Decoding and resizing release the GIL: threads over the cores, results in case order.
    with ThreadPoolExecutor(max_workers=usable_cores()) as pool:
        results = pool.map(load, todo)
        for (case, _), res in zip(
            todo,
            tqdm(
                results,
                total=len(todo),
                desc=f"{spec.arm} inputs",
                disable=not progress,
                leave=False,
            ),
            strict=True,
        ):
            if isinstance(res, InputError):
                problems.append(str(res))
            else:
                out[case.case_id] = res
    if problems:
        shown = "; ".join(problems[:20]) + (" ..." if len(problems) > 20 else "")
        raise InputError(f"{len(problems)} case(s) could not be prepared for the network: {shown}")
    log.info(
        "%s inputs: %d cases (%d from cache, %d decoded)",
        spec.arm,
        len(out),
        cache.hits,
        cache.misses,
    )
    return out


# --- datasets ------------------------------------------------------------------
def standardize(x: np.ndarray) -> np.ndarray:
    """[0, 1] input -> network scale: the image channel standardised, the mask kept 0 / 1."""
    x = np.array(x, dtype=np.float32, copy=True)
    x[0] = (x[0] - IMAGE_MEAN) / IMAGE_STD
    return x


class RandomTransforms:
    """Light training augmentation applied identically to image and mask.

    Random affine (p = ``prob_affine``: rotation up to +-``rotate`` radians, scale
    1 +- ``scale`` per axis, shift up to +-``shift`` of the side) and gamma contrast
    (p = ``prob_gamma``, gamma uniform in ``gamma``). One sample at a time with MONAI
    (``__call__``, the DataLoader path) or a whole batch with torch on the batch's device
    (:meth:`apply_batch`, the device-resident path); both read the ranges from here.

    Parameters
    ----------
    in_channels : int
        1 (image) or 2 (image and mask; the mask is resampled with nearest neighbour).
    image_size : int
        Side of the square input (MONAI shifts in pixels).
    """

    prob_affine = 0.5
    rotate = float(np.pi / 18)
    scale = 0.1
    shift = 0.05
    prob_gamma = 0.3
    gamma = (0.8, 1.25)
    #: Uniform draws per sample consumed by :meth:`apply_batch`.
    n_params = 8

    def __init__(self, in_channels: int, image_size: int) -> None:
        self.in_channels = in_channels
        self.image_size = image_size
        from monai.transforms import Compose, RandAdjustContrastd, RandAffined

        shift = self.shift * image_size  # MONAI translates in pixels
        self.keys = ["image", "mask"][:in_channels]
        self._compose = Compose(
            [
                RandAffined(
                    keys=self.keys,
                    prob=self.prob_affine,
                    rotate_range=self.rotate,
                    scale_range=(self.scale, self.scale),
                    translate_range=(shift, shift),
                    mode=["bilinear", "nearest"][:in_channels],
                    padding_mode="zeros",
                ),
                RandAdjustContrastd(keys=["image"], prob=self.prob_gamma, gamma=self.gamma),
            ]
        )

    def __call__(self, x: np.ndarray, seed: int) -> np.ndarray:
        """One ``(C, S, S)`` [0, 1] sample, transformed with MONAI seeded by ``seed``."""
        self._compose.set_random_state(seed=seed % (2**32))
        data = {k: x[i : i + 1] for i, k in enumerate(self.keys)}
        res = self._compose(data)
        parts = [np.asarray(torch.as_tensor(res[k]).numpy(), dtype=np.float32) for k in self.keys]
        return np.clip(np.concatenate(parts, axis=0), 0.0, 1.0)

    def apply_batch(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """A ``(B, C, S, S)`` [0, 1] batch transformed on its device, without Python per sample.

        ``u`` holds ``(B, n_params)`` uniform [0, 1) draws (the randomness, drawn by the caller
        from a seeded generator). The same transform family and ranges as ``__call__``;
        the random streams differ, so the two paths give different (equally distributed)
        samples.
        """
        b = x.shape[0]
        u = u.to(device=x.device, dtype=torch.float32)
        affine = u[:, 0] < self.prob_affine
        angle = (2 * u[:, 1] - 1) * self.rotate
        sx = 1 + (2 * u[:, 2] - 1) * self.scale
        sy = 1 + (2 * u[:, 3] - 1) * self.scale
        tx, ty = (2 * u[:, 4] - 1) * 2 * self.shift, (2 * u[:, 5] - 1) * 2 * self.shift
        cos, sin = torch.cos(angle), torch.sin(angle)
        # affine_grid maps output to input coordinates ([-1, 1] on both axes of the square).
        theta = torch.stack(
            [
                torch.stack([cos * sx, -sin * sy, tx], dim=1),
                torch.stack([sin * sx, cos * sy, ty], dim=1),
            ],
            dim=1,
        )
        eye = torch.eye(2, 3, device=x.device).expand(b, 2, 3)
        theta = torch.where(affine[:, None, None], theta, eye)
        grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
        img = torch.nn.functional.grid_sample(
            x[:, :1], grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        parts = [img]
        if x.shape[1] > 1:
            parts.append(
                torch.nn.functional.grid_sample(
                    x[:, 1:], grid, mode="nearest", padding_mode="zeros", align_corners=False
                )
            )
        out = torch.where(affine[:, None, None, None], torch.cat(parts, dim=1), x)

        # Gamma contrast on the image channel within its own range (as MONAI does).
        img = out[:, :1]
        lo = img.amin(dim=(2, 3), keepdim=True)
        span = img.amax(dim=(2, 3), keepdim=True) - lo
        gamma = (self.gamma[0] + u[:, 7] * (self.gamma[1] - self.gamma[0]))[:, None, None, None]
        adjusted = ((img - lo) / (span + 1e-7)).clamp_min(0).pow(gamma) * span + lo
        contrast = (u[:, 6] < self.prob_gamma)[:, None, None, None]
        img = torch.where(contrast, adjusted, img)
        return torch.cat([img, out[:, 1:]], dim=1).clamp_(0.0, 1.0)


def random_transforms(in_channels: int, image_size: int) -> RandomTransforms:
    """Light MONAI training augmentation applied identically to image and mask.

    Returns a :class:`RandomTransforms`: a function ``(x, seed) -> x`` on ``(C, S, S)``
    [0, 1] arrays, with a batched torch twin for the device-resident input path.
    """
    return RandomTransforms(in_channels, image_size)


@dataclass(frozen=True)
class InputRow:
    """One training / evaluation sample: an original case or a planned augmented copy."""

    case_id: str
    source_case_id: str
    label: int
    split: str
    ops: str = ""
    noise_seed: int = 0


class DeepDataset(torch.utils.data.Dataset):
    """Samples ``(x, y)`` for the network: standardised inputs and float labels.

    Parameters
    ----------
    arrays : dict
        source case_id -> cached ``(C, S, S)`` [0, 1] input.
    rows : sequence of InputRow
        The samples; augmented copies point at their source's array.
    noise_std : float
        Gaussian noise SD (fraction of the intensity range) of planned copies.
    transform : callable, optional
        ``(x, seed) -> x`` on-the-fly augmentation (training only).
    seed : int
        Study seed; with the epoch and the sample index it seeds ``transform``.
    """

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        rows: Sequence[InputRow],
        noise_std: float = 0.05,
        transform: Callable[[np.ndarray, int], np.ndarray] | None = None,
        seed: int = 0,
    ) -> None:
        self.arrays = arrays
        self.rows = list(rows)
        self.noise_std = noise_std
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        missing = sorted({r.source_case_id for r in self.rows} - set(arrays))
        if missing:
            raise KeyError(f"no network input for source case(s) {missing[:10]}")

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def labels(self) -> np.ndarray:
        return np.array([r.label for r in self.rows], dtype=np.int64)

    @property
    def case_ids(self) -> list[str]:
        return [r.case_id for r in self.rows]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random transforms are drawn (reproducible, resumable)."""
        self.epoch = epoch

    def raw(self, i: int) -> np.ndarray:
        """Sample ``i`` in [0, 1] (planned augmentation applied, no random transform)."""
        row = self.rows[i]
        x = np.asarray(self.arrays[row.source_case_id], dtype=np.float32)
        if row.ops:
            img, m = apply_augmentation(
                x[0], x[1] if x.shape[0] > 1 else None, row.ops, row.noise_seed, self.noise_std
            )
            x = np.stack([img, m]) if m is not None else img[None]
        return x

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.item(i, self.epoch)

    def item(self, i: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``i`` as drawn in ``epoch``: standardised input and float label."""
        x = self.raw(i)
        if self.transform is not None:
            x = self.transform(x, _sample_seed(self.seed, epoch, i))
        return torch.from_numpy(standardize(x)), torch.tensor(
            float(self.rows[i].label), dtype=torch.float32
        )


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def input_rows(
    cases: Sequence[Case],
    assignment: pd.Series,
    augmentations: pd.DataFrame | None = None,
) -> list[InputRow]:
    """Samples of every case plus the planned augmented copies, each with its split.

    Parameters
    ----------
    cases : sequence of Case
    assignment : Series
        case_id -> ``train`` / ``val`` / ``test``.
    augmentations : DataFrame, optional
        :func:`radfusion.preprocessing.plan_augmentation` rows.

    Returns
    -------
    list of InputRow
        Originals in case order, then the copies in plan order.
    """
    rows = [InputRow(c.case_id, c.case_id, int(c.label), str(assignment[c.case_id])) for c in cases]
    if augmentations is not None and len(augmentations):
        known = {c.case_id for c in cases}
        unknown = sorted(set(augmentations["source_case_id"].astype(str)) - known)
        if unknown:
            raise KeyError(f"augmentation plan refers to unknown case(s) {unknown[:10]}")
        for rec in augmentations.itertuples(index=False):
            rows.append(
                InputRow(
                    str(rec.case_id),
                    str(rec.source_case_id),
                    int(rec.label),
                    str(rec.split),
                    str(rec.ops),
                    int(rec.noise_seed),
                )
            )
    return rows
