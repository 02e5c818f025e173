"""Stage ``bundle``: the model bundle that scores new patients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from radfusion.layout import RunLayout
from radfusion.pipeline.context import Stage, StudyContext


def stage_bundle(ctx: StudyContext) -> None:
    from radfusion.bundle import export_bundle

    export_bundle(ctx.run.path, ctx.layout.bundle_dir)


def _inputs(ctx: StudyContext, up: list[str | None]) -> dict[str, Any]:
    return {"up": up[0]}


def _outputs(layout: RunLayout) -> tuple[Path, ...]:
    return (layout.bundle_dir,)


BUNDLE = Stage("bundle", ("evaluation",), _inputs, stage_bundle, _outputs)
