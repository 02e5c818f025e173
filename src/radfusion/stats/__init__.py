"""The study's statistics: AUC confidence intervals, the DeLong test, confusion-matrix metrics,
Table 1 baseline characteristics, calibration and decision curves.

Everything here is a pure function of arrays or data frames (numpy / scipy / pandas), so it can
be reused on any model's scores and checked against independent implementations.

Parts
-----
:mod:`~radfusion.stats.roc`
    AUCs with DeLong and bootstrap intervals, the DeLong test and its pairwise matrix,
    :func:`auc_or_nan`.
:mod:`~radfusion.stats.confusion`
    Youden's threshold, Wilson intervals and the metrics at a threshold (:func:`binary_metrics`).
:mod:`~radfusion.stats.curves`
    Brier score, calibration-curve and decision-curve data.
:mod:`~radfusion.stats.recalibration`
    Calibration-in-the-large and calibration slope with CIs, and the logistic recalibration map.
:mod:`~radfusion.stats.calibration`
    Calibration-in-the-large and calibration slope with intervals; miscalibration flags.
:mod:`~radfusion.stats.samplesize`
    Riley et al.'s minimum sample size for developing a binary-outcome prediction model.
:mod:`~radfusion.stats.table1`
    Between-set tests and the baseline table (Table 1).
:mod:`~radfusion.stats.formatting`
    Numbers and p-values as the paper prints them.
:mod:`~radfusion.stats.inputs`
    The input checks every part shares.

Conventions
-----------
- ``y_true`` holds the reference standard (histopathology): 1 = positive (APT/PC, malignant),
  0 = negative. Booleans and the floats 0.0 / 1.0 are accepted too.
- A score is "higher = more likely positive". A case is *predicted positive* iff
  ``score >= threshold``.
- ``alpha`` is the two-sided error rate, so ``alpha=0.05`` gives 95 % intervals.
"""

from radfusion.stats.calibration import CalibrationFit, calibration_fit, miscalibration_reasons
from radfusion.stats.confusion import (
    BinaryMetrics,
    Estimate,
    binary_metrics,
    wilson_interval,
    youden_threshold,
)
from radfusion.stats.curves import brier_score, calibration_curve_data, decision_curve
from radfusion.stats.formatting import format_p_value
from radfusion.stats.recalibration import (
    RECALIBRATION_METHODS,
    LogisticCalibration,
    logistic_calibration,
    recalibrate,
)
from radfusion.stats.roc import (
    AUCInterval,
    DeLongResult,
    auc_or_nan,
    bootstrap_auc_ci,
    delong_auc_ci,
    delong_covariance,
    delong_test,
    pairwise_delong,
)
from radfusion.stats.samplesize import RileySampleSize, max_r2_cs, riley_binary
from radfusion.stats.table1 import (
    baseline_table,
    compare_categorical,
    compare_continuous,
    format_baseline_table,
)

__all__ = [
    "RECALIBRATION_METHODS",
    "AUCInterval",
    "BinaryMetrics",
    "CalibrationFit",
    "DeLongResult",
    "Estimate",
    "LogisticCalibration",
    "RileySampleSize",
    "auc_or_nan",
    "baseline_table",
    "binary_metrics",
    "bootstrap_auc_ci",
    "brier_score",
    "calibration_curve_data",
    "calibration_fit",
    "compare_categorical",
    "compare_continuous",
    "decision_curve",
    "delong_auc_ci",
    "delong_covariance",
    "delong_test",
    "format_baseline_table",
    "format_p_value",
    "logistic_calibration",
    "max_r2_cs",
    "miscalibration_reasons",
    "pairwise_delong",
    "recalibrate",
    "riley_binary",
    "wilson_interval",
    "youden_threshold",
]
