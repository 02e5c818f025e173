"""Radiomics: PyRadiomics features of the preprocessed lesion crops (parallel, cached), and
the IBSI digital-phantom check of that extraction."""

from radfusion.radiomics.extract import RadiomicsExtractionError, extract_radiomics
from radfusion.radiomics.frame import extract_features
from radfusion.radiomics.ibsi import IbsiCheck, ibsi_check
from radfusion.radiomics.params import load_params
from radfusion.radiomics.tables import (
    RadiomicsResult,
    extraction_failures,
    read_feature_table,
    write_feature_table,
)

__all__ = [
    "IbsiCheck",
    "RadiomicsExtractionError",
    "RadiomicsResult",
    "extract_features",
    "extract_radiomics",
    "extraction_failures",
    "ibsi_check",
    "load_params",
    "read_feature_table",
    "write_feature_table",
]
