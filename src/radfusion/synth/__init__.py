"""The synthetic parathyroid ultrasound cohort (being split into parts; for now all in
:mod:`radfusion.synth.simulator`)."""

from radfusion.synth.simulator import *  # noqa: F403
from radfusion.synth.simulator import __all__  # noqa: F401
