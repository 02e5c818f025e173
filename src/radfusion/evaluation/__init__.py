"""Evaluation of a run: thresholds, metrics with CIs, DeLong matrices, the paper's tables and
figures (ROC, radar, DeLong heatmaps, calibration, decision curves, LASSO, importance, Figure S2).

The statistics themselves live in :mod:`radfusion.stats`; this package applies them to a run
folder's predictions and writes ``RUN/evaluation/`` (see :func:`evaluate_run`).
"""

from radfusion.evaluation.metrics import (
    calibration_table,
    choose_thresholds,
    decision_curve_table,
    delong_matrices,
    families_present,
    family_models,
    main_models,
    metrics_table,
    splits_present,
    table1,
    table2,
    validate_predictions,
)
from radfusion.evaluation.palette import (
    FAMILY_COLORS,
    SPLIT_LABELS,
    SPLITS,
    model_colors,
    model_order,
)
from radfusion.evaluation.run import EvaluationResult, FigureInfo, evaluate_run, load_evaluation
from radfusion.evaluation.runfolder import RunArtifacts
from radfusion.families import FAMILIES, FAMILY_LABELS

__all__ = [
    "FAMILIES",
    "FAMILY_COLORS",
    "FAMILY_LABELS",
    "SPLITS",
    "SPLIT_LABELS",
    "EvaluationResult",
    "FigureInfo",
    "RunArtifacts",
    "calibration_table",
    "choose_thresholds",
    "decision_curve_table",
    "delong_matrices",
    "evaluate_run",
    "families_present",
    "family_models",
    "load_evaluation",
    "main_models",
    "metrics_table",
    "model_colors",
    "model_order",
    "splits_present",
    "table1",
    "table2",
    "validate_predictions",
]
