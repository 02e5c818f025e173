"""Uploaded files: size and decompression-bomb limits, format sniffing, a memory-backed scratch.

Every radfusion reader works on files, so an upload is written, under a name chosen here
(never the client's), into a private folder on a memory-backed file system (``/dev/shm``,
tmpfs) for the length of one request and removed afterwards; nothing reaches the disk
unless ``--keep-uploads`` names a folder. Client file names are never used or logged.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

#: Extension written for each sniffed kind (the readers dispatch on it).
EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "dicom": ".dcm", "roi": ".roi"}
IMAGE_KINDS = ("png", "jpeg", "dicom")
MASK_KINDS = ("png", "jpeg", "dicom", "roi")


class UploadError(Exception):
    """An upload the server refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    """What one request may carry.

    Parameters
    ----------
    max_bytes : int
        Largest request body (all files together), in bytes.
    max_pixels : int
        Largest image (width x height x frames) accepted; bigger files are refused before
        they are decoded (decompression bombs).
    max_batch_bytes : int
        Largest batch upload (the zip as sent).
    max_zip_bytes : int
        Largest total uncompressed size of a batch zip.
    max_zip_members : int
        Most files in a batch zip.
    """

    max_bytes: int = 25 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_batch_bytes: int = 256 * 1024 * 1024
    max_zip_bytes: int = 512 * 1024 * 1024
    max_zip_members: int = 2000


def sniff(data: bytes) -> str | None:
    """The kind of an uploaded file from its first bytes (``png``, ``jpeg``, ``dicom``,
    ``roi``, ``zip``), or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) > 132 and data[128:132] == b"DICM":
        return "dicom"
    if data.startswith(b"Iout"):
        return "roi"
    if data.startswith(b"PK\x03\x04"):
        return "zip"
    return None


def image_pixels(data: bytes, kind: str, what: str) -> int:
    """Pixel count of an image from its header alone (nothing is decoded).

    Raises
    ------
    UploadError
        The header cannot be read (400), or declares a decompression bomb (413).
    """
    if kind == "dicom":
        import pydicom

        try:
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            rows, cols = int(ds.Rows), int(ds.Columns)
            frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        except Exception:  # pydicom raises many types for a broken header
            raise UploadError(
                f"{what}: not a readable DICOM file (no image size in its header)"
            ) from None
        return rows * cols * frames
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:  # lazy: reads the header only
            w, h = im.size
            frames = int(getattr(im, "n_frames", 1))
    except Image.DecompressionBombError:
        # Pillow refuses, at open, a header declaring ~179 Mpixels or more
        raise UploadError(
            f"{what}: the image declares more pixels than radfusion will decode (a "
            "decompression bomb, or a damaged file)",
            status=413,
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise UploadError(f"{what}: the file is not a readable {kind.upper()} image") from None
    return w * h * frames


def check_file(data: bytes, kinds: tuple[str, ...], what: str, limits: Limits) -> str:
    """Check one uploaded file and return its kind.

    Raises
    ------
    UploadError
        Empty (400), unsupported format (415) or too many pixels (413).
    """
    if not data:
        raise UploadError(f"{what}: the file is empty")
    kind = sniff(data)
    if kind not in kinds:
        names = ", ".join(k.upper() if k != "roi" else "ImageJ .roi" for k in kinds)
        raise UploadError(f"{what}: unsupported file format; expected {names}", status=415)
    if kind != "roi":
        n = image_pixels(data, kind, what)
        if n > limits.max_pixels:
            raise UploadError(
                f"{what}: {n:,} pixels is more than the server accepts ({limits.max_pixels:,})",
                status=413,
            )
    return kind


def memory_folder() -> Path | None:
    """A writable memory-backed (tmpfs) folder, or None when the system has none."""
    shm = Path("/dev/shm")
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    on_tmpfs = any(
        len(f := line.split()) > 2 and f[1] == str(shm) and f[2] == "tmpfs" for line in mounts
    )
    if on_tmpfs and os.access(shm, os.W_OK):
        return shm
    return None


class Scratch:
    """Per-request private folders for uploads, on tmpfs where the system has one.

    Parameters
    ----------
    keep : Path, optional
        Also copy every request's uploads there (``--keep-uploads``), one folder each.
    """

    def __init__(self, keep: Path | None = None) -> None:
        self.root = memory_folder()
        self.in_memory = self.root is not None
        self.keep = keep
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def folder(self) -> Iterator[Path]:
        """A fresh folder (mode 0700) removed when the block ends."""
        path = Path(tempfile.mkdtemp(prefix="radfusion-serve-", dir=self.root))
        try:
            yield path
        finally:
            if self.keep is not None:
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
                shutil.copytree(path, self.keep / f"{stamp}-{uuid.uuid4().hex[:8]}")
            shutil.rmtree(path, ignore_errors=True)


def write_upload(folder: Path, stem: str, data: bytes, kind: str) -> Path:
    """Write one checked upload into a scratch folder under a name chosen here."""
    path = folder / f"{stem}{EXTENSIONS[kind]}"
    path.write_bytes(data)
    return path


def safe_member(name: str) -> PurePosixPath | None:
    """A zip member name as a relative path inside the archive, or None if it would
    escape it (absolute, ``..``, drive letters)."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        return None
    return p


def unpack_zip(data: bytes, folder: Path, limits: Limits) -> None:
    """Unpack a batch zip into a scratch folder, refusing bombs and paths that escape.

    Raises
    ------
    UploadError
        Not a zip, too many members, too large once uncompressed, or a member whose path
        leaves the archive.
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise UploadError("batch: the upload is not a readable zip file", status=415) from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if len(members) > limits.max_zip_members:
            raise UploadError(
                f"batch: the zip holds {len(members)} files; at most "
                f"{limits.max_zip_members} are accepted",
                status=413,
            )
        total = sum(m.file_size for m in members)
        if total > limits.max_zip_bytes:
            raise UploadError(
                f"batch: the zip unpacks to {total:,} bytes; at most {limits.max_zip_bytes:,}",
                status=413,
            )
        for m in members:
            rel = safe_member(m.filename)
            if rel is None:
                raise UploadError(f"batch: zip member {m.filename!r} points outside the archive")
            target = folder.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            # the sizes in the zip's directory can lie: count what is really inflated
            with zf.open(m) as src, target.open("wb") as dst:
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > m.file_size or written > limits.max_zip_bytes:
                        raise UploadError(
                            f"batch: zip member {m.filename!r} inflates beyond its declared size",
                            status=413,
                        )
                    dst.write(chunk)
