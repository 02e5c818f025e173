"""The ``radfusion serve`` web app (Starlette): score a new patient in a browser.

Pages (server-rendered HTML, every script and style served from :mod:`radfusion.serve`'s
``static`` folder, nothing fetched from the internet):

``GET /``          the scoring page: load an image, outline the lesion, fill the clinical
                   form, score, print a one-page result with the model card
``GET /batch``     score a zip (manifest + images + ROIs), download a CSV

API (the pages use the same calls):

``GET  /api/health``   liveness, whether the models are loaded (``ready``), the bundle's identity
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
import logging
import secrets
import threading
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from radfusion import __version__
from radfusion.bundle import Bundle, bundle_sha256, check_bundle_formats
from radfusion.errors import InputError, ManifestError, RadfusionError
from radfusion.families import FAMILIES, FAMILY_LABELS
from radfusion.serve.display import clinical_label, headline_model, model_flags
from radfusion.serve.forms import (
    DEFAULT_CASE_ID,
    CaseFiles,
    case_files,
    clean_message,
    form_file,
    form_text,
    polygon,
    polygon_roi_bytes,
    read_form,
    scrub,
)
from radfusion.serve.uploads import (
    IMAGE_KINDS,
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
    centres = None
    if cfg.harmonization.method != "none":  # (radfusion.predict imports scikit-learn: seconds)
        from radfusion.predict import harmonised_centres

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
    miscalibrated = card.get("miscalibration")
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
            "flags": model_flags(
                e,
                checked.get(e["model"]),
                None if miscalibrated is None else miscalibrated.get(e["model"], []),
            ),
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
        "probabilities": _probability_statement(bundle, card),
        "clinical": clinical,
        "card": card,
        "min_roi_pixels": cfg.data.min_roi_pixels,
    }


def _probability_statement(bundle: Bundle, card: dict[str, Any]) -> str:
    """What the probabilities mean, from the model card (an older bundle: what we know)."""
    if card.get("probabilities"):
        return str(card["probabilities"])
    if any("prior_shift" in e for e in bundle.models):
        return (
            "Probabilities are corrected for the prior the models were trained at "
            "(prior_shift in bundle.json); the thresholds moved with them."
        )
    aug = bundle.config.augment
    if aug.enabled and aug.factor > 1:
        return (
            f"Training enlarged the minority class x{aug.factor} and this bundle predates the "
            "prior correction: the probabilities run high and are not the chance of the "
            "positive class in your population; read the call."
        )
    return "Probabilities are the models' own."


# --- the app's state ------------------------------------------------------------------
class ServeState:
    """What every request handler shares: the bundle, its page data, limits, the scratch
    folder, the worker pool, and whether the models are loaded yet.

    The models load in a background thread (:meth:`start_loading`) right after the
    bundle's hashes were verified, so the page answers at once; ``/api/health`` says when
    they are ready, and a request that comes first loads what it needs itself (the
    bundle's lock shares the work).
    """

    def __init__(self, bundle: Bundle, settings: ServeSettings) -> None:
        self.bundle = bundle
        self.settings = settings
        self.limits = settings.limits
        self.data_cfg = bundle.config.data
        self.info = bundle_info(bundle)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.scratch = Scratch(settings.keep_uploads)
        self.limiter = anyio.CapacityLimiter(max(1, settings.workers))
        self.ready = threading.Event()
        self.load_error: str | None = None
        self.load_seconds: float | None = None
        self._started = time.perf_counter()

    def start_loading(self) -> None:
        """Check and load every model in a background thread."""
        threading.Thread(target=self._load, name="radfusion-load-models", daemon=True).start()

    def _load(self) -> None:
        try:
            check_bundle_formats(self.bundle)  # deferred from start-up (radfusion serve)
            for entry in self.bundle.models:
                if "file" in entry:
                    self.bundle.pipeline(entry["file"])
                if "network" in entry:
                    self.bundle.network(self.bundle.layout.network_arm(entry["network"]))
            self.bundle.study_model().prepare()
        except Exception as exc:  # the bundle's own files: the message names no patient
            self.load_error = "the bundle's models could not be loaded; see the server log"
            log.error("loading the bundle's models failed: %s", scrub(str(exc)))
            return
        self.load_seconds = time.perf_counter() - self._started
        self.ready.set()
        log.info("models loaded in %.1f s", self.load_seconds)

    def loading_seconds(self) -> float:
        """Seconds since the app was made."""
        return time.perf_counter() - self._started

    async def in_worker(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in a worker thread (at most ``settings.workers`` at once)."""
        if self.load_error:
            raise UploadError(self.load_error, 503)
        return await anyio.to_thread.run_sync(fn, limiter=self.limiter)

    def cohort(self, files: CaseFiles) -> Any:
        """The one-case cohort of an upload."""
        from radfusion.predict import single_case_cohort

        if files.mask is None:
            raise UploadError("ROI missing")
        return single_case_cohort(
            self.data_cfg,
            case_id=files.case_id,
            image=files.image,
            mask=files.mask,
            clinical=files.clinical,
            center=files.center,
            root=files.image.parent,
        )


def _state(request: Request) -> ServeState:
    return request.app.state.serve


def _error(message: str, status: int, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


Handler = Callable[[Request], Awaitable[Response]]


def guarded(handler: Handler) -> Handler:
    """Turn every expected failure into a 4xx with a message; log no patient data."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except UploadError as exc:
            return _error(scrub(exc.message), exc.status)
        except (InputError, ManifestError, RadfusionError) as exc:
            from radfusion.predict import InvalidCasesError

            if isinstance(exc, InvalidCasesError):
                issues = [{"code": c, "message": scrub(m)} for c, _, m in exc.issues]
                return _error("; ".join(i["message"] for i in issues), 422, issues=issues)
            return _error(scrub(str(exc)), 422)
        except Exception as exc:
            # the type only: a message could quote patient values
            log.error("%s %s failed: %s", request.method, request.url.path, type(exc).__name__)
            return _error("internal error while scoring; see the server log", 500)
        finally:
            form = getattr(request.state, "form", None)
            if form is not None:  # its file parts' buffers
                await form.close()

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


# --- pages ----------------------------------------------------------------------------
async def _page(request: Request, name: str) -> Response:
    st = _state(request)
    return st.templates.TemplateResponse(
        request, name, {"info": st.info, "limits": st.limits, "version": __version__}
    )


async def index(request: Request) -> Response:
    """The scoring page."""
    return await _page(request, "index.html")


async def batch_page(request: Request) -> Response:
    """The batch page."""
    return await _page(request, "batch.html")


# --- API ------------------------------------------------------------------------------
async def health(request: Request) -> Response:
    """Liveness, readiness of the models, and the bundle's identity (no token needed)."""
    st = _state(request)
    ready = st.ready.is_set()
    body: dict[str, Any] = {
        "status": "error" if st.load_error else "ok",
        "ready": ready,
        "radfusion": __version__,
        "study": st.info["study"],
        "bundle_sha256": st.info["sha256"],
        "models": len(st.info["models"]),
    }
    if ready:
        body["loaded_after_s"] = round(st.load_seconds or 0.0, 1)
    elif st.load_error:
        body["error"] = st.load_error
    else:
        body["loading_for_s"] = round(st.loading_seconds(), 1)
    return JSONResponse(body)


async def bundle_api(request: Request) -> Response:
    """Models, thresholds, class names, clinical fields and the model card."""
    return JSONResponse(_state(request).info)


async def _on_upload(
    request: Request,
    work: Callable[[CaseFiles, Path], Any],
    *,
    need_mask: bool,
    models: bool = True,
) -> Any:
    """Run ``work(files, scratch_folder)`` on one case's uploaded form in a worker thread.

    The uploads are checked and written to a scratch folder that is removed afterwards;
    a problem with them is answered 422 with a message that names no scratch path.
    ``models=False``: the work needs no model (an image preview), so it runs while the
    models load and even when they failed to.
    """
    from radfusion.predict import InvalidCasesError

    st = _state(request)
    form = await read_form(request, st.limits.max_bytes)
    with st.scratch.folder() as folder:
        files = await case_files(form, folder, st.limits, need_mask=need_mask)

        def run() -> Any:
            return work(files, folder)

        try:
            if models:
                return await st.in_worker(run)
            return await anyio.to_thread.run_sync(run, limiter=st.limiter)
        except InvalidCasesError as exc:
            exc.issues = [(c, i, clean_message(m, folder)) for c, i, m in exc.issues]
            raise
        except InputError as exc:
            raise UploadError(clean_message(str(exc), folder), 422) from None


@guarded
async def image_api(request: Request) -> Response:
    """An uploaded image as the pipeline reads it: a PNG preview and its size."""
    from radfusion.data.readers import display_uint8, read_image
    from radfusion.serve.explain import png_data_url

    dicom_frame = _state(request).data_cfg.dicom_frame
    arr = await _on_upload(
        request,
        lambda files, _: read_image(files.image, dicom_frame),
        need_mask=False,
        models=False,
    )
    h, w = arr.shape
    return JSONResponse({"width": w, "height": h, "image": png_data_url(display_uint8(arr))})


async def _roi_files(form: Any, folder: Path, st: ServeState) -> tuple[CaseFiles, Any]:
    """The ROI of an ``/api/roi`` form: a drawn outline on an image of a given size (no
    image sent), or an image with its mask file or outline. Returns the files and the
    image's shape (None: read it from the image)."""
    roi = form_text(form, "roi")
    if await form_file(form, "image") is None and roi is not None:
        try:
            shape = (int(form_text(form, "height") or 0), int(form_text(form, "width") or 0))
        except ValueError:
            raise UploadError("roi: width and height must be integers") from None
        if min(shape) < 1 or shape[0] * shape[1] > st.limits.max_pixels:
            raise UploadError("roi: give the image's width and height")
        path = write_upload(folder, "mask", polygon_roi_bytes(polygon(roi)), "roi")
        return CaseFiles(Path(), path, {}, DEFAULT_CASE_ID), shape
    return await case_files(form, folder, st.limits, need_mask=True), None


@guarded
async def roi_api(request: Request) -> Response:
    """ROI area and overlay (drawn outline, mask file or ``.roi``); ``?format=imagej``
    returns a drawn outline as an ImageJ ``.roi`` file."""
    from radfusion.data.readers import read_image, read_mask
    from radfusion.serve.explain import png_data_url

    st = _state(request)
    form = await read_form(request, st.limits.max_bytes)
    if request.query_params.get("format") == "imagej":
        roi = form_text(form, "roi")
        if roi is None:
            raise UploadError("roi: no outline given")
        return Response(
            polygon_roi_bytes(polygon(roi)),
            media_type="application/octet-stream",
            headers={"Content-Disposition": 'attachment; filename="lesion.roi"'},
        )
    with st.scratch.folder() as folder:
        files, shape = await _roi_files(form, folder, st)

        def area() -> np.ndarray:
            size = shape or read_image(files.image, st.data_cfg.dicom_frame).shape
            m = read_mask(files.mask, shape=size, label=st.data_cfg.mask_label)
            if m.shape != size:
                raise UploadError(
                    f"the mask is {m.shape[1]}x{m.shape[0]} pixels but the image is "
                    f"{size[1]}x{size[0]}",
                    422,
                )
            return m

        try:
            m = await anyio.to_thread.run_sync(area, limiter=st.limiter)
        except InputError as exc:
            raise UploadError(clean_message(exc.problem, folder), 422) from None
    n = int(m.sum())
    rgba = np.zeros((*m.shape, 4), dtype=np.uint8)
    rgba[m] = (40, 220, 90, 110)
    return JSONResponse(
        {
            "area_px": n,
            "width": m.shape[1],
            "height": m.shape[0],
            "overlay": png_data_url(rgba),
            "tiny": n < st.data_cfg.min_roi_pixels,
        }
    )


@guarded
async def predict_api(request: Request) -> Response:
    """Every model's score: exactly the JSON of ``radfusion predict --json``."""
    from radfusion.predict import predict_records

    st = _state(request)
    records = await _on_upload(
        request,
        lambda files, folder: predict_records(st.bundle, st.cohort(files), scratch=folder),
        need_mask=True,
    )
    return JSONResponse(records)


@guarded
async def explain_api(request: Request) -> Response:
    """Grad-CAM overlays and radiomics feature contributions of one case."""
    from radfusion.serve.explain import gradcam_overlays, radiomics_explanation

    st = _state(request)

    def work(files: CaseFiles, folder: Path) -> dict[str, Any]:
        case = st.cohort(files).case(0)
        return {
            "gradcam": gradcam_overlays(st.bundle, case),
            "radiomics": radiomics_explanation(st.bundle, case, scratch=folder),
        }

    return JSONResponse(await _on_upload(request, work, need_mask=True))


def _batch_manifest(folder: Path, st: ServeState) -> Path:
    """The one manifest of an unpacked batch zip; every image in it checked."""
    csvs = sorted(folder.rglob("*.csv"))
    named = [p for p in csvs if p.name == "manifest.csv"]
    if not (len(named) == 1 or len(csvs) == 1):
        raise UploadError("batch: put one manifest.csv in the zip (with the images)")
    for p in folder.rglob("*"):
        if p.is_file() and p.suffix.lower() != ".csv":
            data = p.read_bytes()
            if sniff(data) in IMAGE_KINDS:
                check_file(data, IMAGE_KINDS, p.name, st.limits)
    return (named or csvs)[0]


@guarded
async def batch_api(request: Request) -> Response:
    """Score a zip (manifest + images + ROIs): a CSV of every model's scores."""
    import pandas as pd

    from radfusion.data import load_cohort
    from radfusion.predict import InvalidCasesError, payload_records, predict_records

    st = _state(request)
    form = await read_form(request, st.limits.max_batch_bytes)
    archive = await form_file(form, "archive")
    if archive is None:
        raise UploadError("batch: no zip uploaded (field 'archive')")
    if not archive:
        raise UploadError("batch: the uploaded zip is empty")
    with st.scratch.folder() as folder:
        unpack_zip(archive, folder, st.limits)
        manifest = _batch_manifest(folder, st)

        def work() -> dict[str, Any]:
            cohort = load_cohort(manifest, st.data_cfg, require_labels=False)
            root = folder.resolve()
            for case in cohort.cases():
                for p in (case.image, case.mask):
                    if not Path(p).resolve().is_relative_to(root):
                        raise UploadError(
                            f"batch: case {case.case_id} names a file outside the zip"
                        )
            return predict_records(st.bundle, cohort, scratch=folder)

        try:
            payload = await st.in_worker(work)
        except (InvalidCasesError, InputError, ManifestError) as exc:
            raise UploadError(clean_message(str(exc), folder), 422) from None
    buf = io.StringIO()
    pd.DataFrame(payload_records(payload)).to_csv(buf, index=False)
    return Response(
        buf.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="radfusion_scores.csv"'},
    )


ROUTES = [
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


def create_app(bundle: Bundle, settings: ServeSettings | None = None) -> Starlette:
    """The web app for one verified bundle; its models start loading in the background.

    Parameters
    ----------
    bundle : Bundle
        Loaded (and so verified) with :func:`radfusion.bundle.load_bundle`.
    settings : ServeSettings, optional

    Returns
    -------
    starlette.applications.Starlette
        ``app.state.serve`` is its :class:`ServeState`, ``app.state.info`` the page data.
    """
    settings = settings or ServeSettings()
    state = ServeState(bundle, settings)
    if not state.scratch.in_memory:
        log.warning(
            "no memory-backed folder (/dev/shm): uploads pass through %s", state.scratch.root
        )
    state.start_loading()
    app = Starlette(
        routes=ROUTES,
        middleware=[
            Middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts or ["*"]),
            Middleware(_Guard, token=settings.token),
        ],
    )
    app.state.serve = state
    app.state.info = state.info
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
