"""``radfusion report``: the self-contained HTML (and PDF) report of a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from radfusion.cli.common import BAD_INPUT, esc, exit_on, fail, load_config, out
from radfusion.errors import RadfusionError


def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.")],
    pdf: Annotated[
        bool,
        typer.Option("--pdf", help="Also print it to report/report.pdf (needs Chromium)."),
    ] = False,
    paper: Annotated[
        str, typer.Option("--paper", help="PDF page size: A4 or Letter.", show_default=True)
    ] = "A4",
) -> None:
    """(Re)write the self-contained HTML report of a run (evaluating it first if needed)."""
    from radfusion.layout import RunLayout
    from radfusion.pipeline.run import RunFolder
    from radfusion.pipeline.study import STAGES, evaluate
    from radfusion.report import write_report

    layout = RunLayout(run_dir)
    if not layout.config.is_file() or not layout.stages_dir.is_dir():
        raise fail(f"{run_dir} is not a radfusion run folder (config.yaml or stages/ missing)")
    cfg = load_config(layout.config)
    folder = RunFolder(run_dir, cfg)
    from radfusion.report.html import PRINT_PAGE_SIZES
    from radfusion.report.pdf import find_chromium, write_pdf

    if paper not in PRINT_PAGE_SIZES:
        raise fail(f"--paper must be one of {', '.join(PRINT_PAGE_SIZES)}, not {paper}")
    if pdf and find_chromium() is None:  # checked first: fail before the (long) report
        raise fail(
            "--pdf needs Chromium to print the report; install it (Debian/Ubuntu: "
            "apt-get install chromium) or open report.html in a browser and print to PDF"
        )
    try:
        with exit_on(BAD_INPUT, failure=(RadfusionError,)):
            folder.lock()  # a run writing the folder now would change what is reported
            for stage in STAGES:
                damaged = folder.damaged_outputs(stage)
                if damaged:
                    raise fail(
                        f"{run_dir / damaged[0]} is missing, truncated or modified; redo it "
                        f"with `radfusion run CONFIG --run-dir {run_dir} --from {stage}`"
                    )
            if not layout.metrics.is_file():
                evaluate(folder)
            path = write_report(run_dir)
            pdf_path = write_pdf(path, layout.report_pdf, paper) if pdf else None
    finally:
        folder.unlock()
    out.print(f"report: [bold]{esc(path.resolve())}[/]")
    if pdf_path is not None:
        out.print(f"PDF: [bold]{esc(pdf_path.resolve())}[/]")
