"""The study report: one self-contained HTML file (figures embedded, inline CSS, no JavaScript,
no external URL) mirroring the paper's Results, with a methods summary generated from the run
and every table also written as CSV. See :func:`write_report`.
"""

from radfusion.report.build import write_report
from radfusion.report.cases import case_thumbnail, pick_example_cases
from radfusion.report.caveats import caveats
from radfusion.report.methods import MethodsItem, methods_summary

__all__ = [
    "MethodsItem",
    "case_thumbnail",
    "caveats",
    "methods_summary",
    "pick_example_cases",
    "write_report",
]
