"""Early fusion (the paper's Merged models) and the clinical + imaging model."""

from radfusion.fusion.clinical import ClinicalImagingModel
from radfusion.fusion.merge import build_merged_model, fit_merged_zoo

__all__ = ["ClinicalImagingModel", "build_merged_model", "fit_merged_zoo"]
