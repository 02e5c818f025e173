"""Exceptions raised by radfusion; each names the case and the problem."""

from __future__ import annotations


class RadfusionError(Exception):
    """Base class of radfusion's own errors."""


class InputError(RadfusionError):
    """A problem with one case's input files or values.

    Parameters
    ----------
    message : str
        What is wrong, in words a user can act on.
    case_id : str, optional
        The manifest case the problem belongs to.
    """

    def __init__(self, message: str, case_id: str | None = None) -> None:
        self.case_id = case_id
        self.problem = message
        super().__init__(f"case {case_id}: {message}" if case_id else message)


class ManifestError(RadfusionError):
    """The manifest as a whole is unusable (missing columns, unreadable CSV, ...)."""


class ConfigError(RadfusionError):
    """The study configuration is inconsistent with the data or itself."""
