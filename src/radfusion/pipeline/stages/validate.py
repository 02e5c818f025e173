"""Stage ``validate``: every case checked before any long work (``validation.json``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from radfusion.data import Cohort
from radfusion.data.validate import validate_cohort
from radfusion.errors import InputError
from radfusion.layout import RunLayout
from radfusion.pipeline.context import (
    DATA_COLUMNS,
    Stage,
    StudyContext,
    config_parts,
    data_fingerprint,
)
from radfusion.pipeline.run import RunFolder
from radfusion.utils import atomic_write_json

log = logging.getLogger("radfusion.pipeline")


def validate_or_raise(cohort: Cohort, run: RunFolder, data_sha256: str | None = None) -> None:
    """Validate every case into ``validation.json``; raise with every error, log warnings.

    ``data_sha256`` (the content of every data file, see :func:`data_fingerprint`) is
    recorded with the report when given.
    """
    report = validate_cohort(cohort)
    extra = {"data_sha256": data_sha256} if data_sha256 else {}
    atomic_write_json(run.layout.validation, {**report.to_dict(), **extra})
    if not report.ok:
        lines = [
            f"  case {i.case_id}: {i.message}" if i.case_id else f"  {i.message}"
            for i in report.errors
        ]
        raise InputError(
            f"the cohort has {len(report.errors)} error(s); fix them or run "
            "`radfusion validate --drop-invalid`:\n" + "\n".join(lines)
        )
    for w in report.warnings:
        log.warning("validate: %s%s", f"case {w.case_id}: " if w.case_id else "", w.message)


def stage_validate(ctx: StudyContext) -> None:
    """Validate every case; stop with all errors before any long work."""
    validate_or_raise(ctx.cohort, ctx.run, data_fingerprint(ctx, DATA_COLUMNS))


def _inputs(ctx: StudyContext, up: list[str | None]) -> dict[str, Any]:
    return {
        "data": config_parts(ctx)["data"],
        "fingerprint": ctx.keys.get("_data"),
        "files": data_fingerprint(ctx, DATA_COLUMNS),
    }


def _outputs(layout: RunLayout) -> tuple[Path, ...]:
    return (layout.validation,)


VALIDATE = Stage("validate", (), _inputs, stage_validate, _outputs)
