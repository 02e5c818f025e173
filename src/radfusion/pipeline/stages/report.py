"""Stage ``report``: the self-contained HTML report and its tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from radfusion.layout import RunLayout
from radfusion.pipeline.context import Stage, StudyContext, config_parts


def stage_report(ctx: StudyContext) -> None:
    from radfusion.report import write_report

    write_report(ctx.run.path)


def _inputs(ctx: StudyContext, up: list[str | None]) -> dict[str, Any]:
    return {"up": up[0], "config": config_parts(ctx)}


def _outputs(layout: RunLayout) -> tuple[Path, ...]:
    return (layout.report_dir,)


REPORT = Stage("report", ("evaluation",), _inputs, stage_report, _outputs)
