"""Read access to a run folder, the contract between the pipeline and evaluation / report.

Where each file lives is :class:`radfusion.layout.RunLayout`, shared with the writer
(:class:`radfusion.pipeline.run.RunFolder`). Required: ``config.yaml`` and
``predictions.parquet``. Everything else is optional and read as ``None`` (or empty) when
absent, so an evaluation or report of a partial run (e.g. no deep arms) still works and
says what it skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from radfusion.config import StudyConfig
from radfusion.errors import RadfusionError
from radfusion.evaluation.metrics import validate_predictions
from radfusion.families import SELECTION_FAMILIES
from radfusion.layout import RunLayout

__all__ = ["SELECTION_FAMILIES", "RunArtifacts"]


def _read_json(path: Path) -> Any:
    """Parsed JSON of ``path``, or None when the file is absent."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RadfusionError(f"{path} is not valid JSON: {exc}") from None


@dataclass(frozen=True)
class RunArtifacts:
    """Read-only access to what a run folder holds: lazy, cached readers of its files.

    The pipeline writes the folder (:class:`radfusion.pipeline.run.RunFolder`); evaluation
    and the report read it through this class.

    Parameters
    ----------
    path : Path
        The run folder.

    Attributes
    ----------
    layout : RunLayout
        Where each file of the run lives.

    Raises
    ------
    RadfusionError
        On first access of a required file that is missing or invalid.
    """

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if not self.path.is_dir():
            raise RadfusionError(f"run folder not found: {self.path}")

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.path)

    # -- required ------------------------------------------------------------------------------
    @cached_property
    def config(self) -> StudyConfig:
        """The study configuration the run used."""
        f = self.layout.config
        if not f.is_file():
            raise RadfusionError(f"{f} is missing: not a radfusion run folder")
        return StudyConfig.from_yaml(f)

    @cached_property
    def predictions(self) -> pd.DataFrame:
        """Validated ``predictions.parquet``."""
        f = self.layout.predictions
        if not f.is_file():
            raise RadfusionError(f"{f} is missing: run the pipeline's model stages first")
        return validate_predictions(pd.read_parquet(f))

    # -- optional ------------------------------------------------------------------------------
    @cached_property
    def cases(self) -> pd.DataFrame | None:
        """``cases.csv`` (case_id as str), or None."""
        f = self.layout.cases
        if not f.is_file():
            return None
        return pd.read_csv(f, dtype={"case_id": str, "patient_id": str, "center": str})

    @cached_property
    def fingerprint(self) -> dict[str, Any]:
        """``fingerprint.json`` ({} when absent)."""
        return _read_json(self.layout.fingerprint) or {}

    @cached_property
    def versions(self) -> dict[str, Any]:
        """``versions.json`` ({} when absent)."""
        return _read_json(self.layout.versions) or {}

    @cached_property
    def validation(self) -> dict[str, Any]:
        """``validation.json`` (the input validation report; {} when absent)."""
        return _read_json(self.layout.validation) or {}

    @cached_property
    def dropped(self) -> list[str] | dict[str, Any]:
        """Cases dropped by ``--drop-invalid``: ``dropped.json`` (list or {case: reason})."""
        data = _read_json(self.layout.dropped)
        return data if isinstance(data, list | dict) else []

    @cached_property
    def radiomics_failures(self) -> dict[str, str]:
        """Cases whose radiomics extraction failed (``--allow-failures``): case id -> error.

        The study leaves the original cases among them out of every model and of the
        evaluation.
        """
        from radfusion.radiomics import extraction_failures

        return extraction_failures(self.layout.radiomics_features())

    @cached_property
    def selections(self) -> dict[str, dict[str, Any]]:
        """Family -> ``stages/selection_<family>.json`` (present ones only)."""
        out = {}
        for fam in SELECTION_FAMILIES:
            data = _read_json(self.layout.selection(fam))
            if data is not None:
                out[fam] = data
        return out

    @cached_property
    def cv_results(self) -> dict[str, pd.DataFrame]:
        """Family -> ``models/<family>/cv_results.csv`` (present ones only)."""
        out = {}
        for fam in self.layout.families():
            f = self.layout.cv_results(fam)
            if f.is_file():
                out[fam] = pd.read_csv(f)
        return out

    def importance(self, family: str, classifier: str) -> pd.DataFrame | None:
        """``models/<family>/<classifier>/importance.csv`` or None (also when malformed)."""
        f = self.layout.importance(family, classifier)
        if not f.is_file():
            return None
        df = pd.read_csv(f)
        if not {"feature", "importance"} <= set(df.columns) or df.empty:
            return None
        return df

    @cached_property
    def histories(self) -> dict[str, pd.DataFrame]:
        """Deep arm ("1ch"/"2ch") -> ``deep/<arm>/history.csv`` (present, usable ones)."""
        out = {}
        for arm in self.layout.deep_arms():
            f = self.layout.deep(arm).history
            if not f.is_file():
                continue
            df = pd.read_csv(f)
            if "epoch" in df.columns and ({"train_auc", "val_auc"} & set(df.columns)):
                out[arm] = df
        return out

    def gradcam_images(self, arm: str) -> list[Path]:
        """Grad-CAM overlays of a deep arm (``deep/<arm>/gradcam/*.png``), sorted."""
        return sorted(self.layout.deep(arm).gradcam_dir.glob("*.png"))

    @cached_property
    def clinical_coefficients(self) -> pd.DataFrame | None:
        """``clinical/coefficients.csv`` or None."""
        f = self.layout.clinical_coefficients
        return pd.read_csv(f) if f.is_file() else None
