"""``radfusion serve``: the local web page where a clinician scores a new patient."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from radfusion.cli.common import TrustedKeyOpt, esc, exit_on, out


def serve(
    bundle: Annotated[Path, typer.Argument(help="Model bundle folder (RUN/bundle).")],
    host: Annotated[
        str, typer.Option(help="Address to listen on; other than 127.0.0.1 needs a token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 8000,
    token: Annotated[
        str | None,
        typer.Option(help="Access token (generated and printed when --host is not local)."),
    ] = None,
    keep_uploads: Annotated[
        Path | None,
        typer.Option(help="Also save every uploaded image and ROI in this folder."),
    ] = None,
    max_upload_mb: Annotated[
        float, typer.Option(min=0.1, help="Largest upload per request, in MB.")
    ] = 25,
    workers: Annotated[int, typer.Option(min=1, help="Predictions computed at once.")] = 2,
    trusted_key: TrustedKeyOpt = None,
) -> None:
    """Open a local web page where a clinician scores a new patient with a study's bundle."""
    from radfusion.bundle import BundleError, bundle_sha256, load_bundle
    from radfusion.serve.app import (
        ServeSettings,
        generated_token,
        is_loopback,
        run_server,
    )
    from radfusion.serve.uploads import Limits

    with exit_on((BundleError,)):
        # hashes (and signature) now; the model files' formats with the background loading
        b = load_bundle(bundle, trusted_key=trusted_key, check_formats=False)
    if token is None and not is_loopback(host):
        token = generated_token()
    settings = ServeSettings(
        token=token,
        limits=Limits(max_bytes=int(max_upload_mb * 1024 * 1024)),
        keep_uploads=keep_uploads,
        workers=workers,
    )
    shown = host if ":" not in host else f"[{host}]"
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    signed = f", signature checked with {trusted_key}" if trusted_key is not None else ""
    out.print(esc(f"bundle {bundle} verified (sha256 {bundle_sha256(b)[:12]}{signed})"))
    out.print(f"radfusion serve: open [bold]{escape(url)}[/]  (Ctrl+C stops)", highlight=False)
    if keep_uploads is not None:
        out.print(f"uploads are kept in {escape(str(keep_uploads))}")
    run_server(b, host=host, port=port, settings=settings)
