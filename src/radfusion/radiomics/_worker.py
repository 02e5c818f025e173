"""The part of radiomics extraction that runs inside a worker process.

A task carries file paths and settings only (a few hundred bytes), never pixel
arrays: each worker reads, preprocesses and (for an augmented copy) augments its
own case, then runs PyRadiomics. The PyRadiomics extractor is built once per
worker (per thread, for threaded dask workers) and reused for every case.

PyRadiomics logs through the ``radiomics`` logger and prints warnings to stderr,
e.g. "GLCM is symmetrical, therefore Sum Average = 2 * Joint Average" for every
image type of every case. That notice is expected with the symmetrical GLCM and
is dropped; every other warning or error is collected per case and returned with
the case's diagnostics (a feature PyRadiomics failed to compute becomes NaN with
an error log, so those messages must not be lost), instead of being interleaved
on the console by parallel workers.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk

from radfusion.config import PreprocessConfig
from radfusion.data.readers import read_image, read_mask
from radfusion.preprocessing import apply_augmentation, preprocess_case

# Messages PyRadiomics logs as warnings although they describe expected behaviour.
_EXPECTED_NOTICES = ("GLCM is symmetrical",)
_MAX_MESSAGE_CHARS = 300

_local = threading.local()
_setup_lock = threading.Lock()
_logging_configured = False


@dataclass(frozen=True)
class ExtractionTask:
    """Everything a worker needs to extract one crop (paths and settings, no pixels)."""

    key: str
    image: str
    mask: str
    preprocess: dict[str, Any]
    mask_label: int | None
    dicom_frame: int
    params_sha256: str
    params: dict[str, Any]
    ops: str = ""
    noise_seed: int = 0
    noise_std: float = 0.0
    itk_threads: int = 0  # threads per SimpleITK filter in this worker; 0: SimpleITK's default


class _CaseMessages(logging.Handler):
    """Collects PyRadiomics warnings/errors of the case running on this thread."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        sink = getattr(_local, "messages", None)
        if sink is None:
            return
        msg = record.getMessage()
        if any(msg.startswith(n) for n in _EXPECTED_NOTICES):
            return
        lines = [ln for ln in msg.strip().splitlines() if ln.strip()]
        if len(lines) > 1:  # a traceback: its first and last lines say what failed
            msg = f"{lines[0]} ... {lines[-1].strip()}"
        sink.append(f"{record.levelname}: {msg[:_MAX_MESSAGE_CHARS]}")


def configure_radiomics_logging() -> None:
    """Route PyRadiomics' log messages to per-case diagnostics instead of stderr (idempotent)."""
    global _logging_configured
    with _setup_lock:
        if _logging_configured:
            return
        import radiomics

        # Quiet PyRadiomics' own stderr handler; its INFO/DEBUG chatter is not even formatted.
        # Its warnings reach the caller through the case diagnostics (summarised once by
        # extract_radiomics), not through the root logger, once per image type and case.
        radiomics.setVerbosity(logging.CRITICAL + 10)
        logger = logging.getLogger("radiomics")
        logger.setLevel(logging.WARNING)
        logger.addHandler(_CaseMessages())
        logger.propagate = False
        # PyRadiomics validates every parameter set with pykwalify, which logs at INFO.
        logging.getLogger("pykwalify").setLevel(logging.WARNING)
        _logging_configured = True


#: PyRadiomics validates a parameter set with pykwalify, which is not thread-safe: two
#: extractors built at once (concurrent ``radfusion serve`` requests) fail at random.
EXTRACTOR_LOCK = threading.Lock()


def _extractor(params_sha256: str, params: dict[str, Any]) -> Any:
    """The PyRadiomics extractor for a parameter set, built once per worker thread."""
    cache = getattr(_local, "extractors", None)
    if cache is None:
        cache = _local.extractors = {}
    if params_sha256 not in cache:
        from radiomics import featureextractor

        with EXTRACTOR_LOCK:
            cache[params_sha256] = featureextractor.RadiomicsFeatureExtractor(dict(params))
    return cache[params_sha256]


def _jsonable(value: Any) -> Any:
    """A PyRadiomics diagnostics value as plain JSON (numpy scalars, tuples -> lists)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def split_output(output: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """PyRadiomics' output as ``(features, diagnostics)``: floats, and JSON-ready entries.

    The ``diagnostics_Configuration_*`` entries are dropped: settings are the same for every
    case, so the caller records them once per run.
    """
    features: dict[str, float] = {}
    pyrad: dict[str, Any] = {}
    for name, value in output.items():
        if name.startswith("diagnostics_"):
            if not name.startswith("diagnostics_Configuration_"):
                pyrad[name] = _jsonable(value)
        else:
            features[name] = float(value)
    return features, pyrad


def pyradiomics_execute(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    params_sha256: str,
    params: dict[str, Any],
    spacing: tuple[float, ...] | None = None,
) -> dict[str, Any]:
    """Run PyRadiomics on an image array and its ROI, as every radfusion extraction does.

    Parameters
    ----------
    image : ndarray
        2D (a preprocessed crop) or 3D (``z, y, x``) intensities, handed over as float32.
    mask : ndarray
        Same shape; non-zero inside the ROI.
    params_sha256, params : str, dict
        The parameter set and its hash (the extractor is built once per worker thread).
    spacing : tuple of float, optional
        Voxel spacing in SimpleITK's ``x, y(, z)`` order; default unit spacing (a study's
        crops are already resampled by radfusion's preprocessing).

    Returns
    -------
    dict
        PyRadiomics' raw output (features and ``diagnostics_*``); see :func:`split_output`.
    """
    extractor = _extractor(params_sha256, params)
    label = int(extractor.settings.get("label", 1))
    sitk_image = sitk.GetImageFromArray(np.ascontiguousarray(image, dtype=np.float32))
    sitk_mask = sitk.GetImageFromArray((np.asarray(mask) != 0).astype(np.int32) * label)
    if spacing is not None:
        sitk_image.SetSpacing(tuple(float(s) for s in spacing))
        sitk_mask.SetSpacing(tuple(float(s) for s in spacing))
    return dict(extractor.execute(sitk_image, sitk_mask, label=label))


@contextlib.contextmanager
def collect_messages() -> Iterator[list[str]]:
    """Collect the PyRadiomics warnings / errors logged on this thread meanwhile."""
    configure_radiomics_logging()
    _local.messages = messages = []
    try:
        yield messages
    finally:
        _local.messages = None


def run_task(task: ExtractionTask) -> dict[str, Any]:
    """Read, preprocess, (augment) and extract one case; never raises.

    Returns
    -------
    dict
        ``{"key", "features": {name: float}, "diagnostics": {...}}`` on success,
        ``{"key", "error": "<ExceptionType>: <message>"}`` on failure.
    """
    if (
        task.itk_threads
        and sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() != task.itk_threads
    ):
        # Several workers on one machine: one thread each avoids oversubscribing the cores
        # during the LoG filtering (results do not depend on the thread count).
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(task.itk_threads)
    start, cpu_start = time.perf_counter(), time.thread_time()
    with collect_messages() as messages:
        try:
            image = read_image(task.image, dicom_frame=task.dicom_frame)
            mask = read_mask(task.mask, shape=image.shape, label=task.mask_label)
            roi_pixels = int(mask.sum())
            pre = preprocess_case(image, mask, PreprocessConfig(**task.preprocess))
            crop, crop_mask = pre.image, pre.mask
            if task.ops:
                crop, crop_mask = apply_augmentation(
                    crop, crop_mask, task.ops, task.noise_seed, task.noise_std
                )
            # Unit pixel spacing: the crop is already resampled to size x size by preprocessing.
            output = pyradiomics_execute(
                crop, crop_mask, params_sha256=task.params_sha256, params=task.params
            )
        except Exception as exc:  # one bad case must not stop the others: report it instead
            return {"key": task.key, "error": f"{type(exc).__name__}: {exc}".strip()}

    features, pyrad = split_output(output)
    diagnostics = {
        "bbox_top": pre.bbox.top,
        "bbox_bottom": pre.bbox.bottom,
        "bbox_left": pre.bbox.left,
        "bbox_right": pre.bbox.right,
        "image_height": int(image.shape[0]),
        "image_width": int(image.shape[1]),
        "roi_pixels": roi_pixels,
        "crop_roi_pixels": int(crop_mask.sum()),
        "pyradiomics_messages": " | ".join(messages),
        "seconds": round(time.perf_counter() - start, 4),
        "cpu_seconds": round(time.thread_time() - cpu_start, 4),
        **pyrad,
    }
    return {"key": task.key, "features": features, "diagnostics": diagnostics}
