"""The IBSI digital-phantom statement of the methods and its table in the supplement.

Both read what the radiomics stage wrote (``radiomics/ibsi.csv`` and ``ibsi.json``, see
:func:`radfusion.radiomics.ibsi.write_ibsi`); a run from before the check has neither and
the report says nothing about it. METRICS item 12 and CLEAR ask whether the extraction
software is IBSI-standardised: this is the answer, with the evidence.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from radfusion.evaluation.runfolder import RunArtifacts
from radfusion.radiomics.ibsi import read_ibsi_summary
from radfusion.report.html import details, esc

__all__ = ["ibsi_sentence", "ibsi_supplement"]

_SHOWN = {
    "feature": "Feature",
    "ibsi_tag": "IBSI tag",
    "reference": "Reference",
    "tolerance": "Tolerance",
    "radfusion": "radfusion",
    "difference": "Difference",
    "status": "Status",
}


def ibsi_sentence(run: RunArtifacts) -> str:
    """The one-line statement for the methods, or "" when the run has no check."""
    summary = read_ibsi_summary(run.layout.radiomics_ibsi_summary)
    if not summary:
        return ""
    return (
        f" {summary['line']} Settings for the phantom: no resampling, bin width 1; 3D, 2.5D "
        "and 2D (per slice, as the ultrasound crops) aggregations; per-feature comparison in "
        "the supplement (tables/ibsi_phantom.csv)."
    )


def ibsi_supplement(run: RunArtifacts, tables: Callable[..., str]) -> str:
    """A collapsed supplement block with the comparison of the mapped features, or "".

    ``tables(name, shown, csv=..., caption=...)`` renders a table and writes its CSV (the
    full table, every IBSI reference value, goes to ``tables/ibsi_phantom.csv``).
    """
    path = run.layout.radiomics_ibsi
    summary = read_ibsi_summary(run.layout.radiomics_ibsi_summary)
    if not summary or not path.is_file():
        return ""
    full = pd.read_csv(path, keep_default_na=False, na_values=[""])
    mapped = full[full["status"].isin(["pass", "documented deviation", "fail"])]
    shown = mapped[list(_SHOWN)].rename(columns=_SHOWN)
    deviations = mapped[mapped["status"] == "documented deviation"].drop_duplicates(
        "pyradiomics_feature"
    )
    notes: list[str] = [
        f"{r.pyradiomics_feature}: {r.note}" for r in deviations.itertuples(index=False)
    ]
    lis = "".join(f"<li>{esc(n)}</li>" for n in notes)
    listed = f"<p>Documented PyRadiomics deviations, checked as such:</p><ul>{lis}</ul>"
    inner = (
        f"<p>{esc(summary['line'])}</p>"
        + (listed if lis else "")
        + tables(
            "ibsi_phantom",
            shown,
            csv=full,
            caption="IBSI 1 digital phantom: reference values (Zwanenburg et al., Radiology "
            "2020; CC BY 4.0) and radfusion's values; the CSV also lists the values "
            "PyRadiomics does not compute",
            css_class="compact",
        )
    )
    return details("IBSI digital phantom (feature standardisation)", inner)
