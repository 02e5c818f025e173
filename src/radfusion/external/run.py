"""``radfusion evaluate``: a saved bundle, frozen, on another centre's labelled cases.

:func:`evaluate_external` scores the external cases with every model of the bundle exactly
as ``radfusion predict`` does (the same checks, warnings, ComBat handling and ``strict``
rule), at the threshold frozen in the bundle, computes the study's statistics on them
(:mod:`radfusion.external.tables`), fits the two recalibration maps, and writes, all at
once, the output folder::

    OUT/
      external_validation.json     what was evaluated (bundle and cohort SHA-256, sizes,
                                   centres), the files written, notes
      predictions.csv              every case x model: label, centre, probability, class
      evaluation/metrics.csv       every model: AUC (DeLong CI), ACC ... F1 (CIs) at the
                                   frozen threshold, Brier, calibration-in-the-large, slope
      evaluation/internal_external.csv   development test AUC beside the external one
      evaluation/delong.csv        DeLong p-values between the selected models
      evaluation/calibration.csv, decision_curve.csv
      evaluation/centres.csv, centres_pooled.csv   with a ``center`` column
      evaluation/recalibration.csv the updating maps and their (apparent) effect
      evaluation/frozen_vs_harmonised.csv, harmonised_metrics.csv   a ComBat bundle whose
                                   external centres could be harmonised
      evaluation/figures/*.png
      report/report.html           the "External validation" report (self-contained)
      report/tables/*.csv          its tables as shown
      bundle_recalibrated/         only with ``recalibrate=``: a new bundle version
      bundle_harmonised/           only with ``save_harmonised=``: a new bundle version

The folder is built next to ``OUT`` and moved into place at the end, so an error leaves
nothing half-written; an ``OUT`` holding files radfusion did not write is refused.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from radfusion.bundle import Bundle, bundle_sha256, load_bundle, predict_bundle
from radfusion.data.manifest import Cohort, load_cohort
from radfusion.errors import InputError
from radfusion.external import tables
from radfusion.external.harmonize import (
    HarmonisedScoring,
    harmonise_new_centres,
    uses_combat,
    write_harmonised_bundle,
)
from radfusion.external.report import MIN_CALIBRATION_EVENTS, write_external_report
from radfusion.external.update import write_recalibrated_bundle
from radfusion.harmonization import recorded_inputs
from radfusion.harmonization.combat import MIN_NEW_BATCH_SIZE
from radfusion.layout import RunLayout
from radfusion.predict import InvalidCasesError, check_new_cases
from radfusion.stats import RECALIBRATION_METHODS
from radfusion.utils import atomic_folder, atomic_write_json, file_sha256, json_sha256

__all__ = [
    "INDEX_FORMAT",
    "INDEX_NAME",
    "ExternalValidation",
    "cohort_sha256",
    "evaluate_external",
]

INDEX_NAME = "external_validation.json"
INDEX_FORMAT = "radfusion-external-validation/1"
RECALIBRATED_BUNDLE = "bundle_recalibrated"
HARMONISED_BUNDLE = "bundle_harmonised"


@dataclass
class ExternalValidation:
    """What :func:`evaluate_external` computed and where it wrote it."""

    out: Path
    report: Path
    predictions: pd.DataFrame
    metrics: pd.DataFrame
    comparison: pd.DataFrame
    recalibration: pd.DataFrame
    centres: pd.DataFrame | None = None
    pooled: pd.DataFrame | None = None
    recalibrated_bundle: Path | None = None
    harmonised: pd.DataFrame | None = None
    harmonised_metrics: pd.DataFrame | None = None
    harmonised_centres: dict[str, int] = field(default_factory=dict)
    harmonised_bundle: Path | None = None
    notes: list[str] = field(default_factory=list)


def cohort_sha256(cohort: Cohort) -> str:
    """Content hash of a labelled cohort: each case's id, manifest values (paths aside)
    and the SHA-256 of its image and mask (a moved folder keeps its hash)."""
    rows = []
    for _, r in cohort.table.iterrows():
        values = {k: v for k, v in r.items() if k not in ("image", "mask", "mask_reader2")}
        files = [file_sha256(cohort.resolve(r[c])) for c in ("image", "mask")]
        rows.append([values, files])
    return json_sha256(rows)


# ------------------------------------------------------------------------------- out folder
def _check_out(out: Path) -> None:
    """Refuse an output folder holding anything radfusion did not write there."""
    if not out.exists():
        if not out.parent.is_dir():
            raise InputError(f"--out {out}: its parent folder does not exist")
        return
    if not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder; choose a new folder")
    foreign = _foreign_files(out)
    if foreign:
        raise InputError(
            f"--out {out} holds files radfusion did not write (e.g. {foreign[0]}); "
            "choose a new or empty folder"
        )


def _foreign_files(out: Path) -> list[str]:
    """The files of the folder ``out`` that no earlier evaluation's index lists (every file,
    when there is no such index)."""
    present = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    index = out / INDEX_NAME
    try:
        ours = json.loads(index.read_text()) if index.is_file() else {}
    except (OSError, ValueError):
        ours = {}
    listed = set(ours.get("files", [])) if ours.get("format") == INDEX_FORMAT else set()
    if not listed:
        return present
    return [p for p in present if p != INDEX_NAME and p not in listed]


# ------------------------------------------------------------------------------- scoring
def _load_cases(bundle: Bundle, manifest: Path) -> tuple[Cohort, pd.DataFrame]:
    """The labelled external cohort, read with the bundle's data settings."""
    cohort = load_cohort(manifest, bundle.config.data, require_labels=True)
    cases = cohort.table[["case_id", "label"]].copy()
    cases["case_id"] = cases["case_id"].astype(str)
    label = pd.to_numeric(cases["label"], errors="coerce")
    if label.isna().any() or not label.isin((0, 1)).all():
        bad = cases.loc[label.isna() | ~label.isin((0, 1)), "case_id"].tolist()[:5]
        raise InputError(
            f"{manifest}: an external validation needs every label (0 or 1); cases {bad} "
            "have none or another value"
        )
    cases["label"] = label.astype(int)
    n_pos = int(cases["label"].sum())
    if n_pos == 0 or n_pos == len(cases):
        raise InputError(
            f"{manifest}: all {len(cases)} cases have label {int(cases['label'].iloc[0])}; "
            "an external validation needs cases of both classes"
        )
    if cohort.has("center"):
        centre = cohort.table["center"].astype(str).str.strip()
        cases["center"] = centre.where(centre != "", None).to_numpy()
    return cohort, cases


@dataclass
class _Scores:
    frozen: pd.DataFrame
    warnings: list[str]
    harmonised: pd.DataFrame | None = None
    scoring: HarmonisedScoring | None = None


def _score(bundle: Bundle, cohort: Cohort, *, strict: bool, min_cases: int) -> _Scores:
    """Check and score the cases as ``radfusion predict`` does; warnings as text lines.

    A ComBat bundle's cases are also scored with their new centres harmonised
    (:mod:`radfusion.external.harmonize`) when a centre has ``min_cases`` cases."""
    report = check_new_cases(bundle, cohort, require_labels=True)
    if not report.ok:
        raise InvalidCasesError([(i.code, i.case_id, i.message) for i in report.errors])
    lines = [
        f"[{w.code}] " + (f"case {w.case_id}: " if w.case_id else "") + w.message
        for w in report.warnings
    ]
    if strict and lines:
        raise InvalidCasesError(
            [(w.code, w.case_id, w.message) for w in report.warnings]
            + [("strict", None, f"{len(lines)} warning(s) and strict: nothing scored")]
        )
    cases = cohort.cases()
    with warnings.catch_warnings():
        # said once, per case, as the unseen_category warning
        warnings.filterwarnings("ignore", message="Found unknown categories")
        if not uses_combat(bundle):
            return _Scores(predict_bundle(bundle, cases), lines)
        scoring = HarmonisedScoring.of(bundle)
        with recorded_inputs() as seen:
            frozen = predict_bundle(scoring.bundle, cases)
        if not harmonise_new_centres(scoring, seen, cases, min_cases=min_cases):
            return _Scores(frozen, lines)
        harmonised = predict_bundle(scoring.bundle, cases)
    return _Scores(frozen, lines, harmonised, scoring)


def _frozen_thresholds(bundle: Bundle) -> dict[str, float]:
    """Every model's threshold as the bundle froze it (on the scale of its output)."""
    return {str(e["model"]): float(e["threshold"]) for e in bundle.models}


# ------------------------------------------------------------------------------- main
def evaluate_external(
    bundle: Bundle | str | Path,
    manifest: str | Path,
    out: str | Path,
    *,
    recalibrate: str | None = None,
    save_harmonised: bool = False,
    min_centre_cases: int = MIN_NEW_BATCH_SIZE,
    strict: bool = False,
    trusted_key: str | Path | None = None,
    seed: int = 0,
    on_step: Callable[[str], None] | None = None,
) -> ExternalValidation:
    """Validate a saved bundle on an external labelled cohort and write the results.

    Parameters
    ----------
    bundle : Bundle or path
        The bundle (loaded and verified when given as a path).
    manifest : path
        The external cohort's manifest: the columns of a study manifest, ``label``
        required; an optional ``center`` column gives per-centre rows and a forest plot.
    out : path
        The output folder (new, empty, or an earlier ``evaluate`` output, which is
        replaced).
    recalibrate : {"intercept", "logistic"}, optional
        Also write a recalibrated new version of the bundle (``OUT/bundle_recalibrated``).
    save_harmonised : bool
        For a ComBat bundle: also write a new version whose ComBat steps know the
        external centres (``OUT/bundle_harmonised``).
    min_centre_cases : int
        Fewest cases of an external centre for ComBat to estimate it (a ComBat bundle).
    strict : bool
        Refuse to score when any case has a warning (as ``radfusion predict --strict``).
    trusted_key : path, optional
        The bundle must carry a signature made with this key.
    seed : int
        Seed of the bootstrap intervals (F1).
    on_step : callable, optional
        Called with a short text as each step starts (the console's progress).

    Returns
    -------
    ExternalValidation

    Raises
    ------
    radfusion.bundle.BundleError
        The bundle is missing, tampered with or incompatible.
    radfusion.errors.ManifestError, InputError
        The manifest cannot be read, a label is missing, one class only, a bad ``out``.
    radfusion.predict.InvalidCasesError
        Cases that fail the checks (or warnings with ``strict``).
    """
    step = on_step or (lambda _msg: None)
    if recalibrate is not None and recalibrate not in RECALIBRATION_METHODS:
        raise InputError(
            f"recalibration method {recalibrate!r} is unknown; use one of "
            f"{', '.join(RECALIBRATION_METHODS)}"
        )
    if min_centre_cases < 2:
        raise InputError(f"min_centre_cases must be at least 2, got {min_centre_cases}")
    out, manifest = Path(out), Path(manifest)
    _check_out(out)
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle, trusted_key=trusted_key)
    if save_harmonised and not uses_combat(b):
        raise InputError(
            f"{b.path}: the bundle does not harmonise with ComBat (harmonization.method: "
            f"{b.config.harmonization.method}); there is no harmonised version to save"
        )
    cohort, cases = _load_cases(b, manifest)
    step(f"checking and scoring {len(cases)} external case(s) with {len(b.models)} model(s)")
    # an earlier evaluation's folder is replaced once the new one is complete
    with atomic_folder(
        out, ours=lambda folder: not _foreign_files(folder), prefix=".external-"
    ) as tmp:
        scores = _score(b, cohort, strict=strict, min_cases=min_centre_cases)
        cohort_hash = cohort_sha256(cohort)  # after the checks: every file is readable
        result = _evaluate(b, manifest, cases, scores, tmp, out, step)
        if recalibrate is not None:
            step(f"writing the recalibrated bundle ({recalibrate})")
            _, skipped = write_recalibrated_bundle(
                b,
                result.recalibration,
                recalibrate,
                tmp / RECALIBRATED_BUNDLE,
                cohort_sha256=cohort_hash,
                cohort=_cohort_facts(cases),
            )
            result.recalibrated_bundle = out / RECALIBRATED_BUNDLE
            result.notes += [
                f"{m} kept its frozen probabilities: {why}" for m, why in skipped.items()
            ]
            events = int(cases["label"].sum())
            if min(events, len(cases) - events) < MIN_CALIBRATION_EVENTS:
                result.notes.append(
                    f"the recalibrated bundle rests on {events} positive and "
                    f"{len(cases) - events} negative case(s), fewer than "
                    f"{MIN_CALIBRATION_EVENTS} of a class: its maps are imprecise; check them "
                    "on new cases"
                )
        if save_harmonised:
            if scores.scoring is None:
                raise InputError(
                    f"no external centre has {min_centre_cases} or more cases (or a centre "
                    "column) for ComBat to estimate: no harmonised bundle to save"
                )
            step("writing the harmonised bundle")
            write_harmonised_bundle(
                b,
                scores.scoring,
                tmp / HARMONISED_BUNDLE,
                cohort_sha256=cohort_hash,
                cohort=_cohort_facts(cases),
                min_cases=min_centre_cases,
            )
            result.harmonised_bundle = out / HARMONISED_BUNDLE
        _write_index(b, manifest, cohort_hash, cases, result, tmp)
    return result


def _cohort_facts(cases: pd.DataFrame) -> dict[str, Any]:
    facts: dict[str, Any] = {"n": len(cases), "events": int(cases["label"].sum())}
    if "center" in cases.columns:
        facts["centres"] = {str(k): int(v) for k, v in cases["center"].value_counts().items()}
    return facts


def _evaluate(
    b: Bundle,
    manifest: Path,
    cases: pd.DataFrame,
    scores: _Scores,
    tmp: Path,
    out: Path,
    step: Callable[[str], None],
) -> ExternalValidation:
    """The statistics, tables, figures and report, written under ``tmp``."""
    ev = b.config.evaluation
    labels = dict(zip(cases["case_id"], cases["label"], strict=True))
    preds = tables.evaluation_frame(scores.frozen, labels)
    thresholds = _frozen_thresholds(b)
    step("statistics at the frozen thresholds")
    metrics = tables.external_metrics(preds, thresholds, ev)
    card = b.meta.get("card") or {}
    comparison = tables.internal_external(metrics, card.get("test") or {})
    centres = (
        tables.centre_tables(preds, cases, thresholds, ev) if "center" in cases.columns else None
    )
    recal = tables.recalibration_table(preds, metrics)
    result = ExternalValidation(
        out=out,
        report=RunLayout(out).report,
        predictions=preds,
        metrics=metrics,
        comparison=comparison,
        recalibration=recal,
        centres=centres[0] if centres else None,
        pooled=centres[1] if centres else None,
        notes=list(scores.warnings),
    )
    if scores.harmonised is not None and scores.scoring is not None:
        step("statistics with the new centre(s) harmonised")
        preds_h = tables.evaluation_frame(scores.harmonised, labels)
        result.harmonised_metrics = tables.external_metrics(preds_h, thresholds, ev)
        result.harmonised = tables.frozen_vs_harmonised(
            preds, preds_h, metrics, result.harmonised_metrics
        )
        result.harmonised_centres = dict(scores.scoring.added)
    elif uses_combat(b):
        result.notes.append(
            "ComBat harmonised no external centre (no centre column, every centre seen in "
            "training, or fewer cases than the minimum per centre): frozen results only"
        )
    step("tables, figures and the report")
    write_external_report(b, manifest, cases, result, tmp)
    return result


def _write_index(
    b: Bundle,
    manifest: Path,
    cohort_hash: str,
    cases: pd.DataFrame,
    result: ExternalValidation,
    tmp: Path,
) -> None:
    files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
    atomic_write_json(
        tmp / INDEX_NAME,
        {
            "format": INDEX_FORMAT,
            "bundle": str(b.path.resolve()),
            "bundle_sha256": bundle_sha256(b),
            "study": b.meta.get("study"),
            "manifest": str(manifest.resolve()),
            "cohort_sha256": cohort_hash,
            "cohort": _cohort_facts(cases),
            "recalibrated_bundle": RECALIBRATED_BUNDLE if result.recalibrated_bundle else None,
            "harmonised_centres": result.harmonised_centres,
            "harmonised_bundle": HARMONISED_BUNDLE if result.harmonised_bundle else None,
            "notes": result.notes,
            "files": [*files, INDEX_NAME],
        },
    )
