"""A synthetic parathyroid ultrasound cohort for the demo and the tests.

No public parathyroid ultrasound dataset exists, so radfusion ships a generator
of transverse neck ultrasound images, each with two reader delineations of a
parathyroid lesion and a patient sheet that mimics Table 1 of Liu et al.
(QIMS 2026).

Parts
-----
:mod:`~radfusion.synth.simulator`
    One image: scanner profiles, lesion phenotypes, anatomy and image formation.
:mod:`~radfusion.synth.cohort`
    A cohort: patients and centres, clinical values, and the files (images, masks,
    ``manifest.csv``, ``synth.json``) that :func:`generate_cohort` writes.
"""

from radfusion.synth.cohort import MANIFEST_COLUMNS, class_counts, generate_cohort
from radfusion.synth.simulator import ScannerProfile, scanner_profile

__all__ = [
    "MANIFEST_COLUMNS",
    "ScannerProfile",
    "class_counts",
    "generate_cohort",
    "scanner_profile",
]
