"""Scoring new cases with a bundle: the checks before, the payload after.

The command line (``radfusion predict --json``) and the web app (``radfusion serve``'s
``POST /api/predict`` and its batch page) use the same steps, through
:func:`predict_records`, so that they can never disagree on what a prediction is::

    cohort = single_case_cohort(bundle, image=..., mask=..., clinical={...})
    report = check_new_cases(bundle, cohort)          # errors stop, warnings travel
    preds = predict_bundle(bundle, cohort.cases())    # radfusion.bundle
    payload = prediction_payload(bundle, preds, report)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from radfusion.bundle import Bundle, predict_bundle
from radfusion.config import DataConfig
from radfusion.data.manifest import Cohort
from radfusion.data.validate import Issue, ValidationReport, validate_cohort
from radfusion.errors import InputError


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


def training_categories(bundle: Bundle) -> dict[str, list[str]] | None:
    """Categorical clinical values seen in training, per column (None: not recorded)."""
    for e in bundle.models:
        cats = e.get("clinical", {}).get("categories") if isinstance(e, dict) else None
        if isinstance(cats, dict):
            return {str(k): [str(v) for v in vs] for k, vs in cats.items()}
    return None


def single_case_cohort(
    source: Bundle | DataConfig,
    *,
    image: str | Path,
    mask: str | Path,
    clinical: Mapping[str, str] | None = None,
    case_id: str = "new_case",
    center: str | None = None,
    root: Path | None = None,
) -> Cohort:
    """A one-row cohort for one new case (clinical values as text, as in a manifest).

    Parameters
    ----------
    source : Bundle or DataConfig
        The bundle (or its data settings: clinical columns, readers).
    image, mask : path
        The image and its ROI (raster mask or ImageJ ``.roi``).
    clinical : mapping, optional
        Clinical values by column; a missing or blank value is allowed (the clinical
        model imputes it, and ``check_new_cases`` flags it).
    case_id : str
        Name of the case in the output.
    center : str, optional
        The case's centre, for a study harmonised across centres.
    root : Path, optional
        Folder relative paths start from (default: the current folder).

    Raises
    ------
    InputError
        A clinical key the bundle's models do not use.
    """
    data = source.config.data if isinstance(source, Bundle) else source
    values = {str(k).strip(): str(v).strip() for k, v in (clinical or {}).items()}
    unknown = sorted(set(values) - set(data.clinical.all))
    if unknown:
        raise InputError(
            f"unknown clinical key(s) {', '.join(unknown)}; the model uses "
            f"{', '.join(data.clinical.all) or 'none'}",
            case_id,
        )
    row = {
        "case_id": case_id,
        "image": str(Path(image).resolve()),
        "mask": str(Path(mask).resolve()),
        "label": "",
        "center": center or "",
        **{col: values.get(col, "") for col in data.clinical.all},
    }
    return Cohort(pd.DataFrame([row], dtype=str), root or Path.cwd(), data)


def training_ranges(bundle: Bundle) -> dict[str, tuple[float, float]]:
    """Numeric clinical columns' [min, max] over the training cases (the model card's)."""
    card = bundle.meta.get("card")
    clinical = card.get("clinical") if isinstance(card, dict) else None
    out: dict[str, tuple[float, float]] = {}
    for col in bundle.config.data.clinical.numeric:
        rng = clinical.get(col) if isinstance(clinical, dict) else None
        lo, hi = (rng.get("min"), rng.get("max")) if isinstance(rng, dict) else (None, None)
        if isinstance(lo, int | float) and isinstance(hi, int | float):
            out[col] = (float(lo), float(hi))
    return out


def harmonised_centres(bundle: Bundle) -> list[str] | None:
    """The centres every ComBat step of the bundle's models has estimates for (None: the
    bundle is not harmonised).

    A case from another centre, or without one, passes through ComBat unadjusted.
    """
    from radfusion.harmonization import iter_harmonizers

    if bundle.config.harmonization.method == "none":
        return None
    known: set[str] | None = None
    for e in bundle.models:
        if "file" not in e:
            continue
        for h in iter_harmonizers(bundle.pipeline(e["file"])):
            if not hasattr(h, "batches_"):  # a column transformer's unfitted template
                continue
            levels = {str(b) for b in h.batches_}
            known = levels if known is None else known & levels
    return None if known is None else sorted(known)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _bundle_checks(bundle: Bundle, cohort: Cohort) -> list[Issue]:
    """Warnings that need the bundle: clinical values outside the training range, and a
    centre that ComBat cannot adjust (missing or unseen in training)."""
    issues: list[Issue] = []
    ranges = training_ranges(bundle)
    centres = harmonised_centres(bundle)
    batch = bundle.config.harmonization.batch_column
    for _, row in cohort.table.iterrows():
        cid = str(row["case_id"])
        for col, (lo, hi) in ranges.items():
            try:
                x = float(row.get(col, ""))
            except ValueError:
                continue  # blank (missing_clinical) or non-numeric (an error already)
            if math.isfinite(x) and not lo <= x <= hi:
                issues.append(
                    Issue(
                        "warning",
                        "out_of_range",
                        f"'{col}' value {row[col]} is outside the training range "
                        f"{_fmt(lo)} to {_fmt(hi)}; the models never saw such values, "
                        "so their scores for this case are extrapolations",
                        cid,
                    )
                )
        if centres is None:
            continue
        centre = str(row.get(batch, "")).strip()
        trained = ", ".join(centres)
        if not centre:
            why = f"no centre given (training centres: {trained})"
        elif centre not in centres:
            why = f"centre {centre!r} was not among the training centres ({trained})"
        else:
            continue
        issues.append(
            Issue(
                "warning",
                "unharmonised_center",
                f"{why}: ComBat cannot adjust this case, so the harmonised models score its "
                "features on its own scanner's scale and may be biased; give the centre "
                "it was imaged at if it is one of these",
                cid,
            )
        )
    return issues


def check_new_cases(
    bundle: Bundle, cohort: Cohort, *, require_labels: bool = False
) -> ValidationReport:
    """The per-case checks of ``validate`` on new cases, plus the checks against training.

    ``require_labels`` checks the labels too (an external validation needs them).

    ``report.errors`` (unreadable files, mask size mismatch, empty mask, implausible
    value...) mean the cases cannot be scored; ``report.warnings`` (tiny ROI or image,
    ROI covering the image, missing clinical values, which the models fill in, unseen
    categories, values outside the training range, a centre ComBat cannot adjust) go
    with the scores.
    """
    report = validate_cohort(
        cohort, n_jobs=1, require_labels=require_labels, categories=training_categories(bundle)
    )
    report.issues += _bundle_checks(bundle, cohort)
    return report


def case_warnings(report: ValidationReport) -> dict[str, list[dict[str, str]]]:
    """The report's warnings per case id (warnings about no single case under ``""``)."""
    out: dict[str, list[dict[str, str]]] = {}
    for w in report.warnings:
        out.setdefault(w.case_id or "", []).append({"code": w.code, "message": w.message})
    return out


def recalibration_note(bundle: Bundle) -> str | None:
    """One line saying that, and how, a bundle was recalibrated on an external cohort
    (``radfusion evaluate --recalibrate``); None for a bundle as the study exported it."""
    ups = bundle.meta.get("updates")
    ups = [u for u in ups if isinstance(u, dict)] if isinstance(ups, list) else []
    ups = [u for u in ups if u.get("kind") == "recalibration"]
    if not ups:
        return None
    u = ups[-1]
    n = (u.get("external_cohort") or {}).get("n")
    return (
        f"recalibrated bundle ({u.get('method')} method, {str(u.get('created', ''))[:10]}"
        + (f", on an external cohort of {n} images" if isinstance(n, int) else "")
        + f"; parent bundle {str(u.get('parent_bundle_sha256', ''))[:12]})"
    )


def prediction_payload(
    bundle: Bundle, predictions: pd.DataFrame, report: ValidationReport
) -> dict[str, Any]:
    """The JSON-ready result of scoring: per case, its warnings and every model's score.

    Parameters
    ----------
    bundle : Bundle
    predictions : DataFrame
        :func:`radfusion.bundle.predict_bundle`'s output.
    report : ValidationReport
        :func:`check_new_cases`'s report for the same cases.

    Returns
    -------
    dict
        ``{"study", "class_names", "threshold_rule", "recalibration" (:func:`recalibration_note`),
        "warnings" (not tied to a case), "cases": [{"case_id",
        "warnings": [{"code", "message"}], "predictions": [{"family", "model",
        "classifier", "selected", "probability", "threshold", "predicted_class",
        "predicted_label"}]}]}``; ``predicted_class`` is 1 (positive) when the probability
        reaches the model's threshold.
    """
    negative, positive = bundle.config.evaluation.class_names
    warnings = case_warnings(report)
    cases = []
    for cid, df in predictions.groupby("case_id", sort=False):
        preds = []
        for r in df.drop(columns=["case_id"]).to_dict("records"):
            r["predicted_label"] = positive if r["predicted_class"] else negative
            preds.append({k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()})
        cases.append(
            {"case_id": str(cid), "warnings": warnings.get(str(cid), []), "predictions": preds}
        )
    return {
        "study": bundle.meta.get("study"),
        "class_names": [negative, positive],
        "threshold_rule": bundle.meta.get("threshold_rule"),
        "recalibration": recalibration_note(bundle),
        "warnings": warnings.get("", []),
        "cases": cases,
    }


def predict_records(
    bundle: Bundle, cohort: Cohort, *, scratch: Path | None = None
) -> dict[str, Any]:
    """Check the cases, score them with every model of the bundle, and build the payload.

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
    dict
        :func:`prediction_payload`: what ``radfusion predict --json`` prints.

    Raises
    ------
    InvalidCasesError
        Any case fails validation (unreadable image, empty or mismatched ROI, bad value...).
    """
    report = check_new_cases(bundle, cohort)
    if not report.ok:
        raise InvalidCasesError([(i.code, i.case_id, i.message) for i in report.errors])
    preds = predict_bundle(bundle, cohort.cases(), scratch=scratch)
    return prediction_payload(bundle, preds, report)


def payload_records(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The payload flattened: one record per case and model (e.g. for a CSV)."""
    rows = []
    for case in payload["cases"]:
        warnings = "; ".join(w["message"] for w in case["warnings"])
        for p in case["predictions"]:
            rows.append({"case_id": case["case_id"], **p, "warnings": warnings})
    return rows


__all__ = [
    "InvalidCasesError",
    "case_warnings",
    "check_new_cases",
    "harmonised_centres",
    "payload_records",
    "predict_records",
    "prediction_payload",
    "recalibration_note",
    "single_case_cohort",
    "training_categories",
    "training_ranges",
]
