"""Image and ROI readers.

Images: PNG, JPEG, BMP, TIFF (Pillow), DICOM (pydicom; one frame of a
multi-frame file), NIfTI / NRRD / MHA (SimpleITK). Colour images become
grayscale with the ITU-R BT.601 luma weights, the convention of ultrasound
scanners' RGB exports. Every image is returned as a 2D ``float32`` array.

Masks: the same raster formats, binary or labelled, or ImageJ ``.roi``
polygons (and ``.zip`` RoiSets) read with roifile and rasterised to the image
grid. Every mask is returned as a 2D ``bool`` array.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radfusion.errors import InputError

RASTER_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
ITK_EXTS = {".nii", ".nii.gz", ".nrrd", ".mha", ".mhd"}
DICOM_EXTS = {".dcm", ".dicom"}
ROI_EXTS = {".roi", ".zip"}
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


def _ext(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


def _is_dicom(path: Path) -> bool:
    if _ext(path) in DICOM_EXTS:
        return True
    # DICOM files often have no extension; the magic 'DICM' sits at byte 128.
    try:
        with path.open("rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _to_gray(arr: np.ndarray, what: str) -> np.ndarray:
    """Reduce an (H, W), (H, W, 3|4) or (H, W, 2) array to (H, W) float32."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        return arr.astype(np.float32, copy=False)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        return (arr[..., :3].astype(np.float64) @ LUMA).astype(np.float32)
    if arr.ndim == 3 and arr.shape[-1] == 2:  # gray + alpha
        return arr[..., 0].astype(np.float32)
    if arr.ndim == 3 and 1 in arr.shape:
        return np.squeeze(arr).astype(np.float32)
    raise InputError(f"{what} has unsupported shape {arr.shape}; expected a 2D image")


def _read_raster(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            arr = np.array(im)
    except UnidentifiedImageError:
        raise InputError(f"{path} is not a readable image (corrupt or wrong format)") from None
    except Image.DecompressionBombError as exc:
        raise InputError(
            f"{path} declares more pixels than radfusion will decode ({exc}); it is not an "
            "ultrasound image, or a damaged one"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path} could not be decoded: {exc}") from None
    return arr


def _read_itk(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
        raise InputError(f"{path} could not be read by SimpleITK: {first}") from None
    arr = sitk.GetArrayFromImage(img)  # (z, y, x[, c]) or (y, x[, c])
    if img.GetNumberOfComponentsPerPixel() == 1:
        arr = np.squeeze(arr)
        if arr.ndim != 2:
            raise InputError(f"{path} is {arr.ndim}D with shape {arr.shape}; expected one 2D slice")
        return arr
    arr = np.squeeze(arr, axis=tuple(i for i in range(arr.ndim - 1) if arr.shape[i] == 1))
    return arr


def _read_dicom(path: Path, frame: int) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(path))
        arr = ds.pixel_array
    except InvalidDicomError:
        raise InputError(f"{path} is not a valid DICOM file") from None
    except Exception as exc:  # pydicom raises many types for broken pixel data
        raise InputError(f"{path}: DICOM pixel data could not be decoded: {exc}") from None
    n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if n_frames > 1:
        if frame >= n_frames:
            raise InputError(
                f"{path} has {n_frames} frames; configured frame {frame} does not exist"
            )
        arr = arr[frame]
    if photometric.startswith("YBR"):
        from pydicom.pixels import convert_color_space

        arr = convert_color_space(arr, photometric, "RGB")
    arr = arr.astype(np.float32)
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    arr = arr * slope + intercept
    if photometric == "MONOCHROME1":  # 0 is white: invert so that bright means echogenic
        arr = arr.max() - arr
    return arr


def read_image(path: str | Path, dicom_frame: int = 0) -> np.ndarray:
    """Read an ultrasound image as a 2D float32 grayscale array.

    Parameters
    ----------
    path : str or Path
        PNG, JPEG, BMP, TIFF, DICOM, NIfTI (``.nii``/``.nii.gz``), NRRD or MHA file.
    dicom_frame : int
        Frame taken from a multi-frame DICOM (0-based).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float32 array; colour images converted with BT.601 luma.

    Raises
    ------
    InputError
        The file is missing, unreadable, corrupt, or not 2D.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file not found: {path}")
    ext = _ext(path)
    if _is_dicom(path):
        arr = _read_dicom(path, dicom_frame)
    elif ext in ITK_EXTS:
        arr = _read_itk(path)
    elif ext in RASTER_EXTS or ext == "":
        arr = _read_raster(path)
    else:
        raise InputError(f"{path}: unsupported image format '{ext}'")
    gray = _to_gray(arr, str(path))
    if gray.size == 0 or min(gray.shape) < 2:
        raise InputError(f"{path}: image is empty (shape {gray.shape})")
    if not np.isfinite(gray).all():
        raise InputError(f"{path}: image contains NaN or infinite values")
    return gray


def _rasterise_roi(path: Path, shape: tuple[int, int]) -> np.ndarray:
    import roifile
    from skimage.draw import polygon2mask

    try:
        rois = roifile.roiread(str(path))
    except Exception as exc:
        raise InputError(f"{path} is not a readable ImageJ ROI: {exc}") from None
    if not isinstance(rois, list):
        rois = [rois]
    mask = np.zeros(shape, dtype=bool)
    for roi in rois:
        coords = roi.coordinates()
        if coords is None or len(coords) < 3:
            raise InputError(
                f"{path}: ROI '{roi.name or roi.roitype.name}' is not an area "
                "(polygon, freehand, rectangle or oval expected)"
            )
        # ImageJ stores (x, y) with 0,0 at the top-left pixel corner.
        mask |= polygon2mask(shape, np.asarray(coords, dtype=float)[:, ::-1])
    return mask


def read_mask(
    path: str | Path,
    shape: tuple[int, int] | None = None,
    label: int | None = None,
) -> np.ndarray:
    """Read a lesion ROI as a 2D boolean mask on the image grid.

    Parameters
    ----------
    path : str or Path
        A raster / NIfTI mask, or an ImageJ ``.roi`` (``.zip`` RoiSet: union of its ROIs).
    shape : (int, int), optional
        The image shape. Required for ImageJ ROIs (they are rasterised onto it).
    label : int, optional
        Mask value marking the lesion in a labelled mask. ``None``: any non-zero
        pixel, so 0/1 and 0/255 binary masks both work.

    Raises
    ------
    InputError
        Missing or unreadable file, or an ROI that is not an area.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"mask file not found: {path}")
    ext = _ext(path)
    if ext in ROI_EXTS:
        if shape is None:
            raise InputError(f"{path}: an ImageJ ROI needs the image shape to be rasterised")
        return _rasterise_roi(path, shape)
    if _is_dicom(path):
        arr = _read_dicom(path, 0)
    elif ext in ITK_EXTS:
        arr = _read_itk(path)
    elif ext in RASTER_EXTS:
        arr = _read_raster(path)
    else:
        raise InputError(f"{path}: unsupported mask format '{ext}'")
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] in (2, 3, 4):
        # A coloured drawing on black: a pixel is set if any colour channel is.
        arr = arr[..., :3].max(axis=-1) if arr.shape[-1] != 2 else arr[..., 0]
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise InputError(f"{path}: mask has shape {arr.shape}; expected 2D")
    if label is None:
        return arr != 0
    mask = arr == label
    if not mask.any() and arr.any():
        values = np.unique(arr)[:10].tolist()
        raise InputError(f"{path}: no pixel has the configured label {label}; values: {values}")
    return mask


def display_uint8(image: np.ndarray) -> np.ndarray:
    """An image as 8-bit grey levels for display (the clinician page, the report's cases).

    Data already in 0-255 (8-bit PNG / JPEG, most ultrasound exports) is shown as stored,
    as on the scanner; a wider range (16-bit DICOM) is windowed to its 0.5th-99.5th
    percentiles, so that a few extreme pixels do not grey out the rest.
    """
    img = np.asarray(image, dtype=float)
    lo, hi = float(img.min()), float(img.max())
    if lo >= 0 and hi <= 255:
        return np.clip(np.round(img), 0, 255).astype(np.uint8)
    lo, hi = (float(v) for v in np.percentile(img, [0.5, 99.5]))
    if hi <= lo:
        hi = lo + 1.0
    return np.round(np.clip((img - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)
