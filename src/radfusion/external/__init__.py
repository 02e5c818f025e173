"""External validation of a saved model: a bundle, frozen, on another centre's labelled cases.

:func:`evaluate_external` (``radfusion evaluate BUNDLE MANIFEST``) scores the external
cases exactly as ``radfusion predict`` does, at the thresholds frozen in the bundle, and
writes the study's statistics on them (discrimination, classification, calibration with
calibration-in-the-large and slope, decision curves, DeLong comparisons, per-centre rows
and a forest plot), the development result beside the external one, the logistic
recalibration maps, an "External validation" HTML report and, when asked, a recalibrated
new version of the bundle (:func:`~radfusion.external.update.write_recalibrated_bundle`).
"""

from radfusion.external.run import ExternalValidation, cohort_sha256, evaluate_external
from radfusion.external.update import write_recalibrated_bundle

__all__ = [
    "ExternalValidation",
    "cohort_sha256",
    "evaluate_external",
    "write_recalibrated_bundle",
]
