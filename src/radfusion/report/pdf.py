"""Print the self-contained HTML report to PDF with headless Chromium.

Chromium's print engine is what authors use anyway ("Print to PDF" in the browser) and is the
engine the browser tests already need (Debian package ``chromium``); the report's ``@media
print`` stylesheet (:data:`radfusion.report.html.CSS`) lays it out for A4 or Letter. The PDF is
printed from a copy of the HTML with every collapsed supplement opened and the chosen paper
size, in a throw-away browser profile with networking off (the report loads nothing anyway).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from radfusion.errors import ConfigError, RadfusionError
from radfusion.report.html import PRINT_PAGE_SIZES
from radfusion.utils import atomic_path

__all__ = ["CHROMIUM_NAMES", "find_chromium", "print_html", "write_pdf"]

#: Executables tried, in order, to print the PDF.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """Path of the first Chromium-family browser on PATH, or None."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def print_html(html: str, paper: str = "A4") -> str:
    """The report's HTML prepared for print: supplements open, ``@page`` size ``paper``."""
    if paper not in PRINT_PAGE_SIZES:
        raise ConfigError(f"paper must be one of {', '.join(PRINT_PAGE_SIZES)}, not {paper!r}")
    return html.replace("<details>", "<details open>").replace(
        "@page { size: A4;", f"@page {{ size: {paper};"
    )


def write_pdf(html_path: Path, pdf_path: Path, paper: str = "A4", timeout: float = 300) -> Path:
    """Print ``html_path`` (the report) to ``pdf_path`` with headless Chromium.

    Parameters
    ----------
    html_path : Path
        The self-contained report (``report.html``).
    pdf_path : Path
        Where the PDF goes; written atomically (nothing half-written on failure).
    paper : {"A4", "Letter"}
    timeout : float, default 300
        Seconds before the browser is stopped.

    Returns
    -------
    Path
        ``pdf_path``.

    Raises
    ------
    ConfigError
        No Chromium on PATH (with what to install), or an unknown paper size.
    RadfusionError
        The browser failed or produced no PDF.
    """
    exe = find_chromium()
    if exe is None:
        raise ConfigError(
            "no Chromium browser found to print the PDF; install it (Debian/Ubuntu: "
            "apt-get install chromium) or open report.html in a browser and print to PDF"
        )
    text = print_html(html_path.read_text(encoding="utf-8"), paper)
    with tempfile.TemporaryDirectory(prefix="radfusion-pdf-") as tmp:
        src = Path(tmp) / "print.html"  # a throw-away copy, not the run's report
        src.write_text(text, encoding="utf-8")
        out = Path(tmp) / "print.pdf"
        cmd = [
            exe,
            "--headless",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-sync",
            f"--user-data-dir={Path(tmp) / 'profile'}",
            "--no-pdf-header-footer",
            f"--print-to-pdf={out}",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
        cmd.append(src.as_uri())
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RadfusionError(f"{exe} did not finish printing within {timeout:g} s") from None
        if proc.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
            last = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or ["no output"]
            raise RadfusionError(f"{exe} could not print the report: {last[0]}")
        with atomic_path(pdf_path) as dest:
            shutil.copyfile(out, dest)
    return pdf_path
