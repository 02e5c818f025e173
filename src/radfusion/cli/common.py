"""What every command of the ``radfusion`` program shares: the Typer app and its global
options, the two consoles, escaping, exit statuses and the one mapping of radfusion's
errors to an error line and an exit status."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from radfusion import __version__
from radfusion.config import StudyConfig, load_preset
from radfusion.errors import ConfigError, InputError, ManifestError

app = typer.Typer(
    name="radfusion",
    help="Radiomics, deep-learning and fusion models for ultrasound lesion classification.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # paragraphs of docstrings are re-flowed to the terminal's width (rich mode kept the
    # source's line breaks, breaking lines mid-sentence)
    rich_markup_mode="markdown",
)

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
#: radfusion's errors that mean the user's input or configuration is wrong (exit status 2);
#: any other radfusion error is a failure during the work (exit status 1).
BAD_INPUT: tuple[type[Exception], ...] = (InputError, ManifestError, ConfigError)
#: Options of the whole invocation that :func:`radfusion.cli.main` needs after a command
#: failed.
state = {"verbose": False}
#: The arguments of this process when it is the ``radfusion`` program (set by
#: :func:`radfusion.cli.main`); ``None`` when the app is invoked in-process (tests,
#: notebooks), which never restarts.
ARGV: list[str] | None = None


def esc(value: object) -> str:
    """Text for rich: user values (paths, ids, config values) are never markup."""
    return escape(str(value))


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print ``message`` as one error line; the exit (status ``code``) for the caller to raise."""
    err.print(f"[bold red]error:[/] {esc(message)}", highlight=False)
    return typer.Exit(code)


def case_errors(issues: list[tuple[str, str | None, str]]) -> typer.Exit:
    """Print each case that failed the checks (``InvalidCasesError.issues``); exit status 2."""
    for code, cid, msg in issues:
        where = f"case {cid}: " if cid else ""
        err.print(f"[bold red]error[/] {esc(f'[{code}] {where}{msg}')}", highlight=False)
    return typer.Exit(EXIT_BAD_INPUT)


@contextlib.contextmanager
def exit_on(
    bad_input: tuple[type[Exception], ...],
    *,
    failure: tuple[type[Exception], ...] = (),
    per_case: type[Exception] | None = None,
) -> Iterator[None]:
    """Turn an error raised in the block into one escaped error line and an exit status.

    Parameters
    ----------
    bad_input : tuple of exception types
        Errors of the user's input: exit status 2.
    failure : tuple of exception types
        Errors during the work: exit status 1 (checked after ``bad_input``).
    per_case : exception type, optional
        ``radfusion.predict.InvalidCasesError`` where cases are checked: each failed case
        gets its own line (exit status 2). Passed in, not imported here, because importing
        :mod:`radfusion.predict` costs every command seconds.

    Anything else goes on to :func:`radfusion.cli.main`.
    """
    try:
        yield
    except bad_input + failure as exc:
        if per_case is not None and isinstance(exc, per_case):
            raise case_errors(exc.issues) from None  # type: ignore[attr-defined]
        code = EXIT_BAD_INPUT if isinstance(exc, bad_input) else EXIT_FAILURE
        raise fail(str(exc), code) from None


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    err.print(f"[yellow]warning:[/] {esc(message)}", highlight=False)


def _version(value: bool) -> None:
    if value:
        out.print(f"radfusion {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    state["verbose"] = verbose
    # Python warnings as one plain line each (no source path)
    warnings.showwarning = _show_warning
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # The run folder's log file records INFO; the console shows warnings (-v: everything).
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.DEBUG if verbose else logging.WARNING)
    for noisy in ("radiomics", "matplotlib", "PIL", "distributed", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def load_config(config: Path | None, preset: str | None = None) -> StudyConfig:
    """Read a config file, or a preset when no file is given."""
    with exit_on((FileNotFoundError, ValueError)):
        if config is not None:
            return StudyConfig.from_yaml(config)
        return load_preset(preset or "paper")


def numerics(cfg: StudyConfig) -> None:
    """Put ``reproducibility.mode: strict`` in place before numpy and torch do any work.

    The program restarts itself once with the strict environment (the variables are read
    when the libraries load); in-process callers get the study's own check instead.
    """
    if ARGV is None:
        return
    from radfusion.reproducibility import restart_with

    with exit_on((ConfigError,)):
        restart_with(cfg.reproducibility, ARGV)


TrustedKeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--trusted-key",
        help="Key file you trust (shared secret or Ed25519 public key): the bundle must "
        "carry a signature made with it.",
    ),
]
