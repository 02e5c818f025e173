"""The ``radfusion`` command line.

Every command parses its options into the one :class:`~radfusion.config.StudyConfig`
(from a YAML file or a preset) and calls the library; nothing here computes.
Exit status: 0 success, 1 a failure during work, 2 bad input or configuration.
Every user-supplied string (paths, case ids, config values, error messages) is escaped
before rich prints it, so brackets in them are text, never markup.

One module per group of commands: :mod:`~radfusion.cli.study` (validate, run, radiomics,
deep, demo), :mod:`~radfusion.cli.bundles` (predict, evaluate, sign),
:mod:`~radfusion.cli.serving` (serve), :mod:`~radfusion.cli.reporting` (report) and
:mod:`~radfusion.cli.tools` (config, synth, ibsi); what they share (the app, consoles,
escaping, errors and exit statuses) is :mod:`~radfusion.cli.common`.
"""

from __future__ import annotations

import sys

from radfusion.cli import bundles, common, reporting, serving, study, tools
from radfusion.cli.common import (
    BAD_INPUT,
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    app,
    err,
    esc,
    load_config,
    out,
)
from radfusion.errors import RadfusionError

__all__ = ["app", "err", "load_config", "main", "out"]

# Registered here, in the order `radfusion --help` lists them.
for _command in (
    study.validate,
    tools.synth,
    study.run,
    study.radiomics,
    tools.ibsi,
    study.deep,
    reporting.report,
    bundles.predict,
    bundles.evaluate,
    bundles.sign,
    serving.serve,
    study.demo,
):
    app.command()(_command)
app.add_typer(tools.config_app, name="config")


def main() -> None:  # pragma: no cover - console entry for `python -m radfusion`
    common.ARGV = sys.argv[1:]
    try:
        app()
    except SystemExit as exc:
        # Typer turns Ctrl+C into exit status 130 before any handler here could see it
        if exc.code == EXIT_INTERRUPTED:
            err.print("interrupted; run the same command again to resume")
        raise
    except RadfusionError as exc:
        err.print(f"[bold red]error:[/] {esc(exc)}", highlight=False)
        sys.exit(EXIT_BAD_INPUT if isinstance(exc, BAD_INPUT) else EXIT_FAILURE)
    except KeyboardInterrupt:
        err.print("interrupted; run the same command again to resume")
        sys.exit(EXIT_INTERRUPTED)
    except OSError as exc:  # the machine: disk full, permissions, a vanished folder
        if common.state["verbose"]:
            err.print_exception()
        where = f"{exc.filename}: " if exc.filename else ""
        err.print(f"[bold red]error:[/] {esc(where)}{esc(exc.strerror or exc)}", highlight=False)
        sys.exit(EXIT_FAILURE)
    except Exception as exc:  # a bug or the machine (disk full ...): one line, no traceback
        if common.state["verbose"]:  # ... unless asked for with -v
            err.print_exception()
        err.print(
            f"[bold red]error:[/] {esc(type(exc).__name__)}: {esc(exc)} "
            "(run with -v for details; please report it if it is not about your machine)",
            highlight=False,
        )
        sys.exit(EXIT_FAILURE)
