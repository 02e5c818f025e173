"""Every image and mask reader, on fixtures created here."""

from __future__ import annotations

import numpy as np
import pytest
import roifile
import SimpleITK as sitk
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from radfusion.data.readers import read_image, read_mask
from radfusion.errors import InputError

from .conftest import ellipse_mask, write_png


def _gradient(h: int = 20, w: int = 30) -> np.ndarray:
    return (np.arange(h)[:, None] * 4 + np.arange(w)[None, :]).astype(np.uint8)


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif"])
def test_lossless_raster_roundtrip(tmp_path, ext):
    arr = _gradient()
    p = tmp_path / f"img{ext}"
    Image.fromarray(arr).save(p)
    got = read_image(p)
    assert got.dtype == np.float32 and got.shape == arr.shape
    np.testing.assert_array_equal(got, arr)


def test_jpeg_reads_close_to_original(tmp_path):
    arr = np.full((32, 32), 100, np.uint8)
    p = tmp_path / "img.jpg"
    Image.fromarray(arr).save(p, quality=95)
    got = read_image(p)
    assert got.shape == (32, 32)
    assert np.abs(got - 100).max() <= 2


def test_rgb_png_becomes_bt601_gray(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    p = tmp_path / "rgb.png"
    Image.fromarray(rgb).save(p)
    got = read_image(p)
    assert got.shape == (4, 5)
    np.testing.assert_allclose(got, 0.299 * 200 + 0.587 * 100 + 0.114 * 50, atol=1e-3)


def test_16bit_png_keeps_full_range(tmp_path):
    arr = (np.arange(40 * 50).reshape(40, 50) * 30).astype(np.uint16)
    p = tmp_path / "deep.png"
    Image.fromarray(arr).save(p)
    got = read_image(p)
    assert got.max() == arr.max() > 255
    np.testing.assert_array_equal(got, arr)


def _dicom(path, frames: np.ndarray, photometric="MONOCHROME2", slope=1.0, intercept=0.0):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"  # US image storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    if frames.ndim == 3:
        ds.NumberOfFrames = frames.shape[0]
        ds.Rows, ds.Columns = frames.shape[1:]
    else:
        ds.Rows, ds.Columns = frames.shape
    ds.PixelData = frames.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_dicom_single_frame_with_rescale(tmp_path):
    arr = _gradient().astype(np.uint16)
    p = tmp_path / "one.dcm"
    _dicom(p, arr, slope=2.0, intercept=-5.0)
    np.testing.assert_allclose(read_image(p), arr * 2.0 - 5.0)


def test_dicom_multiframe_takes_configured_frame(tmp_path):
    frames = np.stack([np.full((10, 12), v, np.uint16) for v in (10, 20, 30)])
    p = tmp_path / "cine"  # no extension: detected by the DICM magic
    _dicom(p, frames)
    assert read_image(p, dicom_frame=2).mean() == 30
    assert read_image(p, dicom_frame=0).mean() == 10
    with pytest.raises(InputError, match="3 frames"):
        read_image(p, dicom_frame=5)


def test_dicom_monochrome1_is_inverted(tmp_path):
    arr = _gradient().astype(np.uint16)
    p = tmp_path / "m1.dcm"
    _dicom(p, arr, photometric="MONOCHROME1")
    got = read_image(p)
    np.testing.assert_allclose(got, arr.max() - arr)


def test_nifti_image_and_labelled_mask(tmp_path):
    arr = _gradient().astype(np.float32)
    p = tmp_path / "img.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(arr[None]), str(p))  # a 1-slice volume
    np.testing.assert_allclose(read_image(p), arr)
    lab = np.zeros((20, 30), np.uint8)
    lab[2:6, 3:9] = 1
    lab[10:15, 10:20] = 2
    mp = tmp_path / "lab.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(lab), str(mp))
    assert read_mask(mp, label=2).sum() == 5 * 10
    assert read_mask(mp).sum() == 4 * 6 + 5 * 10
    with pytest.raises(InputError, match="no pixel has the configured label 3"):
        read_mask(mp, label=3)


@pytest.mark.parametrize("value", [1, 255])
def test_png_mask_values_1_and_255(tmp_path, value):
    m = ellipse_mask((30, 40), 15, 20, 8, 10)
    p = tmp_path / "m.png"
    write_png(p, (m * value).astype(np.uint8))
    np.testing.assert_array_equal(read_mask(p), m)


def test_imagej_polygon_roi_rasterised(tmp_path):
    # A 20x10 axis-aligned rectangle drawn as a polygon in ImageJ (x, y) corner coordinates.
    pts = np.array([[5, 4], [25, 4], [25, 14], [5, 14]], dtype=float)
    roi = roifile.ImagejRoi.frompoints(pts)
    p = tmp_path / "lesion.roi"
    roi.tofile(p)
    m = read_mask(p, shape=(30, 40))
    assert m.shape == (30, 40)
    rows = np.flatnonzero(m.any(1))
    cols = np.flatnonzero(m.any(0))
    assert (rows[0], rows[-1]) == (4, 14)
    assert (cols[0], cols[-1]) == (5, 25)
    assert abs(int(m.sum()) - 21 * 11) <= 21 + 11  # area within one boundary row/column
    with pytest.raises(InputError, match="needs the image shape"):
        read_mask(p)


def test_imagej_oval_roi(tmp_path):
    roi = roifile.ImagejRoi(roitype=roifile.ROI_TYPE.OVAL, left=10, top=5, right=50, bottom=25)
    p = tmp_path / "oval.roi"
    roi.tofile(p)
    m = read_mask(p, shape=(40, 60))
    # An ellipse with semi-axes 20 and 10: area pi*20*10 = 628 px.
    assert abs(int(m.sum()) - np.pi * 200) / (np.pi * 200) < 0.08


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(InputError, match=r"bad\.png"):
        read_image(bad)
    txt = tmp_path / "notes.xyz"
    txt.write_text("x")
    with pytest.raises(InputError, match="unsupported image format"):
        read_image(txt)
    roi = tmp_path / "bad.roi"
    roi.write_bytes(b"nonsense")
    with pytest.raises(InputError, match="ImageJ ROI"):
        read_mask(roi, shape=(10, 10))
