"""Cohort input: the manifest, image / ROI readers, validation and splits."""

from radfusion.data.manifest import Case, Cohort, load_cohort
from radfusion.data.readers import read_image, read_mask

__all__ = ["Case", "Cohort", "load_cohort", "read_image", "read_mask"]
