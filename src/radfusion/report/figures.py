"""The report's figures for a journal: each figure the report shows, as vector SVG and as
300-dpi PNG, under ``report/figures/`` (names from :class:`~radfusion.layout.RunLayout`).

:func:`~radfusion.evaluation.figures.save_figure` writes both copies beside every figure it
draws; this module gathers those of the figures in the report. Grad-CAM overlays and case
thumbnails are raster images of the ultrasound itself and stay in the HTML only.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from radfusion.evaluation.figures import journal_paths
from radfusion.layout import RunLayout
from radfusion.utils import atomic_path

__all__ = ["JOURNAL_FORMS", "export_journal_figures", "journal_copies_present"]

#: Journal form -> suffix of its file in ``report/figures/``.
JOURNAL_FORMS = {"svg": ".svg", "png": ".png"}


def journal_copies_present(figures: Mapping[str, Path]) -> bool:
    """Whether every figure (key -> screen PNG) has its SVG and 300-dpi PNG beside it."""
    return all(p.is_file() for png in figures.values() for p in journal_paths(png).values())


def export_journal_figures(layout: RunLayout, figures: Mapping[str, Path]) -> list[Path]:
    """Copy each figure's journal forms to ``report/figures/<key>.svg`` and ``<key>.png``.

    Parameters
    ----------
    layout : RunLayout
    figures : mapping
        Figure key -> the screen PNG that :func:`save_figure` wrote.

    Returns
    -------
    list of Path
        The files written; a figure whose copies are missing is skipped.
    """
    written = []
    for key, png in figures.items():
        sources = journal_paths(png)
        if not all(p.is_file() for p in sources.values()):
            continue
        for form, suffix in JOURNAL_FORMS.items():
            target = layout.report_figure(key, suffix)
            with atomic_path(target) as tmp:
                shutil.copyfile(sources[form], tmp)
            written.append(target)
    return written
