"""Numbers and p-values as the paper prints them."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["format_number", "format_p_value"]


def format_number(x: float, digits: int = 3) -> str:
    """``x`` with ``digits`` decimal places; ``"NA"`` when it is NaN or infinite."""
    return f"{x:.{digits}f}" if math.isfinite(x) else "NA"


def format_p_value(p: float, digits: int = 3) -> str:
    """Format a p-value as in the paper: ``"<0.001"``, ``"0.022"``; NaN -> ``""``.

    Parameters
    ----------
    p : float
        The p-value.
    digits : int, default 3
        Decimal places; values below ``10**-digits`` print as ``"<0.001"`` (for digits=3).

    Returns
    -------
    str
    """
    if p is None or not np.isfinite(p):
        return ""
    floor = 10.0 ** (-digits)
    if p < floor:
        return f"<{floor:.{digits}f}"
    return f"{min(float(p), 1.0):.{digits}f}"
