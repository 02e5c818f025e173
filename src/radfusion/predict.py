"""Scoring new cases with a bundle: the one payload shared by ``radfusion predict --json``,
``radfusion serve``'s ``POST /api/predict`` and its batch page.

The command line and the web app both build a :class:`~radfusion.data.manifest.Cohort`
(one case from an image, an ROI and clinical values, or a manifest), check it with the
same validation as ``radfusion validate`` and call :func:`predict_records`, so the two can
never disagree on what a prediction is.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from radfusion.bundle import Bundle, predict_bundle
from radfusion.config import DataConfig
from radfusion.data.manifest import Cohort
from radfusion.errors import InputError

__all__ = ["InvalidCasesError", "predict_records", "single_case_cohort"]


class InvalidCasesError(InputError):
    """Cases that fail validation; ``issues`` lists each as (code, case_id, message)."""

    def __init__(self, issues: list[tuple[str, str | None, str]]) -> None:
        self.issues = issues
        super().__init__(
            "; ".join(
                f"[{code}] case {cid}: {msg}" if cid else f"[{code}] {msg}"
                for code, cid, msg in issues
            )
        )


def single_case_cohort(
    data: DataConfig,
    *,
    case_id: str,
    image: Path,
    mask: Path,
    clinical: Mapping[str, str] | None = None,
    center: str | None = None,
    root: Path | None = None,
) -> Cohort:
    """A one-row cohort for a new case (no label).

    Parameters
    ----------
    data : DataConfig
        The bundle's data settings (clinical columns, readers).
    case_id : str
        Name of the case in the output.
    image, mask : Path
        The image and its ROI (raster mask or ImageJ ``.roi``).
    clinical : mapping, optional
        Clinical values by column name, as text; a missing or blank value is allowed
        (it is imputed by the clinical model and flagged).
    center : str, optional
        The case's centre (hospital / scanner), for a study harmonised across centres.
    root : Path, optional
        Folder relative paths start from (default: the current folder).

    Raises
    ------
    InputError
        A clinical key the bundle's models do not use.
    """
    values = {k.strip(): str(v).strip() for k, v in (clinical or {}).items()}
    unknown = sorted(set(values) - set(data.clinical.all))
    if unknown:
        raise InputError(
            f"unknown clinical key(s) {unknown}; the model uses {data.clinical.all}", case_id
        )
    row: dict[str, Any] = {
        "case_id": case_id,
        "image": str(Path(image).resolve()),
        "mask": str(Path(mask).resolve()),
        "label": "",
        "center": center or "",
    }
    for col in data.clinical.all:
        row[col] = values.get(col, "")
    return Cohort(pd.DataFrame([row], dtype=str), root or Path.cwd(), data)


def predict_records(
    bundle: Bundle, cohort: Cohort, *, scratch: Path | None = None
) -> list[dict[str, Any]]:
    """Validate the cases and score them with every model of the bundle.

    Parameters
    ----------
    bundle : Bundle
        A verified bundle (:func:`radfusion.bundle.load_bundle`).
    cohort : Cohort
        The cases (labels not needed).
    scratch : Path, optional
        Folder for intermediate files (default: the system's temporary folder).

    Returns
    -------
    list of dict
        The JSON payload of ``radfusion predict --json``: one record per case and model
        (see :func:`radfusion.bundle.predict_bundle` for the fields).

    Raises
    ------
    InvalidCasesError
        Any case fails validation (unreadable image, empty or mismatched ROI, bad value...).
    """
    from radfusion.data.validate import validate_cohort

    rep = validate_cohort(cohort, require_labels=False)
    if not rep.ok:
        raise InvalidCasesError([(i.code, i.case_id, i.message) for i in rep.errors])
    preds = predict_bundle(bundle, cohort.cases(), scratch=scratch)
    return preds.to_dict("records")
