"""Centre (scanner) harmonisation of features, fitted on training cases only."""

from radfusion.harmonization.combat import (
    ComBatHarmonizer,
    UnadjustedCaseWarning,
    iter_harmonizers,
    recorded_inputs,
)

__all__ = [
    "ComBatHarmonizer",
    "UnadjustedCaseWarning",
    "iter_harmonizers",
    "recorded_inputs",
]
