"""Radiomics: PyRadiomics features of the preprocessed lesion crops (parallel, cached)."""

from radfusion.radiomics.extract import (
    RadiomicsExtractionError,
    RadiomicsResult,
    extract_radiomics,
    extraction_failures,
    load_params,
    read_feature_table,
    write_feature_table,
)
from radfusion.radiomics.frame import extract_features

__all__ = [
    "RadiomicsExtractionError",
    "RadiomicsResult",
    "extract_features",
    "extract_radiomics",
    "extraction_failures",
    "load_params",
    "read_feature_table",
    "write_feature_table",
]
