"""Reading a request's form: multipart parsing in memory, uploaded files, a drawn outline,
and error messages cleaned of the scratch folder's paths (the client never named them)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from radfusion.serve.uploads import (
    IMAGE_KINDS,
    MASK_KINDS,
    Limits,
    UploadError,
    check_file,
    write_upload,
)

__all__ = [
    "DEFAULT_CASE_ID",
    "RESERVED_FIELDS",
    "CaseFiles",
    "case_files",
    "clean_message",
    "form_file",
    "form_text",
    "polygon",
    "polygon_roi_bytes",
    "read_form",
    "scrub",
]

#: Form fields that are not clinical values.
RESERVED_FIELDS = ("image", "mask", "roi", "width", "height", "center")
#: One fixed case id: a name typed by the user could identify the patient in a log.
DEFAULT_CASE_ID = "new_case"


async def read_form(request: Request, max_bytes: int) -> FormData:
    """Parse a multipart form entirely in memory, refusing bodies over ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise UploadError(
            f"upload of {int(declared):,} bytes is larger than the limit ({max_bytes:,})", 413
        )
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/x-www-form-urlencoded"):
        return await request.form(max_files=0, max_fields=200)
    if not ctype.startswith("multipart/form-data"):
        raise UploadError("send the files as multipart/form-data", 415)
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise UploadError(f"upload is larger than the limit ({max_bytes:,} bytes)", 413)

    async def replay():
        yield bytes(body)

    parser = MultiPartParser(
        request.headers, replay(), max_files=4, max_fields=200, max_part_size=64 * 1024
    )
    # Keep file parts in memory: Starlette spools parts over 1 MB to a temporary file.
    parser.spool_max_size = max_bytes + 1
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise UploadError(f"malformed form: {exc.message}") from None
    request.state.form = form  # closed when the request is answered (app.guarded)
    return form


async def form_file(form: FormData, name: str) -> bytes | None:
    """The bytes of an uploaded file, None when none was sent (a browser sends an empty,
    unnamed part for "no file chosen"); a named empty file is ``b""`` and is refused as
    empty by :func:`~radfusion.serve.uploads.check_file`, not taken for a missing one."""
    item = form.get(name)
    if isinstance(item, UploadFile):
        await item.seek(0)  # a handler may look at a part twice (``/api/roi``)
        data = await item.read()
        return data if data or item.filename else None
    return None


def form_text(form: FormData, name: str) -> str | None:
    """A form's text field, None when missing or blank."""
    item = form.get(name)
    return item if isinstance(item, str) and item.strip() != "" else None


def polygon(text: str) -> np.ndarray:
    """A drawn outline sent as JSON ``[[x, y], ...]`` (image pixels), checked."""
    try:
        pts = np.asarray(json.loads(text), dtype=float)
    except (ValueError, TypeError):
        raise UploadError("roi: expected a JSON list of [x, y] points") from None
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3:
        raise UploadError("roi: an outline needs at least 3 [x, y] points")
    if len(pts) > 100_000 or not np.isfinite(pts).all():
        raise UploadError("roi: points must be finite numbers (at most 100000)")
    if np.abs(pts).max() > 32_000:  # ImageJ ROIs store 16-bit coordinates
        raise UploadError("roi: points must lie on the image")
    return pts


def polygon_roi_bytes(points: np.ndarray) -> bytes:
    """A drawn outline (image pixel coordinates, 0,0 = top-left corner) as an ImageJ ROI."""
    import roifile

    return roifile.ImagejRoi.frompoints(points).tobytes()


@dataclass
class CaseFiles:
    """One case's uploads, written to the scratch folder, and its form values."""

    image: Path
    mask: Path | None
    clinical: dict[str, str]
    case_id: str
    center: str | None = None


async def case_files(form: FormData, folder: Path, limits: Limits, need_mask: bool) -> CaseFiles:
    """Write a form's image and ROI (mask file or drawn outline) into ``folder``.

    Raises
    ------
    UploadError
        No image, a file that is not what it claims, or no ROI when ``need_mask``.
    """
    image = await form_file(form, "image")
    if image is None:
        raise UploadError("image: no file uploaded (field 'image')")
    kind = check_file(image, IMAGE_KINDS, "image", limits)
    image_path = write_upload(folder, "image", image, kind)
    mask = await form_file(form, "mask")
    roi = form_text(form, "roi")
    mask_path = None
    if mask is not None:
        mkind = check_file(mask, MASK_KINDS, "mask", limits)
        mask_path = write_upload(folder, "mask", mask, mkind)
    elif roi is not None:
        mask_path = write_upload(folder, "mask", polygon_roi_bytes(polygon(roi)), "roi")
    elif need_mask:
        raise UploadError("ROI: outline the lesion, or upload a mask (field 'mask' or 'roi')")
    clinical = {
        k: v
        for k, v in form.multi_items()
        if k not in RESERVED_FIELDS and isinstance(v, str) and v.strip() != ""
    }
    return CaseFiles(image_path, mask_path, clinical, DEFAULT_CASE_ID, form_text(form, "center"))


_SCRATCH_PATH = re.compile(r"\S*radfusion-(serve|predict)-[^/\s]+/?")


def scrub(message: str) -> str:
    """Remove scratch-folder paths from a message (the client never named them)."""
    return _SCRATCH_PATH.sub("", message)


def clean_message(message: str, folder: Path) -> str:
    """An error message without the scratch folder's path (the client never named it)."""
    for stem, word in (("image", "the image"), ("mask", "the ROI")):
        for p in folder.glob(f"{stem}.*"):
            message = message.replace(str(p), word)
    return scrub(message.replace(str(folder) + os.sep, "").replace(str(folder), "upload"))
