"""The ``radfusion serve`` web app (Starlette): score a new patient in a browser.

Pages (server-rendered HTML, every script and style served from :mod:`radfusion.serve`'s
``static`` folder, nothing fetched from the internet):

``GET /``          the scoring page: load an image, outline the lesion, fill the clinical
                   form, score, print a one-page result with the model card
``GET /batch``     score a zip (manifest + images + ROIs), download a CSV

API (the pages use the same calls):

``GET  /api/health``   liveness and the bundle's identity
``GET  /api/bundle``   models, thresholds, class names, clinical fields, model card
``POST /api/image``    an uploaded image as the pipeline reads it (PNG preview, size)
``POST /api/roi``      ROI area in pixels (drawn polygon or uploaded mask / ImageJ ``.roi``);
                       ``?format=imagej`` returns the polygon as an ImageJ ``.roi`` file
``POST /api/predict``  multipart ``image``, ``mask`` (file) or ``roi`` (polygon JSON), clinical
                       fields by name, ``center`` (a ComBat bundle's centre): exactly the
                       JSON of ``radfusion predict --json``
``POST /api/explain``  the same form: Grad-CAM overlays, radiomics feature contributions
``POST /api/batch``    multipart ``archive`` (zip): CSV of every model's scores

Logs record method, path, status and time only: never file names, values or case ids.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import secrets
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from radfusion import __version__
from radfusion.bundle import Bundle, bundle_sha256
from radfusion.errors import InputError, ManifestError, RadfusionError
from radfusion.families import FAMILIES, FAMILY_LABELS
from radfusion.predict import (
    InvalidCasesError,
    harmonised_centres,
    payload_records,
    predict_records,
    single_case_cohort,
)
from radfusion.serve.display import clinical_label, headline_model, model_flags
from radfusion.serve.uploads import (
    IMAGE_KINDS,
    MASK_KINDS,
    Limits,
    Scratch,
    UploadError,
    check_file,
    sniff,
    unpack_zip,
    write_upload,
)

log = logging.getLogger("radfusion.serve")

HERE = Path(__file__).parent
TOKEN_COOKIE = "radfusion_token"
#: Form fields that are not clinical values.
RESERVED_FIELDS = ("image", "mask", "roi", "width", "height", "center")
DEFAULT_CASE_ID = "new_case"


@dataclass
class ServeSettings:
    """How the app runs.

    Parameters
    ----------
    token : str, optional
        Required on every request but ``/api/health`` and static files (header
        ``Authorization: Bearer``, cookie, or ``?token=`` on a page, which sets the cookie).
    limits : Limits
        Upload size limits.
    keep_uploads : Path, optional
        Copy every request's uploads into this folder.
    workers : int
        Predictions computed at the same time (the rest wait their turn).
    allowed_hosts : list of str, optional
        Host headers accepted (a local server refuses other names: DNS rebinding).
    """

    token: str | None = None
    limits: Limits = Limits()  # noqa: RUF009 - frozen dataclass, shared safely
    keep_uploads: Path | None = None
    workers: int = 2
    allowed_hosts: list[str] | None = None


def bundle_info(bundle: Bundle) -> dict[str, Any]:
    """What the pages and ``GET /api/bundle`` show about a bundle."""
    cfg = bundle.config
    card = dict(bundle.meta.get("card") or {})
    ranges = card.get("clinical", {})
    clinical = []
    for col in cfg.data.clinical.all:
        kind = "numeric" if col in cfg.data.clinical.numeric else "categorical"
        field = {"name": col, "kind": kind, **ranges.get(col, {}), **clinical_label(col)}
        field["kind"] = kind
        clinical.append(field)
    centres = harmonised_centres(bundle)
    if centres is not None and cfg.harmonization.batch_column == "center":
        # ComBat adjusts a case only with its centre: the form offers the trained ones
        clinical.append(
            {
                "name": "center",
                "kind": "categorical",
                "role": "center",
                "categories": centres,
                **clinical_label("center"),
            }
        )
    order = {f: i for i, f in enumerate(FAMILIES)}
    models = sorted(
        bundle.models, key=lambda e: (order.get(e["family"], len(order)), not e.get("selected"))
    )
    checked = card.get("validation", {})
    rows = [
        {
            "family": e["family"],
            "family_label": FAMILY_LABELS.get(e["family"], e["family"]),
            "model": e["model"],
            "classifier": e.get("classifier"),
            "selected": bool(e.get("selected")),
            "threshold": e["threshold"],
            "test": card.get("test", {}).get(e["model"]),
            "validation": checked.get(e["model"]),
            "flags": model_flags(e, checked.get(e["model"])),
        }
        for e in models
    ]
    headline, why = headline_model(rows)
    return {
        "study": bundle.meta.get("study"),
        "radfusion_bundle": bundle.meta.get("radfusion"),
        "radfusion": __version__,
        "sha256": bundle_sha256(bundle),
        "class_names": list(cfg.evaluation.class_names),
        "threshold_rule": bundle.meta.get("threshold_rule"),
        "models": rows,
        "headline": {"model": headline, "reason": why},
        # training oversampled the positive class this many times (1 = not at all): the
        # probabilities carry that prior, which the page states next to them
        "augment_factor": cfg.augment.factor if cfg.augment.enabled else 1,
        "clinical": clinical,
        "card": card,
        "min_roi_pixels": cfg.data.min_roi_pixels,
    }


# --- request parsing ------------------------------------------------------------------
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
        return await parser.parse()
    except MultiPartException as exc:
        raise UploadError(f"malformed form: {exc.message}") from None


async def _file(form: FormData, name: str) -> bytes | None:
    """The bytes of an uploaded file, None when none was sent (a browser sends an empty,
    unnamed part for "no file chosen"); a named empty file is ``b""`` and is refused as
    empty by :func:`~radfusion.serve.uploads.check_file`, not taken for a missing one."""
    item = form.get(name)
    if isinstance(item, UploadFile):
        await item.seek(0)  # a handler may look at a part twice (``/api/roi``)
        data = await item.read()
        return data if data or item.filename else None
    return None


def _text(form: FormData, name: str) -> str | None:
    item = form.get(name)
    return item if isinstance(item, str) and item.strip() != "" else None


def _polygon(text: str) -> np.ndarray:
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
    image: Path
    mask: Path | None
    clinical: dict[str, str]
    case_id: str
    center: str | None = None


async def _case_files(form: FormData, folder: Path, limits: Limits, need_mask: bool) -> CaseFiles:
    image = await _file(form, "image")
    if image is None:
        raise UploadError("image: no file uploaded (field 'image')")
    kind = check_file(image, IMAGE_KINDS, "image", limits)
    image_path = write_upload(folder, "image", image, kind)
    mask = await _file(form, "mask")
    roi = _text(form, "roi")
    mask_path = None
    if mask is not None:
        mkind = check_file(mask, MASK_KINDS, "mask", limits)
        mask_path = write_upload(folder, "mask", mask, mkind)
    elif roi is not None:
        mask_path = write_upload(folder, "mask", polygon_roi_bytes(_polygon(roi)), "roi")
    elif need_mask:
        raise UploadError("ROI: outline the lesion, or upload a mask (field 'mask' or 'roi')")
    clinical = {
        k: v
        for k, v in form.multi_items()
        if k not in RESERVED_FIELDS and isinstance(v, str) and v.strip() != ""
    }
    # One fixed case id: a name typed by the user could identify the patient in a log.
    return CaseFiles(image_path, mask_path, clinical, DEFAULT_CASE_ID, _text(form, "center"))


_SCRATCH_PATH = re.compile(r"\S*radfusion-(serve|predict)-[^/\s]+/?")


def _scrub(message: str) -> str:
    """Remove scratch-folder paths from a message (the client never named them)."""
    return _SCRATCH_PATH.sub("", message)


def _clean(message: str, folder: Path) -> str:
    """An error message without the scratch folder's path (the client never named it)."""
    for stem, word in (("image", "the image"), ("mask", "the ROI")):
        for p in folder.glob(f"{stem}.*"):
            message = message.replace(str(p), word)
    return _scrub(message.replace(str(folder) + os.sep, "").replace(str(folder), "upload"))


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0 and hi <= 255:
        return np.clip(np.round(arr), 0, 255).astype(np.uint8)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.round((arr - lo) * scale).astype(np.uint8)


# --- the app --------------------------------------------------------------------------
def create_app(bundle: Bundle, settings: ServeSettings | None = None) -> Starlette:
    """The web app for one verified bundle.

    Parameters
    ----------
    bundle : Bundle
        Loaded (and so verified) with :func:`radfusion.bundle.load_bundle`.
    settings : ServeSettings, optional

    Returns
    -------
    starlette.applications.Starlette
    """
    from radfusion.data.readers import read_image, read_mask
    from radfusion.serve.explain import gradcam_overlays, png_data_url, radiomics_explanation

    settings = settings or ServeSettings()
    limits = settings.limits
    # Load every model in the background, right after the bundle was verified: the page
    # answers at once, /api/health says when the models are ready, and a request that
    # comes first loads what it needs itself (the bundle's lock shares the work).
    warm = {"ready": False}

    def load_models() -> None:
        started = time.perf_counter()
        try:
            for entry in bundle.models:
                if "file" in entry:
                    bundle.pipeline(entry["file"])
                if "network" in entry:
                    bundle.network(bundle.layout.network_arm(entry["network"]))
        except Exception as exc:  # reported again, as a 4xx/5xx, by the first request
            log.error("loading the bundle's models failed: %s", type(exc).__name__)
            return
        warm["ready"] = True
        log.info("models loaded in %.1f s", time.perf_counter() - started)

    threading.Thread(target=load_models, name="radfusion-load-models", daemon=True).start()
    scratch = Scratch(settings.keep_uploads)
    if not scratch.in_memory:
        log.warning("no memory-backed folder (/dev/shm): uploads pass through %s", scratch.root)
    info = bundle_info(bundle)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    limiter = anyio.CapacityLimiter(max(1, settings.workers))
    data_cfg = bundle.config.data

    async def in_worker(fn: Callable[[], Any]) -> Any:
        return await anyio.to_thread.run_sync(fn, limiter=limiter)

    def error(message: str, status: int, **extra: Any) -> JSONResponse:
        return JSONResponse({"error": message, **extra}, status_code=status)

    def guarded(handler: Callable) -> Callable:
        """Turn every expected failure into a 4xx with a message; log no patient data."""

        async def wrapped(request: Request) -> Response:
            try:
                return await handler(request)
            except UploadError as exc:
                return error(_scrub(exc.message), exc.status)
            except InvalidCasesError as exc:
                issues = [{"code": c, "message": _scrub(m)} for c, _, m in exc.issues]
                return error("; ".join(i["message"] for i in issues), 422, issues=issues)
            except (InputError, ManifestError, RadfusionError) as exc:
                return error(_scrub(str(exc)), 422)
            except Exception as exc:
                # the type only: a message could quote patient values
                log.error("%s %s failed: %s", request.method, request.url.path, type(exc).__name__)
                return error("internal error while scoring; see the server log", 500)

        return wrapped

    def case_cohort(files: CaseFiles):
        if files.mask is None:
            raise UploadError("ROI missing")
        return single_case_cohort(
            data_cfg,
            case_id=files.case_id,
            image=files.image,
            mask=files.mask,
            clinical=files.clinical,
            center=files.center,
            root=files.image.parent,
        )

    # --- pages ------------------------------------------------------------------------
    async def page(request: Request, name: str) -> Response:
        return templates.TemplateResponse(
            request, name, {"info": info, "limits": limits, "version": __version__}
        )

    async def index(request: Request) -> Response:
        return await page(request, "index.html")

    async def batch_page(request: Request) -> Response:
        return await page(request, "batch.html")

    # --- API --------------------------------------------------------------------------
    async def health(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "ready": warm["ready"],
                "radfusion": __version__,
                "study": info["study"],
                "bundle_sha256": info["sha256"],
                "models": len(info["models"]),
            }
        )

    async def bundle_api(request: Request) -> Response:
        return JSONResponse(info)

    @guarded
    async def image_api(request: Request) -> Response:
        form = await read_form(request, limits.max_bytes)
        with scratch.folder() as folder:
            files = await _case_files(form, folder, limits, need_mask=False)
            try:
                arr = await in_worker(lambda: read_image(files.image, data_cfg.dicom_frame))
            except InputError as exc:
                raise UploadError(_clean(exc.problem, folder), 422) from None
        h, w = arr.shape
        return JSONResponse({"width": w, "height": h, "image": png_data_url(_to_uint8(arr))})

    @guarded
    async def roi_api(request: Request) -> Response:
        form = await read_form(request, limits.max_bytes)
        roi = _text(form, "roi")
        if request.query_params.get("format") == "imagej":
            if roi is None:
                raise UploadError("roi: no outline given")
            return Response(
                polygon_roi_bytes(_polygon(roi)),
                media_type="application/octet-stream",
                headers={"Content-Disposition": 'attachment; filename="lesion.roi"'},
            )
        with scratch.folder() as folder:
            if await _file(form, "image") is None and roi is not None:
                try:
                    shape = (int(_text(form, "height") or 0), int(_text(form, "width") or 0))
                except ValueError:
                    raise UploadError("roi: width and height must be integers") from None
                if min(shape) < 1 or shape[0] * shape[1] > limits.max_pixels:
                    raise UploadError("roi: give the image's width and height")
                path = write_upload(folder, "mask", polygon_roi_bytes(_polygon(roi)), "roi")
                files = CaseFiles(Path(), path, {}, DEFAULT_CASE_ID)
            else:
                files = await _case_files(form, folder, limits, need_mask=True)
                shape = None

            def area() -> tuple[int, np.ndarray]:
                nonlocal shape
                if shape is None:
                    shape = read_image(files.image, data_cfg.dicom_frame).shape
                m = read_mask(files.mask, shape=shape, label=data_cfg.mask_label)
                if m.shape != shape:
                    raise UploadError(
                        f"the mask is {m.shape[1]}x{m.shape[0]} pixels but the image is "
                        f"{shape[1]}x{shape[0]}",
                        422,
                    )
                return int(m.sum()), m

            try:
                n, m = await in_worker(area)
            except InputError as exc:
                raise UploadError(_clean(exc.problem, folder), 422) from None
        rgba = np.zeros((*m.shape, 4), dtype=np.uint8)
        rgba[m] = (40, 220, 90, 110)
        return JSONResponse(
            {
                "area_px": n,
                "width": m.shape[1],
                "height": m.shape[0],
                "overlay": png_data_url(rgba),
                "tiny": n < data_cfg.min_roi_pixels,
            }
        )

    @guarded
    async def predict_api(request: Request) -> Response:
        form = await read_form(request, limits.max_bytes)
        with scratch.folder() as folder:
            files = await _case_files(form, folder, limits, need_mask=True)
            try:
                records = await in_worker(
                    lambda: predict_records(bundle, case_cohort(files), scratch=folder)
                )
            except InvalidCasesError as exc:
                exc.issues = [(c, i, _clean(m, folder)) for c, i, m in exc.issues]
                raise
            except InputError as exc:
                raise UploadError(_clean(str(exc), folder), 422) from None
        return JSONResponse(records)

    @guarded
    async def explain_api(request: Request) -> Response:
        form = await read_form(request, limits.max_bytes)
        with scratch.folder() as folder:
            files = await _case_files(form, folder, limits, need_mask=True)

            def work() -> dict[str, Any]:
                case = case_cohort(files).case(0)
                return {
                    "gradcam": gradcam_overlays(bundle, case),
                    "radiomics": radiomics_explanation(bundle, case, scratch=folder),
                }

            try:
                result = await in_worker(work)
            except InputError as exc:
                raise UploadError(_clean(str(exc), folder), 422) from None
        return JSONResponse(result)

    @guarded
    async def batch_api(request: Request) -> Response:
        import pandas as pd

        from radfusion.data import load_cohort

        form = await read_form(request, limits.max_batch_bytes)
        archive = await _file(form, "archive")
        if archive is None:
            raise UploadError("batch: no zip uploaded (field 'archive')")
        if not archive:
            raise UploadError("batch: the uploaded zip is empty")
        with scratch.folder() as folder:
            unpack_zip(archive, folder, limits)
            csvs = sorted(folder.rglob("*.csv"))
            named = [p for p in csvs if p.name == "manifest.csv"]
            if len(named) == 1 or len(csvs) == 1:
                manifest = (named or csvs)[0]
            else:
                raise UploadError("batch: put one manifest.csv in the zip (with the images)")
            for p in folder.rglob("*"):
                if p.is_file() and p.suffix.lower() != ".csv":
                    data = p.read_bytes()
                    if sniff(data) in IMAGE_KINDS:
                        check_file(data, IMAGE_KINDS, p.name, limits)

            def work() -> dict[str, Any]:
                cohort = load_cohort(manifest, data_cfg, require_labels=False)
                root = folder.resolve()
                for case in cohort.cases():
                    for p in (case.image, case.mask):
                        if not Path(p).resolve().is_relative_to(root):
                            raise UploadError(
                                f"batch: case {case.case_id} names a file outside the zip"
                            )
                return predict_records(bundle, cohort, scratch=folder)

            try:
                payload = await in_worker(work)
            except (InvalidCasesError, InputError, ManifestError) as exc:
                raise UploadError(_clean(str(exc), folder), 422) from None
        buf = io.StringIO()
        pd.DataFrame(payload_records(payload)).to_csv(buf, index=False)
        return Response(
            buf.getvalue(),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="radfusion_scores.csv"'},
        )

    routes = [
        Route("/", index),
        Route("/batch", batch_page),
        Route("/api/health", health),
        Route("/api/bundle", bundle_api),
        Route("/api/image", image_api, methods=["POST"]),
        Route("/api/roi", roi_api, methods=["POST"]),
        Route("/api/predict", predict_api, methods=["POST"]),
        Route("/api/explain", explain_api, methods=["POST"]),
        Route("/api/batch", batch_api, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts or ["*"]),
            Middleware(_Guard, token=settings.token),
        ],
    )
    app.state.info = info
    return app


class _Guard(BaseHTTPMiddleware):
    """Token check, security headers, and a log line with no patient data."""

    def __init__(self, app, token: str | None) -> None:
        super().__init__(app)
        self.token = token

    def _authorised(self, request: Request) -> bool:
        if self.token is None:
            return True
        given = request.cookies.get(TOKEN_COOKIE, "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return secrets.compare_digest(given.encode(), self.token.encode())

    async def dispatch(self, request: Request, call_next) -> Response:
        started = time.perf_counter()
        path = request.url.path
        open_path = path == "/api/health" or path.startswith("/static/")
        query_token = request.query_params.get("token")
        if (
            self.token
            and query_token is not None
            and request.method == "GET"
            and secrets.compare_digest(query_token.encode(), self.token.encode())
        ):
            response: Response = RedirectResponse(path, status_code=303)
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
            return response
        if not open_path and not self._authorised(request):
            response = JSONResponse(
                {"error": "this server needs its access token (open the URL printed at start)"},
                status_code=401,
            )
        else:
            response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
            "script-src 'self'; connect-src 'self'"
        )
        response.headers["Cache-Control"] = "no-store"
        ms = (time.perf_counter() - started) * 1000
        log.info("%s %s %d %.0f ms", request.method, path, response.status_code, ms)
        return response


def generated_token() -> str:
    """A fresh random access token."""
    return secrets.token_urlsafe(18)


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the server on this machine."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _log_to_console() -> None:
    """One line per request (method, path, status, time) and every Python warning go to the
    server's log on stderr, timestamped, instead of raw warning text."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logging.captureWarnings(True)
    warnings.simplefilter("once")  # a library's warning once, not once per request
    for name in ("radfusion.serve", "py.warnings"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.handlers = [handler]
        logger.propagate = False


def run_server(
    bundle: Bundle,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServeSettings | None = None,
) -> None:
    """Serve the app with uvicorn until interrupted (no access log: URLs could carry the
    token).

    Parameters
    ----------
    bundle : Bundle
        Loaded and verified.
    host, port
        Where to listen.
    settings : ServeSettings, optional
    """
    import dataclasses

    import uvicorn

    settings = settings or ServeSettings()
    _log_to_console()
    if is_loopback(host) and settings.allowed_hosts is None:
        # a web page elsewhere could point a DNS name at 127.0.0.1 and read the answers
        settings = dataclasses.replace(settings, allowed_hosts=["127.0.0.1", "localhost", "[::1]"])
    app = create_app(bundle, settings)
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning")
