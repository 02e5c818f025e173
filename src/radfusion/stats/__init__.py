"""The study's statistics (being split into parts; for now all in :mod:`radfusion.stats.roc`)."""

from radfusion.stats.roc import *  # noqa: F403
from radfusion.stats.roc import __all__  # noqa: F401
